#!/usr/bin/env bash
# The one-shot GPU benchmark (issue 13): on one GPU node with no network, in at most 8 minutes, measures
#   - GEMM GFLOP/s at 1024/2048/4096: lmpipe's WGSL GEMM and TF.js's stock matMul in fp32 (lmpipe has no
#     f16 GEMM yet), torch.mm in fp32 (TF32 off) and f16;
#   - ms/step, tokens/s, first step and its compile time, and peak GPU memory of all four models (gpt,
#     pixel-cumsum, pixel-attn, pixel-attn-wide) at `small`, lmpipe fp32 and mixed against PyTorch CUDA
#     fp32 and bf16 autocast (bench/torch_reference.py, built from lmpipe's own configs with equal
#     parameter counts); gpt also with TF.js's stock matMul;
#   - where the host time of a gpt and a pixel-attn small step goes (bench/webgpu_host.ts: recording,
#     bind groups, TF.js's engine, waiting on reads);
#   - whole train-loop steps of gpt and pixel-attn small with recorded steps replayed and without
#     (bench/webgpu_replay.ts);
#   - the dispatch audit of a gpt small step with every dispatch timed on the GPU (--measure; timestamp
#     queries split every dispatch into its own pass, which inflates short kernels: read it as a ranking);
#   - then the `study` presets, as far as the time budget allows;
# and writes $OUT/gpu_results.md (bench/gpu/report.py) plus each part's JSON lines and log in $OUT.
#
# Time budget: every part has an estimate (seconds on an H200, from the 2026-12-04 run; the study parts
# scaled from it by FLOPs, not measured) and a timeout. The plan and its total are printed first; a part
# whose estimate is more than what is left of the budget is skipped, and says so in the report; a part
# never runs past its timeout or the budget's end.
#
# Needs what bench/gpu/prepare.sh puts in .gl/ and .devcarry/ (Vulkan loader, Deno, bundled entry points,
# model_config.jsonl).
#   on the GPU node:  bash bench/gpu/run_all.sh
#   dry run here:     bash bench/gpu/run_all.sh --dry   (llvmpipe, `tiny` presets and small GEMMs, PyTorch on
#                     the CPU through the same --device cuda command line; the study parts only check
#                     PyTorch's parameter counts against lmpipe's)
#   the node's plan:  bash bench/gpu/run_all.sh --plan  (prints the parts, estimates and skips; runs nothing)
# Environment: OUT (results folder; default a new /tmp/lmpipe-gpu-*), LMPIPE_GPU_BUDGET_S (default 450 on
# the node, 3600 in a dry run), LMPIPE_GPU_SKIP (an extended regex: parts whose names match are skipped, e.g.
# 'stock|audit' to leave time for the study presets).
set -uo pipefail
cd "$(dirname "$0")/../.."
dry=0 plan_only=0
case "${1:-}" in
  --dry) dry=1 ;;
  --plan) plan_only=1 ;;
  "") ;;
  *) echo "run_all: unknown argument '$1': use --dry, --plan or nothing" >&2; exit 2 ;;
esac
OUT="${OUT:-/tmp/lmpipe-gpu-$(date -u +%Y%m%dT%H%M%S)-$$}"
start=$(date +%s)
BUDGET=${LMPIPE_GPU_BUDGET_S:-$([ $dry = 1 ] && echo 3600 || echo 450)}
deadline=$((start + BUDGET))
export NO_COLOR=1

if [ $plan_only = 1 ]; then
  DENO=/tmp/deno PY=python3 NOCUDA=skip SIZES=1024,2048,4096 SECS=1 P1=small GB=8 PB=4 STEPS=5 TSTEPS=3
fi
[ $plan_only = 1 ] || for f in gemm.js train_step.js webgpu_audit.js webgpu_host.js webgpu_replay.js model_config.jsonl; do
  [ -s ".devcarry/$f" ] || { echo "run_all: .devcarry/$f missing: run bash bench/gpu/prepare.sh first" >&2; exit 2; }
done

# part NAME ESTIMATE_S CMD...: in the plan phase adds the estimate up; in the run phase runs CMD (stdout to
# $OUT/NAME.jsonl, stderr to $OUT/NAME.log) unless its estimate is more than what is left, with a timeout
# of 3x the estimate (at least TMIN s, at most what is left), and writes its status to steps.jsonl.
TMIN=$([ $dry = 1 ] && echo 120 || echo 30) # llvmpipe takes up to ~30 s for a tiny pixel-attn-wide part
part() {
  local name=$1 est=$2 secs=$((3 * $2 > TMIN ? 3 * $2 : TMIN))
  shift 2
  if [ -n "${LMPIPE_GPU_SKIP:-}" ] && [[ $name =~ $LMPIPE_GPU_SKIP ]]; then
    if [ "$phase" = plan ]; then
      printf 'run_all:   %-34s ~%4d s  matches LMPIPE_GPU_SKIP: skipped\n' "$name" "$est" >&2
    else
      printf '{"bench":"step","name":"%s","rc":"skipped (LMPIPE_GPU_SKIP)","seconds":0,"estimate_s":%d}\n' \
        "$name" "$est" >> "$OUT/steps.jsonl"
    fi
    return
  fi
  if [ "$phase" = plan ]; then
    if [ $((planned + est)) -le "$BUDGET" ]; then
      planned=$((planned + est))
      printf 'run_all:   %-34s ~%4d s  (total ~%4d s)\n' "$name" "$est" "$planned" >&2
    else
      printf 'run_all:   %-34s ~%4d s  would pass the %d s budget: skipped\n' "$name" "$est" "$BUDGET" >&2
    fi
    return
  fi
  local left=$((deadline - $(date +%s)))
  if [ "$est" -gt "$left" ]; then
    echo "run_all: skipping $name: estimated ${est} s, ${left} s left of the ${BUDGET} s budget" >&2
    printf '{"bench":"step","name":"%s","rc":"skipped (estimated %d s, %d s left)","seconds":0,"estimate_s":%d}\n' \
      "$name" "$est" "$left" "$est" >> "$OUT/steps.jsonl"
    return
  fi
  [ "$secs" -gt "$left" ] && secs=$left
  echo "run_all: $name (estimated ${est} s, timeout ${secs} s)" >&2
  local t0
  t0=$(date +%s)
  timeout -k 5 "$secs" "$@" > "$OUT/$name.jsonl" 2> "$OUT/$name.log"
  local rc=$?
  printf '{"bench":"step","name":"%s","rc":%d,"seconds":%d,"estimate_s":%d}\n' \
    "$name" "$rc" $(($(date +%s) - t0)) "$est" >> "$OUT/steps.jsonl"
}

if [ $plan_only = 1 ]; then
  : # the node's settings, above
elif [ $dry = 1 ]; then
  DENO="$(command -v deno || npx -y deno@2.9.6 eval 'console.log(Deno.execPath())')"
  PY=/usr/bin/python3
  export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824
  NOCUDA=cpu # the same --device cuda command line, run on the CPU and labelled so
  SIZES=128,256 SECS=0.3 P1=tiny GB=2 PB=1 STEPS=1 TSTEPS=1
else
  DENO=/tmp/deno
  PY=python3
  NOCUDA=skip # a node whose PyTorch sees no GPU: say so, do not fall back to minutes of CPU steps
  SIZES=1024,2048,4096 SECS=1 P1=small GB=8 PB=4 STEPS=5 TSTEPS=3
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
MODELS="gpt pixel-cumsum pixel-attn pixel-attn-wide"
TRAIN="$DENO run -A .devcarry/train_step.js"
TORCH="$PY bench/torch_reference.py --lmpipe-config $OUT/model_config.jsonl --device cuda --no-cuda $NOCUDA"

# est NAME: the H200 estimate of a part in seconds (process start, first step, timed steps), from the
# 2026-12-04 runs: the small parts took 6-11 s and their PyTorch parts 10-14 s (pixel-attn small, batch 4:
# first step 3.4 s, then ~117 ms/step), gpt study at batch 4 35 s (a 23 s first step); the other study
# parts are scaled from the morning's slower kernels by training FLOPs per token and are generous.
est() {
  case $1 in
    gpt_small_*) echo 12 ;; pixel-cumsum_small_* | pixel-attn_small_*) echo 9 ;;
    pixel-attn-wide_small_*) echo 16 ;; torch_*_small) echo 15 ;;
    gpt_study_*) echo 35 ;; pixel-cumsum_study_* | pixel-attn_study_*) echo 30 ;;
    pixel-attn-wide_study_*) echo 80 ;; torch_*_study) echo 15 ;;
    *) echo 10 ;; # tiny (dry run)
  esac
}

plan() {
  [ $dry = 1 ] || part unpack 5 bash -c \
    'for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; xz -dc .devcarry/deno.xz > /tmp/deno && chmod +x /tmp/deno'
  part gemm 25 $DENO run -A .devcarry/gemm.js --sizes "$SIZES" --seconds "$SECS"
  part torch_mm 15 $PY bench/gpu/torch_matmul.py --device "$([ $dry = 1 ] && echo cpu || echo cuda)" \
    --sizes "$SIZES" --dtypes fp32,f16 --seconds "$SECS"
  # first tier: every model at small (tiny in a dry run), lmpipe fp32 and mixed, PyTorch fp32 and bf16
  local m b
  for m in $MODELS; do
    b=$PB && [ $m = gpt ] && b=$GB
    for prec in fp32 mixed; do
      part "${m}_${P1}_$prec" "$(est "${m}_${P1}_$prec")" \
        $TRAIN --model $m --preset $P1 --batch-size $b --steps $STEPS --precision $prec
    done
    part "torch_${m}_$P1" "$(est "torch_${m}_$P1")" \
      $TORCH --model $m --preset $P1 --batch $b --steps $TSTEPS --warmup-steps 2 --precision fp32,bf16
  done
  part "host_gpt_$P1" 12 $DENO run -A .devcarry/webgpu_host.js --model gpt --preset $P1 --batch-size $GB \
    --steps 3 --json
  part "host_pixel-attn_$P1" 12 $DENO run -A .devcarry/webgpu_host.js --model pixel-attn --preset $P1 \
    --batch-size $PB --steps 3 --json
  part "replay_gpt_$P1" 25 $DENO run -A .devcarry/webgpu_replay.js --model gpt --preset $P1 --batch-size $GB \
    --steps 10 --rounds 1 --json
  part "replay_pixel-attn_$P1" 25 $DENO run -A .devcarry/webgpu_replay.js --model pixel-attn --preset $P1 \
    --batch-size $PB --steps 10 --rounds 1 --json
  part "gpt_${P1}_fp32_stock" "$(est "gpt_${P1}_fp32_stock")" \
    $TRAIN --model gpt --preset $P1 --batch-size $GB --steps $STEPS --matmul stock
  part audit_gpt 12 $DENO run -A .devcarry/webgpu_audit.js --model gpt --preset $P1 --batch-size $GB \
    --gpu h200 --measure --json
  # second tier: the study presets (gpt batch 4, the image models batch 1), fp32 first, then mixed
  if [ $dry = 1 ]; then # llvmpipe would take minutes per step: check PyTorch's models against lmpipe's only
    for m in $MODELS; do part "torch_params_${m}_study" 5 $TORCH --model $m --preset study --params-only; done
    return
  fi
  # replays first: the measurement the last H200 run could not make (docs/gpu.md, "Recorded steps, replayed")
  part replay_gpt_study 45 $DENO run -A .devcarry/webgpu_replay.js --model gpt --preset study --batch-size 4 \
    --steps 8 --rounds 1 --json
  part torch_gpt_study "$(est torch_gpt_study)" \
    $TORCH --model gpt --preset study --batch 4 --steps 2 --warmup-steps 1 --precision fp32,bf16
  # the study's micro-batches (gpt 12, the image models 8): does a step fit the card, and its peak memory
  part gpt_study_micro_fp32 45 $TRAIN --model gpt --preset study --batch-size 12 --steps 1 --precision fp32
  part pixel-attn_study_micro_fp32 60 $TRAIN --model pixel-attn --preset study --batch-size 8 --steps 1 \
    --precision fp32
  for m in $MODELS; do
    b=1 && [ $m = gpt ] && b=4
    part "${m}_study_fp32" "$(est "${m}_study_fp32")" \
      $TRAIN --model $m --preset study --batch-size $b --steps 1 --precision fp32
    [ $m = gpt ] || part "torch_${m}_study" "$(est "torch_${m}_study")" \
      $TORCH --model $m --preset study --batch $b --steps 2 --warmup-steps 1 --precision fp32,bf16
  done
  for m in $MODELS; do
    b=1 && [ $m = gpt ] && b=4
    part "${m}_study_mixed" "$(est "${m}_study_mixed")" \
      $TRAIN --model $m --preset study --batch-size $b --steps 1 --precision mixed
  done
}

echo "run_all: plan (estimated seconds on an H200$([ $dry = 1 ] && echo "; a dry run takes longer"), budget" \
  "$BUDGET s):" >&2
phase=plan planned=0
plan
[ $plan_only = 1 ] && exit 0
mkdir -p "$OUT"
cp .devcarry/model_config.jsonl "$OUT/model_config.jsonl"
[ $dry = 1 ] || (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/nvidia_smi.txt") 2>/dev/null
phase=run
plan

adapter=$(grep -ho '"device":"[^"]*"' "$OUT/gemm.jsonl" 2>/dev/null | head -1 | cut -d'"' -f4)
gpu=$(cat "$OUT/nvidia_smi.txt" 2>/dev/null || echo "none (dry run)")
printf '{"bench":"meta","date":"%s","gpu":"%s","adapter":"%s","mode":"%s","budget_s":%d,"planned_s":%d,"total_s":%d}\n' \
  "$(date -u +%FT%TZ)" "$gpu" "$adapter" "$([ $dry = 1 ] && echo dry-run || echo full)" "$BUDGET" "$planned" \
  $(($(date +%s) - start)) > "$OUT/meta.jsonl"
"$PY" bench/gpu/report.py "$OUT" > "$OUT/gpu_results.md.tmp" && mv "$OUT/gpu_results.md.tmp" "$OUT/gpu_results.md"
cat "$OUT/gpu_results.md"
echo "run_all: results in $OUT ($(($(date +%s) - start)) s)" >&2
