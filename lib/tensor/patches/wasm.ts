// Fixes to TF.js 4.22's own kernels on the wasm backend, where they are missing, wrong or slow, and the
// registration of lmpipe's wasm matMul, conv-gradient and float32 Cumsum kernels (ops/matmul/wasm.ts,
// ops/conv2d/wasm.ts, ops/cumsum/wasm.ts):
//   - UnsortedSegmentSum (the embedding gradient): missing -> a one-pass JS kernel (also used on cpu);
//   - MaxPoolGrad: routes the gradient wrongly when a whole window is negative -> a JS kernel;
//   - OneHot with a float32 output: denormal garbage -> a JS kernel;
//   - GatherV2 with batchDims > 0: wrong forward -> a JS kernel; with batchDims 0 over rows of >= 64 values
//     (the token embedding): slow -> a threaded copy per row along axis 0 (ops/gather), the same JS kernel
//     along other axes;
//   - Sum over leading axes (bias gradients): a transpose first -> column sums on the heap (ops/column_sums);
//   - Add of one shape or of a row to every row: one thread -> lmpipe's threaded kernel (ops/add);
//   - Transpose keeping the last axis, Concat, and large slices: one thread -> a threaded copy of runs
//     (ops/copy_runs);
//   - Slice, SplitV, Unpack: each copies its whole input off the heap first (readSync) -> straight from the
//     heap, one run of contiguous values at a time;
//   - Identity (what tf.clone runs, and TF.js's engine on every tensor a gradient saves): a full copy -> the
//     same buffer, counted once more, as the cpu and webgpu backends do it;
//   - out of memory (the heap stops at 4 GiB): silent corruption -> a clear error.
// The JS kernels work on the wasm heap and on the cpu backend's arrays alike (host_kernel.ts).
// scatterND has no gradient in TF.js; no model uses it, so it is left alone.
import * as tf from "@tensorflow/tfjs-core";
import { BackendWasm } from "@tensorflow/tfjs-backend-wasm";
import { EXIT, LmpipeError, OUT_OF_MEMORY_HINT } from "../../errors.ts";
import {
  alloc,
  type AnyBackend,
  heapView,
  isWasm,
  type KernelArgs,
  type KernelFn,
  replaceKernel,
  type TensorInfo,
  view,
} from "../host_kernel.ts";
import { wasmFastMatMul } from "../ops/matmul/wasm.ts";
import { conv2DBackpropFilterWasm, conv2DBackpropInputWasm } from "../ops/conv2d/wasm.ts";
import { cumsumWasm } from "../ops/cumsum/wasm.ts";
import { sumLeadingAxesWasm } from "../ops/column_sums/wasm.ts";
import { addWasm } from "../ops/add/wasm.ts";
import { concatWasm, sliceByKernel, transposeWasm } from "../ops/copy_runs/wasm.ts";
import { gatherRowsTakes, gatherRowsWasm } from "../ops/gather/wasm.ts";

const { util, backend_util } = tf;

// --- UnsortedSegmentSum (the gather/embedding gradient) ---------------------------------------
// Missing on wasm; on cpu it exists but loops over every segment (minutes for a 50304-row table).
// One pass over the input, adding each row into its segment: O(input size) plus zeroing the output.
export function unsortedSegmentSumKernel({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { x, segmentIds } = inputs as Record<string, TensorInfo>;
  const numSegments = attrs.numSegments as number;
  const nIds = util.sizeFromShape(segmentIds.shape);
  const inner = util.sizeFromShape(x.shape.slice(segmentIds.shape.length));
  const out = alloc(backend, [numSegments, ...x.shape.slice(segmentIds.shape.length)], x.dtype);
  const o = isWasm(backend) ? heapView(backend, out.info) : out.data;
  const xs = view(backend, x), ids = view(backend, segmentIds);
  for (let i = 0; i < nIds; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue; // TF semantics: out-of-range ids are dropped
    const ob = s * inner, xb = i * inner;
    for (let j = 0; j < inner; j++) o[ob + j] += xs[xb + j];
  }
  return out.info;
}

// --- MaxPoolGrad on wasm ------------------------------------------------------------------------
// The wasm kernel routes the gradient to the wrong element when a whole window is negative. This
// one scans each window for its first maximum (padding excluded), like the cpu backend.
export function maxPoolGradKernel({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { dy, input } = inputs as Record<string, TensorInfo>;
  const { filterSize, strides, pad, dimRoundingMode } = attrs;
  const ci = backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    filterSize,
    strides,
    1,
    pad,
    dimRoundingMode,
  );
  const out = alloc(backend, input.shape.slice(), "float32");
  const dx = isWasm(backend) ? heapView(backend, out.info) : out.data;
  const xs = view(backend, input), g = view(backend, dy);
  const [H, W, C] = [ci.inHeight, ci.inWidth, ci.inChannels];
  const { outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw } = ci;
  const { effectiveFilterHeight: fh, effectiveFilterWidth: fw, dilationHeight: dh, dilationWidth: dw } = ci;
  const pt = ci.padInfo.top, pl = ci.padInfo.left;
  for (let b = 0; b < ci.batchSize; b++) {
    const xb = b * H * W * C;
    for (let oh = 0; oh < OH; oh++) {
      const h0 = oh * sh - pt;
      for (let ow = 0; ow < OW; ow++) {
        const w0 = ow * sw - pl;
        const gBase = ((b * OH + oh) * OW + ow) * C;
        for (let c = 0; c < C; c++) {
          let best = -Infinity, at = -1;
          for (let kh = 0; kh < fh; kh += dh) {
            const h = h0 + kh;
            if (h < 0 || h >= H) continue;
            for (let kw = 0; kw < fw; kw += dw) {
              const w = w0 + kw;
              if (w < 0 || w >= W) continue;
              const idx = xb + (h * W + w) * C + c;
              const v = xs[idx];
              if (v > best || at < 0) best = v, at = idx;
            }
          }
          if (at >= 0) dx[at] += g[gBase + c];
        }
      }
    }
  }
  return out.info;
}

// --- OneHot on wasm (float32 output comes back as denormal garbage) --------------------------
export function oneHotKernel({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { indices } = inputs as Record<string, TensorInfo>;
  const { depth, onValue, offValue, dtype } = attrs;
  const n = util.sizeFromShape(indices.shape);
  const out = alloc(backend, [...indices.shape, depth], dtype ?? "int32");
  const o = isWasm(backend) ? heapView(backend, out.info) : out.data;
  const idx = view(backend, indices);
  if (offValue !== 0) o.fill(offValue);
  for (let i = 0; i < n; i++) {
    const k = idx[i];
    if (k >= 0 && k < depth) o[i * depth + k] = onValue;
  }
  return out.info;
}

// --- GatherV2 with batchDims > 0 on wasm (wrong forward) --------------------------------------
export function gatherBatchedKernel({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { x, indices } = inputs as Record<string, TensorInfo>;
  const rank = x.shape.length;
  let axis = util.parseAxisParam(attrs.axis, x.shape)[0];
  let batchDims = attrs.batchDims as number;
  if (batchDims < 0) batchDims += indices.shape.length;
  if (axis < 0) axis += rank;
  const outer = util.sizeFromShape(x.shape.slice(0, batchDims));
  const between = util.sizeFromShape(x.shape.slice(batchDims, axis));
  const axisDim = x.shape[axis];
  const slice = util.sizeFromShape(x.shape.slice(axis + 1));
  const nIdx = outer === 0 ? 0 : util.sizeFromShape(indices.shape) / outer;
  const outShape = [...x.shape.slice(0, axis), ...indices.shape.slice(batchDims), ...x.shape.slice(axis + 1)];
  const out = alloc(backend, outShape, x.dtype);
  const o = isWasm(backend) ? heapView(backend, out.info) : out.data;
  const xs = view(backend, x), idx = view(backend, indices);
  for (let b = 0; b < outer; b++) {
    for (let d = 0; d < between; d++) {
      for (let n = 0; n < nIdx; n++) {
        const k = idx[b * nIdx + n];
        if (k < 0 || k >= axisDim) {
          throw new Error(`gather: index ${k} is out of range [0, ${axisDim})`);
        }
        const src = ((b * between + d) * axisDim + k) * slice;
        const dst = ((b * between + d) * nIdx + n) * slice;
        o.set(xs.subarray(src, src + slice), dst);
      }
    }
  }
  return out.info;
}
// --- wasm speed: GatherV2 of whole rows (the token embedding) -------------------------------------
// TF.js's wasm GatherV2 computes every output value's source index on its own: ~27 ns a value, 14 ms for
// the 2048 x 256 embedding rows of a pixel-attn small step on 1 thread, and 30+ ms in the threaded build
// (bench/RESULTS.md, the thread budget section). A gather is a copy: the kernel above copies one run of
// `slice` contiguous values per index, the same values, ~0.3 ms there. Short runs stay on TF.js's loop,
// where a JS call per run would cost more than its index arithmetic.
const GATHER_MIN_RUN = 64;

/** Whether a batchDims = 0 gather moves runs of at least GATHER_MIN_RUN values (the kernel above wins). */
function gatherCopiesRows({ inputs, attrs }: KernelArgs): boolean {
  const { x } = inputs as Record<string, TensorInfo>;
  let axis = util.parseAxisParam(attrs.axis as number, x.shape)[0];
  if (axis < 0) axis += x.shape.length;
  return util.sizeFromShape(x.shape.slice(axis + 1)) >= GATHER_MIN_RUN;
}

// --- wasm out of memory ------------------------------------------------------------------------
// The wasm heap cannot grow past 4 GiB. Then malloc returns 0, TF.js places the tensor at address 0 and
// training goes on with corrupted memory until "memory access out of bounds". Every tensor allocation
// goes through BackendWasm.move, which here makes a failed malloc a clear error instead.

// Bytes of heap a backend's tensors hold, counted where it allocates and frees them (per backend
// instance, so a backend started again counts from 0): TF.js's own figure (tf.memory().numBytes) counts
// some shared buffers twice and passed 5 GiB in a heap of 4.
const heapBytesOf = new WeakMap<object, number>();

/** Bytes of the wasm heap held by `backend`'s tensors now. */
export function wasmTensorHeapBytes(backend: AnyBackend): number {
  return backend.__lmpipeTensorHeapBytes ?? 0;
}

function guardWasmMalloc(): void {
  const proto = BackendWasm.prototype as AnyBackend;
  if (proto.__lmpipeMallocGuard) return;
  const move = proto.move, disposeData = proto.disposeData;
  proto.disposeData = function (this: AnyBackend, dataId: object, force?: boolean) {
    const freed = disposeData.call(this, dataId, force);
    const n = heapBytesOf.get(dataId);
    if (n !== undefined && !this.dataIdMap.has(dataId)) {
      this.__lmpipeTensorHeapBytes -= n;
      heapBytesOf.delete(dataId);
    }
    return freed;
  };
  // Allocates without values first, checks the address, then copies the values in (as TF.js would).
  proto.move = function (
    this: AnyBackend,
    dataId: object,
    values: ArrayBufferView | null,
    shape: number[],
    dtype: tf.DataType,
    refCount: number,
  ) {
    if (dtype === "string") return move.call(this, dataId, values, shape, dtype, refCount);
    move.call(this, dataId, null, shape, dtype, refCount);
    const data = this.dataIdMap.get(dataId);
    const numBytes = util.sizeFromShape(shape) * util.bytesPerElement(dtype);
    if (data.memoryOffset === 0 && numBytes > 0) {
      this.wasm.tfjs.disposeData(data.id);
      this.dataIdMap.delete(dataId);
      const heap = this.wasm.HEAPU8.buffer.byteLength / 2 ** 30;
      throw new LmpipeError(
        `wasm: out of memory allocating ${(numBytes / 2 ** 20).toFixed(1)} MiB (heap ${
          heap.toFixed(2)
        } GiB ` +
          `of at most 4 GiB; tensors hold ${
            (wasmTensorHeapBytes(this) / 2 ** 30).toFixed(2)
          } GiB): ${OUT_OF_MEMORY_HINT}`,
        EXIT.memory,
      );
    }
    if (values != null) {
      this.wasm.HEAPU8.set(new Uint8Array(values.buffer, values.byteOffset, numBytes), data.memoryOffset);
    }
    heapBytesOf.set(dataId, numBytes);
    this.__lmpipeTensorHeapBytes = wasmTensorHeapBytes(this) + numBytes;
  };
  proto.__lmpipeMallocGuard = true;
}

// --- Slice, SplitV, Unpack on wasm ------------------------------------------------------------
// TF.js's wasm Slice reads its input with readSync, which copies the WHOLE input off the heap into a fresh
// JS buffer before copying the slice out of it: slicing 4 rows of an [8, 1024, 1024] tensor cost ~250 ms
// where an add of the same size costs 2.5. SplitV and Unpack call that Slice once per piece. These read the
// heap directly and copy the slice in runs of contiguous values (the trailing axes taken whole, times the
// innermost one that is cut).

/** x[begin : begin + size] on the wasm heap (float32, int32, bool; strings go to `orig`). */
function heapSlice(backend: AnyBackend, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const byKernel = sliceByKernel(backend, x, begin, size); // large ones on lmpipe's threads (ops/copy_runs)
  if (byKernel) return byKernel;
  const rank = x.shape.length;
  const out = backend.makeOutput(size, x.dtype) as TensorInfo;
  if (util.sizeFromShape(size) === 0) return out;
  // views taken after makeOutput: the allocation can grow the heap and replace its buffer
  const xs = heapView(backend, x), os = heapView(backend, out);
  const strides = util.computeStrides(x.shape);
  // the innermost axis that is cut: everything after it is copied whole, in one run per outer index
  let cut = rank - 1;
  while (cut > 0 && size[cut] === x.shape[cut] && begin[cut] === 0) cut--;
  const inner = cut === rank - 1 ? 1 : strides[cut];
  const run = size[cut] * inner;
  let base = 0;
  for (let a = 0; a <= cut; a++) base += begin[a] * (a === rank - 1 ? 1 : strides[a]);
  // odometer over the axes before `cut`
  const idx = new Array(cut).fill(0);
  let o = 0;
  for (;;) {
    let off = base;
    for (let a = 0; a < cut; a++) off += idx[a] * strides[a];
    if (run < 16) {
      for (let j = 0; j < run; j++) os[o + j] = xs[off + j]; // a few values: no subarray object for them
    } else os.set(xs.subarray(off, off + run), o);
    o += run;
    let a = cut - 1;
    while (a >= 0 && ++idx[a] === size[a]) idx[a--] = 0;
    if (a < 0) break;
  }
  return out;
}

function sliceKernel(orig: KernelFn): KernelFn {
  return (args) => {
    const x = (args.inputs as Record<string, TensorInfo>).x;
    if (x.dtype === "string") return orig(args);
    const [begin, size] = tf.slice_util.parseSliceParams(
      x as unknown as tf.Tensor,
      args.attrs.begin,
      args.attrs.size,
    );
    return heapSlice(args.backend, x, begin, size);
  };
}

function splitVKernel(orig: KernelFn): KernelFn {
  return (args) => {
    const x = (args.inputs as Record<string, TensorInfo>).x;
    if (x.dtype === "string") return orig(args);
    const axis = util.parseAxisParam(args.attrs.axis, x.shape)[0];
    const sizes = backend_util.prepareSplitSize(x as unknown as tf.Tensor, args.attrs.numOrSizeSplits, axis);
    const begin = new Array(x.shape.length).fill(0);
    return sizes.map((s: number) => {
      const size = x.shape.slice();
      size[axis] = s;
      const piece = heapSlice(args.backend, x, begin, size);
      begin[axis] += s;
      return piece;
    });
  };
}

function unpackKernel(orig: KernelFn): KernelFn {
  return (args) => {
    const x = (args.inputs as Record<string, TensorInfo>).value;
    if (x.dtype === "string") return orig(args);
    const rank = x.shape.length;
    const axis = (args.attrs.axis as number) < 0
      ? (args.attrs.axis as number) + rank
      : args.attrs.axis as number;
    const outShape = x.shape.filter((_, i) => i !== axis);
    const begin = new Array(rank).fill(0), size = x.shape.slice();
    size[axis] = 1;
    const outs: TensorInfo[] = [];
    for (let i = 0; i < x.shape[axis]; i++) {
      begin[axis] = i;
      const piece = heapSlice(args.backend, x, begin, size);
      outs.push({ dataId: piece.dataId, dtype: piece.dtype, shape: outShape } as TensorInfo);
    }
    return outs;
  };
}

// --- Identity on wasm ----------------------------------------------------------------------------
// TF.js clones every tensor a custom gradient saves for the backward pass, and wasm's Identity copies the
// data: 802 copies per pixel-attn small step, most of them conv-output sized. Tensors are immutable, so the
// clone can share the buffer with a reference count (the wasm backend counts them for Reshape already). The
// one place lmpipe writes into an existing buffer, the MPI all-reduce of gradients (lib/dist), skips
// buffers whose count is above one.
function identityKernel(orig: KernelFn): KernelFn {
  return (args) => {
    const x = (args.inputs as Record<string, TensorInfo>).x;
    if (x.dtype === "string") return orig(args);
    args.backend.incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype } as TensorInfo;
  };
}

/** Registers the wasm kernels above and lmpipe's matMul and conv gradients on wasm; once. */
export function applyWasmPatches(): void {
  const transpose = tf.getKernel(tf.Transpose, "wasm")?.kernelFunc as unknown as KernelFn | undefined;
  if (tf.getKernel(tf.BatchMatMul, "wasm") && transpose) {
    replaceKernel(tf.BatchMatMul, "wasm", (orig) => wasmFastMatMul(orig!, transpose));
    replaceKernel(tf.UnsortedSegmentSum, "wasm", () => unsortedSegmentSumKernel);
    replaceKernel(tf.Conv2DBackpropFilter, "wasm", () => conv2DBackpropFilterWasm);
    replaceKernel(tf.Conv2DBackpropInput, "wasm", () => conv2DBackpropInputWasm);
    replaceKernel(tf.MaxPoolGrad, "wasm", () => maxPoolGradKernel);
    replaceKernel(tf.Sum, "wasm", (orig) => sumLeadingAxesWasm(orig!));
    replaceKernel(tf.Add, "wasm", (orig) => addWasm(orig!));
    replaceKernel(tf.Transpose, "wasm", (orig) => transposeWasm(orig!));
    replaceKernel(tf.Concat, "wasm", (orig) => concatWasm(orig!));
    replaceKernel(tf.OneHot, "wasm", () => oneHotKernel);
    replaceKernel(tf.Slice, "wasm", (orig) => sliceKernel(orig!));
    replaceKernel(tf.SplitV, "wasm", (orig) => splitVKernel(orig!));
    replaceKernel(tf.Unpack, "wasm", (orig) => unpackKernel(orig!));
    replaceKernel(tf.Identity, "wasm", (orig) => identityKernel(orig!));
    replaceKernel(tf.Cumsum, "wasm", (orig) => cumsumWasm(orig!));
    replaceKernel(tf.GatherV2, "wasm", (orig) => (args) => {
      const bd = (args.attrs?.batchDims ?? 0) as number;
      if (bd === 0 && !gatherCopiesRows(args)) return orig!(args);
      return gatherRowsTakes(args) ? gatherRowsWasm(args) : gatherBatchedKernel(args);
    });
  }
  guardWasmMalloc();
}
