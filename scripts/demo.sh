#!/usr/bin/env bash
# The README's demo: the main job end to end on the bundled fixtures, in a scratch folder.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${DEMO_OUT:-$(mktemp -d)}"
lm() { ./lmpipe "$@"; }
echo "== tokenize the fixture corpus into $out/data" >&2
lm tokenize fixtures/corpus --out "$out/data" --val-fraction 0.1 --force
echo "== inspect the shards" >&2
lm inspect "$out/data"
echo "== demo finished; outputs in $out" >&2
