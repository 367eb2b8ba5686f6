// Fused causal attention on webgpu, flash-style (lib/tensor/ops/attention/mod.ts picks it): for query
// rows q [BH, T, D], keys k [BH, Tk, D] and values v [BH, Tk, Dv] (Tk = past + T; query i sits at
// absolute position past + i and sees keys 0..past+i), out = softmax(scale q k^T, causal) v without ever
// holding the [T, Tk] scores in GPU memory:
//   - LmpipeFlashAttention: one workgroup per 16 query rows (and per 64 value columns): key tiles of 16
//     go through workgroup memory, the scores of a tile are masked from the row and key indices, and an
//     online softmax (running maximum and sum per row, earlier partial outputs rescaled) accumulates
//     the output in registers. Writes out [BH, T, Dv] and each row's logsumexp [BH, T] (m + log l),
//     all the backward pass keeps besides q, k, v and out.
//   - LmpipeFlashAttentionGrad: delta = rowsum(dOut * out) (one dispatch), then dq (per query tile),
//     dk (per key tile) and dv (per key tile and 64 value columns), each recomputing the probabilities
//     p = exp(s - logsumexp) of the tiles it needs; no atomics, nothing of size T x Tk.
// Every sum is accumulated in float32; exp and log run in float32. Heads of up to 64 dims (D) are taken
// (the Q and K tiles live whole in workgroup memory); mod.ts runs the op chain for larger ones. Under
// --precision mixed with shader-f16 (kernel_choice.ts webgpuHalfOperands), q * scale, k, v and dOut are
// rounded to binary16 as they are loaded and held in workgroup memory as f16; products and sums stay f32.
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

const TILE = 16, THREADS = 64;

// The uniforms after TF.js's NaN, Infinity and one (shape, stride) pair per bound tensor (all 1-D).
const FIELDS = "BH: i32, T: i32, Tk: i32, past: i32, D: i32, Dv: i32, scale: f32, tilesPerHead: i32,";

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
${useHalf ? WGSL_ROUND_TO_HALF : ""}
fn toTile(x: f32) -> ST { return ${useHalf ? "f16(roundToHalf(x))" : "x"}; }`;
}

// Opening of every kernel: the workgroup's head bh and first row (query or key) t0 of its tile; lid.
const ENTRY = `@compute @workgroup_size(${THREADS})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lidu: u32) {
  let tile = i32(wid.y * nwg.x + wid.x);
  if (tile >= u.BH * u.tilesPerHead) { return; } // the same for the whole workgroup
  let bh = tile / u.tilesPerHead;
  let t0 = (tile % u.tilesPerHead) * ${TILE};
  let lid = i32(lidu);`;

/** Loads rows t0.. of `src` [BH, rows, width] (columns c0..c0+w) into `dst` [16, w], scaled, 0 outside. */
const loadTile = (dst: string, src: string, rows: string, width: string, w: string, c0: string, mul = "") => `
  for (var e = lid; e < ${TILE} * ${w}; e = e + ${THREADS}) {
    let rr = e / ${w};
    let cc = e % ${w};
    var x = 0.0;
    if (t0_${dst} + rr < ${rows} && ${c0} + cc < ${width}) {
      x = ${src}[(bh * ${rows} + t0_${dst} + rr) * ${width} + ${c0} + cc]${mul};
    }
    ${dst}[e] = toTile(x);
  }`;

// Forward: thread (r = lid / 4, l = lid % 4) owns query row r of the tile and value columns
// dv0 + l + 4 j (j < 16); it computes the scores of row r for keys 4 l .. 4 l + 3 of each key tile.
const forwardShader = (useHalf: boolean) =>
  `${
    header(
      [["out", "read_write"], ["lse", "read_write"], ["q", "read"], ["k", "read"], ["v", "read"]],
      useHalf,
    )
  }
var<workgroup> Qs: array<ST, ${TILE * FLASH_MAX_HEAD_DIM}>;
var<workgroup> Ks: array<ST, ${TILE * FLASH_MAX_HEAD_DIM}>;
var<workgroup> Vs: array<ST, ${TILE * 64}>;
var<workgroup> Ss: array<f32, ${TILE * TILE}>;
${ENTRY}
  let r = lid / 4;
  let l = lid % 4;
  let dv0 = i32(wid.z) * 64;
  let t0_Qs = t0;
  ${loadTile("Qs", "q", "u.T", "u.D", "u.D", "0", " * u.scale")}
  let row = t0 + r;
  let rowAbs = u.past + row; // sees keys 0..rowAbs
  let kEnd = min(u.Tk, u.past + min(t0 + ${TILE}, u.T));
  var m = -3.0e38;
  var lsum = 0.0;
  var o: array<f32, 16>;
  for (var j0 = 0; j0 < kEnd; j0 = j0 + ${TILE}) {
    let t0_Ks = j0;
    let t0_Vs = j0;
    workgroupBarrier();
    ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", "0")}
    ${loadTile("Vs", "v", "u.Tk", "u.Dv", "64", "dv0")}
    workgroupBarrier();
    for (var cc = 0; cc < 4; cc = cc + 1) {
      let c = l * 4 + cc;
      var s = 0.0;
      for (var d = 0; d < u.D; d = d + 1) { s = s + f32(Qs[r * u.D + d]) * f32(Ks[c * u.D + d]); }
      Ss[r * ${TILE} + c] = s;
    }
    workgroupBarrier();
    var mx = m;
    for (var c = 0; c < ${TILE}; c = c + 1) {
      if (j0 + c <= rowAbs && j0 + c < u.Tk) { mx = max(mx, Ss[r * ${TILE} + c]); }
    }
    let alpha = exp(m - mx);
    lsum = lsum * alpha;
    for (var j = 0; j < 16; j = j + 1) { o[j] = o[j] * alpha; }
    for (var c = 0; c < ${TILE}; c = c + 1) {
      if (j0 + c <= rowAbs && j0 + c < u.Tk) {
        let p = exp(Ss[r * ${TILE} + c] - mx);
        lsum = lsum + p;
        for (var j = 0; j < 16; j = j + 1) { o[j] = o[j] + p * f32(Vs[c * 64 + l + 4 * j]); }
      }
    }
    m = mx;
  }
  if (row < u.T) {
    let ob = (bh * u.T + row) * u.Dv;
    for (var j = 0; j < 16; j = j + 1) {
      let col = dv0 + l + 4 * j;
      if (col < u.Dv) { out[ob + col] = o[j] / lsum; }
    }
    if (wid.z == 0u && l == 0) { lse[bh * u.T + row] = m + log(lsum); }
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
  var s = 0.0;
  for (var c = 0; c < u.Dv; c = c + 1) { s = s + f32(toTile(dout[row * u.Dv + c])) * o[row * u.Dv + c]; }
  delta[row] = s;
}`;

// The probabilities and score gradients of one [16 queries x 16 keys] tile, for the backward kernels.
// dP = dOut . V over all Dv columns in chunks of 32 through workgroup memory (dOs, Vs); `who` says
// which (query, key) pairs this thread computes: 4 of them, as (qr, kc) for i in 0..3.
const dsTile = (qr: string, kc: string) => `
    workgroupBarrier(); // the caller's Q or K tile is loaded
    // initialised explicitly: a declaration without one is not re-zeroed per iteration by every compiler
    var sv = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var dp = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var i = 0; i < 4; i = i + 1) {
      let qi = ${qr};
      let kj = ${kc};
      var s = 0.0;
      for (var d = 0; d < u.D; d = d + 1) { s = s + f32(Qs[qi * u.D + d]) * f32(Ks[kj * u.D + d]); }
      sv[i] = s;
    }
    for (var c0 = 0; c0 < u.Dv; c0 = c0 + 32) {
      workgroupBarrier();
      ${loadTile("dOs", "dout", "u.T", "u.Dv", "32", "c0")}
      ${loadTile("Vs", "v", "u.Tk", "u.Dv", "32", "c0")}
      workgroupBarrier();
      for (var i = 0; i < 4; i = i + 1) {
        let qi = ${qr};
        let kj = ${kc};
        var acc = 0.0;
        for (var d = 0; d < 32; d = d + 1) { acc = acc + f32(dOs[qi * 32 + d]) * f32(Vs[kj * 32 + d]); }
        dp[i] = dp[i] + acc;
      }
    }
    for (var i = 0; i < 4; i = i + 1) {
      let qi = ${qr};
      let kj = ${kc};
      let row = t0_Qs + qi;
      let key = t0_Ks + kj;
      var ds = 0.0;
      if (row < u.T && key < u.Tk && key <= u.past + row) {
        let p = exp(sv[i] - lse[bh * u.T + row]);
        ds = p * (dp[i] - delta[bh * u.T + row]);
      }
      Ss[qi * ${TILE} + kj] = ds;
    }
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
var<workgroup> Qs: array<ST, ${TILE * FLASH_MAX_HEAD_DIM}>;
var<workgroup> Ks: array<ST, ${TILE * FLASH_MAX_HEAD_DIM}>;
var<workgroup> dOs: array<ST, ${TILE * 32}>;
var<workgroup> Vs: array<ST, ${TILE * 32}>;
var<workgroup> Ss: array<f32, ${TILE * TILE}>;`;

// dq of one query tile: thread (r = lid / 4, l = lid % 4) computes dS for row r, keys 4 l..4 l + 3, then
// accumulates dq[r, l + 4 j] over all keys the tile sees. Qs holds q * scale, so dq = scale dS K.
const dqShader = (useHalf: boolean) =>
  `${header(BACKWARD_BOUND, useHalf)}
${backwardShared}
${ENTRY}
  let r = lid / 4;
  let l = lid % 4;
  let t0_Qs = t0;
  let t0_dOs = t0;
  ${loadTile("Qs", "q", "u.T", "u.D", "u.D", "0", " * u.scale")}
  let kEnd = min(u.Tk, u.past + min(t0 + ${TILE}, u.T));
  var acc: array<f32, 16>;
  for (var j0 = 0; j0 < kEnd; j0 = j0 + ${TILE}) {
    let t0_Ks = j0;
    let t0_Vs = j0;
    workgroupBarrier();
    ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", "0")}
    ${dsTile("r", "l * 4 + i")}
    for (var c = 0; c < ${TILE}; c = c + 1) {
      let ds = Ss[r * ${TILE} + c];
      for (var j = 0; j < 16; j = j + 1) {
        let d = l + 4 * j;
        if (d < u.D) { acc[j] = acc[j] + ds * f32(Ks[c * u.D + d]); }
      }
    }
  }
  let row = t0 + r;
  if (row < u.T) {
    for (var j = 0; j < 16; j = j + 1) {
      let d = l + 4 * j;
      if (d < u.D) { grad[(bh * u.T + row) * u.D + d] = acc[j] * u.scale; }
    }
  }
}`;

// The first query tile whose rows can see key tile t0 (query i sees keys up to past + i).
const FIRST_QUERY_TILE = `let iStart = (max(0, t0 - u.past) / ${TILE}) * ${TILE};`;

// dk of one key tile: thread (c = lid / 4, l = lid % 4) computes dS for key c, queries 4 l..4 l + 3, then
// accumulates dk[c, l + 4 j] = sum over queries of dS q * scale (= dS Qs).
const dkShader = (useHalf: boolean) =>
  `${header(BACKWARD_BOUND, useHalf)}
${backwardShared}
${ENTRY}
  let c = lid / 4;
  let l = lid % 4;
  let t0_Ks = t0;
  let t0_Vs = t0;
  ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", "0")}
  ${FIRST_QUERY_TILE}
  var acc: array<f32, 16>;
  for (var i0 = iStart; i0 < u.T; i0 = i0 + ${TILE}) {
    let t0_Qs = i0;
    let t0_dOs = i0;
    workgroupBarrier();
    ${loadTile("Qs", "q", "u.T", "u.D", "u.D", "0", " * u.scale")}
    ${dsTile("l * 4 + i", "c")}
    for (var r = 0; r < ${TILE}; r = r + 1) {
      let ds = Ss[r * ${TILE} + c];
      for (var j = 0; j < 16; j = j + 1) {
        let d = l + 4 * j;
        if (d < u.D) { acc[j] = acc[j] + ds * f32(Qs[r * u.D + d]); }
      }
    }
  }
  let key = t0 + c;
  if (key < u.Tk) {
    for (var j = 0; j < 16; j = j + 1) {
      let d = l + 4 * j;
      if (d < u.D) { grad[(bh * u.Tk + key) * u.D + d] = acc[j]; }
    }
  }
}`;

// dv of one key tile and 64 value columns: thread (c = lid / 4, l = lid % 4) computes p for key c and
// queries 4 l..4 l + 3, then accumulates dv[c, dv0 + l + 4 j] = sum over queries of p dOut.
const dvShader = (useHalf: boolean) =>
  `${
    header([["grad", "read_write"], ["q", "read"], ["k", "read"], ["dout", "read"], ["lse", "read"]], useHalf)
  }
var<workgroup> Qs: array<ST, ${TILE * FLASH_MAX_HEAD_DIM}>;
var<workgroup> Ks: array<ST, ${TILE * FLASH_MAX_HEAD_DIM}>;
var<workgroup> dOs: array<ST, ${TILE * 64}>;
var<workgroup> Ss: array<f32, ${TILE * TILE}>;
${ENTRY}
  let c = lid / 4;
  let l = lid % 4;
  let dv0 = i32(wid.z) * 64;
  let t0_Ks = t0;
  ${loadTile("Ks", "k", "u.Tk", "u.D", "u.D", "0")}
  ${FIRST_QUERY_TILE}
  var acc: array<f32, 16>;
  for (var i0 = iStart; i0 < u.T; i0 = i0 + ${TILE}) {
    let t0_Qs = i0;
    let t0_dOs = i0;
    workgroupBarrier();
    ${loadTile("Qs", "q", "u.T", "u.D", "u.D", "0", " * u.scale")}
    ${loadTile("dOs", "dout", "u.T", "u.Dv", "64", "dv0")}
    workgroupBarrier();
    for (var i = 0; i < 4; i = i + 1) {
      let qi = l * 4 + i;
      let row = i0 + qi;
      let key = t0 + c;
      var p = 0.0;
      if (row < u.T && key < u.Tk && key <= u.past + row) {
        var s = 0.0;
        for (var d = 0; d < u.D; d = d + 1) { s = s + f32(Qs[qi * u.D + d]) * f32(Ks[c * u.D + d]); }
        p = exp(s - lse[bh * u.T + row]);
      }
      Ss[qi * ${TILE} + c] = p;
    }
    workgroupBarrier();
    for (var r = 0; r < ${TILE}; r = r + 1) {
      let p = Ss[r * ${TILE} + c];
      for (var j = 0; j < 16; j = j + 1) { acc[j] = acc[j] + p * f32(dOs[r * 64 + l + 4 * j]); }
    }
  }
  let key = t0 + c;
  if (key < u.Tk) {
    for (var j = 0; j < 16; j = j + 1) {
      let col = dv0 + l + 4 * j;
      if (col < u.Dv) { grad[(bh * u.Tk + key) * u.Dv + col] = acc[j]; }
    }
  }
}`;

class LmpipeFlashAttentionProgram extends GridProgram {}
class LmpipeFlashAttentionDeltaProgram extends GridProgram {}
class LmpipeFlashAttentionDqProgram extends GridProgram {}
class LmpipeFlashAttentionDkProgram extends GridProgram {}
class LmpipeFlashAttentionDvProgram extends GridProgram {}

/** The sizes of a call: q [BH, T, D], k [BH, Tk, D], v [BH, Tk, Dv], checked. */
function sizesOf(kernel: string, q: TensorInfo, k: TensorInfo, v: TensorInfo) {
  const [BH, T, D] = q.shape, Tk = k.shape[1], Dv = v.shape[2];
  const ok = q.shape.length === 3 && k.shape.length === 3 && v.shape.length === 3 && k.shape[0] === BH &&
    v.shape[0] === BH && k.shape[2] === D && v.shape[1] === Tk && Tk >= T && D <= FLASH_MAX_HEAD_DIM &&
    BH * T * D * Dv > 0 && [q, k, v].every((t) => t.dtype === "float32");
  if (!ok) {
    throw new Error(
      `${kernel}: expected float32 q [BH, T, D], k [BH, Tk, D], v [BH, Tk, Dv] with Tk >= T, ` +
        `0 < D <= ${FLASH_MAX_HEAD_DIM} and no empty dimension; got q [${q.shape}], k [${k.shape}], ` +
        `v [${v.shape}] (causalAttention in lib/tensor/ops/attention/mod.ts runs the op chain for other inputs)`,
    );
  }
  return { BH, T, Tk, D, Dv, past: Tk - T };
}

function uniforms(s: ReturnType<typeof sizesOf>, scale: number, tilesPerHead: number) {
  const int = (v: number) => ({ type: "int32", data: [v] });
  return [
    int(s.BH),
    int(s.T),
    int(s.Tk),
    int(s.past),
    int(s.D),
    int(s.Dv),
    { type: "float32", data: [scale] },
    int(tilesPerHead),
  ];
}

function flashAttentionKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const { q, k, v } = inputs as Record<string, TensorInfo>;
  const scale = (attrs as { scale: number }).scale;
  const s = sizesOf(FLASH_ATTENTION_KERNEL, q, k, v);
  for (const [what, t] of [["q", q], ["k", k], ["v", v]] as const) {
    requireWithinBindingLimit(FLASH_ATTENTION_KERNEL, what, t, backend);
  }
  const device = backend.device as GPUDevice;
  const h = webgpuHalfOperands(device);
  const out = backend.makeTensorInfo([s.BH, s.T, s.Dv], "float32") as TensorInfo;
  const lse = backend.makeTensorInfo([s.BH, s.T], "float32") as TensorInfo;
  for (const t of [q, k, v, out, lse]) backend.uploadToGPU(t.dataId);
  const tiles = Math.ceil(s.T / TILE);
  const [gx, gy] = workgroupGrid(device, s.BH * tiles, FLASH_ATTENTION_KERNEL);
  backend.recordAndSubmit(
    new LmpipeFlashAttentionProgram(
      cachedPipeline(device, `${FLASH_ATTENTION_KERNEL}:${h}`, () => forwardShader(h)),
      [s.BH * s.T * s.Dv],
      [gx, gy, Math.ceil(s.Dv / 64)],
    ),
    flatView(out),
    [flatView(lse), flatView(q), flatView(k), flatView(v)],
    uniforms(s, scale, tiles),
  );
  return [out, lse];
}

function flashAttentionGradKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const { q, k, v, out, lse, dout } = inputs as Record<string, TensorInfo>;
  const scale = (attrs as { scale: number }).scale;
  const s = sizesOf(FLASH_ATTENTION_GRAD_KERNEL, q, k, v);
  if (!tf.util.arraysEqual(dout.shape, out.shape) || !tf.util.arraysEqual(out.shape, [s.BH, s.T, s.Dv])) {
    throw new Error(
      `${FLASH_ATTENTION_GRAD_KERNEL}: dOut [${dout.shape}] and out [${out.shape}] must both be [${[
        s.BH,
        s.T,
        s.Dv,
      ]}]`,
    );
  }
  const device = backend.device as GPUDevice;
  const h = webgpuHalfOperands(device);
  const delta = backend.makeTensorInfo([s.BH, s.T], "float32") as TensorInfo;
  const dq = backend.makeTensorInfo(q.shape.slice(), "float32") as TensorInfo;
  const dk = backend.makeTensorInfo(k.shape.slice(), "float32") as TensorInfo;
  const dv = backend.makeTensorInfo(v.shape.slice(), "float32") as TensorInfo;
  for (const t of [q, k, v, out, lse, dout, delta, dq, dk, dv]) backend.uploadToGPU(t.dataId);
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
    ),
    flatView(delta),
    [flatView(dout), flatView(out)],
    uniforms(s, scale, 1),
  );
  const rest = [flatView(q), flatView(k), flatView(v), flatView(dout), flatView(lse), flatView(delta)];
  backend.recordAndSubmit(
    new LmpipeFlashAttentionDqProgram(pipe("dq", dqShader), [s.BH * s.T * s.D], grid(s.BH * qTiles)),
    flatView(dq),
    rest,
    uniforms(s, scale, qTiles),
  );
  backend.recordAndSubmit(
    new LmpipeFlashAttentionDkProgram(pipe("dk", dkShader), [s.BH * s.Tk * s.D], grid(s.BH * kTiles)),
    flatView(dk),
    rest,
    uniforms(s, scale, kTiles),
  );
  backend.recordAndSubmit(
    new LmpipeFlashAttentionDvProgram(
      pipe("dv", dvShader),
      [s.BH * s.Tk * s.Dv],
      grid(s.BH * kTiles, Math.ceil(s.Dv / 64)),
    ),
    flatView(dv),
    [flatView(q), flatView(k), flatView(dout), flatView(lse)],
    uniforms(s, scale, kTiles),
  );
  backend.disposeData(delta.dataId);
  return [dq, dk, dv];
}

/** [out [BH, T, Dv], logsumexp [BH, T]] of causal attention in one webgpu dispatch (no gradient). */
export function flashAttentionCall(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  scale: number,
): [tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(
    FLASH_ATTENTION_KERNEL,
    { q, k, v } as unknown as tf.NamedTensorMap,
    { scale } as unknown as tf.NamedAttrMap,
  ) as [tf.Tensor, tf.Tensor];
}

/** [dq, dk, dv] of causal attention for upstream dOut, in four webgpu dispatches. */
export function flashAttentionGradCall(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  out: tf.Tensor,
  lse: tf.Tensor,
  dout: tf.Tensor,
  scale: number,
): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(
    FLASH_ATTENTION_GRAD_KERNEL,
    { q, k, v, out, lse, dout } as unknown as tf.NamedTensorMap,
    { scale } as unknown as tf.NamedAttrMap,
  ) as [tf.Tensor, tf.Tensor, tf.Tensor];
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
