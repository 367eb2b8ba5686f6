// Child process for tests/wasm_kernels_test.ts: starts wasm with $LMPIPE_WASM_THREADS threads (fixed
// per process) and runs lmpipe's wasm kernels (lib/tensor/wasm/kernels.ts: softmax, tanh, AdamW, the sum
// of squares, LayerNorm, GELU, the image norm) on inputs with every length remainder, special values and
// sizes big enough for the worker threads. Prints one JSON line: the threads used, rows taken by workers,
// the largest errors against float64 loops, whether AdamW equals its op chain bit for bit, and a checksum
// of all output bits (equal across thread counts).
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { softmaxRows, softmaxStatsAtTargets } from "../lib/tensor/ops/softmax_rows/mod.ts";
import { wasmKernelStats, wasmKernelThreads, wasmRelaxedSimd } from "../lib/tensor/wasm/kernels.ts";
import { AdamW, sumOfSquares } from "../lib/optim.ts";
import { layerNorm } from "../lib/tensor/ops/layer_norm/mod.ts";
import { gelu } from "../lib/tensor/ops/gelu/mod.ts";
import { maxRelErr, randomArray } from "../lib/tensor/testing.ts";
import { imageNormRelu } from "../lib/tensor/ops/image_norm/mod.ts";
import { imageNormRef } from "./helpers_image_norm.ts";

const info = await initBackend("wasm", { quiet: true });
let hash = 2166136261;
const mix = (a: Float32Array) => {
  for (const b of new Uint8Array(a.buffer, a.byteOffset, a.byteLength)) {
    hash = Math.imul(hash ^ b, 16777619) >>> 0;
  }
};

// Softmax rows: every row-length remainder, long rows, rows enough for the workers; and evaluation's
// variant without e (softmaxStatsAtTargets), which must give the same m and s bit for bit, the target
// logits, and leave x alone.
const shapes = [[1, 1], [3, 5], [4, 6], [2, 7], [5, 8], [6, 259], [2, 1024], [64, 4099], [3, 50304]];
let eErr = 0, sErr = 0, mErr = 0, statsSame = true;
for (const [rows, cols] of shapes) {
  const x = randomArray(rows * cols, rows * 7919 + cols).map((v, i) => v * (i % 3 === 0 ? 40 : 8));
  const xb = tf.tensor2d(x, [rows, cols]);
  const { e, m, s } = softmaxRows(xb);
  const [ev, mv, sv] = [e.dataSync() as Float32Array, m.dataSync(), s.dataSync() as Float32Array];
  mix(ev), mix(sv);
  const t = Array.from({ length: rows }, (_, r) => (r * 7 + 3) % cols);
  const stats = softmaxStatsAtTargets(xb, tf.tensor1d(t, "int32"));
  const same = (a: ArrayLike<number>, b: ArrayLike<number>) =>
    Array.from(a).every((v, i) => Object.is(v, b[i]));
  statsSame &&= same(stats.m.dataSync(), mv) && same(stats.s.dataSync(), sv) && same(xb.dataSync(), x) &&
    same(stats.xt.dataSync(), t.map((c, r) => x[r * cols + c]));
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * cols, (r + 1) * cols);
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
    mErr = Math.max(mErr, Math.abs(mv[r] - max));
    let sum = 0;
    for (let j = 0; j < cols; j++) {
      const want = Math.exp(Math.fround(row[j] - max)); // x - max rounds to float32 on every path
      sum += want;
      if (want > 1e-30) eErr = Math.max(eErr, Math.abs(ev[r * cols + j] - want) / want);
    }
    sErr = Math.max(sErr, Math.abs(sv[r] - sum) / sum);
  }
}
// A NaN makes its row's sum NaN and leaves the other rows alone; -Infinity gives 0. The last row: x - max
// of -87.5 gives exp's denormal, -88.5 and below 0.
const special = softmaxRows(
  tf.tensor2d([1, NaN, 3, 2, 0, -Infinity, 5, 1, 2, 3, 4, 5, 0, -87.5, -88.5, -1000], [4, 4]),
);

// tanh: lengths with every remainder, both branches and their boundary, special values.
let tanhErr = 0;
for (const n of [1, 2, 3, 5, 8, 8195, 100_003]) {
  const x = randomArray(n, n).map((v, i) => v * [0.7, 3, 12, 0.001][i % 4]);
  const y = tf.tanh(tf.tensor1d(x)).dataSync() as Float32Array;
  mix(y);
  for (let i = 0; i < n; i++) {
    const want = Math.tanh(x[i]);
    tanhErr = Math.max(tanhErr, Math.abs(y[i] - want) / Math.max(Math.abs(want), 1e-30));
  }
}
const tanhSpecial = Array.from(
  tf.tanh(tf.tensor1d([NaN, -0, 0, Infinity, -Infinity, 0.625, -0.625, 50, -50])).dataSync(),
)
  .map((v) => Object.is(v, -0) ? "-0" : String(v));

// AdamW: four updates (with a loss-scale unscale factor once, a parameter without decay) of parameters
// of every remainder and two big enough for the workers, with the kernel and with lib/optim.ts's op
// chain: the kernel must be bit-identical to the chain.
function adamW(fused: boolean): Float32Array[] {
  const sizes = [1, 3, 4, 9, 8192 + 5, 100_000];
  const params = new Map(sizes.map((n, i) => [`w${i}`, tf.variable(tf.tensor1d(randomArray(n, 7 + i)))]));
  const opt = new AdamW(params, {
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0.1,
    decays: (name) => name !== "w2",
    fused,
  });
  for (let step = 0; step < 4; step++) {
    const grads = new Map(sizes.map((n, i) => [`w${i}`, tf.tensor1d(randomArray(n, 50 * step + i))]));
    opt.step(grads, 3e-3 * (step + 1), step === 2 ? 1 / 1024 : 1);
    tf.dispose([...grads.values()]);
  }
  const out = [...params.values(), ...opt.m.values(), ...opt.v.values()].map((t) =>
    t.dataSync() as Float32Array
  );
  opt.dispose();
  tf.dispose([...params.values()]);
  return out;
}
const adamWKernel = adamW(true), adamWChain = adamW(false);
const sameBits = (a: Float32Array, b: Float32Array) =>
  a.length === b.length && new Uint32Array(a.buffer).every((v, i) => v === new Uint32Array(b.buffer)[i]);
const adamWIdentical = adamWKernel.every((a, i) => sameBits(a, adamWChain[i]));
adamWKernel.forEach(mix);

let sumSquaresSpecial: string[] = [];
// The gradient norm's sum of squares (LmpipeSumSquares) over tensors of every remainder, an empty one, and
// two big enough for the workers, with a scale: its error against float64 (of the float32 products the op
// chain squares), its distance from the op chain, and inf / NaN / float32 overflow.
let sumSquaresErr = 0, sumSquaresChainErr = 0;
{
  const sizes = [1, 3, 0, 4, 9, 8192 + 5, 100_000, 300_001];
  const arrays = sizes.map((n, i) => randomArray(n, 60 + i).map((v) => v * (1 + i)));
  const ts = arrays.map((a) => tf.tensor1d(a));
  for (const scale of [1, 1 / 3]) {
    let want = 0;
    for (const a of arrays) for (const v of a) want += Math.fround(v * Math.fround(scale)) ** 2;
    const got = sumOfSquares(ts, scale).dataSync()[0], chain = sumOfSquares(ts, scale, false).dataSync()[0];
    sumSquaresErr = Math.max(sumSquaresErr, Math.abs(got - want) / want);
    sumSquaresChainErr = Math.max(sumSquaresChainErr, Math.abs(got - chain) / want);
    mix(new Float32Array([got]));
  }
  const one = (values: number[]) => String(sumOfSquares([...ts, tf.tensor1d(values)]).dataSync()[0]);
  sumSquaresSpecial = [one([1, Infinity]), one([NaN, 2]), one([-Infinity, NaN]), one([3e19, 3e19])];
}

// LayerNorm forward and gradients over rows enough for the workers.
{
  const [rows, C] = [2048, 128];
  const x = tf.tensor2d(randomArray(rows * C, 31), [rows, C]),
    dy = tf.tensor2d(randomArray(rows * C, 32), [rows, C]);
  const w = tf.tensor1d(randomArray(C, 33)), b = tf.tensor1d(randomArray(C, 34));
  const f = (xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) =>
    tf.sum(tf.mul(layerNorm(xi, wi as tf.Tensor1D, bi as tf.Tensor1D), dy));
  mix(layerNorm(x, w, b).dataSync() as Float32Array);
  for (const g of tf.grads(f)([x, w, b])) mix(g.dataSync() as Float32Array);
}

// The image norm + ReLU (forward and its three gradients), images enough for the workers; its largest
// error against float64 (tests/helpers_image_norm.ts).
let imageNormErr = 0;
{
  const shape = [16, 20, 20, 24], n = 16 * 20 * 20 * 24;
  const x = randomArray(n, 35).map((v, i) => 2 * v + (i % 7)), dy = randomArray(n, 36);
  const g = randomArray(24, 37).map((v) => 1 + 0.5 * v), b = randomArray(24, 38).map((v) => 0.3 * v);
  const f = (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => imageNormRelu(a as tf.Tensor4D, gg, bb, true);
  const args = [tf.tensor4d(x, shape as [number, number, number, number]), tf.tensor1d(g), tf.tensor1d(b)];
  const got = [
    f(args[0], args[1], args[2]),
    ...tf.grads(f)(args, tf.tensor4d(dy, shape as [number, number, number, number])),
  ].map((t) => t.dataSync() as Float32Array);
  got.forEach(mix);
  const want = imageNormRef(x, g, b, dy, shape, true);
  [want.y, want.dx, want.dg, want.db].forEach((w, i) =>
    imageNormErr = Math.max(imageNormErr, maxRelErr(got[i], w))
  );
}

// GELU forward and gradient, big enough for the workers.
{
  const x = tf.tensor1d(randomArray(200_003, 41).map((v) => v * 4)),
    dy = tf.tensor1d(randomArray(200_003, 42));
  mix(gelu(x).dataSync() as Float32Array);
  mix(tf.grad((a: tf.Tensor) => tf.sum(tf.mul(gelu(a), dy)))(x).dataSync() as Float32Array);
}

// Workers take rows of big jobs; the main thread takes rows too, so give them a few chances.
const big = tf.tensor2d(randomArray(256 * 4096, 5), [256, 4096]);
for (let i = 0; i < 50 && wasmKernelStats().rowsOnWorkers === 0; i++) {
  tf.dispose(Object.values(softmaxRows(big)));
}

console.log(JSON.stringify({
  backend: info.device,
  threads: wasmKernelThreads(),
  relaxed: wasmRelaxedSimd(),
  rowsOnWorkers: wasmKernelStats().rowsOnWorkers,
  eErr,
  sErr,
  mErr,
  statsSame,
  tanhErr,
  tanhSpecial,
  adamWIdentical,
  sumSquaresErr,
  sumSquaresChainErr,
  sumSquaresSpecial,
  imageNormErr,
  hash,
  specialS: Array.from(special.s.dataSync()).map(String),
  specialE: Array.from(special.e.dataSync()).slice(4, 8),
  specialTiny: Array.from(special.e.dataSync()).slice(12, 16),
}));
