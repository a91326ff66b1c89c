#!/usr/bin/env bash
# ASan + UBSan run (CMake option DSA_SANITIZE, build dir build-asan/): builds dsa and the unit
# tests with the sanitizers, runs every unit test binary and the server integration tests on the
# sanitized dsa. Any sanitizer report (or leak) fails. The fuzzers (scripts/fuzz.sh) are ASan +
# UBSan builds of their own. Usage: scripts/sanitize.sh (DSA_ASAN_BUILD picks the build dir).
set -euo pipefail
cd "$(dirname "$0")/.."
B="${DSA_ASAN_BUILD:-build-asan}"
# -O1: about half the compile time of -O2, and ASan's usual level.
cmake -S . -B "$B" -G Ninja -DDSA_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
mapfile -t tests < <(cd tests && ls ./*_test.cc | sed 's|^\./||; s|\.cc$||')
ninja -C "$B" -j"$(nproc)" dsa "${tests[@]}"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
for t in "${tests[@]}"; do
  t0=$(date +%s)
  if "$B/tests/$t" --gtest_brief=1 > "$B/$t.log" 2>&1; then
    echo "[sanitize] $t passed ($(( $(date +%s) - t0 )) s)"
  else
    echo "[sanitize] $t FAILED"; tail -40 "$B/$t.log"; status=1
  fi
done
t0=$(date +%s)
if python3 tests/server/run_server_tests.py --dsa "$B/dsa" --sanitized --work-dir "$B/test_models" > "$B/server.log" 2>&1; then
  echo "[sanitize] server_integration passed ($(( $(date +%s) - t0 )) s)"
else
  echo "[sanitize] server_integration FAILED"; tail -60 "$B/server.log"; status=1
fi
exit "$status"
