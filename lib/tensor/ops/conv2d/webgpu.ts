// lmpipe's convolutions on webgpu: Conv2D, Conv2DBackpropInput and Conv2DBackpropFilter (NHWC, float32)
// as implicit GEMMs. Each is one matrix product whose operand tiles are gathered straight from the
// image and filter tensors while they are loaded into workgroup memory, so no im2col matrix is ever
// written to GPU memory:
//   forward        y[M = N*OH*OW, Co]        = patches(x)[M, KH*KW*Ci] x w[KH*KW*Ci, Co]
//   input grad     dx[M = N*H*W, Ci]         = patches(dy)[M, KH*KW*Co] x w^T (per offset)
//                  (the dy pixels a stride-s conv never sent to this input pixel read as 0)
//   filter grad    dw[KH*KW*Ci, Co]          = patches(x)^T[KH*KW*Ci, K = N*OH*OW] x dy[K, Co],
//                  split along K over several workgroups (split-K) when the output alone has too few
//                  tiles to fill a GPU, then one small dispatch adds the partial products in order.
// Tiles: 64 output rows x 64, 32 or 16 columns (the narrowest that holds the output's width) per
// workgroup of 256 threads, 4 x 4, 4 x 2 or 4 x 1 outputs per thread in registers (named variables, the
// loops over them unrolled when the shader is generated), K in steps of 16 through workgroup memory
// (read back as vectors: a thread's 4 rows of A, its columns of B); every sum is
// accumulated in float32. Under --precision mixed with an adapter that offers shader-f16, the tiles are
// held in workgroup memory as f16 (each operand rounded to binary16 as it is loaded, weights and
// incoming gradients included) and the products are summed in f32: kernel_choice.ts webgpuHalfOperands.
// Registered over TF.js's webgpu kernels by installWebgpuConvKernels (lib/tensor/backend.ts calls it
// once); each call checks lib/tensor/kernel_choice.ts kernelFor("conv2d") === "lmpipe" and hands anything it does not
// handle (LMPIPE_WEBGPU_CONV=0, NCHW, other dtypes, dilated gradients) to the kernel it replaced.
import * as tf from "@tensorflow/tfjs-core";
import {
  cachedPipeline,
  flatView,
  GridProgram,
  requireWithinBindingLimit,
  workgroupGrid,
} from "../../webgpu/kernels.ts";
import { kernelFor, webgpuHalfOperands } from "../../kernel_choice.ts";
import { flatConvGeometry, nhwcConvInfo } from "./mod.ts";
import { WGSL_ROUND_TO_HALF } from "../../webgpu/wgsl.ts";

const { backend_util } = tf;
// The backend's internals are reached on purpose (TF.js 4.22: recordAndSubmit, uploadToGPU,
// makeTensorInfo, disposeData, device), typed loosely as in webgpu/kernels.ts.
// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;
type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs: tf.NamedAttrMap };
type KernelFn = (args: KernelArgs) => TensorInfo;

const TK = 16, THREADS = 256;
/** Workgroups a dispatch should have before split-K stops adding more (about 2 per SM of a big GPU). */
const TARGET_WORKGROUPS = 264;
/** The least K a split-K slice gets (shorter slices cost more in the final sum than they save). */
const MIN_SPLIT_K = 512;

/**
 * The shape of one implicit GEMM and its gathers. The index arithmetic of the gathers is kept out of the
 * inner loop: each thread decodes the row m of the A elements it loads once (fixA), and the column k as
 * mixed-radix digits (d.x fastest, radix kRadix[0], then d.y with radix kRadix[1], then d.z) that it
 * advances by 16 per K step without dividing.
 */
interface GemmPlan {
  /** The kernel's name, also the program class's label in profiles. */
  name: string;
  /** WGSL body of `fn fixA(m: i32) -> vec4<i32>`: what loadA needs of row m (m < M). */
  fixA: string;
  /** WGSL expressions of the radices of A's k digits. */
  kRadix: [string, string];
  /** WGSL body of `fn loadA(f: vec4<i32>, d: vec3<i32>) -> f32`: A at fixA(m) and the digits d of k. */
  loadA: string;
  /** The radices of B's k digits when loadB reads them (else null: d is 0). */
  bRadix: [string, string] | null;
  /** WGSL body of `fn loadB(k: i32, d: vec3<i32>, n: i32) -> f32`. */
  loadB: string;
  /** Whether consecutive threads should load consecutive m (A contiguous along m) rather than k. */
  aAlongM: boolean;
  M: number;
  N: number;
  K: number;
  /** The geometry uniforms the loads read (all i32), by name. */
  geometry: Record<string, number>;
}

const GEOMETRY_FIELDS = [
  "B",
  "H",
  "W",
  "Ci",
  "OH",
  "OW",
  "Co",
  "KH",
  "KW",
  "sh",
  "sw",
  "dh",
  "dw",
  "pt",
  "pl",
];

// Rows per tile (the output rows a workgroup computes, 4 or 8 per thread): 64 or 128, from
// LMPIPE_WEBGPU_CONV_ROWS (for measuring both on a GPU; bench/gpu/shapes.ts) or 64.
let tileRows = readTileRows();
function readTileRows(): number {
  try {
    return Deno.env.get("LMPIPE_WEBGPU_CONV_ROWS") === "128" ? 128 : 64;
  } catch {
    return 64; // no env permission
  }
}
/** For tests and benchmarks: rows per conv tile, 64 or 128. */
export function setConvTileRows(rows: 64 | 128): void {
  tileRows = rows;
}

// Everything a thread keeps (its A and B load state, its 4 x cj sums) is a named variable and every
// loop over them is unrolled here in TypeScript: WGSL arrays indexed in loops may be left in local
// memory by a GPU's compiler, which on an H200 made these kernels ~100x slower than the GEMM's.
function gemmShader(p: GemmPlan, tn: number, useHalf: boolean, TM: number): string {
  const cj = tn / 16; // columns per thread: 4 (a vec4), 2 (a vec2) or 1
  const RM = TM / 16; // rows per thread: 4 or 8, read from workgroup memory as RM / 4 vec4s
  // The A tile's row stride in workgroup memory: TM plus 4, so that 16 threads storing one m at 16 k's
  // fall in 8 banks instead of one (a 16-way conflict), while rows stay vec4-aligned.
  const AS_STRIDE = TM + 4;
  const RA = (TM * TK) / THREADS, RB = (tn * TK) / THREADS; // A and B elements each thread loads
  const st = useHalf ? "f16" : "f32";
  const vec = (t: string) => (cj === 1 ? t : `vec${cj}<${t}>`); // cj values of type t
  const acc = vec("f32");
  const each = (n: number, f: (i: number) => string, sep = "\n  ") =>
    Array.from({ length: n }, (_, i) => f(i)).join(sep);
  const aSlot = (r: number) =>
    p.aAlongM
      ? `let mm = (lid + ${r * THREADS}) % ${TM}; let kk = (lid + ${r * THREADS}) / ${TM};`
      : `let mm = (lid + ${r * THREADS}) / ${TK}; let kk = (lid + ${r * THREADS}) % ${TK};`;
  const toSt = (v: string) => (useHalf ? `f16(roundToHalf(${v}))` : v);
  const loadTile = each(RA, (r) =>
    `{
      ${aSlot(r)}
      var v = 0.0;
      if (m0 + mm < u.M && kt + kk < kEnd) { v = loadA(aFix${r}, aDig${r}); }
      As[(kk * ${AS_STRIDE} + mm) / 4][mm % 4] = ${toSt("v")};
      aDig${r} = advance(aDig${r}, ${TK}, ra0, ra1);
    }`, "\n    ") + "\n    " + each(RB, (r) =>
      `{
      let nn = (lid + ${r * THREADS}) % ${tn};
      let kk = (lid + ${r * THREADS}) / ${tn};
      let gn = n0 + nn;
      let gk = kt + kk;
      var v = 0.0;
      if (gn < u.N && gk < kEnd) { v = loadB(gk, bDig${r}, gn); }
      ${
        cj > 1
          ? `Bs[(kk * ${tn} + nn) / ${cj}][nn % ${cj}] = ${toSt("v")};`
          : `Bs[kk * ${tn} + nn] = ${toSt("v")};`
      }
      ${p.bRadix ? `bDig${r} = advance(bDig${r}, ${TK}, rb0, rb1);` : ""}
    }`, "\n    ");
  // one k of the tile: the thread's RM rows of A as vec4s, its cj columns of B, RM x cj multiply-adds
  // (a product then a sum, as before: the same rounding in the same k order)
  const comp = each(
    RM,
    (i) => {
      const ai = `a${i >> 2}.${"xyzw"[i & 3]}`;
      return `acc${i} = acc${i} + ${cj > 1 ? `${vec("f32")}(${ai})` : ai} * b;`;
    },
    " ",
  );
  const inner = each(
    TK,
    (kk) =>
      `{ ${
        each(
          RM / 4,
          (q) => `let a${q} = vec4<f32>(As[${(kk * AS_STRIDE) / 4} + ty * ${RM / 4} + ${q}]);`,
          " ",
        )
      } ` +
      `let b = ${vec("f32")}(Bs[${(kk * tn) / cj} + tx]); ${comp} }`,
    "\n      ",
  );
  const store = each(RM, (i) =>
    `{
    let m = m0 + ty * ${RM} + ${i};
    if (m < u.M) {
      ${
      each(cj, (j) =>
        `{ let n = n0 + tx * ${cj} + ${j}; if (n < u.N) { out[base + m * u.N + n] = acc${i}${
          cj > 1 ? `.${"xyzw"[j]}` : ""
        }; } }`, "\n      ")
    }
    }
  }`);
  return `${useHalf ? "enable f16;" : ""}
struct Uniforms {
  nanValue: f32, infValue: f32, shape0: i32, stride0: i32, shape1: i32, stride1: i32,
  shape2: i32, stride2: i32, M: i32, N: i32, K: i32, kPer: i32, tilesN: i32, tiles: i32,
  ${GEOMETRY_FIELDS.map((f) => `${f}: i32,`).join(" ")}
};
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> u: Uniforms;
${useHalf ? WGSL_ROUND_TO_HALF : ""}
var<workgroup> As: array<vec4<${st}>, ${(TK * AS_STRIDE) / 4}>;
var<workgroup> Bs: array<${vec(st)}, ${(TK * tn) / cj}>;

fn fixA(m: i32) -> vec4<i32> {
${p.fixA}
}
fn loadA(f: vec4<i32>, d: vec3<i32>) -> f32 {
${p.loadA}
}
fn loadB(k: i32, d: vec3<i32>, n: i32) -> f32 {
${p.loadB}
}
// the digits of i in radices r0, r1 (the last digit unbounded), and those digits advanced by \`by\`
fn digits(i: i32, r0: i32, r1: i32) -> vec3<i32> {
  let q = i / r0;
  return vec3<i32>(i % r0, q % r1, q / r1);
}
fn advance(d: vec3<i32>, by: i32, r0: i32, r1: i32) -> vec3<i32> {
  var x = d;
  x.x = x.x + by;
  loop {
    if (x.x < r0) { break; }
    x.x = x.x - r0;
    x.y = x.y + 1;
    if (x.y == r1) { x.y = 0; x.z = x.z + 1; }
  }
  return x;
}

@compute @workgroup_size(${THREADS})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lidu: u32) {
  let tile = i32(wid.y * nwg.x + wid.x);
  if (tile >= u.tiles) { return; } // the same for the whole workgroup
  let lid = i32(lidu);
  let m0 = (tile / u.tilesN) * ${TM};
  let n0 = (tile % u.tilesN) * ${tn};
  let kStart = i32(wid.z) * u.kPer;
  let kEnd = min(u.K, kStart + u.kPer);
  let tx = lid % 16;
  let ty = lid / 16;
  ${each(RM, (i) => `var acc${i}: ${acc};`, " ")}
  // what each of this thread's A and B loads needs, decoded once
  let ra0 = ${p.kRadix[0]};
  let ra1 = ${p.kRadix[1]};
  let rb0 = ${p.bRadix ? p.bRadix[0] : "1"};
  let rb1 = ${p.bRadix ? p.bRadix[1] : "1"};
  ${
    each(RA, (r) =>
      `var aFix${r}: vec4<i32>; var aDig${r}: vec3<i32>; { ${aSlot(r)}
    aFix${r} = fixA(min(m0 + mm, u.M - 1)); aDig${r} = digits(kStart + kk, ra0, ra1); }`)
  }
  ${each(RB, (r) => `var bDig${r} = digits(kStart + (lid + ${r * THREADS}) / ${tn}, rb0, rb1);`)}
  for (var kt = kStart; kt < kEnd; kt = kt + ${TK}) {
    ${loadTile}
    workgroupBarrier();
    ${inner}
    workgroupBarrier();
  }
  let base = i32(wid.z) * u.M * u.N;
  ${store}
}`;
}

// Adds `splits` partial products [splits, count] into [count], split 0 first.
const splitSumShader = () => `
struct Uniforms {
  nanValue: f32, infValue: f32, shape0: i32, stride0: i32, shape1: i32, stride1: i32, count: i32, splits: i32,
};
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<uniform> u: Uniforms;
@compute @workgroup_size(64)
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = i32((wid.y * nwg.x + wid.x) * 64u + lid);
  if (i >= u.count) { return; }
  var s = part[i];
  for (var z = 1; z < u.splits; z = z + 1) { s = s + part[z * u.count + i]; }
  out[i] = s;
}`;

class LmpipeConv2DProgram extends GridProgram {}
class LmpipeConv2DBackpropInputProgram extends GridProgram {}
class LmpipeConv2DBackpropFilterProgram extends GridProgram {}
class LmpipeConvSplitSumProgram extends GridProgram {}
const PROGRAMS: Record<string, typeof GridProgram> = {
  Conv2D: LmpipeConv2DProgram,
  Conv2DBackpropInput: LmpipeConv2DBackpropInputProgram,
  Conv2DBackpropFilter: LmpipeConv2DBackpropFilterProgram,
};

// fixA of the forward conv and of the input gradient: row m is pixel (y_, x_) of image m / (h w) on an
// h x w grid; y and x say what loadA wants of them.
const PIXEL_ROW = (h: string, w: string, y: string, x: string) => `
  let p_ = m % (u.${h} * u.${w});
  let y_ = p_ / u.${w};
  let x_ = p_ % u.${w};
  return vec4<i32>(m / (u.${h} * u.${w}), ${y}, ${x}, 0);`;

// The input pixel x[b, iy, ix, c], or 0 in the padding.
const READ_X = (b: string, iy: string, ix: string, c: string) => `
  let iy = ${iy};
  let ix = ${ix};
  if (iy < 0 || iy >= u.H || ix < 0 || ix >= u.W) { return 0.0; }
  return a[((${b} * u.H + iy) * u.W + ix) * u.Ci + ${c}];`;

function plan(
  kind: "Conv2D" | "Conv2DBackpropInput" | "Conv2DBackpropFilter",
  ci: ReturnType<typeof backend_util.computeConv2DInfo>,
): GemmPlan {
  const geometry: Record<string, number> = { ...flatConvGeometry(ci) };
  const taps = ci.filterHeight * ci.filterWidth;
  const outPixels = ci.batchSize * ci.outHeight * ci.outWidth;
  const sizes = { geometry, aAlongM: false, bRadix: null, loadB: `  return b[k * u.Co + n];` };
  if (kind === "Conv2D") {
    // row m: output pixel (b, oy, ox) -> f = (b, oy sh - pt, ox sw - pl); k digits: (c, kx, ky)
    return {
      ...sizes,
      name: kind,
      M: outPixels,
      N: ci.outChannels,
      K: taps * ci.inChannels,
      fixA: PIXEL_ROW("OH", "OW", "y_ * u.sh - u.pt", "x_ * u.sw - u.pl"),
      kRadix: ["u.Ci", "u.KW"],
      loadA: READ_X("f.x", "f.y + d.z * u.dh", "f.z + d.y * u.dw", "d.x"),
    };
  }
  if (kind === "Conv2DBackpropFilter") {
    // row m: tap (ky, kx) and channel c -> f = (ky dh - pt, kx dw - pl, c); k digits: output pixel (ox, oy, b)
    return {
      ...sizes,
      name: kind,
      M: taps * ci.inChannels,
      N: ci.outChannels,
      K: outPixels,
      aAlongM: true,
      fixA: `
  let t_ = m % (u.KW * u.Ci);
  return vec4<i32>((m / (u.KW * u.Ci)) * u.dh - u.pt, (t_ / u.Ci) * u.dw - u.pl, t_ % u.Ci, 0);`,
      kRadix: ["u.OW", "u.OH"],
      loadA: READ_X("d.z", "d.y * u.sh + f.x", "d.x * u.sw + f.y", "f.z"),
    };
  }
  // input gradient: input pixel (b, y, x) received dy at output pixel ((y + pt - ky) / sh, ...) through
  // tap (ky, kx) when that division is exact and lands inside the output. Row m -> f = (b, y + pt, x + pl);
  // k digits: (co, kx, ky); B = w[ky, kx, n, co] with k digits (co, tap)
  return {
    ...sizes,
    name: kind,
    M: ci.batchSize * ci.inHeight * ci.inWidth,
    N: ci.inChannels,
    K: taps * ci.outChannels,
    fixA: PIXEL_ROW("H", "W", "y_ + u.pt", "x_ + u.pl"),
    kRadix: ["u.Co", "u.KW"],
    loadA: `
  let ty = f.y - d.z * u.dh;
  let tx = f.z - d.y * u.dw;
  if (ty < 0 || tx < 0 || ty % u.sh != 0 || tx % u.sw != 0) { return 0.0; }
  let oy = ty / u.sh;
  let ox = tx / u.sw;
  if (oy >= u.OH || ox >= u.OW) { return 0.0; }
  return a[((f.x * u.OH + oy) * u.OW + ox) * u.Co + d.x];`,
    bRadix: ["u.Co", "0x7fffffff"],
    loadB: `  return b[(d.y * u.Ci + n) * u.Co + d.x];`,
  };
}

/** Runs plan `p` on bound tensors a, b; returns the [M, N] product as a new tensor of `shape`. */
function runGemm(
  backend: GpuBackend,
  p: GemmPlan,
  a: TensorInfo,
  b: TensorInfo,
  shape: number[],
): TensorInfo {
  const device = backend.device as GPUDevice;
  const useHalf = webgpuHalfOperands(device);
  const tn = p.N <= 16 ? 16 : p.N <= 32 ? 32 : 64;
  const TM = tileRows;
  const tilesN = Math.ceil(p.N / tn), tiles = Math.ceil(p.M / TM) * tilesN;
  // split-K: more workgroups along K when the output has too few tiles, each slice at least MIN_SPLIT_K
  let splits = 1;
  if (tiles < TARGET_WORKGROUPS && p.K >= 2 * MIN_SPLIT_K) {
    splits = Math.min(Math.ceil(TARGET_WORKGROUPS / tiles), Math.floor(p.K / MIN_SPLIT_K), 64);
    const limit = Math.floor(backend.device.limits.maxStorageBufferBindingSize / (4 * p.M * p.N));
    splits = Math.max(1, Math.min(splits, limit));
  }
  const kPer = Math.ceil(Math.ceil(p.K / splits) / TK) * TK;
  splits = Math.ceil(p.K / kPer);
  const outInfo = { dataId: {}, shape, dtype: "float32" } as TensorInfo;
  requireWithinBindingLimit(`${p.name} (lmpipe webgpu)`, "output", outInfo, backend);
  const out = backend.makeTensorInfo(shape, "float32") as TensorInfo;
  const target = splits > 1 ? backend.makeTensorInfo([splits * p.M * p.N], "float32") as TensorInfo : out;
  for (const t of [a, b, target]) backend.uploadToGPU(t.dataId);
  const key = `LmpipeConv:${p.name}:${TM}x${tn}:${useHalf}`;
  const pipeline = cachedPipeline(device, key, () => gemmShader(p, tn, useHalf, TM));
  const [gx, gy] = workgroupGrid(device, tiles, `${p.name} (lmpipe webgpu conv)`);
  const int = (v: number) => ({ type: "int32", data: [v] });
  const program = new PROGRAMS[p.name](pipeline, [splits * p.M * p.N], [gx, gy, splits]);
  const elements = (t: TensorInfo) => t.shape.reduce((x, y) => x * y, 1);
  program.cost = { flops: 2 * p.M * p.N * p.K, bytes: 4 * (elements(a) + elements(b) + splits * p.M * p.N) };
  backend.recordAndSubmit(
    program,
    flatView(target),
    [flatView(a), flatView(b)],
    [p.M, p.N, p.K, kPer, tilesN, tiles, ...GEOMETRY_FIELDS.map((f) => p.geometry[f])].map(int),
  );
  if (splits > 1) {
    backend.uploadToGPU(out.dataId);
    const count = p.M * p.N;
    const sum = cachedPipeline(device, "LmpipeConvSplitSum", splitSumShader);
    backend.recordAndSubmit(
      new LmpipeConvSplitSumProgram(
        sum,
        [count],
        workgroupGrid(device, Math.ceil(count / 64), "conv split-K sum"),
      ),
      flatView(out),
      [flatView(target)],
      [int(count), int(splits)],
    );
    backend.disposeData(target.dataId);
  }
  return out;
}

function sizesOk(ci: ReturnType<typeof backend_util.computeConv2DInfo>, ts: TensorInfo[]): boolean {
  return ts.every((t) => t.dtype === "float32" && tf.util.sizeFromShape(t.shape) > 0) &&
    ci.outHeight > 0 && ci.outWidth > 0;
}

function conv2D(orig: KernelFn): KernelFn {
  return (args) => {
    const { x, filter } = args.inputs as Record<string, TensorInfo>;
    const ci = kernelFor("conv2d") === "lmpipe"
      ? nhwcConvInfo(x.shape, filter.shape, args.attrs, args.attrs.dilations as number)
      : null;
    if (!ci || !sizesOk(ci, [x, filter])) return orig(args);
    for (const [what, t] of [["x", x], ["filter", filter]] as const) {
      requireWithinBindingLimit("Conv2D (lmpipe webgpu)", what, t, args.backend);
    }
    return runGemm(args.backend, plan("Conv2D", ci), x, filter, ci.outShape.slice());
  };
}

function conv2DBackpropInput(orig: KernelFn): KernelFn {
  return (args) => {
    const { dy, filter } = args.inputs as Record<string, TensorInfo>;
    const inputShape = args.attrs.inputShape as number[];
    const ci = kernelFor("conv2d") === "lmpipe"
      ? nhwcConvInfo(inputShape, filter.shape, args.attrs, 1)
      : null;
    if (!ci || !sizesOk(ci, [dy, filter])) return orig(args);
    for (const [what, t] of [["dy", dy], ["filter", filter]] as const) {
      requireWithinBindingLimit("Conv2DBackpropInput (lmpipe webgpu)", what, t, args.backend);
    }
    return runGemm(args.backend, plan("Conv2DBackpropInput", ci), dy, filter, inputShape.slice());
  };
}

function conv2DBackpropFilter(orig: KernelFn): KernelFn {
  return (args) => {
    const { x, dy } = args.inputs as Record<string, TensorInfo>;
    const filterShape = args.attrs.filterShape as number[];
    const ci = kernelFor("conv2d") === "lmpipe" ? nhwcConvInfo(x.shape, filterShape, args.attrs, 1) : null;
    if (!ci || !sizesOk(ci, [x, dy])) return orig(args);
    for (const [what, t] of [["x", x], ["dy", dy]] as const) {
      requireWithinBindingLimit("Conv2DBackpropFilter (lmpipe webgpu)", what, t, args.backend);
    }
    return runGemm(args.backend, plan("Conv2DBackpropFilter", ci), x, dy, filterShape.slice());
  };
}

let installed = false;

/**
 * Puts lmpipe's conv kernels over the webgpu backend's Conv2D, Conv2DBackpropInput and
 * Conv2DBackpropFilter (after lib/tensor/patches/webgpu.ts, whose ops-built filter gradient becomes the
 * fallback). Idempotent; a no-op when the webgpu backend is not loaded.
 */
export function installWebgpuConvKernels(): void {
  if (installed || !tf.getKernel(tf.Conv2D, "webgpu")) return;
  installed = true;
  for (
    const [name, make] of [
      [tf.Conv2D, conv2D],
      [tf.Conv2DBackpropInput, conv2DBackpropInput],
      [tf.Conv2DBackpropFilter, conv2DBackpropFilter],
    ] as const
  ) {
    const old = tf.getKernel(name, "webgpu")!;
    tf.unregisterKernel(name, "webgpu");
    tf.registerKernel({
      kernelName: name,
      backendName: "webgpu",
      kernelFunc: make(old.kernelFunc as unknown as KernelFn) as unknown as tf.KernelFunc,
      setupFunc: old.setupFunc,
      disposeFunc: old.disposeFunc,
    });
  }
}
