#!/usr/bin/env bash
# Where a webgpu training step's time goes on a GPU node, in about three minutes: the fixed cost of a
# host read in Deno's WebGPU (bench/gpu/sync_latency.ts), GEMM GFLOP/s with the sync amortised
# (bench/gpu/gemm.ts), the measured dispatch audit (every dispatch timed on the GPU) of gpt small at batch 8
# and pixel-attn small at batch 4, the host-side split of a gpt small step (bench/webgpu_host.ts), and the
# webgpu kernel tests on the real adapter. Results in $OUT (JSON lines and logs).
# Needs what `bash bench/gpu/prepare.sh bench/gpu/sync_latency.ts bench/gpu/gemm.ts bench/webgpu_audit.ts
# bench/webgpu_host.ts tests/webgpu_matmul_test.ts tests/webgpu_kernels_test.ts tests/attention_test.ts
# tests/webgpu_conv_test.ts tests/webgpu_layers_test.ts` puts in .gl/ and .devcarry/.
#   on the node (device tool, carry [".gl", ".devcarry"]):  bash bench/gpu/diagnose.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lmpipe-diagnose-$$}"
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
xz -dc .devcarry/deno.xz > /tmp/deno && chmod +x /tmp/deno
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json NO_COLOR=1
D="/tmp/deno run -A"
step() { # NAME TIMEOUT CMD...: stdout to $OUT/diag.jsonl, stderr to $OUT/diag.log
  local name=$1 secs=$2 t0=$SECONDS
  shift 2
  echo "== $name" >> "$OUT/diag.log"
  timeout -k 5 "$secs" "$@" >> "$OUT/diag.jsonl" 2>> "$OUT/diag.log"
  echo "diagnose: $name exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/diag.log" >&2
}
step sync 40 $D .devcarry/sync_latency.js --reps 20
step gemm 60 $D .devcarry/gemm.js --sizes 1024,2048,4096 --seconds 1
step audit_gpt 60 $D .devcarry/webgpu_audit.js --model gpt --preset small --batch-size 8 --gpu h200 --measure --json
step audit_pixel 60 $D .devcarry/webgpu_audit.js --model pixel-attn --preset small --batch-size 4 --gpu h200 \
  --measure --json
step host 60 $D .devcarry/webgpu_host.js --preset small --batch-size 8 --steps 5 --ab --json
tests=()
for t in webgpu_matmul_test webgpu_kernels_test attention_test webgpu_conv_test webgpu_layers_test; do
  [ -s ".devcarry/$t.js" ] && tests+=(".devcarry/$t.js")
done
echo "== tests" >> "$OUT/diag.log"
t0=$SECONDS
timeout -k 5 150 /tmp/deno test -A "${tests[@]}" > "$OUT/tests.log" 2>&1
echo "diagnose: tests exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/diag.log" >&2
tail -5 "$OUT/tests.log" >&2
