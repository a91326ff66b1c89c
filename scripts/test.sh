#!/usr/bin/env bash
# README command 2: install, build and run the whole test suite (ctest), compile the CUDA backend
# when nvcc is present (its tests need a GPU: scripts/cuda_device_run.sh), the ASan + UBSan run
# (scripts/sanitize.sh), then bounded fuzzing (ASan + UBSan libFuzzer targets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
# The unit and server tests again on an ASan + UBSan build (any report fails; skip: DSA_SANITIZE=0).
if [ "${DSA_SANITIZE:-1}" != 0 ]; then
  scripts/sanitize.sh
fi
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
  echo "[test] compiling the CUDA backend (sm_90a; not run here)"
  cmake -S . -B build-cuda -G Ninja -DDSA_CUDA=ON -DDSA_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C build-cuda -j"$(nproc)" dsa_cuda cuda_ops_test cuda_bench
fi
if [ -x scripts/fuzz.sh ]; then
  scripts/fuzz.sh "${DSA_FUZZ_SECONDS:-45}"
fi
