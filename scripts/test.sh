#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: installs the packages,
# builds with warnings as errors, and runs every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
TANDEM_BUILD_DIR=${TANDEM_BUILD_DIR:-build} bash scripts/build.sh -DTANDEM_WERROR=ON "$@"
ctest --test-dir "${TANDEM_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)"
