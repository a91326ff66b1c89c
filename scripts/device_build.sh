# Sourced by the bench/ device scripts: build_dsa_cuda BUILD_LOG configures a Release CUDA build
# without tests into build-cuda against the carried Debian packages (scripts/device_deps.sh) and
# builds the dsa binary; exits the caller on failure. Uses the caller's log() when it has one.
declare -F log >/dev/null || log() { echo "== $*"; }
build_dsa_cuda() {
  local blog=$1 t0
  source scripts/device_deps.sh
  cmake -S . -B build-cuda -G Ninja -DDSA_CUDA=ON -DDSA_TESTS=OFF -DCMAKE_BUILD_TYPE=Release "${DEPARGS[@]}" \
    >"$blog" 2>&1 || { log "configure failed"; tail -30 "$blog"; exit 1; }
  t0=$(date +%s)
  ninja -C build-cuda -j"$(nproc)" dsa >>"$blog" 2>&1 \
    || { log "build failed"; grep -E "error|FAILED" "$blog" | head -30; exit 1; }
  log "build ok in $(( $(date +%s) - t0 )) s"
  export LD_LIBRARY_PATH
}
