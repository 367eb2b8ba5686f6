// Copies on wasm that move contiguous runs of values: a transpose that keeps the last axis (attention's
// [B, T, H, D] <-> [B, H, T, D]), a concat (attention's q, k, v gradients into one), a slice or split
// (the fused projection into q, k and v). TF.js's Transpose and Concat and lmpipe's JavaScript slices run
// on one thread; here each is one job of kernels.wat copy_runs (a memory.copy per run, up to three outer
// axes) on all of lmpipe's wasm threads. A copy moves the same bits, so the results are TF.js's. Other
// dtypes than float32 and int32, small tensors, copies with more outer axes than three (after merging
// those that are contiguous), and everything when lmpipe's wasm kernels are off stay on the old path.
import * as tf from "@tensorflow/tfjs-core";
import { type AnyBackend, type KernelFn, registerKernels, type TensorInfo } from "../../host_kernel.ts";
import { BROADCAST_PIXELS_KERNEL } from "../../kernel_names.ts";
import { MEMORY_BOUND_MIN_VALUES, offsetOf, runRows, usable } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";

/** Below this many values the old paths are as fast (no job to hand out). */
const MIN_VALUES = 8192;

/** One outer axis of a copy: its size and its strides (in values) in the source and the destination. */
interface Axis {
  n: number;
  s: number;
  d: number;
}

/** An outer axis of one index: copy_runs always takes three axes, so shorter copies are padded with it. */
const UNIT: Axis = Object.freeze({ n: 1, s: 0, d: 0 });

/** Row-major strides of `shape` in values, with the run's stride 1 after the last axis. */
const stridesOf = (shape: number[]) => [...tf.util.computeStrides(shape), 1];

/** A copy as copy_runs takes it: three outer axes and a run of L contiguous values. */
interface RunCopy {
  axes: [Axis, Axis, Axis];
  L: number;
}

/**
 * The outer axes (outermost first) and run length `L` as copy_runs' three axes: axes of size 1 dropped,
 * neighbours that are contiguous in both source and destination merged, an innermost axis contiguous
 * with the run folded into it. Null when more than three remain.
 */
export function planCopy(axes: Axis[], L: number): RunCopy | null {
  const left = axes.filter((a) => a.n !== 1);
  const merged: Axis[] = [];
  for (const a of left) {
    const last = merged[merged.length - 1];
    if (last && last.s === a.n * a.s && last.d === a.n * a.d) {
      merged[merged.length - 1] = { n: last.n * a.n, s: a.s, d: a.d };
    } else merged.push({ ...a });
  }
  let run = L;
  const inner = merged[merged.length - 1];
  if (inner && inner.s === run && inner.d === run) {
    run *= inner.n;
    merged.pop();
  }
  if (merged.length > 3) return null;
  while (merged.length < 3) merged.unshift(UNIT);
  return { axes: merged as [Axis, Axis, Axis], L: run };
}

/** Whether lmpipe's kernel should take a copy of `values` values of `dtype` on `backend`. */
function takes(backend: AnyBackend, dtype: string, values: number): boolean {
  return (dtype === "float32" || dtype === "int32") && values >= MIN_VALUES && usable(backend);
}

/** Runs `c` from src (starting `from` values in) to dst (starting `to` values in). */
function copy(backend: AnyBackend, src: TensorInfo, dst: TensorInfo, c: RunCopy, from = 0, to = 0): void {
  const [a0, a1, a2] = c.axes;
  const rows = a0.n * a1.n * a2.n;
  if (rows === 0 || c.L === 0) return;
  const job = [
    KIND.copyRuns,
    offsetOf(backend, src) + 4 * from,
    offsetOf(backend, dst) + 4 * to,
    c.L,
    a1.n,
    a2.n,
    a0.s,
    a1.s,
    a2.s,
    a0.d,
    a1.d,
    a2.d,
  ];
  runRows(backend, job, rows, c.L, 1, MEMORY_BOUND_MIN_VALUES);
}

/** TF.js's Transpose on wasm, with permutations that keep the last axis on lmpipe's kernel. */
export function transposeWasm(orig: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    const perm = args.attrs.perm as number[];
    const rank = x.shape.length, backend = args.backend;
    if (rank < 2 || perm[rank - 1] !== rank - 1 || !takes(backend, x.dtype, tf.util.sizeFromShape(x.shape))) {
      return orig(args);
    }
    const outShape = perm.map((p) => x.shape[p]);
    const srcStrides = stridesOf(x.shape), dstStrides = stridesOf(outShape);
    const axes = perm.slice(0, rank - 1).map((p, i) => ({
      n: outShape[i],
      s: srcStrides[p],
      d: dstStrides[i],
    }));
    const plan = planCopy(axes, x.shape[rank - 1]);
    if (!plan) return orig(args);
    const y = backend.makeOutput(outShape, x.dtype) as TensorInfo;
    copy(backend, x, y, plan);
    return y;
  };
}

/** TF.js's Concat on wasm, float32/int32 inputs of one dtype on lmpipe's kernel (any axis). */
export function concatWasm(orig: KernelFn): KernelFn {
  return (args) => {
    const xs = args.inputs as TensorInfo[];
    const backend = args.backend;
    if (xs.length === 0) return orig(args);
    const dtype = xs[0].dtype, rank = xs[0].shape.length;
    const axis = tf.util.parseAxisParam(args.attrs.axis as number, xs[0].shape)[0];
    const outShape = tf.backend_util.computeOutShape(xs.map((t) => t.shape), axis);
    const total = tf.util.sizeFromShape(outShape);
    if (
      rank === 0 || xs.some((t) => t.dtype !== dtype || t.shape.length !== rank) ||
      !takes(backend, dtype, total)
    ) {
      return orig(args);
    }
    const outer = tf.util.sizeFromShape(outShape.slice(0, axis));
    const inner = tf.util.sizeFromShape(outShape.slice(axis + 1));
    const rowOut = outShape[axis] * inner;
    const y = backend.makeOutput(outShape, dtype) as TensorInfo;
    let col = 0;
    for (const t of xs) {
      const run = t.shape[axis] * inner;
      // one outer axis: every index before `axis` is a row of `run` values in t, `rowOut` apart in y
      copy(
        backend,
        t,
        y,
        { axes: [UNIT, UNIT, { n: outer, s: run, d: rowOut }], L: run },
        0,
        col,
      );
      col += run;
    }
    return y;
  };
}

/**
 * x[begin : begin + size] into a new tensor by lmpipe's kernel, or null when it does not take this one
 * (the caller copies it another way).
 */
export function sliceByKernel(
  backend: AnyBackend,
  x: TensorInfo,
  begin: number[],
  size: number[],
): TensorInfo | null {
  const rank = x.shape.length;
  if (rank === 0 || !takes(backend, x.dtype, tf.util.sizeFromShape(size))) return null;
  const srcStrides = stridesOf(x.shape), dstStrides = stridesOf(size);
  const axes = size.slice(0, rank - 1).map((n, a) => ({ n, s: srcStrides[a], d: dstStrides[a] }));
  const plan = planCopy(axes, size[rank - 1]);
  if (!plan) return null;
  const from = begin.reduce((o, b, a) => o + b * srcStrides[a], 0);
  const y = backend.makeOutput(size.slice(), x.dtype) as TensorInfo;
  copy(backend, x, y, plan, from, 0);
  return y;
}

/**
 * LmpipeBroadcastPixels: g [N, C] float32 repeated over H x W pixels, [N, H, W, C] (the global average
 * pool's gradient, ops/global_pool/wasm.ts). One run of C values per pixel, shared over the threads.
 */
function broadcastPixelsKernel(
  { inputs, backend, attrs }: { inputs: Record<string, TensorInfo>; backend: AnyBackend; attrs: unknown },
): TensorInfo {
  const { g } = inputs;
  const { H, W } = attrs as { H: number; W: number };
  if (g.dtype !== "float32" || g.shape.length !== 2) {
    throw new Error(`${BROADCAST_PIXELS_KERNEL}: g must be float32 [N, C], got ${g.dtype} [${g.shape}]`);
  }
  const [N, C] = g.shape, P = H * W;
  const y = backend.makeOutput([N, H, W, C], "float32") as TensorInfo;
  copy(backend, g, y, { axes: [UNIT, { n: N, s: C, d: P * C }, { n: P, s: 0, d: C }], L: C });
  return y;
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[BROADCAST_PIXELS_KERNEL, broadcastPixelsKernel]]);
