#!/usr/bin/env bash
# The one-shot GPU benchmark (issue 13): on one GPU node with no network, in at most 7 minutes, measures
#   - GEMM GFLOP/s, fp32, 1024/2048/4096: lmpipe's WGSL GEMM, TF.js's stock matMul, torch.mm;
#   - ms/step and tokens/s of gpt and pixel-attn at `small`, fp32 (gpt also with the stock matMul),
#     against PyTorch CUDA fp32 (bench/torch_reference.py, gpt only), with first-step compile time;
#   - the dispatch audit of a gpt small step with every dispatch timed on the GPU (--measure);
# and writes $OUT/gpu_results.md (bench/gpu/report.py) plus each sub-step's JSON lines and log in $OUT.
# Every sub-step has its own timeout, cut to what is left of the total budget.
#
# Needs what bench/gpu/prepare.sh puts in .gl/ and .devcarry/ (Vulkan loader, Deno, bundled entry points).
#   on the GPU node:  bash bench/gpu/run_all.sh
#   dry run here:     bash bench/gpu/run_all.sh --dry   (llvmpipe, tiny sizes, PyTorch on the CPU)
set -uo pipefail
cd "$(dirname "$0")/../.."
dry=0
[ "${1:-}" = "--dry" ] && dry=1
OUT="${OUT:-$(mktemp -d /tmp/lmpipe-gpu-XXXXXX)}"
mkdir -p "$OUT"
start=$(date +%s)
BUDGET=${LMPIPE_GPU_BUDGET_S:-415}
deadline=$((start + BUDGET))
export NO_COLOR=1

for e in gemm train_step webgpu_audit; do
  [ -s ".devcarry/$e.js" ] || { echo "run_all: .devcarry/$e.js missing: run bash bench/gpu/prepare.sh first" >&2; exit 2; }
done

# run NAME SECONDS CMD...: stdout to $OUT/NAME.jsonl, stderr to $OUT/NAME.log, status to steps.jsonl
run() {
  local name=$1 secs=$2
  shift 2
  local left=$((deadline - $(date +%s)))
  [ "$secs" -gt "$left" ] && secs=$left
  if [ "$secs" -lt 5 ]; then
    echo "{\"bench\":\"step\",\"name\":\"$name\",\"rc\":\"skipped (out of time)\",\"seconds\":0}" >> "$OUT/steps.jsonl"
    return
  fi
  echo "run_all: $name (timeout ${secs}s)" >&2
  local t0=$(date +%s)
  timeout -k 5 "$secs" "$@" > "$OUT/$name.jsonl" 2> "$OUT/$name.log"
  local rc=$?
  echo "{\"bench\":\"step\",\"name\":\"$name\",\"rc\":$rc,\"seconds\":$(($(date +%s) - t0))}" >> "$OUT/steps.jsonl"
}

if [ $dry = 1 ]; then
  DENO="$(command -v deno || npx -y deno@2.9.6 eval 'console.log(Deno.execPath())')"
  PY=/usr/bin/python3
  TDEV=cpu
  export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824
  SIZES=128,256 SECS=0.3 PRESET=tiny B=1 PB=1 STEPS=1 GPU=h200
else
  run unpack 25 bash -c 'for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; xz -dc .devcarry/deno.xz > /tmp/deno && chmod +x /tmp/deno'
  DENO=/tmp/deno
  PY=python3
  TDEV=cuda
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  SIZES=1024,2048,4096 SECS=1 PRESET=small B=8 PB=4 STEPS=3 GPU=h200 # PB: pixel-attn (~15 s per step with stock convs)
  (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/nvidia_smi.txt") 2>/dev/null
fi

run gemm 75 "$DENO" run -A .devcarry/gemm.js --sizes "$SIZES" --seconds "$SECS"
run torch_mm 40 "$PY" bench/gpu/torch_matmul.py --device "$TDEV" --sizes "$SIZES" --seconds "$SECS"
run train_gpt_own 50 "$DENO" run -A .devcarry/train_step.js --model gpt --preset "$PRESET" --batch-size "$B" --steps "$STEPS"
run train_gpt_stock 45 "$DENO" run -A .devcarry/train_step.js --model gpt --preset "$PRESET" --batch-size "$B" --steps 2 --matmul stock
run train_pixel_own 90 "$DENO" run -A .devcarry/train_step.js --model pixel-attn --preset "$PRESET" --batch-size "$PB" --steps 1
run torch_gpt 50 bash -c "'$PY' bench/torch_reference.py --device $TDEV --preset $PRESET --batch $B --steps $((STEPS + 2)) --warmup-steps 2 | sed 's/^{/{\"bench\": \"torch_train\", \"model\": \"gpt\", \"preset\": \"$PRESET\", /'"
run audit_gpt 40 "$DENO" run -A .devcarry/webgpu_audit.js --model gpt --preset "$PRESET" --batch-size "$B" --gpu "$GPU" --measure --json

adapter=$(grep -ho '"device":"[^"]*"' "$OUT/gemm.jsonl" 2>/dev/null | head -1 | cut -d'"' -f4)
gpu=$(cat "$OUT/nvidia_smi.txt" 2>/dev/null || echo "none (dry run)")
printf '{"bench":"meta","date":"%s","gpu":"%s","adapter":"%s","mode":"%s","total_s":%d}\n' \
  "$(date -u +%FT%TZ)" "$gpu" "$adapter" "$([ $dry = 1 ] && echo dry-run || echo full)" $(($(date +%s) - start)) \
  > "$OUT/meta.jsonl"
"$PY" bench/gpu/report.py "$OUT" > "$OUT/gpu_results.md"
cat "$OUT/gpu_results.md"
echo "run_all: results in $OUT ($(($(date +%s) - start)) s)" >&2
