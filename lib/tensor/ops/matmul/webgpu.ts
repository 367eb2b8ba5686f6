// lmpipe's own WGSL GEMM for the webgpu backend, registered as TF.js's BatchMatMul and _FusedMatMul
// kernels (and as LmpipeMatMul, which adds lmpipe's epilogues), because TF.js 4.22's stock matMul runs
// at a few percent of a big GPU's fp32 rate (docs/gpu.md). Design, after the published fast WebGPU and
// CUDA SGEMMs:
//   - a workgroup owns a BM x BN block of C and walks K in steps of BK: it copies an A tile (BM x BK)
//     and a B tile (BK x BN) into workgroup memory (neighbouring threads read neighbouring addresses of
//     whichever layout the operand has, so every transpose is coalesced), stored k-major so that each
//     thread then reads its TM rows of A and TN columns of B as vec4s; the next tiles are fetched into
//     registers while the current ones are multiplied;
//   - each thread keeps a TM x TN block of C in registers (vec4 accumulators, f32), so every value
//     read from workgroup memory feeds TM or TN multiply-adds;
//   - tiles: 128x128 (BK 8, 8x8 per thread, 256 threads), 64x64 (BK 16, 4x4, 256 threads) and 32x32
//     (BK 16, 4x4, 64 threads), chosen by planMatMul from timings on an H200; split-K for a long K
//     into a small output (the tied head's input gradient, K = 50304): S workgroups per block each
//     sum a K range into a partial buffer, and a second dispatch adds the S partials in order
//     (deterministic, no atomics) and applies the epilogue;
//   - one shader variant per (tile, transposeA, transposeB, epilogue), compiled once per device
//     (cachedPipeline); shapes, strides and offsets are uniforms, so a new shape compiles nothing;
//   - batch broadcasting over up to 3 outer dimensions by per-dimension strides (0 where broadcast);
//   - epilogue: C = act(scale * A.B + bias) + residual with TF.js's fused activations (relu, relu6,
//     elu, sigmoid, leakyrelu, prelu) plus GELU (tanh form, lib/tensor/gelu.ts's constants);
//   - an output or input over maxStorageBufferBindingSize is computed in row blocks, each binding
//     only the byte range it touches (buffers may be larger than one binding), instead of garbage.
// Anything else (non-float32 inputs, more than 3 outer dimensions, a bias not of N or 1 values) runs
// TF.js's stock kernel. LMPIPE_WEBGPU_MATMUL=0 (or setOwnMatMulEnabled(false)) runs the stock
// kernel always; lib/tensor/kernel_choice.ts reports which one runs.
import * as tf from "@tensorflow/tfjs-core";
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { webgpuMaxTensorBytes } from "../../webgpu/limits.ts";
import { GELU_C, GELU_K } from "../../kernel_names.ts";
import { cachedPipeline, workgroupGrid } from "../../webgpu/kernels.ts";
import { switchOn } from "../../env_switch.ts";

// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;
type KernelFn = (
  args: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
) => TensorInfo | TensorInfo[];

/** lmpipe's matMul with epilogue, for callers that want GELU, a residual or a scale fused in. */
export const LMPIPE_MATMUL_KERNEL = "LmpipeMatMul";

/** Streaming multiprocessors of an H100/H200 (the GPUs the tile choice is sized for). */
export const SMS = 132;
/** Workgroups that keep such a GPU busy: 2 per SM. */
export const FILL_WORKGROUPS = 2 * SMS;

/** Threads of a split-K reduction workgroup. */
const REDUCE_THREADS = 256;

/** A block tile: BM x BN outputs per workgroup, BK deep, TM x TN outputs per thread. */
export interface Tile {
  name: string;
  BM: number;
  BN: number;
  BK: number;
  TM: number;
  TN: number;
}
export const TILES: Record<"large" | "medium" | "small", Tile> = {
  large: { name: "large", BM: 128, BN: 128, BK: 8, TM: 8, TN: 8 }, // 256 threads
  medium: { name: "medium", BM: 64, BN: 64, BK: 16, TM: 4, TN: 4 }, // 256 threads
  small: { name: "small", BM: 32, BN: 32, BK: 16, TM: 4, TN: 4 }, // 64 threads
};

/** Threads of a workgroup of `t`: one per TM x TN block of outputs. */
export function tileThreads(t: Tile): number {
  return (t.BM / t.TM) * (t.BN / t.TN);
}

export type Activation = "linear" | "relu" | "relu6" | "elu" | "sigmoid" | "leakyrelu" | "prelu" | "gelu";
const ACTIVATIONS = new Set<string>([
  "linear",
  "relu",
  "relu6",
  "elu",
  "sigmoid",
  "leakyrelu",
  "prelu",
  "gelu",
]);

/** What is applied to each output: act(scale * acc + bias) + residual. */
interface Epilogue {
  scale: number;
  bias?: TensorInfo;
  activation: Activation;
  prelu?: TensorInfo;
  leakyAlpha: number;
  residual?: TensorInfo;
}

// --- on/off ------------------------------------------------------------------------------------------
let enabled = switchOn("LMPIPE_WEBGPU_MATMUL");

/** Turns lmpipe's webgpu matMul on or off for this process (off: TF.js's stock kernel runs). */
export function setOwnMatMulEnabled(on: boolean): void {
  enabled = on;
}

/** Whether BatchMatMul / _FusedMatMul on webgpu run lmpipe's GEMM (when the inputs allow it). */
export function ownMatMulEnabled(): boolean {
  return enabled;
}

// For tests: force a tile and a split-K factor (null: chosen by shape).
let forced: { tile?: Tile; splits?: number } | null = null;
/** For tests: use `tile` and `splits` (1: no split-K) for every matMul; null restores the choice by shape. */
export function setMatMulPlanForTests(plan: { tile?: Tile; splits?: number } | null): void {
  forced = plan;
}

// --- shaders -----------------------------------------------------------------------------------------
interface Variant {
  tile: Tile;
  transA: boolean;
  transB: boolean;
  /** Writes raw partial sums (split-K); the epilogue runs in the reduction pass. */
  partial: boolean;
  bias: boolean;
  activation: Activation;
  residual: boolean;
}

// Our uniforms, after recordAndSubmit's NaN, Infinity and (shape, stride) per bound tensor (all bound
// as 1-D views, so one i32 each).
const OWN_UNIFORMS = `M: i32, N: i32, K: i32, kChunk: i32, splits: i32, batch: i32, od1: i32, od2: i32,
  as0: i32, as1: i32, as2: i32, bs0: i32, bs1: i32, bs2: i32, aBase: i32, bBase: i32, cBase: i32, rBase: i32,
  pStride: i32, lda: i32, ldb: i32, scale: f32, leak: f32, biasStride: i32, preluStride: i32,`;

function tfjsFields(k: number): string {
  return "nanValue: f32, infValue: f32, " +
    Array.from({ length: k }, (_, i) => `shape${i}: i32, stride${i}: i32,`).join(" ");
}

/** The extra bindings after C, A, B (or after C, P in the reduction): bias, prelu, residual. */
function epilogueBindings(v: Pick<Variant, "bias" | "activation" | "residual">, first: number): string[] {
  const out: string[] = [];
  let i = first;
  if (v.bias) out.push(`@group(0) @binding(${i++}) var<storage, read> bias: array<f32>;`);
  if (v.activation === "prelu") out.push(`@group(0) @binding(${i++}) var<storage, read> preluW: array<f32>;`);
  if (v.residual) out.push(`@group(0) @binding(${i++}) var<storage, read> residual: array<f32>;`);
  return out;
}

/** epi(v, col, o): act(scale * v + bias[col]) + residual[o], o the output's index within this dispatch. */
function epilogueFn(v: Pick<Variant, "bias" | "activation" | "residual">): string {
  const act: Record<Activation, string> = {
    linear: "",
    relu: "x = select(x, 0.0, x < 0.0);",
    relu6: "x = select(min(x, 6.0), 0.0, x < 0.0);",
    elu: "if (x < 0.0) { x = exp(x) - 1.0; }",
    sigmoid: "x = 1.0 / (1.0 + exp(-x));",
    leakyrelu: "if (x < 0.0) { x = u.leak * x; }",
    prelu: "if (x < 0.0) { x = preluW[col * u32(u.preluStride)] * x; }",
    // 0.5 x (1 + tanh(k (x + c x^3))), tanh as sign(y) (1 - e) / (1 + e) with e = exp(-2 |y|) (no overflow)
    gelu: `let y = ${GELU_K} * (x + ${GELU_C} * x * x * x);
    let e = exp(-2.0 * abs(y));
    let th = sign(y) * (1.0 - e) / (1.0 + e);
    x = 0.5 * x * (1.0 + th);`,
  };
  return `
fn epi(v: f32, col: u32, o: u32) -> f32 {
  var x = v * u.scale;
  ${v.bias ? "x = x + bias[col * u32(u.biasStride)];" : ""}
  ${act[v.activation]}
  ${v.residual ? "x = x + residual[u32(u.rBase) + o];" : ""}
  return x;
}`;
}

function gemmBindingCount(v: Variant): number {
  if (v.partial) return 3;
  return 3 + (v.bias ? 1 : 0) + (v.activation === "prelu" ? 1 : 0) + (v.residual ? 1 : 0);
}

function gemmShader(v: Variant): string {
  const { BM, BN, BK, TM, TN } = v.tile;
  const THREADS = tileThreads(v.tile);
  const WX = BN / TN; // threads along N
  const aLoads = (BM * BK) / THREADS, bLoads = (BK * BN) / THREADS;
  const n = gemmBindingCount(v);
  // Global -> workgroup memory, k-major (As[k][m], Bs[k][n]); consecutive threads take consecutive
  // addresses of the operand's own layout.
  // fetchA(i, kt): this thread's i-th value of the A tile at k = kt into register ra<i> (0 outside);
  // storeA(i): ra<i> into workgroup memory. Likewise for B.
  const aSlot = (i: number) => {
    const idx = `lid + ${i * THREADS}u`;
    return v.transA ? [`(${idx}) % ${BM}u`, `(${idx}) / ${BM}u`] : [`(${idx}) / ${BK}u`, `(${idx}) % ${BK}u`];
  };
  const bSlot = (i: number) => {
    const idx = `lid + ${i * THREADS}u`;
    return v.transB ? [`(${idx}) / ${BK}u`, `(${idx}) % ${BK}u`] : [`(${idx}) % ${BN}u`, `(${idx}) / ${BN}u`];
  };
  const fetchA = (i: number, kt: string) => {
    const [mm, kk] = aSlot(i);
    const addr = v.transA ? "aOff + gk * lda + gm" : "aOff + gm * lda + gk";
    return `{ let gm = row0 + ${mm}; let gk = ${kt} + ${kk}; ra${i} = 0.0; if (gm < M && gk < kEnd) { ra${i} = A[${addr}]; } }`;
  };
  const fetchB = (i: number, kt: string) => {
    const [nn, kk] = bSlot(i);
    const addr = v.transB ? "bOff + gn * ldb + gk" : "bOff + gk * ldb + gn";
    return `{ let gn = col0 + ${nn}; let gk = ${kt} + ${kk}; rb${i} = 0.0; if (gn < N && gk < kEnd) { rb${i} = B[${addr}]; } }`;
  };
  const storeA = (i: number) => {
    const [mm, kk] = aSlot(i);
    return `{ let mm = ${mm}; As[(${kk}) * ${BM / 4}u + mm / 4u][mm % 4u] = ra${i}; }`;
  };
  const storeB = (i: number) => {
    const [nn, kk] = bSlot(i);
    return `{ let nn = ${nn}; Bs[(${kk}) * ${BN / 4}u + nn / 4u][nn % 4u] = rb${i}; }`;
  };
  const each = (n: number, f: (i: number) => string) =>
    Array.from({ length: n }, (_, i) => f(i)).join("\n    ");
  const fetchTile = (kt: string) =>
    `${each(aLoads, (i) => fetchA(i, kt))}\n    ${each(bLoads, (i) => fetchB(i, kt))}`;
  const storeTile = `${each(aLoads, storeA)}\n    ${each(bLoads, storeB)}`;
  const TM4 = TM / 4, TN4 = TN / 4;
  const inner: string[] = [];
  for (let i = 0; i < TM4; i++) inner.push(`let a${i} = As[kk * ${BM / 4}u + ty * ${TM4}u + ${i}u];`);
  for (let j = 0; j < TN4; j++) inner.push(`let b${j} = Bs[kk * ${BN / 4}u + tx * ${TN4}u + ${j}u];`);
  for (let i = 0; i < TM4; i++) {
    for (let c = 0; c < 4; c++) {
      for (let j = 0; j < TN4; j++) {
        const r = (i * 4 + c) * TN4 + j;
        inner.push(`acc[${r}] = fma(vec4<f32>(a${i}[${c}]), b${j}, acc[${r}]);`);
      }
    }
  }
  const store: string[] = [];
  for (let r = 0; r < TM; r++) {
    store.push(`{ let gm = row0 + ty * ${TM}u + ${r}u; if (gm < M) {`);
    for (let j = 0; j < TN; j++) {
      const acc = `acc[${r * TN4 + (j >> 2)}][${j & 3}]`;
      store.push(`  { let gn = col0 + tx * ${TN}u + ${j}u; if (gn < N) {
    let o = batch * M * N + gm * N + gn;
    ${
        v.partial
          ? `C[u32(u.cBase) + s * u32(u.pStride) + o] = ${acc};`
          : `C[u32(u.cBase) + o] = epi(${acc}, gn, o);`
      }
  } }`);
    }
    store.push("} }");
  }
  return `
struct Uniforms { ${tfjsFields(n)} ${OWN_UNIFORMS} };
@group(0) @binding(0) var<storage, read_write> C: array<f32>;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
${v.partial ? "" : epilogueBindings(v, 3).join("\n")}
@group(0) @binding(${n}) var<uniform> u: Uniforms;
var<workgroup> As: array<vec4<f32>, ${(BK * BM) / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${(BK * BN) / 4}>;
${v.partial ? "" : epilogueFn(v)}

@compute @workgroup_size(${THREADS})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let M = u32(u.M); let N = u32(u.N); let K = u32(u.K);
  let lda = u32(u.lda); let ldb = u32(u.ldb);
  let S = u32(u.splits);
  let s = wid.z % S;
  let batch = wid.z / S;
  let od2 = u32(u.od2); let od1 = u32(u.od1);
  let i2 = batch % od2; let i1 = (batch / od2) % od1; let i0 = batch / (od2 * od1);
  let aOff = u32(u.aBase) + i0 * u32(u.as0) + i1 * u32(u.as1) + i2 * u32(u.as2);
  let bOff = u32(u.bBase) + i0 * u32(u.bs0) + i1 * u32(u.bs1) + i2 * u32(u.bs2);
  let row0 = wid.y * ${BM}u;
  let col0 = wid.x * ${BN}u;
  let tx = lid % ${WX}u;
  let ty = lid / ${WX}u;
  let kBegin = s * u32(u.kChunk);
  let kEnd = min(K, kBegin + u32(u.kChunk));
  var acc: array<vec4<f32>, ${TM4 * TN}>;
  ${Array.from({ length: aLoads }, (_, i) => `var ra${i}: f32;`).join(" ")}
  ${Array.from({ length: bLoads }, (_, i) => `var rb${i}: f32;`).join(" ")}
  // the first tile, then each step fetches the next tile into registers before computing on this one
  ${fetchTile("kBegin")}
  ${storeTile}
  workgroupBarrier();
  for (var k0 = kBegin; k0 < kEnd; k0 = k0 + ${BK}u) {
    ${fetchTile(`(k0 + ${BK}u)`)}
    for (var kk = 0u; kk < ${BK}u; kk = kk + 1u) {
      ${inner.join("\n      ")}
    }
    workgroupBarrier();
    ${storeTile}
    workgroupBarrier();
  }
  ${store.join("\n  ")}
}`;
}

/** Split-K's second pass: C[o] = epi(sum over s of P[s * pStride + o]), in the order s = 0, 1, ... */
function reduceShader(v: Variant): string {
  const n = 2 + (v.bias ? 1 : 0) + (v.activation === "prelu" ? 1 : 0) + (v.residual ? 1 : 0);
  return `
struct Uniforms { ${tfjsFields(n)} ${OWN_UNIFORMS} };
@group(0) @binding(0) var<storage, read_write> C: array<f32>;
@group(0) @binding(1) var<storage, read> P: array<f32>;
${epilogueBindings(v, 2).join("\n")}
@group(0) @binding(${n}) var<uniform> u: Uniforms;
${epilogueFn(v)}

@compute @workgroup_size(${REDUCE_THREADS})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let o = (wid.y * nwg.x + wid.x) * ${REDUCE_THREADS}u + lid;
  let total = u32(u.batch) * u32(u.M) * u32(u.N);
  if (o >= total) { return; }
  var sum = 0.0;
  for (var s = 0u; s < u32(u.splits); s = s + 1u) { sum = sum + P[s * u32(u.pStride) + o]; }
  C[u32(u.cBase) + o] = epi(sum, o % u32(u.N), o);
}`;
}

function variantKey(v: Variant, what: string): string {
  return `LmpipeMatMul_${what}_${v.tile.name}_${v.transA ? "T" : "N"}${v.transB ? "T" : "N"}_` +
    `${v.partial ? "partial" : `${v.bias ? "bias_" : ""}${v.activation}${v.residual ? "_res" : ""}`}`;
}

// --- binding byte ranges -----------------------------------------------------------------------------
// recordAndSubmit binds whole buffers; a TensorInfo carrying `lmpipeRange` is bound as that byte range
// of its buffer instead (how one large output is written in pieces, each within the binding limit).
type RangedInfo = TensorInfo & { lmpipeRange?: { offset: number; size: number } };
{
  // deno-lint-ignore no-explicit-any
  const proto = WebGPUBackend.prototype as any;
  if (!proto.__lmpipeRangedBinding) {
    const toBinding = proto.tensorToBinding;
    proto.tensorToBinding = function (this: GpuBackend, t: RangedInfo | undefined) {
      if (t?.lmpipeRange) {
        const buffer = this.tensorMap.get(t.dataId).resource as GPUBuffer;
        return { buffer, offset: t.lmpipeRange.offset, size: t.lmpipeRange.size };
      }
      return toBinding.call(this, t);
    };
    proto.__lmpipeRangedBinding = true;
  }
}

/**
 * A view of elements [start, start + count) of `t` for one dispatch: a whole-buffer view when that fits
 * the binding limit, else the byte range from `start` rounded down to the device's offset alignment.
 * Returns the view and `base`, the index of element `start` within it.
 */
function rangeView(
  backend: GpuBackend,
  t: TensorInfo,
  start: number,
  count: number,
  limit: number,
  what: string,
): { view: RangedInfo; base: number } {
  const total = tf.util.sizeFromShape(t.shape);
  if (total * 4 <= limit) {
    return { view: { dataId: t.dataId, shape: [total], dtype: "float32" }, base: start };
  }
  const align = (backend.device as GPUDevice).limits.minStorageBufferOffsetAlignment;
  const offset = Math.floor((start * 4) / align) * align;
  const size = Math.max(4, Math.ceil(((start + count) * 4 - offset) / 4) * 4);
  if (size > limit) {
    throw new Error(
      `${LMPIPE_MATMUL_KERNEL}: ${what} [${t.shape}] needs a ${
        (size / 2 ** 20).toFixed(1)
      } MiB piece in one ` +
        `binding, over this GPU's storage-buffer binding limit of ${(limit / 2 ** 20).toFixed(1)} MiB; ` +
        `use a smaller batch or split the operand`,
    );
  }
  return {
    view: { dataId: t.dataId, shape: [size / 4], dtype: "float32", lmpipeRange: { offset, size } },
    base: start - offset / 4,
  };
}

// --- programs (the shape recordAndSubmit reads; the class name labels timers, profiles and audits) ---
/** Cost of one dispatch, for bench/webgpu_audit.ts. */
export interface DispatchCost {
  flops: number;
  bytes: number;
}

class LmpipeMatMulProgram {
  outputShape: number[];
  size = false;
  workgroupSize: [number, number, number];
  constructor(
    readonly pipeline: GPUComputePipeline,
    readonly dispatch: [number, number, number],
    readonly cost: DispatchCost,
    outElements: number,
    threads: number,
  ) {
    this.outputShape = [outElements];
    this.workgroupSize = [threads, 1, 1];
  }
}
class LmpipeMatMulSplitKReduceProgram extends LmpipeMatMulProgram {}

// --- the kernel --------------------------------------------------------------------------------------
interface Plan {
  tile: Tile;
  splits: number;
  kChunk: number;
}

// The tile and split-K choice, from timings of every tile and split factor on every GEMM shape of gpt and
// pixel-attn `small` steps on an H200 (bench/gpu/shapes.ts --plans, 2026-12-04; docs/gpu.md):
//   - splitting a K of up to ~2k never paid: the partial sums' buffer and the second dispatch cost more
//     than the fill they bring (e.g. [2048 x 1536] x [1536 x 384]: 0.14 ms unsplit on 48 workgroups of
//     the 128x128 tile, 0.27 ms split in 2 on 64x64 tiles, the old choice);
//   - a long K against a small output (the tied head's input gradient: K = 50304 into 333 x 384) wants
//     as many splits as allowed, on the tile that wastes the least of the output: 0.90 ms at 128x128 x 64
//     splits against 3.5 ms at 32x32 x 2 (the old choice); 32 x 384 and 25 x 32 outputs favour the
//     smaller tiles, which pad less;
//   - the 128x128 tile beat 64x64 wherever it had 32 or more workgroups, though 32 do not fill 132 SMs.
/** Workgroups of the 128x128 (else 64x64) tile that are enough to prefer it. */
const MIN_BLOCKS = 32;
/** Shortest K range of one split, and the least K that is split at all. */
const MIN_SPLIT_K = 512, SPLIT_FROM_K = 4096;
/** Relative cost per output computed by each tile (padding included): the smaller tiles do less work per
 * value read from workgroup memory. */
const TILE_COST: Record<string, number> = { large: 1, medium: 1.5, small: 2.5 };

/**
 * Tile and split-K factor for a batch of M x N outputs over K. A long K (at least SPLIT_FROM_K and four
 * times M + N) is split into as many ranges as allowed (at least MIN_SPLIT_K each, at most 64, and no
 * more partial sums than one binding holds), on the tile with the least padded output times its
 * TILE_COST; any other shape runs unsplit on the 128x128 tile when that gives MIN_BLOCKS workgroups,
 * else the 64x64 one when that does, else 32x32.
 */
export function planMatMul(batch: number, M: number, N: number, K: number, partialLimitFloats: number): Plan {
  const blocks = (t: Tile) => batch * Math.ceil(M / t.BM) * Math.ceil(N / t.BN);
  const outs = batch * M * N;
  const maxSplits = Math.max(
    1,
    Math.min(64, Math.floor(K / MIN_SPLIT_K), Math.floor(partialLimitFloats / Math.max(1, outs))),
  );
  const longK = K >= SPLIT_FROM_K && K >= 4 * (M + N) && maxSplits > 1;
  const padded = (t: Tile) => blocks(t) * t.BM * t.BN * TILE_COST[t.name];
  const tile = forced?.tile ??
    (longK
      ? [TILES.large, TILES.medium, TILES.small].reduce((a, b) => (padded(b) < padded(a) ? b : a))
      : blocks(TILES.large) >= MIN_BLOCKS
      ? TILES.large
      : blocks(TILES.medium) >= MIN_BLOCKS
      ? TILES.medium
      : TILES.small);
  const splits = forced?.splits ?? (longK ? maxSplits : 1);
  if (splits <= 1) return { tile, splits: 1, kChunk: Math.max(K, 1) };
  const kChunk = Math.ceil(K / splits / tile.BK) * tile.BK;
  const used = Math.ceil(K / kChunk);
  return { tile, splits: used, kChunk: used <= 1 ? Math.max(K, 1) : kChunk };
}

/** Outer (batch) dimensions of out, padded to 3, and each operand's element stride per dimension. */
function batchLayout(aOuter: number[], bOuter: number[], outOuter: number[], aMat: number, bMat: number) {
  const pad = (d: number[]) => [...Array(3 - d.length).fill(1), ...d];
  const strides = (dims: number[], mat: number, out: number[]) => {
    const p = pad(dims);
    const s = [0, 0, 0];
    let acc = mat;
    for (let i = 2; i >= 0; i--) {
      s[i] = p[i] === 1 && out[i] !== 1 ? 0 : acc;
      acc *= p[i];
    }
    return s;
  };
  const od = pad(outOuter);
  return { od, as: strides(aOuter, aMat, od), bs: strides(bOuter, bMat, od) };
}

/**
 * C = epilogue(A . B) on webgpu with lmpipe's GEMM, or null when the inputs need TF.js's stock kernel
 * (non-float32, more than 3 outer dimensions, a bias or prelu weight not of N or 1 values).
 */
function gemm(
  backend: GpuBackend,
  a: TensorInfo,
  b: TensorInfo,
  transA: boolean,
  transB: boolean,
  ep: Epilogue,
): TensorInfo | null {
  if (a.dtype !== "float32" || b.dtype !== "float32") return null;
  if (a.shape.length < 2 || b.shape.length < 2) return null;
  const M = transA ? a.shape[a.shape.length - 1] : a.shape[a.shape.length - 2];
  const K = transA ? a.shape[a.shape.length - 2] : a.shape[a.shape.length - 1];
  const K2 = transB ? b.shape[b.shape.length - 1] : b.shape[b.shape.length - 2];
  const N = transB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  if (K !== K2) {
    throw new Error(
      `matMul: inner dimensions ${K} and ${K2} of [${a.shape}]${transA ? "^T" : ""} and [${b.shape}]${
        transB ? "^T" : ""
      } differ`,
    );
  }
  const aOuter = a.shape.slice(0, -2), bOuter = b.shape.slice(0, -2);
  const outOuter = tf.backend_util.assertAndGetBroadcastShape(aOuter, bOuter);
  if (outOuter.length > 3) return null;
  const vecLen = (t?: TensorInfo) => t ? tf.util.sizeFromShape(t.shape) : 0;
  for (const t of [ep.bias, ep.prelu]) {
    if (t && (t.dtype !== "float32" || (vecLen(t) !== N && vecLen(t) !== 1))) return null;
  }
  const batch = tf.util.sizeFromShape(outOuter);
  const outShape = [...outOuter, M, N];
  if (ep.residual && (ep.residual.dtype !== "float32" || vecLen(ep.residual) !== batch * M * N)) {
    throw new Error(
      `${LMPIPE_MATMUL_KERNEL}: residual [${ep.residual.shape}] must have the output's ${
        batch * M * N
      } values [${outShape}]`,
    );
  }
  const out = backend.makeTensorInfo(outShape, "float32") as TensorInfo;
  if (batch * M * N === 0) {
    backend.tensorMap.get(out.dataId).values = new Float32Array(0);
    return out;
  }
  for (const t of [a, b, out, ep.bias, ep.prelu, ep.residual]) if (t) backend.uploadToGPU(t.dataId);
  const device = backend.device as GPUDevice;
  const limit = webgpuMaxTensorBytes(backend);
  const { od, as, bs } = batchLayout(aOuter, bOuter, outOuter, M * K, K * N);
  const fits = [a, b, out, ep.residual].every((t) => !t || vecLen(t) * 4 <= limit);
  const variantOf = (tile: Tile, partial: boolean): Variant => ({
    tile,
    transA,
    transB,
    partial,
    bias: !!ep.bias,
    activation: ep.activation,
    residual: !!ep.residual,
  });
  const epInputs = [ep.bias, ep.prelu, ep.residual].filter((t): t is TensorInfo => !!t);
  const flat = (t: TensorInfo): TensorInfo => ({ dataId: t.dataId, shape: [vecLen(t)], dtype: "float32" });
  const uniforms = (u: Record<string, number>) => {
    const order = [
      "M",
      "N",
      "K",
      "kChunk",
      "splits",
      "batch",
      "od1",
      "od2",
      "as0",
      "as1",
      "as2",
      "bs0",
      "bs1",
      "bs2",
      "aBase",
      "bBase",
      "cBase",
      "rBase",
      "pStride",
      "lda",
      "ldb",
    ];
    return [
      ...order.map((k) => ({ type: "int32", data: [u[k] ?? 0] })),
      { type: "float32", data: [ep.scale] },
      { type: "float32", data: [ep.leakyAlpha] },
      { type: "int32", data: [vecLen(ep.bias) === 1 ? 0 : 1] },
      { type: "int32", data: [vecLen(ep.prelu) === 1 ? 0 : 1] },
    ];
  };
  const common = {
    M,
    N,
    K,
    lda: transA ? M : K,
    ldb: transB ? K : N,
    od1: od[1],
    od2: od[2],
    as0: as[0],
    as1: as[1],
    as2: as[2],
    bs0: bs[0],
    bs1: bs[1],
    bs2: bs[2],
  };
  const maxZ = device.limits.maxComputeWorkgroupsPerDimension;

  if (fits) {
    const plan = planMatMul(batch, M, N, K, Math.floor(limit / 4));
    if (batch * plan.splits > maxZ) return null;
    const grid: [number, number, number] = [
      Math.ceil(N / plan.tile.BN),
      Math.ceil(M / plan.tile.BM),
      batch * plan.splits,
    ];
    const flops = 2 * batch * M * N * K;
    const inBytes = 4 * (vecLen(a) + vecLen(b));
    if (plan.splits === 1) {
      const v = variantOf(plan.tile, false);
      const pipeline = cachedPipeline(device, variantKey(v, "gemm"), () => gemmShader(v));
      const cost = { flops, bytes: inBytes + 4 * batch * M * N * (ep.residual ? 2 : 1) };
      backend.recordAndSubmit(
        new LmpipeMatMulProgram(pipeline, grid, cost, batch * M * N, tileThreads(plan.tile)),
        flat(out),
        [flat(a), flat(b), ...epInputs.map(flat)],
        uniforms({ ...common, kChunk: plan.kChunk, splits: 1, batch }),
      );
      return out;
    }
    const P = backend.makeTensorInfo([plan.splits * batch * M * N], "float32") as TensorInfo;
    backend.uploadToGPU(P.dataId);
    const vp = variantOf(plan.tile, true);
    const pipeline = cachedPipeline(device, variantKey(vp, "gemm"), () => gemmShader(vp));
    const pStride = batch * M * N;
    const u = uniforms({ ...common, kChunk: plan.kChunk, splits: plan.splits, batch, pStride });
    backend.recordAndSubmit(
      new LmpipeMatMulProgram(
        pipeline,
        grid,
        { flops, bytes: inBytes + 4 * plan.splits * pStride },
        plan.splits * pStride,
        tileThreads(plan.tile),
      ),
      P,
      [flat(a), flat(b)],
      u,
    );
    const vr = variantOf(plan.tile, false);
    const reduce = cachedPipeline(device, variantKey(vr, "reduce"), () => reduceShader(vr));
    const rgrid = workgroupGrid(device, Math.ceil(pStride / REDUCE_THREADS), LMPIPE_MATMUL_KERNEL);
    const rcost = {
      flops: plan.splits * pStride,
      bytes: 4 * pStride * (plan.splits + 1 + (ep.residual ? 1 : 0)),
    };
    backend.recordAndSubmit(
      new LmpipeMatMulSplitKReduceProgram(reduce, rgrid, rcost, pStride, REDUCE_THREADS),
      flat(out),
      [P, ...epInputs.map(flat)],
      u,
    );
    backend.disposeData(P.dataId);
    return out;
  }

  // Over the binding limit: blocks of output rows, one batch at a time, each binding only its range.
  const rowBytes = 4 * Math.max(N, transA ? 1 : K);
  const tile = forced?.tile ?? TILES.medium;
  const slack = 2 * device.limits.minStorageBufferOffsetAlignment;
  let rows = Math.floor((limit - slack) / rowBytes / tile.BM) * tile.BM;
  if (rows < 1) rows = Math.max(1, Math.floor((limit - slack) / rowBytes));
  const v = variantOf(tile, false);
  const pipeline = cachedPipeline(device, variantKey(v, "gemm"), () => gemmShader(v));
  const [, o1, o2] = od;
  for (let bi = 0; bi < batch; bi++) {
    const i2 = bi % o2, i1 = Math.floor(bi / o2) % o1, i0 = Math.floor(bi / (o2 * o1));
    const aStart = i0 * as[0] + i1 * as[1] + i2 * as[2];
    const bStart = i0 * bs[0] + i1 * bs[1] + i2 * bs[2];
    for (let r0 = 0; r0 < M; r0 += rows) {
      const r = Math.min(rows, M - r0);
      const av = transA
        ? rangeView(backend, a, aStart + r0, (K - 1) * M + r, limit, "A")
        : rangeView(backend, a, aStart + r0 * K, r * K, limit, "A");
      const bv = rangeView(backend, b, bStart, K * N, limit, "B");
      const cv = rangeView(backend, out, bi * M * N + r0 * N, r * N, limit, "the output");
      const rv = ep.residual
        ? rangeView(backend, ep.residual, bi * M * N + r0 * N, r * N, limit, "residual")
        : null;
      const extra = [ep.bias && flat(ep.bias), ep.prelu && flat(ep.prelu), rv?.view].filter((
        t,
      ): t is TensorInfo => !!t);
      // The block is an r-row GEMM; A keeps its row stride (lda: K, or M when transposed).
      const blockM = r;
      const grid: [number, number, number] = [Math.ceil(N / tile.BN), Math.ceil(blockM / tile.BM), 1];
      const cost = { flops: 2 * r * N * K, bytes: 4 * (r * K + K * N + r * N) };
      backend.recordAndSubmit(
        new LmpipeMatMulProgram(pipeline, grid, cost, r * N, tileThreads(tile)),
        cv.view,
        [av.view, bv.view, ...extra],
        uniforms({
          ...common,
          M: blockM,
          kChunk: Math.max(K, 1),
          splits: 1,
          batch: 1,
          od1: 1,
          od2: 1,
          as0: 0,
          as1: 0,
          as2: 0,
          bs0: 0,
          bs1: 0,
          bs2: 0,
          aBase: av.base,
          bBase: bv.base,
          cBase: cv.base,
          rBase: rv ? rv.base : 0,
        }),
      );
    }
  }
  return out;
}

// --- registration ------------------------------------------------------------------------------------
function attrsOf(attrs: tf.NamedAttrMap | undefined) {
  const x = (attrs ?? {}) as Record<string, unknown>;
  return {
    transA: !!x.transposeA,
    transB: !!x.transposeB,
    activation: (x.activation ?? "linear") as string,
    leakyAlpha: (x.leakyreluAlpha ?? 0.2) as number,
  };
}

function ownBatchMatMul(stock: KernelFn): KernelFn {
  return (args) => {
    if (!enabled) return stock(args);
    const { a, b } = args.inputs as Record<string, TensorInfo>;
    const { transA, transB } = attrsOf(args.attrs);
    const ep: Epilogue = { scale: 1, activation: "linear", leakyAlpha: 0 };
    return gemm(args.backend, a, b, transA, transB, ep) ?? stock(args);
  };
}

function ownFusedMatMul(stock: KernelFn): KernelFn {
  return (args) => {
    if (!enabled) return stock(args);
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, TensorInfo | undefined>;
    const { transA, transB, activation, leakyAlpha } = attrsOf(args.attrs);
    if (!ACTIVATIONS.has(activation) || activation === "gelu") return stock(args);
    const ep: Epilogue = {
      scale: 1,
      bias,
      activation: activation as Activation,
      prelu: activation === "prelu" ? preluActivationWeights : undefined,
      leakyAlpha,
    };
    return gemm(args.backend, a!, b!, transA, transB, ep) ?? stock(args);
  };
}

function lmpipeMatMulKernel(args: Parameters<KernelFn>[0]): TensorInfo {
  const { a, b, bias, residual } = args.inputs as Record<string, TensorInfo | undefined>;
  const x = (args.attrs ?? {}) as Record<string, unknown>;
  const activation = (x.activation ?? "linear") as string;
  if (!ACTIVATIONS.has(activation) || activation === "prelu") {
    throw new Error(
      `${LMPIPE_MATMUL_KERNEL}: activation "${activation}": use linear, relu, relu6, elu, sigmoid, leakyrelu or gelu`,
    );
  }
  const ep: Epilogue = {
    scale: (x.scale ?? 1) as number,
    bias,
    activation: activation as Activation,
    leakyAlpha: (x.leakyreluAlpha ?? 0.2) as number,
    residual,
  };
  const out = gemm(args.backend, a!, b!, !!x.transposeA, !!x.transposeB, ep);
  if (!out) {
    throw new Error(
      `${LMPIPE_MATMUL_KERNEL}: [${a!.shape}] x [${b!.shape}] (${a!.dtype}, ${b!.dtype}${
        bias ? `, bias [${bias.shape}]` : ""
      }) ` +
        "is not supported: float32 inputs, at most 3 batch dimensions and a bias of N or 1 values",
    );
  }
  return out;
}

/** Options of matMulEpilogue: y = act(scale * op(a) . op(b) + bias) + residual. */
export interface MatMulEpilogueOptions {
  transposeA?: boolean;
  transposeB?: boolean;
  /** Added to every row: N values (or 1). */
  bias?: tf.Tensor;
  activation?: Exclude<Activation, "prelu">;
  /** Multiplies the product before the bias (default 1). */
  scale?: number;
  /** Added last; the output's shape. */
  residual?: tf.Tensor;
  leakyreluAlpha?: number;
}

/**
 * act(scale * a.b + bias) + residual in one webgpu GEMM (plus a reduction pass under split-K). webgpu
 * only, forward only (no gradient is registered): for inference paths and tests.
 */
export function matMulEpilogue(a: tf.Tensor, b: tf.Tensor, opts: MatMulEpilogueOptions = {}): tf.Tensor {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`${LMPIPE_MATMUL_KERNEL}: runs on the webgpu backend only (current: ${tf.getBackend()})`);
  }
  const inputs: Record<string, tf.Tensor> = { a, b };
  if (opts.bias) inputs.bias = opts.bias;
  if (opts.residual) inputs.residual = opts.residual;
  return tf.engine().runKernel(LMPIPE_MATMUL_KERNEL, inputs as tf.NamedTensorMap, {
    transposeA: !!opts.transposeA,
    transposeB: !!opts.transposeB,
    activation: opts.activation ?? "linear",
    scale: opts.scale ?? 1,
    leakyreluAlpha: opts.leakyreluAlpha ?? 0.2,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;
}

// Registered once, at first import: wraps the stock webgpu kernels (kept for what this GEMM does not
// take, and for LMPIPE_WEBGPU_MATMUL=0).
for (const [name, wrap] of [[tf.BatchMatMul, ownBatchMatMul], [tf._FusedMatMul, ownFusedMatMul]] as const) {
  const old = tf.getKernel(name, "webgpu");
  if (!old || (old.kernelFunc as { lmpipe?: boolean }).lmpipe) continue;
  tf.unregisterKernel(name, "webgpu");
  const fn = wrap(old.kernelFunc as unknown as KernelFn) as KernelFn & { lmpipe?: boolean };
  fn.lmpipe = true;
  tf.registerKernel({ kernelName: name, backendName: "webgpu", kernelFunc: fn as unknown as tf.KernelFunc });
}
if (!tf.getKernel(LMPIPE_MATMUL_KERNEL, "webgpu")) {
  tf.registerKernel({
    kernelName: LMPIPE_MATMUL_KERNEL,
    backendName: "webgpu",
    kernelFunc: lmpipeMatMulKernel as unknown as tf.KernelFunc,
  });
}
