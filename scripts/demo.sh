#!/usr/bin/env bash
# Tandem's main job on one box: build, make a demo model when none is given,
# and stream a generation from it.
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
model=${1:-}
if [ -z "$model" ]; then
  model=build/demo-small-q8_0.gguf
  [ -f "$model" ] || build/launcher/tandem make-test-model --out "$model" --shape small --type q8_0 --vocab bpe --seed 7
fi
prompt=${2:-"Once upon a time"}
echo "== tandem generate --model $model --prompt \"$prompt\"" >&2
build/launcher/tandem generate --model "$model" --prompt "$prompt" --max-tokens 48 --temperature 0.8 --seed 1 --print-token-ids
