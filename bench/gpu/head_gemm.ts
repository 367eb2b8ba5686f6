// The tied output head's three GEMMs for one chunk of rows (gpt `small`: 333 rows of 384 against a
// 50304-word vocabulary), in the layout lmpipe uses and in the alternatives, each timed alone on
// webgpu: on an H200 the forward and weight-gradient GEMMs (whose output is 333 or 384 rows x 50304)
// ran at ~3.5 TFLOP/s while the input gradient (K = 50304 into 333 x 384) reached 14, whatever the tile
// (bench/gpu/shapes.ts --plans). This says whether the wide output, the wide B operand or the row tail is
// to blame. One JSON line per variant.
//
//   deno run -A bench/gpu/head_gemm.ts [--rows 333] [--embd 384] [--vocab 50304] [--ms 150]
import { num, parseFlags } from "../../lib/flags.ts";
import { initBackend, tf } from "../../lib/tensor/backend.ts";
import { msPerCall } from "../webgpu_step.ts";

const cmd = "bench/gpu/head_gemm";
const p = parseFlags(cmd, Deno.args, {
  rows: { type: "string" },
  embd: { type: "string" },
  vocab: { type: "string" },
  ms: { type: "string" },
});
const R = num(p, cmd, "rows", 333, { min: 1, integer: true });
const C = num(p, cmd, "embd", 384, { min: 1, integer: true });
const V = num(p, cmd, "vocab", 50304, { min: 1, integer: true });
const batchMs = num(p, cmd, "ms", 150, { min: 1 });
const info = await initBackend("webgpu", { quiet: true });

const h = tf.randomUniform([R, C], -1, 1), h128 = tf.randomUniform([Math.ceil(R / 128) * 128, C], -1, 1);
const W = tf.randomUniform([V, C], -1, 1), Wt = tf.transpose(W);
const dL = tf.randomUniform([R, V], -1, 1);
const pieces = 12, width = Math.ceil(V / pieces);
const WtPieces = Array.from(
  { length: pieces },
  (_, j) => tf.slice(Wt, [0, j * width], [C, Math.min(width, V - j * width)]),
);
const flops = 2 * R * C * V;
const variants: [string, number, () => tf.Tensor | tf.Tensor[]][] = [
  ["forward h[R,C] . Wt[C,V] (lmpipe today)", flops, () => tf.matMul(h, Wt)],
  ["forward h[R,C] . W[V,C]^T", flops, () => tf.matMul(h, W, false, true)],
  ["forward W[V,C] . h[R,C]^T (logits transposed)", flops, () => tf.matMul(W, h, false, true)],
  [`forward, rows padded to ${h128.shape[0]}`, 2 * h128.shape[0] * C * V, () => tf.matMul(h128, Wt)],
  [
    `forward in ${pieces} column pieces (separate B and outputs)`,
    flops,
    () => WtPieces.map((w) => tf.matMul(h, w)),
  ],
  ["weight grad h^T[C,R] . dL[R,V] (lmpipe today)", flops, () => tf.matMul(h, dL, true, false)],
  ["weight grad dL^T[V,R] . h[R,C] (transposed)", flops, () => tf.matMul(dL, h, true, false)],
  ["input grad dL[R,V] . W[V,C] (lmpipe today)", flops, () => tf.matMul(dL, W)],
];
for (const [what, f, run] of variants) {
  const ms = await msPerCall(() => tf.dispose(run()), batchMs);
  console.log(JSON.stringify({
    bench: "head_gemm",
    what,
    rows: R,
    embd: C,
    vocab: V,
    ms: +ms.toFixed(4),
    tflops: +(f / ms / 1e9).toFixed(2),
    device: info.device,
  }));
}
tf.dispose([h, h128, W, Wt, dL, ...WtPieces]);
