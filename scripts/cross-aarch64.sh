#!/usr/bin/env bash
# Cross-builds the CPU kernels (tandem_kernels_cpu) and their unit tests for
# aarch64 and runs the tests under qemu-user. Installs what it needs (run as
# root, or with sudo available): the cross compiler, qemu, and the arm64
# builds of abseil and GoogleTest through Debian multiarch. If GoogleTest for
# arm64 cannot be installed it is built from /usr/src/googletest.
#
#   scripts/cross-aarch64.sh [build-dir]      (default: build-aarch64)
# Environment: SKIP_INSTALL=1 skips apt; SKIP_TESTS=1 only builds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build-aarch64}
mkdir -p "$build"
build=$(cd "$build" && pwd)
sudo=""
if [[ $(id -u) != 0 ]]; then sudo=sudo; fi

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

install_deps() {
  local host_pkgs=(g++-aarch64-linux-gnu qemu-user-static cmake ninja-build googletest)
  local missing=()
  for p in "${host_pkgs[@]}"; do have_pkg "$p" || missing+=("$p"); done
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
  fi
  local arm_missing=()
  for p in libabsl-dev:arm64 libgtest-dev:arm64; do have_pkg "$p" || arm_missing+=("$p"); done
  if [[ ${#missing[@]} -eq 0 && ${#arm_missing[@]} -eq 0 ]]; then return; fi
  $sudo apt-get update -q
  export DEBIAN_FRONTEND=noninteractive
  if [[ ${#missing[@]} -gt 0 ]]; then
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  # abseil is required; GoogleTest has a fallback below.
  $sudo apt-get install -y -q --no-install-recommends libabsl-dev:arm64
  $sudo apt-get install -y -q --no-install-recommends libgtest-dev:arm64 ||
    echo "cross-aarch64: libgtest-dev:arm64 unavailable; building GoogleTest from source"
}

if [[ ${SKIP_INSTALL:-0} != 1 ]]; then install_deps; fi

toolchain="$root/cmake/aarch64-linux-gnu.cmake"
prefix_args=()
if [[ ! -f /usr/lib/aarch64-linux-gnu/cmake/GTest/GTestConfig.cmake ]]; then
  gtest_build="$build/googletest-build"
  cmake -S /usr/src/googletest -B "$gtest_build" -G Ninja \
    -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$build/googletest" -DBUILD_GMOCK=ON
  cmake --build "$gtest_build" --target install
  prefix_args=(-DCMAKE_PREFIX_PATH="$build/googletest")
fi

# A small project around the kernels alone: the full tree also needs arm64
# builds of gRPC, pcre2, MPI and others, which the kernels do not use.
src="$build/src"
mkdir -p "$src"
cat >"$src/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.25)
project(tandem_kernels_aarch64 LANGUAGES C CXX)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
# The module CMake files refer to the repository root through PROJECT_SOURCE_DIR.
set(PROJECT_SOURCE_DIR "$root")
set(TANDEM_CUDA OFF)
option(TANDEM_WERROR "Treat compiler warnings as errors" ON)
list(APPEND CMAKE_MODULE_PATH "$root/cmake")
include(TandemOptions)
find_package(absl CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(GTest CONFIG REQUIRED)
enable_testing()
add_subdirectory("$root/common" common)
add_subdirectory("$root/runtime/tensor" tensor)
add_subdirectory("$root/runtime/kernels/cpu" kernels)
add_subdirectory("$root/tests/unit/runtime/kernels" tests)
CMAKE

cmake -S "$src" -B "$build" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "${prefix_args[@]}"
cmake --build "$build" -j "$(nproc)" --target tandem_kernels_cpu kernels_convert_test \
  kernels_matmul_test kernels_thread_pool_test kernels_attention_test

if [[ ${SKIP_TESTS:-0} != 1 ]]; then
  # Under emulation the tests run 10-50x slower than natively.
  (cd "$build" && ctest --output-on-failure --timeout 3000 -R '^kernels_')
fi
echo "cross-aarch64: done ($build)"
