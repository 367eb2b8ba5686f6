// Fused causal attention on webgpu, flash-style (lib/tensor/ops/attention/mod.ts picks it): for query
// rows q [BH, T, D], keys k [BH, Tk, D] and values v [BH, Tk, Dv] (Tk = past + T; query i sits at
// absolute position past + i and sees keys 0..past+i), out = softmax(scale q k^T, causal) v without ever
// holding the [T, Tk] scores in GPU memory:
//   - LmpipeFlashAttention: one workgroup of 256 threads per 16 query rows (and per 64 value columns):
//     key tiles of 16 go through workgroup memory, each thread computes one of the tile's 16 x 16 scores,
//     masked from the row and key indices, and an online softmax (running maximum and sum per row,
//     earlier partial outputs rescaled) accumulates 4 output columns per thread in registers. Writes
//     out [BH, T, Dv] and each row's logsumexp [BH, T] (m + log l), all the backward pass keeps
//     besides q, k, v and out.
//   - LmpipeFlashAttentionGrad: delta = rowsum(dOut * out) (one dispatch), then dq (per query tile),
//     dk (per key tile) and dv (per key tile and 64 value columns), each recomputing the probabilities
//     p = exp(s - logsumexp) of the tiles it needs; no atomics, nothing of size T x Tk.
// Every operand is addressed through a FlashLayout (an offset and a batch, head, row and column stride
// each), so q, k and v may be column blocks of one fused projection and out may be written with the heads
// side by side or channels last (mod.ts causalAttentionFromQkv, causalAttentionChannelsLast); plain calls
// use [BH, rows, cols] per head; with roundQ, mixed's binary16 rounding of q * scale (and of dq's sum before
// it is scaled) happens in the kernels too. Every sum is accumulated in float32; exp and log run in float32.
// Heads of up to 64 dims (D) are taken (the Q and K tiles live whole in workgroup memory); mod.ts runs the
// op chain for larger ones. Under --precision mixed with shader-f16 (kernel_choice.ts webgpuHalfOperands),
// q * scale, k, v and dOut are rounded to binary16 as they are loaded and held in workgroup memory as f16;
// products and sums stay f32.
import * as tf from "@tensorflow/tfjs-core";
import {
  cachedPipeline,
  flatView,
  GridProgram,
  requireWithinBindingLimit,
  workgroupGrid,
} from "../../webgpu/kernels.ts";
import { webgpuHalfOperands } from "../../kernel_choice.ts";
import { WGSL_ROUND_TO_HALF } from "../../webgpu/wgsl.ts";

// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

export const FLASH_ATTENTION_KERNEL = "LmpipeFlashAttention";
export const FLASH_ATTENTION_GRAD_KERNEL = "LmpipeFlashAttentionGrad";
/** The largest head dimension D of q and k the kernels take. */
export const FLASH_MAX_HEAD_DIM = 64;

// A tile is 16 query rows x 16 keys; a workgroup of 256 threads computes its 256 scores one per thread
// (thread t: row t / 16, key t % 16) and then splits the 16 x 64 outputs it accumulates 4 per thread
// (thread t: row t / 16, columns t % 16 + 16 j). Q and K rows sit in workgroup memory with a stride of
// 65 floats, so the 16 rows a warp reads at once fall in different memory banks.
const TILE = 16, THREADS = 256, QK_STRIDE = FLASH_MAX_HEAD_DIM + 1, DP_CHUNK = 32, DP_STRIDE = DP_CHUNK + 1;

// The uniforms after TF.js's NaN, Infinity and one (shape, stride) pair per bound tensor (all 1-D).
// Then where each of q, k, v and out (dOut too) keeps element (head bh = b H + h, row t, column c):
// at xOff + b xB + h xH + t xR + c xC (the gradients of q, k, v keep their inputs' layout).
const ROLES = ["q", "k", "v", "o"] as const;
const FIELDS =
  "BH: i32, T: i32, Tk: i32, past: i32, D: i32, Dv: i32, scale: f32, tilesPerHead: i32, H: i32, " +
  "roundQ: i32, " +
  ROLES.map((x) => `${x}Off: i32, ${x}B: i32, ${x}H: i32, ${x}R: i32, ${x}C: i32,`).join(" ");

function header(bound: [string, "read" | "read_write"][], useHalf: boolean): string {
  const tfjs = bound.map((_, i) => `shape${i}: i32, stride${i}: i32,`).join(" ");
  return `${useHalf ? "enable f16;" : ""}
alias ST = ${useHalf ? "f16" : "f32"};
struct Uniforms { nanValue: f32, infValue: f32, ${tfjs} ${FIELDS} };
${
    bound.map(([name, access], i) => `@group(0) @binding(${i}) var<storage, ${access}> ${name}: array<f32>;`)
      .join(
        "\n",
      )
  }
@group(0) @binding(${bound.length}) var<uniform> u: Uniforms;
${WGSL_ROUND_TO_HALF}
fn toTile(x: f32) -> ST { return ${useHalf ? "f16(roundToHalf(x))" : "x"}; }
// q * scale as the tiles hold it: rounded to binary16 when the caller asks (--precision mixed)
fn scaledQ(x: f32) -> f32 { let s = x * u.scale; if (u.roundQ != 0) { return roundToHalf(s); } return s; }
// dq from its sum over keys (of dS k): the chain rule through q * scale and, with roundQ, its rounding
fn gradQ(x: f32) -> f32 { if (u.roundQ != 0) { return roundToHalf(x) * u.scale; } return x * u.scale; }
${
    ROLES.map((x) =>
      `fn ${x}Base(bh: i32) -> i32 { return u.${x}Off + (bh / u.H) * u.${x}B + (bh % u.H) * u.${x}H; }`
    ).join("\n")
  }`;
}

// Opening of every kernel: the workgroup's head bh and first row (query or key) t0 of its tile; lid; the
// thread's pair (a = lid / 16, b = lid % 16) in the tile.
const ENTRY = `@compute @workgroup_size(${THREADS})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lidu: u32) {
  let tile = i32(wid.y * nwg.x + wid.x);
  if (tile >= u.BH * u.tilesPerHead) { return; } // the same for the whole workgroup
  let bh = tile / u.tilesPerHead;
  let t0 = (tile % u.tilesPerHead) * ${TILE};
  let lid = i32(lidu);
  let a = lid / ${TILE};
  let b = lid % ${TILE};
  let qb0 = qBase(bh);
  let kb0 = kBase(bh);
  let vb0 = vBase(bh);
  let ob0 = oBase(bh);`;

// The layout prefix (FIELDS) of each bound input.
const ROLE_OF: Record<string, string> = { q: "q", k: "k", v: "v", dout: "o" };

/**
 * Loads rows t0_dst.. of `src` (head bh; rows x width, in its layout) columns c0..c0+w into `dst` (row
 * stride `stride`), through `fn` when given, 0 outside.
 */
const loadTile = (
  dst: string,
  src: string,
  rows: string,
  width: string,
  w: string,
  stride: string | number,
  c0: string,
  fn = "",
) => {
  const l = ROLE_OF[src]; // the prefix of its layout's fields
  return `
  for (var e = lid; e < ${TILE} * ${w}; e = e + ${THREADS}) {
    let rr = e / ${w};
    let cc = e % ${w};
    var x = 0.0;
    if (t0_${dst} + rr < ${rows} && ${c0} + cc < ${width}) {
      x = ${fn}(${src}[${l}b0 + (t0_${dst} + rr) * u.${l}R + (${c0} + cc) * u.${l}C]);
    }
    ${dst}[rr * ${stride} + cc] = toTile(x);
  }`;
};

/** The score of query row `qi` and key `kj` of the tiles in Qs and Ks (scale applied to Qs). */
const SCORE = `
fn score(qi: i32, kj: i32) -> f32 {
  var s = 0.0;
  for (var d = 0; d < u.D; d = d + 1) { s = s + f32(Qs[qi * ${QK_STRIDE} + d]) * f32(Ks[kj * ${QK_STRIDE} + d]); }
  return s;
}`;

// Forward: thread (a, b) computes the score of row a and key b of each key tile into Ss; then, for row a,
// the running maximum m and sum l (every thread of the row keeps the same copy) and its probability into
// Ps; then the output columns dv0 + b + 16 j (j < 4) of row a.
const forwardShader = (useHalf: boolean) =>
  `${
    header(
      [["out", "read_write"], ["lse", "read_write"], ["q", "read"], ["k", "read"], ["v", "read"]],
      useHalf,
    )
  }
var<workgroup> Qs: array<ST, ${TILE * QK_STRIDE}>;
var<workgroup> Ks: array<ST, ${TILE * QK_STRIDE}>;
var<workgroup> Vs: array<ST, ${TILE * 64}>;
var<workgroup> Ss: array<f32, ${TILE * TILE}>;
var<workgroup> Ps: array<f32, ${TILE * TILE}>;
${SCORE}
${ENTRY}
  let dv0 = i32(wid.z) * 64;
  let t0_Qs = t0;
  ${loadTile("Qs", "q", "u.T", "u.D", "u.D", QK_STRIDE, "0", "scaledQ")}
  let row = t0 + a;
  let rowAbs = u.past + row; // sees keys 0..rowAbs
  let kEnd = min(u.Tk, u.past + min(t0 + ${TILE}, u.T));
  var m = -3.0e38;
  var lsum = 0.0;
  var o = vec4<f32>(0.0, 0.0, 0.0, 0.0);
  for (var j0 = 0; j0 < kEnd; j0 = j0 + ${TILE}) {
    let t0_Ks = j0;
    let t0_Vs = j0;
    workgroupBarrier();
    ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", QK_STRIDE, "0")}
    ${loadTile("Vs", "v", "u.Tk", "u.Dv", "64", 64, "dv0")}
    workgroupBarrier();
    Ss[lid] = score(a, b);
    workgroupBarrier();
    var mx = m;
    for (var c = 0; c < ${TILE}; c = c + 1) {
      if (j0 + c <= rowAbs && j0 + c < u.Tk) { mx = max(mx, Ss[a * ${TILE} + c]); }
    }
    var p = 0.0;
    if (j0 + b <= rowAbs && j0 + b < u.Tk) { p = exp(Ss[lid] - mx); }
    Ps[lid] = p;
    workgroupBarrier();
    let alpha = exp(m - mx);
    lsum = lsum * alpha;
    o = o * alpha;
    for (var c = 0; c < ${TILE}; c = c + 1) {
      let pc = Ps[a * ${TILE} + c];
      lsum = lsum + pc;
      let vb = c * 64 + b;
      o = o + pc * vec4<f32>(f32(Vs[vb]), f32(Vs[vb + 16]), f32(Vs[vb + 32]), f32(Vs[vb + 48]));
    }
    m = mx;
  }
  if (row < u.T) {
    for (var j = 0; j < 4; j = j + 1) {
      let col = dv0 + b + 16 * j;
      if (col < u.Dv) { out[ob0 + row * u.oR + col * u.oC] = o[j] / lsum; }
    }
    if (wid.z == 0u && b == 0) { lse[bh * u.T + row] = m + log(lsum); }
  }
}`;

// delta[row] = sum over columns of dOut * out, one thread per row (dOut read as the other kernels read it).
const deltaShader = (useHalf: boolean) =>
  `${header([["delta", "read_write"], ["dout", "read"], ["o", "read"]], useHalf)}
@compute @workgroup_size(64)
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let row = i32((wid.y * nwg.x + wid.x) * 64u + lid);
  if (row >= u.BH * u.T) { return; }
  let at = oBase(row / u.T) + (row % u.T) * u.oR;
  var s = 0.0;
  for (var c = 0; c < u.Dv; c = c + 1) { s = s + f32(toTile(dout[at + c * u.oC])) * o[at + c * u.oC]; }
  delta[row] = s;
}`;

// The score gradient dS of one [16 queries x 16 keys] tile into Ss, one (query qi, key kj) pair per
// thread: p = exp(s - logsumexp), dP = dOut . V over all Dv columns in chunks of 32 through workgroup
// memory (dOs, Vs), dS = p (dP - delta).
const dsTile = (qi: string, kj: string) => `
    workgroupBarrier(); // the caller's Q or K tile is loaded
    let sv = score(${qi}, ${kj});
    var dp = 0.0;
    for (var c0 = 0; c0 < u.Dv; c0 = c0 + ${DP_CHUNK}) {
      workgroupBarrier();
      ${loadTile("dOs", "dout", "u.T", "u.Dv", `${DP_CHUNK}`, DP_STRIDE, "c0")}
      ${loadTile("Vs", "v", "u.Tk", "u.Dv", `${DP_CHUNK}`, DP_STRIDE, "c0")}
      workgroupBarrier();
      for (var d = 0; d < ${DP_CHUNK}; d = d + 1) {
        dp = dp + f32(dOs[${qi} * ${DP_STRIDE} + d]) * f32(Vs[${kj} * ${DP_STRIDE} + d]);
      }
    }
    let row = t0_Qs + ${qi};
    let key = t0_Ks + ${kj};
    var ds = 0.0;
    if (row < u.T && key < u.Tk && key <= u.past + row) {
      let p = exp(sv - lse[bh * u.T + row]);
      ds = p * (dp - delta[bh * u.T + row]);
    }
    Ss[${qi} * ${TILE} + ${kj}] = ds;
    workgroupBarrier();`;

const BACKWARD_BOUND: [string, "read" | "read_write"][] = [
  ["grad", "read_write"],
  ["q", "read"],
  ["k", "read"],
  ["v", "read"],
  ["dout", "read"],
  ["lse", "read"],
  ["delta", "read"],
];
const backwardShared = `
var<workgroup> Qs: array<ST, ${TILE * QK_STRIDE}>;
var<workgroup> Ks: array<ST, ${TILE * QK_STRIDE}>;
var<workgroup> dOs: array<ST, ${TILE * DP_STRIDE}>;
var<workgroup> Vs: array<ST, ${TILE * DP_STRIDE}>;
var<workgroup> Ss: array<f32, ${TILE * TILE}>;
${SCORE}`;

// dq of one query tile: thread (a, b) computes dS for row a and key b of each key tile, then accumulates
// dq[a, b + 16 j] (j < 4) over all keys the tile sees. Qs holds q * scale, so dq = scale dS K.
const dqShader = (useHalf: boolean) =>
  `${header(BACKWARD_BOUND, useHalf)}
${backwardShared}
${ENTRY}
  let t0_Qs = t0;
  let t0_dOs = t0;
  ${loadTile("Qs", "q", "u.T", "u.D", "u.D", QK_STRIDE, "0", "scaledQ")}
  let kEnd = min(u.Tk, u.past + min(t0 + ${TILE}, u.T));
  var acc = vec4<f32>(0.0, 0.0, 0.0, 0.0);
  for (var j0 = 0; j0 < kEnd; j0 = j0 + ${TILE}) {
    let t0_Ks = j0;
    let t0_Vs = j0;
    workgroupBarrier();
    ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", QK_STRIDE, "0")}
    ${dsTile("a", "b")}
    for (var c = 0; c < ${TILE}; c = c + 1) {
      let kb = c * ${QK_STRIDE} + b;
      acc = acc + Ss[a * ${TILE} + c] * vec4<f32>(f32(Ks[kb]), f32(Ks[kb + 16]), f32(Ks[kb + 32]), f32(Ks[kb + 48]));
    }
  }
  let row = t0 + a;
  if (row < u.T) {
    for (var j = 0; j < 4; j = j + 1) {
      let d = b + 16 * j;
      if (d < u.D) { grad[qb0 + row * u.qR + d * u.qC] = gradQ(acc[j]); }
    }
  }
}`;

// The first query tile whose rows can see key tile t0 (query i sees keys up to past + i).
const FIRST_QUERY_TILE = `let iStart = (max(0, t0 - u.past) / ${TILE}) * ${TILE};`;

// dk of one key tile: thread (a, b) computes dS for key a and query b of each query tile, then
// accumulates dk[a, b + 16 j] = sum over queries of dS q * scale (= dS Qs).
const dkShader = (useHalf: boolean) =>
  `${header(BACKWARD_BOUND, useHalf)}
${backwardShared}
${ENTRY}
  let t0_Ks = t0;
  let t0_Vs = t0;
  ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", QK_STRIDE, "0")}
  ${FIRST_QUERY_TILE}
  var acc = vec4<f32>(0.0, 0.0, 0.0, 0.0);
  for (var i0 = iStart; i0 < u.T; i0 = i0 + ${TILE}) {
    let t0_Qs = i0;
    let t0_dOs = i0;
    workgroupBarrier();
    ${loadTile("Qs", "q", "u.T", "u.D", "u.D", QK_STRIDE, "0", "scaledQ")}
    ${dsTile("b", "a")}
    for (var r = 0; r < ${TILE}; r = r + 1) {
      let qb = r * ${QK_STRIDE} + b;
      acc = acc + Ss[r * ${TILE} + a] * vec4<f32>(f32(Qs[qb]), f32(Qs[qb + 16]), f32(Qs[qb + 32]), f32(Qs[qb + 48]));
    }
  }
  let key = t0 + a;
  if (key < u.Tk) {
    for (var j = 0; j < 4; j = j + 1) {
      let d = b + 16 * j;
      if (d < u.D) { grad[kb0 + key * u.kR + d * u.kC] = acc[j]; }
    }
  }
}`;

// dv of one key tile and 64 value columns: thread (a, b) computes p for key a and query b of each query
// tile, then accumulates dv[a, dv0 + b + 16 j] = sum over queries of p dOut.
const dvShader = (useHalf: boolean) =>
  `${
    header([["grad", "read_write"], ["q", "read"], ["k", "read"], ["dout", "read"], ["lse", "read"]], useHalf)
  }
var<workgroup> Qs: array<ST, ${TILE * QK_STRIDE}>;
var<workgroup> Ks: array<ST, ${TILE * QK_STRIDE}>;
var<workgroup> dOs: array<ST, ${TILE * 64}>;
var<workgroup> Ss: array<f32, ${TILE * TILE}>;
${SCORE}
${ENTRY}
  let dv0 = i32(wid.z) * 64;
  let t0_Ks = t0;
  ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", QK_STRIDE, "0")}
  ${FIRST_QUERY_TILE}
  var acc = vec4<f32>(0.0, 0.0, 0.0, 0.0);
  let key = t0 + a;
  for (var i0 = iStart; i0 < u.T; i0 = i0 + ${TILE}) {
    let t0_Qs = i0;
    let t0_dOs = i0;
    workgroupBarrier();
    ${loadTile("Qs", "q", "u.T", "u.D", "u.D", QK_STRIDE, "0", "scaledQ")}
    ${loadTile("dOs", "dout", "u.T", "u.Dv", "64", 64, "dv0")}
    workgroupBarrier();
    let row = i0 + b;
    var p = 0.0;
    if (row < u.T && key < u.Tk && key <= u.past + row) { p = exp(score(b, a) - lse[bh * u.T + row]); }
    Ss[b * ${TILE} + a] = p;
    workgroupBarrier();
    for (var r = 0; r < ${TILE}; r = r + 1) {
      let ob = r * 64 + b;
      acc = acc + Ss[r * ${TILE} + a] * vec4<f32>(f32(dOs[ob]), f32(dOs[ob + 16]), f32(dOs[ob + 32]), f32(dOs[ob + 48]));
    }
  }
  if (key < u.Tk) {
    for (var j = 0; j < 4; j = j + 1) {
      let col = dv0 + b + 16 * j;
      if (col < u.Dv) { grad[vb0 + key * u.vR + col * u.vC] = acc[j]; }
    }
  }
}`;

/**
 * A flash attention dispatch with what bench/webgpu_audit.ts charges it: `cost` counts the useful work
 * (FLOPs per visible (query, key) pair times the pairs; every tensor read or written once).
 */
class FlashProgram extends GridProgram {
  workgroupSize = [THREADS, 1, 1];
  constructor(
    pipeline: GPUComputePipeline,
    outputShape: number[],
    dispatch: [number, number, number],
    override readonly cost: { flops: number; bytes: number; smem?: number },
  ) {
    super(pipeline, outputShape, dispatch);
  }
}
class LmpipeFlashAttentionProgram extends FlashProgram {}
class LmpipeFlashAttentionDeltaProgram extends FlashProgram {
  override workgroupSize = [64, 1, 1];
}
class LmpipeFlashAttentionDqProgram extends FlashProgram {}
class LmpipeFlashAttentionDkProgram extends FlashProgram {}
class LmpipeFlashAttentionDvProgram extends FlashProgram {}

// Workgroup-memory traffic of each kernel, for bench/webgpu_audit.ts: warp-wide accesses (32 threads)
// per tile iteration (one key tile for the forward pass and dq, one query tile for dk and dv), each
// charged 128 bytes (a warp's access to 32 different banks). The tiles' row strides of 65 and 33 floats
// keep the 16 or 2 rows a warp reads at once in different banks, so no access has bank conflicts; reads
// of one address by many threads are broadcasts. Per iteration, with 8 warps: the scores 2 D accesses per
// warp; forward: max and probabilities 18, output 16 x (1 + 4); dq, dk: dP 2 x 32 per column chunk of 32
// plus its tile loads, the sum 16 x (1 + 4); dv: the sum 16 x (1 + 4); plus the tiles' stores.
const WARPS = THREADS / 32, WARP_BYTES = 128;

/** Tile iterations of each kernel: key tiles under every query tile, query tiles from every key tile. */
function tileIterations(s: { BH: number; T: number; Tk: number; past: number }) {
  let perQueryTile = 0, perKeyTile = 0;
  for (let t0 = 0; t0 < s.T; t0 += TILE) {
    perQueryTile += Math.ceil(Math.min(s.Tk, s.past + Math.min(t0 + TILE, s.T)) / TILE);
  }
  for (let t0 = 0; t0 < s.Tk; t0 += TILE) {
    const iStart = Math.floor(Math.max(0, t0 - s.past) / TILE) * TILE;
    if (iStart < s.T) perKeyTile += Math.ceil((s.T - iStart) / TILE);
  }
  return { fwd: s.BH * perQueryTile, bwd: s.BH * perKeyTile };
}

/** Bytes each kernel moves through workgroup memory (see above). */
function workgroupMemoryBytes(s: { BH: number; T: number; Tk: number; past: number; D: number; Dv: number }) {
  const it = tileIterations(s), z = Math.ceil(s.Dv / 64), chunks = Math.ceil(s.Dv / DP_CHUNK);
  const tileStores = (cols: number) => Math.ceil((TILE * cols) / 32);
  const scores = WARPS * 2 * s.D;
  const dsTile = scores + chunks * (2 * tileStores(DP_CHUNK) + WARPS * 2 * DP_CHUNK) + WARPS;
  const sum = WARPS * TILE * 5;
  const perIteration = {
    fwd: tileStores(s.D) + tileStores(64) + scores + WARPS * 19 + sum,
    dq: tileStores(s.D) + dsTile + sum,
    dv: tileStores(s.D) + tileStores(64) + scores + WARPS + sum,
  };
  return {
    fwd: WARP_BYTES * z * it.fwd * perIteration.fwd,
    dq: WARP_BYTES * it.fwd * perIteration.dq,
    dk: WARP_BYTES * it.bwd * perIteration.dq,
    dv: WARP_BYTES * z * it.bwd * perIteration.dv,
  };
}

/** The (query, key) pairs causal attention computes: each query row sees past + its index + 1 keys. */
function visiblePairs(s: { BH: number; T: number; past: number }): number {
  return s.BH * (s.T * s.past + (s.T * (s.T + 1)) / 2);
}

/** Where an operand keeps element (batch b, head h, row t, column c): off + b * b + h * h + t * r + c * c. */
export interface FlashStrides {
  off: number;
  b: number;
  h: number;
  r: number;
  c: number;
}

/**
 * The sizes of a call and where each operand lives, for heads bh = b H + h (b < B, h < H): q (T rows of D
 * columns), k (Tk rows of D), v (Tk rows of Dv), out and dOut (T rows of Dv, in `o`). The gradients of q,
 * k and v are written in their inputs' layout. `roundQ`: q * scale is rounded to binary16 as it is loaded,
 * and dq's sum before it is scaled (--precision mixed's boundary on the scaled q, inside the kernels).
 */
export interface FlashLayout {
  B: number;
  H: number;
  T: number;
  Tk: number;
  D: number;
  Dv: number;
  q: FlashStrides;
  k: FlashStrides;
  v: FlashStrides;
  o: FlashStrides;
  /** The shape out is made with (its elements laid out as `o` says). */
  outShape: number[];
  roundQ: boolean;
}

/** Row-major [BH, rows, cols] per head, as flashAttentionCall's plain operands are. */
function headMajor(rows: number, cols: number): FlashStrides {
  return { off: 0, b: 0, h: rows * cols, r: cols, c: 1 };
}

/** The layout of plain operands q [BH, T, D], k [BH, Tk, D], v [BH, Tk, Dv] (out [BH, T, Dv]). */
function plainLayout(kernel: string, q: TensorInfo, k: TensorInfo, v: TensorInfo): FlashLayout {
  const [BH, T, D] = q.shape, Tk = k.shape[1], Dv = v.shape[2];
  const ok = q.shape.length === 3 && k.shape.length === 3 && v.shape.length === 3 && k.shape[0] === BH &&
    v.shape[0] === BH && k.shape[2] === D && v.shape[1] === Tk;
  if (!ok) {
    throw new Error(
      `${kernel}: expected q [BH, T, D], k [BH, Tk, D], v [BH, Tk, Dv]; got q [${q.shape}], k [${k.shape}], ` +
        `v [${v.shape}] (causalAttention in lib/tensor/ops/attention/mod.ts runs the op chain for other inputs)`,
    );
  }
  return {
    B: 1,
    H: BH,
    T,
    Tk,
    D,
    Dv,
    q: headMajor(T, D),
    k: headMajor(Tk, D),
    v: headMajor(Tk, Dv),
    o: headMajor(T, Dv),
    outShape: [BH, T, Dv],
    roundQ: false,
  };
}

/**
 * The sizes of a call (`layout`, or plain operands when absent), checked: float32 operands, Tk >= T,
 * 0 < D <= FLASH_MAX_HEAD_DIM, no empty dimension, and every element of every operand inside its tensor.
 */
function sizesOf(kernel: string, q: TensorInfo, k: TensorInfo, v: TensorInfo, layout?: FlashLayout) {
  const l = layout ?? plainLayout(kernel, q, k, v);
  const { B, H, T, Tk, D, Dv } = l;
  const dims = [B, H, T, Tk, D, Dv].every((n) => Number.isInteger(n) && n > 0);
  const ok = dims && Tk >= T && D <= FLASH_MAX_HEAD_DIM && [q, k, v].every((t) => t.dtype === "float32");
  if (!ok) {
    throw new Error(
      `${kernel}: expected float32 q, k, v with Tk >= T, 0 < D <= ${FLASH_MAX_HEAD_DIM} and no empty ` +
        `dimension; got B ${B}, H ${H}, T ${T}, Tk ${Tk}, D ${D}, Dv ${Dv} for q [${q.shape}], k [${k.shape}], ` +
        `v [${v.shape}] (causalAttention in lib/tensor/ops/attention/mod.ts runs the op chain for other inputs)`,
    );
  }
  const inside = (x: FlashStrides, rows: number, cols: number, size: number) =>
    [x.off, x.b, x.h, x.r, x.c].every((n) => Number.isInteger(n) && n >= 0) &&
    x.off + (B - 1) * x.b + (H - 1) * x.h + (rows - 1) * x.r + (cols - 1) * x.c < size;
  const size = (t: TensorInfo | number[]) => tf.util.sizeFromShape(Array.isArray(t) ? t : t.shape);
  const operands: [string, FlashStrides, number, number, number][] = [
    ["q", l.q, T, D, size(q)],
    ["k", l.k, Tk, D, size(k)],
    ["v", l.v, Tk, Dv, size(v)],
    ["out", l.o, T, Dv, size(l.outShape)],
  ];
  for (const [what, x, rows, cols, n] of operands) {
    if (!inside(x, rows, cols, n) || (what === "out" && n !== B * H * T * Dv)) {
      throw new Error(
        `${kernel}: the layout of ${what} (${JSON.stringify(x)}) does not fit B ${B} x H ${H} heads of ` +
          `${rows} x ${cols} into its ${n} elements (a bug in the caller, lib/tensor/ops/attention/mod.ts)`,
      );
    }
  }
  return { BH: B * H, T, Tk, D, Dv, past: Tk - T, layout: l };
}

function uniforms(s: ReturnType<typeof sizesOf>, scale: number, tilesPerHead: number) {
  const int = (v: number) => ({ type: "int32", data: [v] });
  const l = s.layout;
  return [
    int(s.BH),
    int(s.T),
    int(s.Tk),
    int(s.past),
    int(s.D),
    int(s.Dv),
    { type: "float32", data: [scale] },
    int(tilesPerHead),
    int(l.H),
    int(l.roundQ ? 1 : 0),
    ...ROLES.flatMap((x) => [l[x].off, l[x].b, l[x].h, l[x].r, l[x].c].map(int)),
  ];
}

interface FlashAttrs {
  scale: number;
  /** Absent: plain operands (flashAttentionCall). */
  layout?: FlashLayout;
}

function flashAttentionKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const { q, k, v } = inputs as Record<string, TensorInfo>;
  const { scale, layout } = attrs as unknown as FlashAttrs;
  const s = sizesOf(FLASH_ATTENTION_KERNEL, q, k, v, layout);
  for (const [what, t] of [["q", q], ["k", k], ["v", v]] as const) {
    requireWithinBindingLimit(FLASH_ATTENTION_KERNEL, what, t, backend);
  }
  const device = backend.device as GPUDevice;
  const h = webgpuHalfOperands(device);
  const out = backend.makeTensorInfo(s.layout.outShape.slice(), "float32") as TensorInfo;
  const lse = backend.makeTensorInfo([s.BH, s.T], "float32") as TensorInfo;
  for (const t of [q, k, v, out, lse]) backend.uploadToGPU(t.dataId);
  const tiles = Math.ceil(s.T / TILE);
  const [gx, gy] = workgroupGrid(device, s.BH * tiles, FLASH_ATTENTION_KERNEL);
  backend.recordAndSubmit(
    new LmpipeFlashAttentionProgram(
      cachedPipeline(device, `${FLASH_ATTENTION_KERNEL}:${h}`, () => forwardShader(h)),
      [s.BH * s.T * s.Dv],
      [gx, gy, Math.ceil(s.Dv / 64)],
      {
        flops: visiblePairs(s) * (2 * s.D + 2 * s.Dv + 4),
        bytes: 4 * s.BH * (2 * s.T * s.D + s.Tk * (s.D + s.Dv) + s.T * s.Dv + s.T),
        smem: workgroupMemoryBytes(s).fwd,
      },
    ),
    flatView(out),
    [flatView(lse), flatView(q), flatView(k), flatView(v)],
    uniforms(s, scale, tiles),
  );
  return [out, lse];
}

/**
 * The gradient tensors of a backward call, one per distinct input tensor: [dq, dk, dv], or [dqkv] when q, k
 * and v are one tensor (column blocks of a fused projection; the three kernels each fill their block).
 */
function gradientTensors(
  kernel: string,
  q: TensorInfo,
  k: TensorInfo,
  v: TensorInfo,
  s: ReturnType<typeof sizesOf>,
  backend: GpuBackend,
): { dq: TensorInfo; dk: TensorInfo; dv: TensorInfo; outputs: TensorInfo[] } {
  const make = (t: TensorInfo) => backend.makeTensorInfo(t.shape.slice(), "float32") as TensorInfo;
  if (q.dataId !== k.dataId && q.dataId !== v.dataId && k.dataId !== v.dataId) {
    const [dq, dk, dv] = [make(q), make(k), make(v)];
    return { dq, dk, dv, outputs: [dq, dk, dv] };
  }
  // one tensor for all three: nothing else in it, or the kernels would leave garbage there
  const whole = s.BH * (s.T * s.D + s.Tk * (s.D + s.Dv));
  if (q.dataId !== k.dataId || q.dataId !== v.dataId || tf.util.sizeFromShape(q.shape) !== whole) {
    throw new Error(
      `${kernel}: q, k and v must be three tensors or one holding exactly the three (${whole} elements); ` +
        `got q [${q.shape}], k [${k.shape}], v [${v.shape}] sharing some (lib/tensor/ops/attention/mod.ts)`,
    );
  }
  const dqkv = make(q);
  return { dq: dqkv, dk: dqkv, dv: dqkv, outputs: [dqkv] };
}

function flashAttentionGradKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const { q, k, v, out, lse, dout } = inputs as Record<string, TensorInfo>;
  const { scale, layout } = attrs as unknown as FlashAttrs;
  const s = sizesOf(FLASH_ATTENTION_GRAD_KERNEL, q, k, v, layout);
  const outShape = s.layout.outShape;
  if (!tf.util.arraysEqual(dout.shape, out.shape) || !tf.util.arraysEqual(out.shape, outShape)) {
    throw new Error(
      `${FLASH_ATTENTION_GRAD_KERNEL}: dOut [${dout.shape}] and out [${out.shape}] must both be [${outShape}]`,
    );
  }
  const device = backend.device as GPUDevice;
  const h = webgpuHalfOperands(device);
  const delta = backend.makeTensorInfo([s.BH, s.T], "float32") as TensorInfo;
  const { dq, dk, dv, outputs } = gradientTensors(FLASH_ATTENTION_GRAD_KERNEL, q, k, v, s, backend);
  for (const t of [q, k, v, out, lse, dout, delta, ...outputs]) backend.uploadToGPU(t.dataId);
  const pipe = (name: string, code: (h: boolean) => string) =>
    cachedPipeline(device, `${FLASH_ATTENTION_GRAD_KERNEL}:${name}:${h}`, () => code(h));
  const grid = (groups: number, z = 1): [number, number, number] => {
    const [gx, gy] = workgroupGrid(device, groups, FLASH_ATTENTION_GRAD_KERNEL);
    return [gx, gy, z];
  };
  const qTiles = Math.ceil(s.T / TILE), kTiles = Math.ceil(s.Tk / TILE);
  backend.recordAndSubmit(
    new LmpipeFlashAttentionDeltaProgram(
      pipe("delta", deltaShader),
      [s.BH * s.T],
      grid(Math.ceil(s.BH * s.T / 64)),
      { flops: 2 * s.BH * s.T * s.Dv, bytes: 4 * s.BH * s.T * (2 * s.Dv + 1) },
    ),
    flatView(delta),
    [flatView(dout), flatView(out)],
    uniforms(s, scale, 1),
  );
  // every backward pass recomputes the scores (2 D per pair); dq and dk also dP (2 Dv) and their own
  // sum (2 D)
  const pairs = visiblePairs(s), f4 = 4 * s.BH, smem = workgroupMemoryBytes(s);
  const qkvBytes = f4 * (s.T * (2 * s.D + s.Dv + 2) + s.Tk * (s.D + s.Dv));
  const rest = [flatView(q), flatView(k), flatView(v), flatView(dout), flatView(lse), flatView(delta)];
  backend.recordAndSubmit(
    new LmpipeFlashAttentionDqProgram(pipe("dq", dqShader), [s.BH * s.T * s.D], grid(s.BH * qTiles), {
      flops: pairs * (4 * s.D + 2 * s.Dv + 4),
      bytes: qkvBytes + f4 * s.T * s.D,
      smem: smem.dq,
    }),
    flatView(dq),
    rest,
    uniforms(s, scale, qTiles),
  );
  backend.recordAndSubmit(
    new LmpipeFlashAttentionDkProgram(pipe("dk", dkShader), [s.BH * s.Tk * s.D], grid(s.BH * kTiles), {
      flops: pairs * (4 * s.D + 2 * s.Dv + 4),
      bytes: qkvBytes + f4 * s.Tk * s.D,
      smem: smem.dk,
    }),
    flatView(dk),
    rest,
    uniforms(s, scale, kTiles),
  );
  backend.recordAndSubmit(
    new LmpipeFlashAttentionDvProgram(
      pipe("dv", dvShader),
      [s.BH * s.Tk * s.Dv],
      grid(s.BH * kTiles, Math.ceil(s.Dv / 64)),
      { flops: pairs * (2 * s.D + 2 * s.Dv + 2), bytes: qkvBytes + f4 * s.Tk * s.Dv, smem: smem.dv },
    ),
    flatView(dv),
    [flatView(q), flatView(k), flatView(dout), flatView(lse)],
    uniforms(s, scale, kTiles),
  );
  backend.disposeData(delta.dataId);
  return outputs;
}

/**
 * [out, logsumexp [BH, T]] of causal attention in one webgpu dispatch (no gradient): plain operands q [BH,
 * T, D], k [BH, Tk, D], v [BH, Tk, Dv] and out [BH, T, Dv], or as `layout` places them (q, k, v may then be
 * one tensor).
 */
export function flashAttentionCall(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  scale: number,
  layout?: FlashLayout,
): [tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(
    FLASH_ATTENTION_KERNEL,
    { q, k, v } as unknown as tf.NamedTensorMap,
    { scale, layout } as unknown as tf.NamedAttrMap,
  ) as [tf.Tensor, tf.Tensor];
}

/**
 * The gradients of causal attention for upstream dOut, in four webgpu dispatches: [dq, dk, dv] in their
 * inputs' shapes and layouts, or [dqkv] when q, k and v are one tensor.
 */
export function flashAttentionGradCall(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  out: tf.Tensor,
  lse: tf.Tensor,
  dout: tf.Tensor,
  scale: number,
  layout?: FlashLayout,
): tf.Tensor[] {
  return tf.engine().runKernel(
    FLASH_ATTENTION_GRAD_KERNEL,
    { q, k, v, out, lse, dout } as unknown as tf.NamedTensorMap,
    { scale, layout } as unknown as tf.NamedAttrMap,
  ) as tf.Tensor[];
}

// Registered once, when this module is first imported.
for (
  const [kernelName, fn] of [
    [FLASH_ATTENTION_KERNEL, flashAttentionKernel],
    [FLASH_ATTENTION_GRAD_KERNEL, flashAttentionGradKernel],
  ] as const
) {
  if (!tf.getKernel(kernelName, "webgpu")) {
    tf.registerKernel({ kernelName, backendName: "webgpu", kernelFunc: fn as unknown as tf.KernelFunc });
  }
}
