#!/usr/bin/env bash
# The README's demo (`deno task demo`): the main job end to end on the bundled fixtures, in a scratch
# folder (DEMO_OUT overrides it): tokenize the OpenWebText-layout fixture archive into shards, inspect
# them, train the tiny GPT for a short wall-clock budget, evaluate it, sample from it, show its top-5
# next tokens, draw its loss curve, and two Unix pipes. About 1-2 minutes on 2 CPU cores.
# DEMO_TRAIN_TIME (default 40s) sets the training budget.
# Section headings and lmpipe's logs go to stderr; what each command produces goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${DEMO_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/lmpipe-demo.XXXXXX")}"
mkdir -p "$out"
budget="${DEMO_TRAIN_TIME:-40s}"
prompt="The old town sat by the river"

lm() { ./lmpipe "$@"; }
section() { printf '\n== %s\n' "$*" >&2; }
# Echo the command (quoting arguments with spaces), then run it.
show() {
  local a line='$ lmpipe'
  for a in "$@"; do [[ "$a" == *" "* ]] && line+=" '$a'" || line+=" $a"; done
  printf '%s\n' "$line" >&2
  lm "$@"
}

section "1. tokenize: OpenWebText-layout archive -> llm.c token shards (5% of documents for validation)"
show tokenize fixtures/openwebtext.tar.xz --out "$out/data" --val-fraction 0.05 --force

section "2. inspect the shards (header, token counts, checksums against meta.json, first tokens)"
show inspect "$out/data" --head 12

section "3. train the gpt model, preset tiny, for $budget of wall-clock time"
show train --model gpt --preset tiny --data "$out/data" --max-time "$budget" --lr 2e-3 --warmup 5 \
  --eval-every 10 --eval-iters 4 --out "$out/run" --force

section "4. eval: loss, perplexity and bits per byte on the validation shards"
show eval --ckpt "$out/run" --data "$out/data" --pretty

section "5. sample a continuation"
show sample --ckpt "$out/run" --prompt "$prompt" --max-new-tokens 40 --seed 7
echo

section "6. the five most likely next tokens after the prompt"
show sample --ckpt "$out/run" --prompt "$prompt" --top 5

section "7. the loss curve, on the terminal and as SVG"
show plot "$out/run" --term --width 72 --height 12 --no-color
show plot "$out/run" --out "$out/loss.svg"

section "8. Unix pipes: text on stdin -> token stream on stdout -> inspect / eval"
printf '$ cat fixtures/corpus/doc0000-prose.txt | lmpipe tokenize - --out - | lmpipe inspect - --head 8\n' >&2
lm tokenize - --out - <fixtures/corpus/doc0000-prose.txt | lm inspect - --head 8
printf '$ lmpipe tokenize fixtures/corpus/doc0007-foreign.txt --out - | lmpipe eval --ckpt RUN --data -\n' >&2
lm tokenize fixtures/corpus/doc0007-foreign.txt --out - | lm eval --ckpt "$out/run" --data -

section "demo finished in ${SECONDS}s; shards, run folder and loss.svg are in $out"
