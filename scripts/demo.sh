#!/usr/bin/env bash
# Tandem's main job on one box: a local two-rank cluster serving a model over
# the gRPC API. Builds, makes a demo model when none is given, starts
# `tandem serve --local-ranks 2`, streams one generation through the API, then
# keeps serving until Ctrl-C (SIGTERM drains it). DEMO_ONCE=1 stops after the
# generation.
#   bash scripts/demo.sh [MODEL.gguf] [PROMPT]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
log=$(mktemp)
if ! TANDEM_BUILD_DIR=build bash scripts/build.sh >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "demo: the build failed (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
tandem=build/launcher/tandem
model=${1:-}
if [ -z "$model" ]; then
  model=build/demo-small-q8_0.gguf
  [ -f "$model" ] || $tandem make-test-model --out "$model" --shape small --type q8_0 --vocab bpe --seed 7
fi
prompt=${2:-"Once upon a time"}
listen=${TANDEM_LISTEN:-127.0.0.1:50051}

echo "== tandem serve --model $model --local-ranks 2 --listen $listen" >&2
$tandem serve --model "$model" --local-ranks 2 --listen "$listen" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM

# Ready when the API answers (the health service says SERVING once every rank loaded).
for _ in $(seq 1 120); do
  if ! kill -0 $server 2>/dev/null; then echo "demo: tandem serve exited" >&2; exit 1; fi
  if $tandem generate --server "$listen" --prompt "ping" --max-tokens 1 >/dev/null 2>&1; then break; fi
  sleep 0.5
done
echo "== tandem generate --server $listen --prompt \"$prompt\"" >&2
$tandem generate --server "$listen" --prompt "$prompt" --max-tokens 48 --temperature 0.8 --seed 1 \
  --print-token-ids
if [ "${DEMO_ONCE:-0}" = 1 ]; then exit 0; fi
echo "== serving on $listen: try tandem generate --server $listen --prompt \"...\", or the Python client" \
     "(README); Ctrl-C stops" >&2
wait $server
