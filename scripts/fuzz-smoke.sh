#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz and
# fuzzes each for N seconds (default 30): the GGUF reader (File::Parse, from a
# generated seed corpus), the bootstrap store's wire protocol (from a few
# handshake and request seeds) and the gRPC GenerateRequest conversion. Exits non-zero if a fuzzer finds a crash,
# leak, timeout or sanitizer report; the reproducer is left in
# build-fuzz/fuzz-artifacts/. Each fuzzer's output (hundreds of thousands of
# lines: request_fuzz's inputs print their own errors) goes to
# build-fuzz/fuzz-logs/<name>.log; the log shows its final stats on success,
# and its last lines on failure.
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
ninja -C "$build" -j"$jobs" gguf_fuzz gguf_fuzz_seeds bootstrap_fuzz request_fuzz

corpus=$(mktemp -d)
bootstrap_corpus=$(mktemp -d)
request_corpus=$(mktemp -d)
trap 'rm -rf "$corpus" "$bootstrap_corpus" "$request_corpus"' EXIT
"$build/tests/fuzz/gguf_fuzz_seeds" "$corpus"
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"

# fuzz NAME BINARY CORPUS MAX_LEN: runs one fuzzer quietly (see above).
fuzz() {
  local name=$1 binary=$2 input=$3 max_len=$4 log="$build/fuzz-logs/$1.log"
  if "$binary" "$input" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/" >"$log" 2>&1; then
    grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)' \
      "$log" | sed "s/^/  $name: /" || true
  else
    local code=$?
    echo "$name FAILED (exit $code); the last 200 lines of $log:" >&2
    tail -n 200 "$log" >&2
    echo "reproducers: $(ls "$build/fuzz-artifacts/" 2>/dev/null | tr '\n' ' ')" >&2
    return "$code"
  fi
}

echo "fuzzing GGUF parse for ${seconds}s"
fuzz gguf_fuzz "$build/tests/fuzz/gguf_fuzz" "$corpus" 4096

# Seeds (see tests/fuzz/bootstrap_fuzz.cc): mode byte, piece size, then for
# odd modes frames of type, flags, u16 length, payload: a handshake alone,
# and a set, a get and a barrier after it.
printf '\x01\x00' >"$bootstrap_corpus/handshake"
printf '\x01\x00\x05\x00\x0a\x00\x01\x00\x00\x00k\x01\x00\x00\x00v' >"$bootstrap_corpus/set"
printf '\x01\x03\x06\x00\x09\x00\x01\x00\x00\x00k\x00\x00\x00\x00' >"$bootstrap_corpus/get"
printf '\x01\x00\x07\x00\x09\x00\x01\x00\x00\x00b\x10\x00\x00\x00' >"$bootstrap_corpus/barrier"
printf '\x00\x05TDB1\x02\x00\x00\x00\x48\x00\x00\x00' >"$bootstrap_corpus/raw_auth_header"

echo "fuzzing the bootstrap store's protocol for ${seconds}s"
fuzz bootstrap_fuzz "$build/tests/fuzz/bootstrap_fuzz" "$bootstrap_corpus" 4096

# The serving front's request conversion, from an empty corpus (protobuf's
# wire format is simple enough for libFuzzer to find its way).
echo "fuzzing GenerateRequest conversion for ${seconds}s"
fuzz request_fuzz "$build/tests/fuzz/request_fuzz" "$request_corpus" 2048
