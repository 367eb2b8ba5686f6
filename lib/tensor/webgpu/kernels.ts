// Fused WGSL kernels for the webgpu backend: each replaces a chain of TF.js ops (one GPU dispatch
// each) by fewer dispatches that compute the same float32 operations (in the same order, except the sum
// of squares), so the op chains stay the single reference (lib/optim.ts, lib/precision.ts) and
// tests/webgpu_kernels_test.ts compares the two on the GPU (bit for bit on Mesa llvmpipe; the sum of
// squares against float64).
//   - AdamW update (LmpipeAdamWGroup, ~15 dispatches per parameter -> 1 per group of up to 8): reads
//     param, grad, m, v and writes new param, m, v. TF.js programs have one output, so this kernel
//     builds its own pipeline with three read_write bindings per parameter and hands it to the backend's recordAndSubmit (the path every TF.js
//     program takes after compilation: same command encoder, submit batching, timers, buffer lifetimes).
//   - sum of squares of all gradients (LmpipeSumSquares, ~3N -> ~N/15 + 1, a two-level reduction over
//     hundreds of workgroups): the gradient norm and the loss scaler's overflow check.
//   - binary16 rounding of --precision mixed (LmpipeToHalf, ~19 -> 1): a one-output TF.js program.
// It also holds what every lmpipe WGSL kernel shares (lib/tensor/ops/<op>/webgpu.ts use them): the
// fused-kernel switch, pipeline cache, workgroup grids, row programs, flat views, binding-limit and
// shape checks, and kernel (un)registration.
// All are registered as TF.js kernels for "webgpu" only, so they show up in tf.profile and their outputs
// are tracked and disposed like any other op's. Other backends keep the op chains (wasm has its own
// kernels for some: wasm/kernels.ts).
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../host_kernel.ts";
import { webgpuMaxTensorBytes } from "./limits.ts";
import { ADAMW_KERNEL, type AdamWConstants, SUM_SQUARES_KERNEL } from "../kernel_names.ts";
import { WGSL_ROUND_TO_BF16, WGSL_ROUND_TO_HALF } from "./wgsl.ts";
import { switchOn } from "../env_switch.ts";

// The backend's internals are reached on purpose (TF.js 4.22: recordAndSubmit, uploadToGPU,
// makeTensorInfo, tensorMap, device); typed loosely.
// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

export const TO_HALF_KERNEL = "LmpipeToHalf";
export const TO_BF16_KERNEL = "LmpipeToBf16";

const WORKGROUP = 64;

// On by default; LMPIPE_WEBGPU_FUSED=0 turns them off (the op chains run instead), as does
// setFusedKernelsEnabled(false) (bench/webgpu_launches.ts measures both ways).
let enabled = switchOn("LMPIPE_WEBGPU_FUSED");

/** Turns the fused webgpu kernels on or off for this process (callers fall back to the op chains). */
export function setFusedKernelsEnabled(on: boolean): void {
  enabled = on;
}

/** Whether the fused kernels are used now: enabled, and the current backend is webgpu. */
export function fusedKernelsActive(): boolean {
  return enabled && tf.getBackend() === "webgpu";
}

// --- AdamW ---------------------------------------------------------------------------------------
// One dispatch updates up to adamWGroupSize() parameters (7 storage buffers each: p, g, m, v in; new p,
// m, v out), one thread per element, in the op chain's float32 operations and order.
// TF.js's recordAndSubmit binds [output, ...inputs, uniforms] and fills the uniform buffer with NaN,
// Infinity, then a shape and strides field per bound tensor, then the program's own uniforms. All
// tensors are passed as 1-D views, so every one of those fields is a single 4-byte scalar. The
// struct below spells that layout out; the exactness tests would fail if it were off.
export const ADAMW_GROUP_KERNEL = "LmpipeAdamWGroup";
/** Storage buffers per parameter in binding order (the first new p is the program's output). */
const ADAMW_ROLES = ["pOut", "pIn", "gIn", "mIn", "vIn", "mOut", "vOut"];
/** The most parameters one AdamW dispatch updates. */
const ADAMW_MAX_GROUP = 8;

let adamWGrouping = true;

/** One parameter per AdamW dispatch (false), as before grouping: bench/webgpu_host.ts --ab compares both. */
export function setAdamWGroupingEnabled(on: boolean): void {
  adamWGrouping = on;
}

/**
 * Parameters one fused AdamW dispatch updates on `device`: its storage buffers per stage, less one for a
 * device-side control (adamWFusedGroup), over 7.
 */
export function adamWGroupSize(device: GPUDevice): number {
  if (!adamWGrouping) return 1;
  const fit = Math.floor((device.limits.maxStorageBuffersPerShaderStage - 1) / ADAMW_ROLES.length);
  return Math.max(1, Math.min(ADAMW_MAX_GROUP, fit));
}

// With a control ([scale, apply, stepSize, sqrtBc2, decay]: the first two computed on the device, the
// rest the step's learning-rate terms, written by the host): g = gIn * (gradScale * scale), the step size,
// sqrt(1 - b2^t) and the decay factor come from the control instead of the uniforms (whose decay field then
// says only whether the parameter decays, 1 or 0), so a recorded step's uniforms are the same every step
// (lib/tensor/webgpu/replay.ts); where apply is 0 the outputs are the inputs unchanged (a skipped step).
const adamWShader = (k: number, controlled: boolean) => {
  const ids = Array.from({ length: k }, (_, j) => j);
  const bound = k * ADAMW_ROLES.length + (controlled ? 1 : 0);
  const tfjsFields = Array.from({ length: bound }, (_, i) => `shape${i}: i32, stride${i}: i32,`).join(" ");
  const buffers = ids.flatMap((j) =>
    ADAMW_ROLES.map((role, r) => {
      const access = role.endsWith("Out") ? "read_write" : "read";
      return `@group(0) @binding(${
        j * ADAMW_ROLES.length + r
      }) var<storage, ${access}> ${role}${j}: array<f32>;`;
    })
  );
  // The op chain of lib/optim.ts AdamW.step, one float32 operation per TF.js op, in its order.
  const update = (j: number) => `
      let g = gIn${j}[i] * ${controlled ? "(u.gradScale * ctl[0])" : "u.gradScale"};
      let m1 = mIn${j}[i] * u.beta1 + g * u.oneMinusBeta1;
      let v1 = vIn${j}[i] * u.beta2 + (g * g) * u.oneMinusBeta2;
      let decayed = pIn${j}[i] * ${controlled ? `select(1.0, ctl[4], u.decay${j} != 0.0)` : `u.decay${j}`};
      let denom = sqrt(v1) / ${controlled ? "ctl[3]" : "u.sqrtBc2"} + u.eps;
      pOut${j}[i] = decayed - (m1 / denom) * ${controlled ? "ctl[2]" : "u.stepSize"};
      mOut${j}[i] = m1;
      vOut${j}[i] = v1;`;
  return `
struct Uniforms {
  nanValue: f32, infValue: f32, ${tfjsFields}
  groups: i32, gradScale: f32, beta1: f32, oneMinusBeta1: f32, beta2: f32, oneMinusBeta2: f32,
  sqrtBc2: f32, eps: f32, stepSize: f32, ${
    ids.map((j) => `n${j}: i32, first${j}: i32, decay${j}: f32,`).join(" ")
  }
};
${buffers.join("\n")}
${controlled ? `@group(0) @binding(${bound - 1}) var<storage, read> ctl: array<f32>;` : ""}
@group(0) @binding(${bound}) var<uniform> u: Uniforms;

@compute @workgroup_size(${WORKGROUP})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let w = i32(wid.y * nwg.x + wid.x);
  if (w >= u.groups) { return; }
  ${
    ids.map((j) =>
      `${j === 0 ? "" : "else "}if (${j + 1 < k ? `w < u.first${j + 1}` : "true"}) {
    let i = (w - u.first${j}) * ${WORKGROUP} + i32(lid);
    if (i < u.n${j}) {${
        controlled
          ? `
      if (ctl[1] == 0.0) {
        pOut${j}[i] = pIn${j}[i];
        mOut${j}[i] = mIn${j}[i];
        vOut${j}[i] = vIn${j}[i];
      } else {${update(j)}
      }`
          : update(j)
      }
    }
  }`
    ).join(" ")
  }
}`;
};

/** A program object in the shape recordAndSubmit reads (its class name labels timers and profiles). */
class LmpipeAdamWProgram {
  outputShape: number[];
  dispatch: [number, number, number];
  workgroupSize = [WORKGROUP, 1, 1];
  size = false;
  constructor(readonly pipeline: GPUComputePipeline, device: GPUDevice, n0: number, groups: number) {
    this.outputShape = [n0];
    this.dispatch = workgroupGrid(device, groups, ADAMW_GROUP_KERNEL);
  }
}

/**
 * A grid of `groups` workgroups: 1-D when it fits the per-dimension limit, else a square 2-D grid (the
 * shader numbers them wid.y * num_workgroups.x + wid.x and skips those past the end). `what` names the
 * caller in the error for a grid no GPU dimension can hold.
 */
export function workgroupGrid(device: GPUDevice, groups: number, what: string): [number, number, number] {
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [Math.max(1, groups), 1, 1];
  const side = Math.ceil(Math.sqrt(groups));
  if (side > max) throw new Error(`${what}: ${groups} workgroups exceed the dispatch limits of this GPU`);
  return [side, side, 1];
}

function adamWGroupKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo[] {
  const all = inputs as unknown as TensorInfo[];
  const { constants: cs, controlled } = attrs as unknown as {
    constants: AdamWConstants[];
    controlled: boolean;
  };
  const k = cs.length;
  const device = backend.device as GPUDevice;
  const ts = controlled ? all.slice(0, -1) : all;
  const control = controlled ? all[all.length - 1] : null;
  if (control) requireShape(ADAMW_GROUP_KERNEL, "control", control, [5]);
  if (ts.length !== 4 * k || k > adamWGroupSize(device)) {
    throw new Error(
      `${ADAMW_GROUP_KERNEL}: ${ts.length} tensors for ${k} parameters (at most ${adamWGroupSize(device)})`,
    );
  }
  const limit = webgpuMaxTensorBytes(backend);
  const outs: TensorInfo[] = [];
  const live: { n: number; bound: TensorInfo[]; c: AdamWConstants }[] = [];
  for (let j = 0; j < k; j++) {
    const [p, g, m, v] = ts.slice(4 * j, 4 * j + 4);
    const n = tf.util.sizeFromShape(p.shape);
    for (const [what, t] of [["gradient", g], ["m", m], ["v", v]] as const) {
      if (t.dtype !== "float32" || !tf.util.arraysEqual(t.shape, p.shape)) {
        throw new Error(
          `${ADAMW_KERNEL}: ${what} has shape [${t.shape}] (${t.dtype}), expected [${p.shape}] float32 like the parameter`,
        );
      }
    }
    if (n * 4 > limit) {
      throw new Error(
        `${ADAMW_KERNEL}: a parameter of ${n} floats is over this GPU's storage-buffer binding limit of ` +
          `${(limit / 2 ** 20).toFixed(1)} MiB; use a smaller model on this GPU`,
      );
    }
    const o = [0, 1, 2].map(() => backend.makeTensorInfo(p.shape.slice(), "float32") as TensorInfo);
    outs.push(...o);
    if (n === 0) {
      for (const t of o) backend.tensorMap.get(t.dataId).values = new Float32Array(0);
      continue;
    }
    for (const t of [p, g, m, v, ...o]) backend.uploadToGPU(t.dataId);
    live.push({ n, bound: [o[0], p, g, m, v, o[1], o[2]].map(flatView), c: cs[j] });
  }
  if (live.length === 0) return outs;
  const firsts: number[] = [];
  let groups = 0;
  for (const l of live) firsts.push(groups), groups += Math.ceil(l.n / WORKGROUP);
  const pipeline = cachedPipeline(
    device,
    `${ADAMW_GROUP_KERNEL}:${live.length}${control ? ":control" : ""}`,
    () => adamWShader(live.length, control !== null),
  );
  if (control) backend.uploadToGPU(control.dataId);
  const f = (x: number) => ({ type: "float32", data: [x] }),
    int = (x: number) => ({ type: "int32", data: [x] });
  const c = live[0].c; // shared by the group (only decay differs per parameter)
  const bound = [...live.flatMap((l) => l.bound), ...(control ? [flatView(control)] : [])];
  backend.recordAndSubmit(
    new LmpipeAdamWProgram(pipeline, device, live[0].n, groups),
    bound[0],
    bound.slice(1),
    [
      int(groups),
      f(c.gradScale),
      f(c.beta1),
      f(c.oneMinusBeta1),
      f(c.beta2),
      f(c.oneMinusBeta2),
      f(control ? 0 : c.sqrtBc2), // with a control: read from it
      f(c.eps),
      f(control ? 0 : c.stepSize),
      ...live.flatMap((
        l,
        j,
      ) => [int(l.n), int(firsts[j]), f(control ? (l.c.decays ?? l.c.decay !== 1) ? 1 : 0 : l.c.decay)]),
    ],
  );
  return outs;
}

/**
 * Fused AdamW updates on webgpu of up to adamWGroupSize() parameters in one dispatch: for each
 * [p, g, m, v] with its constants (equal but for `decay`), [new param, new m, new v] as fresh tensors (the
 * caller assigns them to its variables), in that order. Same float32 arithmetic as lib/optim.ts's op chain.
 * `control`, a float32 [scale, apply, stepSize, sqrtBc2, decay] (lib/optim.ts: the first two from
 * deviceStepControl on the device), multiplies gradScale by scale, takes the step size, sqrt(1 - b2^t) and
 * the decay factor of decaying parameters from it, and with apply 0 returns the inputs unchanged: a step
 * whose clip factor and overflow verdict the host has not read.
 */
export function adamWFusedGroup(
  params: { p: tf.Tensor; g: tf.Tensor; m: tf.Tensor; v: tf.Tensor; c: AdamWConstants }[],
  control?: tf.Tensor,
): tf.Tensor[] {
  const shared = (c: AdamWConstants) => JSON.stringify({ ...c, decay: 0, decays: false });
  if (params.some((x) => shared(x.c) !== shared(params[0].c))) {
    throw new Error(`${ADAMW_GROUP_KERNEL}: the parameters of one group must share all constants but decay`);
  }
  return tf.engine().runKernel(
    ADAMW_GROUP_KERNEL,
    [
      ...params.flatMap((x) => [x.p, x.g, x.m, x.v]),
      ...(control ? [control] : []),
    ] as unknown as tf.NamedTensorMap,
    { constants: params.map((x) => x.c), controlled: !!control } as unknown as tf.NamedAttrMap,
  ) as tf.Tensor[];
}

// --- sum of squares (gradient norm and loss-scale overflow check) ------------------------------------
// lib/optim.ts sumOfSquares: per tensor sum(square(g * scale)), then pairwise adds of the per-tensor sums
// (about 3N dispatches for N tensors, each tensor summed by ONE workgroup: TF.js's full reduction). Fused,
// as a two-level reduction that fills a GPU: level 1 cuts every tensor into chunks of SUM_CHUNK elements
// and gives each chunk its own workgroup (a 19M-element embedding: ~4,700 workgroups), which writes the
// chunk's sum of squares into one [chunks] buffer of partial sums, tensors in order; up to
// maxStorageBuffersPerShaderStage - 1 tensors (15 at most) share a dispatch. Level 2: one workgroup adds
// the partial sums into the scalar. For N parameters: ceil(N / tensors per dispatch) + 1 dispatches.
// Every sum is float32 in a fixed order (deterministic), but not TF.js's order: the result matches the op
// chain within float32 rounding (relative ~1e-6), not bit for bit (tests/webgpu_kernels_test.ts compares
// it with a float64 sum).
/** Threads per level-1 workgroup and elements per thread: SUM_CHUNK elements per workgroup. */
const SUM_THREADS = 256, SUM_PER_THREAD = 16;
/** Elements of one tensor summed by one level-1 workgroup. */
export const SUM_CHUNK = SUM_THREADS * SUM_PER_THREAD;
/** The most tensors one level-1 dispatch binds (besides the partial sums). */
const SUM_MAX_TENSORS = 15;

/** TF.js's workgroup size for summing `n` elements to one value (reduce_webgpu.ts in 4.22). */
export function reduceWorkgroup(n: number, maxX: number): number {
  if (n >= 32768 && maxX >= 512) return 512;
  return n >= 4096 ? 256 : 64;
}

/** Tensors one level-1 dispatch of the sum of squares binds on `device`. */
export function sumSquaresTensorsPerDispatch(device: GPUDevice): number {
  return Math.max(1, Math.min(SUM_MAX_TENSORS, device.limits.maxStorageBuffersPerShaderStage - 1));
}

/** The halving tree over `partial` (SUM_THREADS values) into partial[0]; starts with a barrier. */
const SUM_TREE = `
  workgroupBarrier();
  for (var half = ${SUM_THREADS / 2}u; half > 0u; half = half / 2u) {
    if (lid < half) { partial[lid] = partial[lid] + partial[lid + half]; }
    workgroupBarrier();
  }`;

// Level 1 over k tensors. Uniforms after recordAndSubmit's NaN, Infinity and (shape, stride) per bound
// tensor: the scale, the number of workgroups, then per tensor its size, its first workgroup in this
// dispatch and the index of its first partial sum. Workgroup w belongs to the last tensor whose first
// workgroup is <= w; thread t of chunk c adds elements c * SUM_CHUNK + t + SUM_THREADS * i (coalesced).
const sumSquaresShader = (k: number) => {
  const ids = Array.from({ length: k }, (_, j) => j);
  const tfjsFields = [
    "shape0: i32, stride0: i32,",
    ...ids.map((j) => `shape${j + 1}: i32, stride${j + 1}: i32,`),
  ];
  const field = (name: string) =>
    `switch j { ${
      ids.map((j) => `case ${j}u: { return u.${name}${j}; }`).join(" ")
    } default: { return 0; } }`;
  return `
struct Uniforms {
  nanValue: f32, infValue: f32, ${tfjsFields.join(" ")}
  scale: f32, groups: i32, ${ids.map((j) => `n${j}: i32, first${j}: i32, base${j}: i32,`).join(" ")}
};
@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
${ids.map((j) => `@group(0) @binding(${j + 1}) var<storage, read> x${j}: array<f32>;`).join("\n")}
@group(0) @binding(${k + 1}) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${SUM_THREADS}>;

fn count(j: u32) -> i32 { ${field("n")} }
fn first(j: u32) -> i32 { ${field("first")} }
fn base(j: u32) -> i32 { ${field("base")} }

@compute @workgroup_size(${SUM_THREADS})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let w = i32(wid.y * nwg.x + wid.x);
  if (w >= u.groups) { return; } // the same for the whole workgroup
  var j = 0u;
  ${ids.slice(1).map((j) => `if (w >= u.first${j}) { j = ${j}u; }`).join("\n  ")}
  let chunk = w - first(j);
  let n = count(j);
  let lo = chunk * ${SUM_CHUNK} + i32(lid);
  let hi = min(n, (chunk + 1) * ${SUM_CHUNK});
  var acc = 0.0;
  switch j {
    ${
    ids.map((j) =>
      `case ${j}u: { for (var e = lo; e < hi; e = e + ${SUM_THREADS}) { let s = x${j}[e] * u.scale; acc = acc + s * s; } }`
    ).join("\n    ")
  }
    default: {}
  }
  partial[lid] = acc;
  ${SUM_TREE}
  if (lid == 0u) { partials[base(j) + chunk] = partial[0]; }
}`;
};

// Level 2: one workgroup adds the `count` partial sums (thread t: t, t + SUM_THREADS, ...; then the tree).
// Uniforms for [output, one input]: NaN, Infinity, 2 x (shape, stride), then the count.
const sumPartialsShader = `
struct Uniforms { nanValue: f32, infValue: f32, shape0: i32, stride0: i32, shape1: i32, stride1: i32, count: i32 };
@group(0) @binding(0) var<storage, read_write> total: array<f32>;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<uniform> u: Uniforms;
var<workgroup> partial: array<f32, ${SUM_THREADS}>;

@compute @workgroup_size(${SUM_THREADS})
fn _start(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var e = i32(lid); e < u.count; e = e + ${SUM_THREADS}) { acc = acc + partials[e]; }
  partial[lid] = acc;
  ${SUM_TREE}
  if (lid == 0u) { total[0] = partial[0]; }
}`;

const extraPipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/** The compute pipeline of WGSL `code` (entry point _start), compiled once per device and key. */
export function cachedPipeline(device: GPUDevice, key: string, code: () => string): GPUComputePipeline {
  let m = extraPipelines.get(device);
  if (!m) extraPipelines.set(device, m = new Map());
  let p = m.get(key);
  if (!p) {
    const module = device.createShaderModule({ code: code(), label: key });
    p = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "_start" } });
    m.set(key, p);
  }
  return p;
}

/** A level-1 dispatch: `cost` (FLOPs, bytes) is what bench/webgpu_audit.ts charges it. */
class LmpipeSumSquaresProgram {
  outputShape: number[];
  dispatch: [number, number, number];
  workgroupSize = [SUM_THREADS, 1, 1];
  size = false;
  cost: { flops: number; bytes: number };
  constructor(
    readonly pipeline: GPUComputePipeline,
    device: GPUDevice,
    partials: number,
    groups: number,
    elements: number,
  ) {
    this.outputShape = [partials];
    this.dispatch = workgroupGrid(device, groups, SUM_SQUARES_KERNEL);
    this.cost = { flops: 3 * elements, bytes: 4 * (elements + groups) };
  }
}

class LmpipeSumPartialsProgram {
  outputShape = [1];
  dispatch: [number, number, number] = [1, 1, 1];
  workgroupSize = [SUM_THREADS, 1, 1];
  size = false;
  cost: { flops: number; bytes: number };
  constructor(readonly pipeline: GPUComputePipeline, partials: number) {
    this.cost = { flops: partials, bytes: 4 * (partials + 1) };
  }
}

function sumSquaresKernel(
  { inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend; attrs?: tf.NamedAttrMap },
): TensorInfo {
  const ts = inputs as unknown as TensorInfo[];
  const scale = (attrs as { scale: number }).scale;
  const device = backend.device as GPUDevice;
  const limit = webgpuMaxTensorBytes(backend);
  // the non-empty tensors with their sizes and the index of their first partial sum
  const parts: { t: TensorInfo; n: number; base: number }[] = [];
  let partials = 0;
  ts.forEach((t, i) => {
    const n = tf.util.sizeFromShape(t.shape);
    if (t.dtype !== "float32") {
      throw new Error(`${SUM_SQUARES_KERNEL}: tensor ${i} is ${t.dtype}, expected float32`);
    }
    if (n * 4 > limit) {
      throw new Error(`${SUM_SQUARES_KERNEL}: tensor ${i} (${n} floats) is over this GPU's binding limit`);
    }
    if (n === 0) return; // adds nothing
    backend.uploadToGPU(t.dataId);
    parts.push({ t, n, base: partials });
    partials += Math.ceil(n / SUM_CHUNK);
  });
  const out = backend.makeTensorInfo([], "float32") as TensorInfo;
  const sums = backend.makeTensorInfo([Math.max(1, partials)], "float32") as TensorInfo;
  backend.uploadToGPU(sums.dataId);
  backend.uploadToGPU(out.dataId);
  const perDispatch = sumSquaresTensorsPerDispatch(device);
  for (let g0 = 0; g0 < parts.length; g0 += perDispatch) {
    const group = parts.slice(g0, g0 + perDispatch);
    const k = group.length;
    const firsts: number[] = [];
    let groups = 0, elements = 0;
    for (const p of group) firsts.push(groups), groups += Math.ceil(p.n / SUM_CHUNK), elements += p.n;
    const pipeline = cachedPipeline(device, `LmpipeSumSquares:${k}`, () => sumSquaresShader(k));
    const int = (v: number) => ({ type: "int32", data: [v] });
    backend.recordAndSubmit(
      new LmpipeSumSquaresProgram(pipeline, device, Math.max(1, partials), groups, elements),
      flatView(sums),
      group.map((p) => ({ dataId: p.t.dataId, shape: [p.n], dtype: "float32" })),
      [
        { type: "float32", data: [scale] },
        int(groups),
        ...group.flatMap((p, j) => [int(p.n), int(firsts[j]), int(p.base)]),
      ],
    );
  }
  const level2 = cachedPipeline(device, "LmpipeSumPartials", () => sumPartialsShader);
  const out1 = { dataId: out.dataId, shape: [1], dtype: "float32" as const };
  backend.recordAndSubmit(new LmpipeSumPartialsProgram(level2, partials), out1, [flatView(sums)], [{
    type: "int32",
    data: [partials],
  }]);
  backend.disposeData(sums.dataId);
  return out;
}

// --- binary16 rounding -----------------------------------------------------------------------------
// Rounds float32 to the nearest binary16 value (ties to even) with integer operations on the bits,
// which no compiler may contract or reorder: normal range: add half a unit of the 13 dropped bits
// (minus one unless the kept part is odd) and clear them, a carry rolling into the exponent as it
// should; below 2^-14 the spacing is fixed at 2^-24: x * 2^24 is exact, round() ties to even, and
// the product back is exact. From 65520 up: infinity; NaN is returned unchanged; signs are kept
// (so tiny negatives become -0). Matches toHalf's op chain in lib/precision.ts bit for bit.
// bfloat16 (TO_BF16_KERNEL) is the same program on WGSL_ROUND_TO_BF16's rule.
class LmpipeToHalfProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames = ["A"];
  workgroupSize: [number, number, number] = [128, 1, 1];
  size = true;
  constructor(shape: number[], readonly bf16 = false) {
    this.outputShape = shape;
    this.shaderKey = bf16 ? "lmpipe_to_bf16" : "lmpipe_to_half";
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    const groups = Math.ceil(tf.util.sizeFromShape(shape) / this.workgroupSize[0]);
    this.dispatch = [Math.max(1, groups), 1, 1]; // runWebGPUProgram folds it into 2-D when too wide
  }
  getUserCode(): string {
    return `
      ${this.bf16 ? WGSL_ROUND_TO_BF16 : WGSL_ROUND_TO_HALF}
      fn main(index: i32) {
        if (index < uniforms.size) {
          setOutputAtIndex(index, ${this.bf16 ? "roundToBf16" : "roundToHalf"}(getAByOutputIndex(index)));
        }
      }`;
  }
}

/** The kernel running `Program` (binary16's or bfloat16's rounding) on a float32 tensor, named `kernel`. */
function roundingKernel(kernel: string, Program: new (shape: number[]) => LmpipeToHalfProgram) {
  return ({ inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend }): TensorInfo => {
    const { x } = inputs as Record<string, TensorInfo>;
    if (x.dtype !== "float32") throw new Error(`${kernel}: expected float32, got ${x.dtype}`);
    return backend.runWebGPUProgram(new Program(x.shape.slice()), [x], "float32");
  };
}

/** The same program on bfloat16's rule, under its own class name (which labels its dispatches). */
class LmpipeToBf16Program extends LmpipeToHalfProgram {
  constructor(shape: number[]) {
    super(shape, true);
  }
}

/** binary16 rounding of a float32 tensor in one webgpu dispatch (see lib/precision.ts toHalf). */
export function toHalfFused(x: tf.Tensor): tf.Tensor {
  return tf.engine().runKernel(TO_HALF_KERNEL, { x } as unknown as tf.NamedTensorMap, {}) as tf.Tensor;
}

/** bfloat16 rounding of a float32 tensor in one webgpu dispatch (see lib/precision.ts toBf16). */
export function toBf16Fused(x: tf.Tensor): tf.Tensor {
  return tf.engine().runKernel(TO_BF16_KERNEL, { x } as unknown as tf.NamedTensorMap, {}) as tf.Tensor;
}

/** A tensor bound as a flat float32 view (how the fused kernels hand tensors to recordAndSubmit). */
export function flatView(t: TensorInfo): TensorInfo {
  return { dataId: t.dataId, shape: [tf.util.sizeFromShape(t.shape)], dtype: "float32" };
}

/** Threads per row for the row kernels: the smallest of 32, 64, 128, 256 that covers the row. */
export function rowWorkgroup(cols: number): number {
  for (const w of [32, 64, 128]) if (cols <= w) return w;
  return 256; // WebGPU guarantees 256 invocations per workgroup
}

/**
 * Throws, naming the kernel and the fix, when `t` is over this GPU's storage-buffer binding limit (a
 * larger tensor would read or write garbage: webgpu/limits.ts).
 */
export function requireWithinBindingLimit(
  kernel: string,
  what: string,
  t: TensorInfo,
  backend: GpuBackend,
): void {
  const bytes = tf.util.sizeFromShape(t.shape) * 4, limit = webgpuMaxTensorBytes(backend);
  if (bytes > limit) {
    throw new Error(
      `${kernel}: ${what} [${t.shape}] (${(bytes / 2 ** 20).toFixed(1)} MiB) is over this GPU's ` +
        `storage-buffer binding limit of ${(limit / 2 ** 20).toFixed(1)} MiB; use a smaller batch or context`,
    );
  }
}

/**
 * A program with one workgroup per row of a [rows, cols] output, in the shape recordAndSubmit reads.
 * Each kernel subclasses it under its own name: the class name labels timers, profiles and tests.
 */
export class RowProgram {
  outputShape: number[];
  dispatch: [number, number, number];
  size = false;
  constructor(readonly pipeline: GPUComputePipeline, device: GPUDevice, rows: number, cols: number) {
    this.outputShape = [rows * cols];
    this.dispatch = workgroupGrid(device, rows, this.constructor.name);
  }
}

/**
 * A program with its own pipeline and workgroup grid, in the shape recordAndSubmit reads (lib/tensor/ops/*
 * kernels). Each kernel subclasses it under its own name, which labels timers, profiles and tests.
 */
export class GridProgram {
  size = false;
  /**
   * What bench/webgpu_audit.ts charges the dispatch: FLOPs, bytes, and the bytes its warps move through
   * workgroup memory where that may bound it (absent: one operation and 4 bytes per element).
   */
  cost?: { flops: number; bytes: number; smem?: number };
  constructor(
    readonly pipeline: GPUComputePipeline,
    readonly outputShape: number[],
    readonly dispatch: [number, number, number],
  ) {}
}

// Registered once, when this module is first imported (backend.ts loads the webgpu backend first).
registerKernels("webgpu", [
  [ADAMW_GROUP_KERNEL, adamWGroupKernel],
  [TO_HALF_KERNEL, roundingKernel(TO_HALF_KERNEL, LmpipeToHalfProgram)],
  [TO_BF16_KERNEL, roundingKernel(TO_BF16_KERNEL, LmpipeToBf16Program)],
  [SUM_SQUARES_KERNEL, sumSquaresKernel],
]);

/** Throws, naming the kernel, unless `t` is float32 of `shape`. */
export function requireShape(kernel: string, what: string, t: TensorInfo, shape: number[]): void {
  if (t.dtype !== "float32" || !tf.util.arraysEqual(t.shape, shape)) {
    throw new Error(`${kernel}: ${what} has shape [${t.shape}] (${t.dtype}), expected [${shape}] float32`);
  }
}

/**
 * Registers `kernels` (name, kernel function) for webgpu (on) or takes them out of TF.js's registry
 * (off): what each op's webgpu.ts offers tests that compare whole steps with and without its kernels.
 */
export function setWebGPUKernelsRegistered(
  kernels: readonly (readonly [string, unknown])[],
  on: boolean,
): void {
  if (on) return registerKernels("webgpu", kernels);
  for (const [kernelName] of kernels) {
    if (tf.getKernel(kernelName, "webgpu")) tf.unregisterKernel(kernelName, "webgpu");
  }
}
