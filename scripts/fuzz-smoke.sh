#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz and
# fuzzes File::Parse for N seconds (default 30), starting from a generated seed
# corpus, then the gRPC GenerateRequest conversion for as long. Exits non-zero if the fuzzer finds a crash, leak, timeout or sanitizer
# report; the reproducer is left in build-fuzz/fuzz-artifacts/.
#   scripts/fuzz-smoke.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
build=${TANDEM_FUZZ_BUILD_DIR:-build-fuzz}
jobs=${TANDEM_JOBS:-2}

mkdir -p "$build"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_BUILD_FUZZERS=ON -DTANDEM_CUDA=OFF \
  -DTANDEM_WERROR=ON >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  exit 1
}
ninja -C "$build" -j"$jobs" gguf_fuzz gguf_fuzz_seeds request_fuzz

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
"$build/tests/fuzz/gguf_fuzz_seeds" "$corpus"
mkdir -p "$build/fuzz-artifacts"

echo "fuzzing GGUF parse for ${seconds}s"
"$build/tests/fuzz/gguf_fuzz" "$corpus" \
  -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/"

# The serving front's request conversion, from an empty corpus (protobuf's
# wire format is simple enough for libFuzzer to find its way).
request_corpus=$(mktemp -d)
trap 'rm -rf "$corpus" "$request_corpus"' EXIT
echo "fuzzing GenerateRequest conversion for ${seconds}s"
"$build/tests/fuzz/request_fuzz" "$request_corpus" \
  -max_total_time="$seconds" -max_len=2048 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/"
