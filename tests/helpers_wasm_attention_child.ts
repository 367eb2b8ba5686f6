// Child process for tests/wasm_attention_test.ts: starts wasm with $LMPIPE_WASM_THREADS threads (fixed per
// process) and runs lmpipe's wasm attention kernel (lib/tensor/ops/attention/wasm.ts) on gpt-sized and odd
// shapes. Prints one JSON line: the threads used, rows (heads) taken by worker threads, the largest error
// against float64 and a checksum of all output bits (equal across thread counts).
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { attentionFromQkvWasm } from "../lib/tensor/ops/attention/wasm.ts";
import { wasmKernelStats, wasmKernelThreads } from "../lib/tensor/wasm/kernels.ts";
import { randomArray } from "../lib/tensor/testing.ts";
import { ATTENTION_SHAPES, attentionQkvRef, relErr } from "./helpers_attention_ref.ts";

const info = await initBackend("wasm", { quiet: true });
let hash = 2166136261;
let err = 0;
for (const [B, T, H, D] of ATTENTION_SHAPES) {
  const x = randomArray(B * T * 3 * H * D, B * 131 + T * 17 + D);
  const y = tf.tidy(() => attentionFromQkvWasm(tf.tensor3d(x, [B, T, 3 * H * D]), H, 1 / Math.sqrt(D)));
  const got = y.dataSync() as Float32Array;
  y.dispose();
  for (const b of new Uint8Array(got.buffer, got.byteOffset, got.byteLength)) {
    hash = Math.imul(hash ^ b, 16777619) >>> 0;
  }
  err = Math.max(err, relErr(got, attentionQkvRef(x, B, T, H, D, 1 / Math.sqrt(D))));
}
console.log(JSON.stringify({
  backend: info.device,
  threads: wasmKernelThreads(),
  rowsOnWorkers: wasmKernelStats().rowsOnWorkers,
  err,
  hash,
}));
