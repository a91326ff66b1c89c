# Sourced by the device-run scripts (cuda_device_run.sh, train_device_run.sh): unpacks the carried
# Debian packages in build-cudadeps/debs (list in cuda_device_run.sh) into $DEPS (never into /),
# rewrites their .pc files to that prefix, points pkg-config and the loader at it, and leaves the
# CMake arguments that find them in DEPARGS. Needs log() and $OUT from the caller.
DEPS=${DEPS:-/tmp/dsa-deps}
DEPARGS=()
if ls build-cudadeps/debs/*.deb >/dev/null 2>&1; then
  rm -rf "$DEPS" && mkdir -p "$DEPS"
  for f in build-cudadeps/debs/*.deb; do
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$DEPS"
    else (cd "$DEPS" && ar p "$OLDPWD/$f" data.tar.xz | tar -xJ); fi
  done
  L=$DEPS/usr/lib/x86_64-linux-gnu
  sed -i -E "s#^(prefix|exec_prefix|libdir|includedir)=/usr#\1=$DEPS/usr#" "$L"/pkgconfig/*.pc "$DEPS"/usr/share/pkgconfig/*.pc
  export PKG_CONFIG_PATH=$L/pkgconfig:$DEPS/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$L
  DEPARGS=(-DCMAKE_PREFIX_PATH="$DEPS/usr" -Dfmt_DIR="$L/cmake/fmt" -Dhwy_DIR="$L/cmake/hwy"
           -Dnlohmann_json_DIR="$DEPS/usr/share/cmake/nlohmann_json" -DCLI11_DIR="$DEPS/usr/share/cmake/CLI11"
           -DGTest_DIR="$L/cmake/GTest" -Dbenchmark_DIR="$L/cmake/benchmark"
           -DBoost_DIR="$L/cmake/Boost-1.81.0" -Dboost_headers_DIR="$L/cmake/boost_headers-1.81.0"
           -DZLIB_ROOT="$DEPS/usr"
           # Debian puts openssl's configuration.h under the multiarch include dir: searched last.
           -DCMAKE_CXX_FLAGS="-idirafter $DEPS/usr/include/x86_64-linux-gnu")
  command -v pkg-config >/dev/null || DEPARGS+=(-DPKG_CONFIG_EXECUTABLE="$DEPS/usr/bin/pkgconf")
  log "carried deps unpacked into $DEPS ($(ls build-cudadeps/debs/*.deb | wc -l) packages)"
fi

