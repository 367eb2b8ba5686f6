// Fills the gaps of TF.js 4.22 that break or slow down training (see shared/notes/tfjs-backends.md),
// all in one place; applyFixes() registers them once, when backend.ts is imported. Numbered sections:
//   1. UnsortedSegmentSum (embedding gradient): missing on wasm, minutes on cpu -> one-pass JS kernel
//   2. Conv2DBackpropFilter: missing on wasm -> im2col + XNNPACK matMul; slow on webgpu/cpu -> from ops
//   3. MaxPoolGrad on wasm: wrong when a window is all negative -> JS kernel
//   4. Cumsum gradient along an inner axis: wrong shape everywhere -> corrected gradient
//   5. BatchMatMul gradient against a broadcast weight: wrong shape everywhere -> corrected gradient
//   6. AddN on webgpu: only the first 7 inputs summed -> summed in groups
//   7. webgpu tensors over the storage-binding limit: garbage -> a clear error (and maxRowsPerChunk)
//   8. wasm OneHot float32 (garbage) and GatherV2 with batchDims (wrong) -> JS kernels
//   9. wasm out of memory (4 GiB heap): silent corruption -> a clear error
// plus speed-ups on wasm (every matMul on XNNPACK's 2-D path or, when blas.ts found a library, big ones
// on CBLAS sgemm; conv input gradient via matMul; sums over leading axes), a clear error for synchronous reads on webgpu, and
// helpers for models at the bottom (linear, embeddingLookup, takeAlongLastAxis). scatterND has no gradient in TF.js; no model uses it, so it is left alone.
import * as tf from "@tensorflow/tfjs-core";
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { BackendWasm } from "@tensorflow/tfjs-backend-wasm";
import { EXIT, LmpipeError, OUT_OF_MEMORY_HINT } from "../errors.ts";
import { type Blas, currentBlas } from "./blas.ts";
import { col2imOnHeap, type ConvGeometry, im2colOnHeap } from "./wasm_kernels.ts";

const { util, backend_util } = tf;
type TensorInfo = tf.TensorInfo;
type Arr = Float32Array | Int32Array | Uint8Array;
// Backends are typed loosely on purpose: kernels reach into the wasm heap and the cpu data map.
// deno-lint-ignore no-explicit-any
type AnyBackend = any;
// deno-lint-ignore no-explicit-any
type Attrs = any;
interface KernelArgs {
  inputs: Record<string, TensorInfo> | TensorInfo[];
  backend: AnyBackend;
  attrs?: Attrs;
}
type KernelFn = (args: KernelArgs) => TensorInfo | TensorInfo[];

// ---------------------------------------------------------------------------------------------
// Host-side kernels: read inputs and write outputs directly in the backend's memory (wasm heap or
// the cpu backend's typed arrays). On wasm every allocation can grow (and detach) the heap, so a
// kernel allocates its outputs first and only then takes views of its inputs.

function isWasm(backend: AnyBackend): boolean {
  return typeof backend.typedArrayFromHeap === "function";
}

function alloc(backend: AnyBackend, shape: number[], dtype: tf.DataType): { info: TensorInfo; data: Arr } {
  if (isWasm(backend)) {
    const info = backend.makeOutput(shape, dtype);
    const data = backend.typedArrayFromHeap(info) as Arr;
    data.fill(0); // the wasm allocator does not zero memory
    return { info, data };
  }
  const data = util.getTypedArrayFromDType(dtype as "float32", util.sizeFromShape(shape)) as Arr;
  return { info: backend.makeTensorInfo(shape, dtype, data), data };
}

/** A view (wasm) or the stored array (cpu) of a tensor's values; valid until the next allocation. */
function view(backend: AnyBackend, t: TensorInfo): Arr {
  if (isWasm(backend)) return backend.typedArrayFromHeap(t) as Arr;
  return backend.readSync(t.dataId) as Arr;
}

function heapView(backend: AnyBackend, t: TensorInfo): Arr {
  return backend.typedArrayFromHeap(t) as Arr;
}

/** Replaces (or adds) the kernel `name` for `backendName`; returns the kernel it replaced, if any. */
function replaceKernel(name: string, backendName: string, make: (orig?: KernelFn) => KernelFn): void {
  const old = tf.getKernel(name, backendName);
  if (old) tf.unregisterKernel(name, backendName);
  const orig = old?.kernelFunc as unknown as KernelFn | undefined;
  tf.registerKernel({
    kernelName: name,
    backendName,
    kernelFunc: make(orig) as unknown as tf.KernelFunc,
    // wasm kernels bind their C++ functions in setupFunc when the backend starts: keep it for `orig`.
    setupFunc: old?.setupFunc,
    disposeFunc: old?.disposeFunc,
  });
}

// --- 1. UnsortedSegmentSum (the gather/embedding gradient) ---------------------------------------
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

// --- 3. MaxPoolGrad on wasm ------------------------------------------------------------------------
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

// --- 8a. OneHot on wasm (float32 output comes back as denormal garbage) --------------------------
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

// --- 8b. GatherV2 with batchDims > 0 on wasm (wrong forward) --------------------------------------
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

// --- 2. Conv2DBackpropFilter on wasm (missing) -----------------------------------------------------
// dW[kh,kw,ci,co] = sum over (b,oh,ow) of x[b, oh*s+kh-pt, ow*s+kw-pl, ci] * dy[b,oh,ow,co]. Builds the
// transposed im2col matrix colT [kh*kw*Ci, rows] in JS, then one 2-D non-transposed matMul
// colT @ dy[rows, Co] (XNNPACK's fast path) yields dW directly in filter layout. Rows are processed
// in chunks of whole images to bound the extra memory.
const IM2COL_MAX_FLOATS = 16 << 20; // 64 MB per chunk
let im2colMaxFloats = IM2COL_MAX_FLOATS;

/** For tests: a smaller im2col chunk, to exercise the chunked path (null restores the default). */
export function setIm2colChunkFloatsForTests(n: number | null): void {
  im2colMaxFloats = n ?? IM2COL_MAX_FLOATS;
}

/**
 * The geometry of a conv2d gradient kernel's call from its attributes, or null when the data format is
 * not NHWC (channelsLast), the only layout lmpipe's conv kernels handle.
 */
function nhwcConvInfo(
  inShape: readonly number[],
  filterShape: readonly number[],
  attrs: KernelArgs["attrs"],
): ReturnType<typeof backend_util.computeConv2DInfo> | null {
  const { strides, pad, dataFormat, dimRoundingMode } = attrs as unknown as {
    strides: [number, number] | number;
    pad: "valid" | "same" | number;
    dataFormat: "NHWC" | "NCHW";
    dimRoundingMode?: "floor" | "round" | "ceil";
  };
  if (backend_util.convertConv2DDataFormat(dataFormat) !== "channelsLast") return null;
  return backend_util.computeConv2DInfo(
    inShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
  );
}

/**
 * a @ b (b transposed when `transB`), 2-D float32, through the wasm BatchMatMul kernel registered now
 * (wasmFastMatMul below: OpenBLAS sgemm when blas.ts found a library, else XNNPACK), for the conv
 * gradient kernels.
 */
function fastMatMul(backend: AnyBackend, a: TensorInfo, b: TensorInfo, transB: boolean): TensorInfo {
  const kernel = tf.getKernel(tf.BatchMatMul, "wasm")!.kernelFunc as unknown as KernelFn;
  return kernel({
    inputs: { a, b },
    backend,
    attrs: { transposeA: false, transposeB: transB },
  }) as TensorInfo;
}

/** The im2col matrix c [KH KW Ci, rows] of images b0 .. b0 + nb - 1 of xs (NHWC), in JavaScript. */
function im2colJs(xs: Arr, c: Arr, b0: number, nb: number, rows: number, g: ConvGeometry): void {
  const { H, W, Ci, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl } = g;
  for (let kh = 0; kh < KH; kh++) {
    for (let kw = 0; kw < KW; kw++) {
      for (let ch = 0; ch < Ci; ch++) {
        let p = ((kh * KW + kw) * Ci + ch) * rows;
        for (let b = b0; b < b0 + nb; b++) {
          const xb = b * H * W * Ci + ch;
          for (let oh = 0; oh < OH; oh++) {
            const h = oh * sh + kh * dh - pt;
            if (h < 0 || h >= H) {
              c.fill(0, p, p + OW);
              p += OW;
              continue;
            }
            const xr = xb + h * W * Ci;
            for (let ow = 0; ow < OW; ow++) {
              const w = ow * sw + kw * dw - pl;
              c[p++] = w < 0 || w >= W ? 0 : xs[xr + w * Ci];
            }
          }
        }
      }
    }
  }
}

function conv2DBackpropFilterWasm({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { x, dy } = inputs as Record<string, TensorInfo>;
  const filterShape = attrs.filterShape as number[];
  const ci = nhwcConvInfo(x.shape, filterShape, attrs);
  if (!ci) {
    throw new Error("Conv2DBackpropFilter (lmpipe wasm kernel): only NHWC (channelsLast) is supported");
  }
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outChannels: Co } = ci;
  const { outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw } = ci;
  const { filterHeight: KH, filterWidth: KW, dilationHeight: dh, dilationWidth: dw } = ci;
  const pt = ci.padInfo.top, pl = ci.padInfo.left;
  const K = KH * KW * Ci, perImage = OH * OW;
  const geometry = { H, W, Ci, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl };
  const imgsPerChunk = Math.max(1, Math.min(B, Math.floor(im2colMaxFloats / Math.max(1, K * perImage))));
  let result: TensorInfo | undefined;
  for (let b0 = 0; b0 < B; b0 += imgsPerChunk) {
    const nb = Math.min(imgsPerChunk, B - b0), rows = nb * perImage;
    const col = backend.makeOutput([K, rows], "float32") as TensorInfo;
    // dy rows of these images are contiguous: use dy itself when it is one chunk, else copy them.
    let dyc: TensorInfo;
    if (nb === B) dyc = { dataId: dy.dataId, shape: [rows, Co], dtype: "float32" };
    else {
      dyc = backend.makeOutput([rows, Co], "float32");
      heapView(backend, dyc).set(
        heapView(backend, dy).subarray(b0 * perImage * Co, (b0 + nb) * perImage * Co),
      );
    }
    // lmpipe's wasm kernel on all threads, or (kernels off) the same loop in JavaScript
    if (!im2colOnHeap(backend, x, col, b0, nb, geometry)) {
      im2colJs(heapView(backend, x), heapView(backend, col), b0, nb, rows, geometry);
    }
    const part = fastMatMul(backend, col, dyc, false);
    backend.disposeData(col.dataId);
    if (dyc.dataId !== dy.dataId) backend.disposeData(dyc.dataId);
    if (!result) result = part;
    else {
      const acc = heapView(backend, result), add = heapView(backend, part);
      for (let i = 0; i < acc.length; i++) acc[i] += add[i];
      backend.disposeData(part.dataId);
    }
  }
  if (!result) { // empty batch: zero gradient
    result = alloc(backend, filterShape, "float32").info;
  }
  return { dataId: result.dataId, shape: filterShape.slice(), dtype: "float32" };
}

// --- 2b. Conv2DBackpropFilter from ops (webgpu and cpu speed) -------------------------------------
// TF.js's webgpu kernel loops over every output pixel per filter element (~0.01 GFLOP/s on llvmpipe),
// and cpu's runs at ~0.02 GFLOP/s.
// Here, built from ops: for each filter offset (kh, kw), the strided slice of the padded input that it
// sees, [rows, Ci], times dy [rows, Co] (a transposeA matMul) gives dW[kh, kw]. Ops run inside a kernel
// are not recorded for gradients; the kernel returns the resulting tensor itself.
function conv2DBackpropFilterByOps(orig: KernelFn): KernelFn {
  return (args) => {
    const { x, dy } = args.inputs as Record<string, TensorInfo>;
    const filterShape = args.attrs.filterShape as number[];
    const ci = nhwcConvInfo(x.shape, filterShape, args.attrs);
    if (!ci) return orig(args);
    const { batchSize: B, inChannels: Ci, outChannels: Co, outHeight: OH, outWidth: OW } = ci;
    const { strideHeight: sh, strideWidth: sw, filterHeight: KH, filterWidth: KW } = ci;
    const { top, bottom, left, right } = ci.padInfo;
    return tf.tidy(() => {
      // Tensor views of the inputs; each holds its own reference, released when the tidy ends.
      const asTensor = (t: TensorInfo) => {
        args.backend.incRef(t.dataId);
        return tf.engine().makeTensorFromTensorInfo(t) as tf.Tensor4D;
      };
      const xt = asTensor(x), dyt = asTensor(dy);
      const xp = tf.pad(xt, [[0, 0], [Math.max(0, top), Math.max(0, bottom)], [
        Math.max(0, left),
        Math.max(0, right),
      ], [0, 0]]);
      const dy2 = tf.reshape(dyt, [B * OH * OW, Co]);
      const parts: tf.Tensor[] = [];
      for (let kh = 0; kh < KH; kh++) {
        for (let kw = 0; kw < KW; kw++) {
          const sl = tf.stridedSlice(
            xp,
            [0, kh, kw, 0],
            [B, kh + (OH - 1) * sh + 1, kw + (OW - 1) * sw + 1, Ci],
            [1, sh, sw, 1],
          );
          parts.push(tf.matMul(tf.reshape(sl, [B * OH * OW, Ci]), dy2, true, false));
        }
      }
      return tf.reshape(tf.stack(parts), filterShape);
    }) as unknown as TensorInfo;
  };
}

// --- wasm speed: Conv2DBackpropInput (the input gradient of conv2d) --------------------------------
// TF.js's wasm kernel is a naive loop (~2 GFLOP/s against ~20 for the XNNPACK forward conv). Here:
// dcol [rows, kh*kw*Ci] = dy [rows, Co] @ W^T [Co, kh*kw*Ci] (one XNNPACK matMul per chunk of images),
// then col2im adds each row's patch back into dx in JS.
/** Adds c [nb OH OW, KH KW Ci] into dx (NHWC) for images b0 .. b0 + nb - 1, in JavaScript. */
function col2imJs(c: Arr, dx: Arr, b0: number, nb: number, g: ConvGeometry): void {
  const { H, W, Ci, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl } = g;
  let p = 0;
  for (let b = b0; b < b0 + nb; b++) {
    const xb = b * H * W * Ci;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        for (let kh = 0; kh < KH; kh++) {
          const h = oh * sh + kh * dh - pt;
          if (h < 0 || h >= H) {
            p += KW * Ci;
            continue;
          }
          for (let kw = 0; kw < KW; kw++) {
            const w = ow * sw + kw * dw - pl;
            if (w < 0 || w >= W) {
              p += Ci;
              continue;
            }
            const o = xb + (h * W + w) * Ci;
            for (let ch = 0; ch < Ci; ch++) dx[o + ch] += c[p++];
          }
        }
      }
    }
  }
}

function conv2DBackpropInputWasm({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { dy, filter } = inputs as Record<string, TensorInfo>;
  const inputShape = attrs.inputShape as number[];
  const ci = nhwcConvInfo(inputShape, filter.shape, attrs);
  if (!ci) throw new Error("Conv2DBackpropInput (lmpipe wasm kernel): only NHWC (channelsLast) is supported");
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: Ci, outChannels: Co } = ci;
  const { outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw } = ci;
  const { filterHeight: KH, filterWidth: KW, dilationHeight: dh, dilationWidth: dw } = ci;
  const pt = ci.padInfo.top, pl = ci.padInfo.left;
  const K = KH * KW * Ci, perImage = OH * OW;
  const geometry = { H, W, Ci, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl };
  const out = alloc(backend, inputShape.slice(), "float32");
  const w2 = { ...filter, shape: [K, Co] };
  const imgsPerChunk = Math.max(1, Math.min(B, Math.floor(im2colMaxFloats / Math.max(1, K * perImage))));
  for (let b0 = 0; b0 < B; b0 += imgsPerChunk) {
    const nb = Math.min(imgsPerChunk, B - b0), rows = nb * perImage;
    let dyc: TensorInfo;
    if (nb === B) dyc = { dataId: dy.dataId, shape: [rows, Co], dtype: "float32" };
    else {
      dyc = backend.makeOutput([rows, Co], "float32");
      heapView(backend, dyc).set(
        heapView(backend, dy).subarray(b0 * perImage * Co, (b0 + nb) * perImage * Co),
      );
    }
    const col = fastMatMul(backend, dyc, w2, true); // dy [rows, Co] @ W^T [Co, K]
    // lmpipe's wasm kernel on all threads, or (kernels off) the same loop in JavaScript
    if (!col2imOnHeap(backend, col, out.info, b0, nb, geometry)) {
      col2imJs(heapView(backend, col), heapView(backend, out.info), b0, nb, geometry);
    }
    backend.disposeData(col.dataId);
    if (dyc.dataId !== dy.dataId) backend.disposeData(dyc.dataId);
  }
  return out.info;
}

// --- wasm speed: matMuls outside XNNPACK's fast path -----------------------------------------------
// The wasm backend hands a matMul to XNNPACK only when it is 2-D (batch 1) and not transposed; every
// other case runs a naive loop at 0.5-2 GFLOP/s against ~20 for XNNPACK (bench/ops.ts). This wrapper
// turns every float32 matMul into fast ones: a batched input against a 2-D weight becomes one 2-D
// matMul over all rows, transposed operands are transposed explicitly first (O(size), small next to
// the matMul), and a true batch runs as one XNNPACK matMul per batch slice.
let wasmTranspose: KernelFn | undefined;

function transposeLast2(backend: AnyBackend, t: TensorInfo): TensorInfo {
  const r = t.shape.length, perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return wasmTranspose!({ inputs: { x: t }, backend, attrs: { perm } }) as TensorInfo;
}

// With a CBLAS library (blas.ts), big float32 matMuls run as sgemm straight on the wasm heap: no
// transposes (sgemm takes them as flags), no copies of batch slices, ~3x XNNPACK's rate on the output
// head. sgemm matched or beat XNNPACK at every size measured from 16x16x16 up (bench/blas_matmul.ts);
// below blasMinWork multiply-adds per slice, call overhead dominates and the paths below stay.
let blasMinWork = 4096;

/**
 * Whether float32 matMuls with transposed operands cost no more than plain ones on the current
 * backend: wasm with a BLAS library (the flags go to sgemm), where a materialised transpose is pure
 * overhead. Elsewhere callers keep their explicit, reused transposes.
 */
export function transposedMatMulsAreFree(): boolean {
  return tf.getBackend() === "wasm" && currentBlas() !== null && blasMinWork <= 1 << 20;
}

/** Sets the smallest M*K*N (per batch slice) that goes to BLAS; returns the previous value. */
export function setBlasMinWork(n: number): number {
  const prev = blasMinWork;
  blasMinWork = n;
  return prev;
}

function blasMatMul(
  blas: Blas,
  backend: AnyBackend,
  a: TensorInfo,
  b: TensorInfo,
  dims: {
    transposeA: boolean;
    transposeB: boolean;
    batchA: number;
    batchB: number;
    folded: boolean;
    M: number;
    K: number;
    N: number;
  },
  outShape: number[],
): TensorInfo {
  const { transposeA: transA, transposeB: transB, batchA, batchB, folded, M, K, N } = dims;
  const out = backend.makeOutput(outShape, "float32") as TensorInfo;
  // Offsets are read after the allocation above: it can grow (and replace) the heap buffer.
  const off = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset as number;
  const heap = backend.wasm.HEAPU8.buffer as ArrayBufferLike;
  const oa = off(a), ob = off(b), oc = off(out);
  if (folded) {
    // a's batch folded into rows (only when a is not transposed, or has no batch).
    blas.sgemm(heap, transA, transB, batchA * M, N, K, oa, ob, oc);
  } else {
    const batch = Math.max(batchA, batchB);
    for (let i = 0; i < batch; i++) {
      const ia = batchA === 1 ? 0 : i, ib = batchB === 1 ? 0 : i;
      blas.sgemm(heap, transA, transB, M, N, K, oa + 4 * ia * M * K, ob + 4 * ib * K * N, oc + 4 * i * M * N);
    }
  }
  return out;
}

function wasmFastMatMul(orig: KernelFn): KernelFn {
  return (args) => {
    const { a, b } = args.inputs as Record<string, TensorInfo>;
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
    const backend = args.backend;
    if (a.dtype !== "float32" || b.dtype !== "float32" || a.shape.length < 2 || b.shape.length < 2) {
      return orig(args);
    }
    const ra = a.shape.length, rb = b.shape.length;
    const batchA = util.sizeFromShape(a.shape.slice(0, -2)),
      batchB = util.sizeFromShape(b.shape.slice(0, -2));
    const M = transposeA ? a.shape[ra - 1] : a.shape[ra - 2],
      K = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
    const N = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
    const outBatch = backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
    const outShape = [...outBatch, M, N];
    if (batchA !== batchB && batchA !== 1 && batchB !== 1) return orig(args); // partial broadcast: rare
    const folded = batchB === 1 && (batchA === 1 || !transposeA);
    const blas = currentBlas();
    if (blas && M * K * N >= blasMinWork) {
      const dims = { transposeA, transposeB, batchA, batchB, folded, M, K, N };
      return blasMatMul(blas, backend, a, b, dims, outShape);
    }
    // Where the naive loop wins (measured): a transposed operand that would be transposed for fewer
    // than 8 rows/columns of output (e.g. one decoding step through the tied head: transpose the
    // weight once per generation instead), and batch slices under 16k multiply-adds.
    if ((transposeB && (folded ? batchA * M : M) < 8) || (transposeA && N < 8)) return orig(args);
    if (!folded && M * K * N < 16384) return orig(args);
    const temps: TensorInfo[] = [];
    const plain = (t: TensorInfo, transposed: boolean) => {
      if (!transposed) return t;
      const tt = transposeLast2(backend, t);
      temps.push(tt);
      return tt;
    };
    const mm = (x: TensorInfo, y: TensorInfo) =>
      orig({
        inputs: { a: x, b: y },
        backend,
        attrs: { transposeA: false, transposeB: false },
      }) as TensorInfo;
    let out: TensorInfo;
    if (folded) {
      // One 2-D matMul: all rows of a (its batch folded into rows) against the 2-D b.
      const a2 = plain({ ...a, shape: transposeA ? [K, M] : [batchA * M, K] }, transposeA);
      const b2 = plain({ ...b, shape: transposeB ? [N, K] : [K, N] }, transposeB);
      out = mm(a2, b2);
    } else {
      // A real batch: one 2-D XNNPACK matMul per slice, slices copied in and out of the heap.
      const batch = Math.max(batchA, batchB);
      const a3 = plain({ ...a, shape: [batchA, ...a.shape.slice(-2)] }, transposeA);
      const b3 = plain({ ...b, shape: [batchB, ...b.shape.slice(-2)] }, transposeB);
      out = backend.makeOutput([batch, M, N], "float32");
      for (let i = 0; i < batch; i++) {
        const as = backend.makeOutput([M, K], "float32"), bs = backend.makeOutput([K, N], "float32");
        const ia = batchA === 1 ? 0 : i, ib = batchB === 1 ? 0 : i;
        heapView(backend, as).set(heapView(backend, a3).subarray(ia * M * K, (ia + 1) * M * K));
        heapView(backend, bs).set(heapView(backend, b3).subarray(ib * K * N, (ib + 1) * K * N));
        const part = mm(as, bs);
        heapView(backend, out).set(heapView(backend, part), i * M * N);
        for (const t of [as, bs, part]) backend.disposeData(t.dataId);
      }
    }
    for (const t of temps) backend.disposeData(t.dataId);
    return { dataId: out.dataId, shape: outShape, dtype: "float32" };
  };
}

// --- wasm speed: Sum over leading axes (bias gradients) --------------------------------------------
// The gradient of x @ W + b sums dy over its rows. TF.js's wasm Sum transposes the input first to sum
// along the last axis: 4.5 ms for [1024, 512] (bench/profile_step.ts), ~6% of a small GPT's step on 2
// threads. Column sums straight on the heap, accumulated in float64, take a tenth of that.

function sumLeadingAxes(orig: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
    const rank = x.shape.length;
    if (x.dtype !== "float32" || rank < 2) return orig(args);
    const axes = util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
    const k = axes.length;
    if (k === 0 || k >= rank || axes.some((a, i) => a !== i)) return orig(args);
    const rows = util.sizeFromShape(x.shape.slice(0, k)), cols = util.sizeFromShape(x.shape.slice(k));
    const outShape = keepDims ? [...x.shape.slice(0, k).map(() => 1), ...x.shape.slice(k)] : x.shape.slice(k);
    const backend = args.backend;
    const out = backend.makeOutput(outShape, "float32") as TensorInfo;
    const src = heapView(backend, x), dst = heapView(backend, out); // views after the allocation
    const acc = new Float64Array(cols);
    for (let r = 0, i = 0; r < rows; r++) {
      for (let j = 0; j < cols; j++, i++) acc[j] += src[i];
    }
    dst.set(acc);
    return out;
  };
}

// --- 6. AddN on webgpu (8 or more inputs: only the first 7 are summed) ---------------------------
// WebGPU allows 8 storage buffers per shader stage by default: 7 inputs + the output. Sum in groups.
const WEBGPU_ADDN_MAX = 7;

function addNGrouped(orig: KernelFn): KernelFn {
  return (args) => {
    const ts = args.inputs as TensorInfo[];
    if (ts.length <= WEBGPU_ADDN_MAX) return orig(args);
    let acc = orig({ ...args, inputs: ts.slice(0, WEBGPU_ADDN_MAX) }) as TensorInfo;
    for (let i = WEBGPU_ADDN_MAX; i < ts.length; i += WEBGPU_ADDN_MAX - 1) {
      const next = orig({ ...args, inputs: [acc, ...ts.slice(i, i + WEBGPU_ADDN_MAX - 1)] }) as TensorInfo;
      args.backend.disposeData(acc.dataId);
      acc = next;
    }
    return acc;
  };
}

// --- 7. webgpu tensors beyond the storage-buffer binding limit -----------------------------------
// A shader cannot bind a buffer larger than maxStorageBufferBindingSize (128 MiB on llvmpipe and many
// GPUs); TF.js does not check and returns stale garbage (e.g. a 700x50304 matMul). Every webgpu kernel
// runs through runWebGPUProgram, so the check there turns garbage into a clear error for any op.
let bindingLimitOverride: number | null = null;

/** For tests: pretend the webgpu binding limit is `bytes` (null restores the device's limit). */
export function setWebGPUBindingLimitForTests(bytes: number | null): void {
  bindingLimitOverride = bytes;
}

/** The largest tensor (bytes) a webgpu kernel may read or write on the current device. */
export function webgpuMaxTensorBytes(backend: AnyBackend = tf.backend()): number {
  if (bindingLimitOverride != null) return bindingLimitOverride;
  return backend?.device?.limits?.maxStorageBufferBindingSize ?? Infinity;
}

function tensorBytes(shape: number[], dtype: string): number {
  return util.sizeFromShape(shape) * (dtype === "complex64" ? 8 : 4); // webgpu stores bool as 32 bits
}

function guardWebGPUPrograms(): void {
  const proto = WebGPUBackend.prototype as AnyBackend;
  if (proto.__lmpipeGuarded) return;
  const run = proto.runWebGPUProgram;
  proto.runWebGPUProgram = function (
    this: AnyBackend,
    program: AnyBackend,
    inputs: TensorInfo[],
    outputDtype: string,
    uniforms?: unknown,
    output?: TensorInfo,
  ) {
    const limit = webgpuMaxTensorBytes(this);
    const outShape: number[] = output?.shape ?? program.outputShape;
    const check = (what: string, shape: number[], dtype: string) => {
      const bytes = tensorBytes(shape, dtype);
      if (bytes > limit) {
        throw new Error(
          `webgpu: ${what} of ${program.constructor?.name ?? "a kernel"} has shape [${shape}] ` +
            `(${(bytes / 2 ** 20).toFixed(1)} MiB), over this GPU's storage-buffer binding limit of ` +
            `${(limit / 2 ** 20).toFixed(1)} MiB; TF.js would return garbage. Split the work into ` +
            `smaller pieces (e.g. rows of the output head: see maxRowsPerChunk in lib/tensor/fixes.ts) ` +
            `or use a smaller batch.`,
        );
      }
    };
    check("the output", outShape, output?.dtype ?? outputDtype);
    inputs.forEach((t, i) => check(`input ${i}`, t.shape, t.dtype));
    return run.call(this, program, inputs, outputDtype, uniforms, output);
  };
  proto.__lmpipeGuarded = true;
}

// webgpu under Deno cannot read GPU data synchronously: TF.js's readSync draws through a canvas that
// Deno does not have and fails with "Cannot read properties of null (reading 'clearRect')".
export const WEBGPU_SYNC_READ_MESSAGE =
  "webgpu under Deno cannot read tensors synchronously (dataSync, arraySync, bufferSync): use " +
  "`await t.data()` / `await t.array()`, or readData/readScalar from lib/tensor/backend.ts";

function explainWebGPUSyncReads(): void {
  const proto = WebGPUBackend.prototype as AnyBackend;
  if (proto.__lmpipeReadSync) return;
  const readSync = proto.readSync;
  proto.readSync = function (this: AnyBackend, dataId: unknown) {
    try {
      return readSync.call(this, dataId);
    } catch (err) {
      if (/clearRect|getContext|OffscreenCanvas/.test(String(err))) throw new Error(WEBGPU_SYNC_READ_MESSAGE);
      throw err;
    }
  };
  proto.__lmpipeReadSync = true;
}

/**
 * How many rows of a [rows, cols] float32 result fit in one webgpu buffer binding (Infinity on other
 * backends); at least 1. Use it to size the row chunks of a large output head.
 */
export function maxRowsPerChunk(cols: number): number {
  if (tf.getBackend() !== "webgpu") return Infinity;
  const limit = webgpuMaxTensorBytes();
  return Math.max(1, Math.floor(limit / (4 * cols)));
}

// --- 9. wasm out of memory ------------------------------------------------------------------------
// The wasm heap cannot grow past 4 GiB. Then malloc returns 0, TF.js places the tensor at address 0 and
// training goes on with corrupted memory until "memory access out of bounds". Every tensor allocation
// goes through BackendWasm.move, which here makes a failed malloc a clear error instead.

function guardWasmMalloc(): void {
  const proto = BackendWasm.prototype as AnyBackend;
  if (proto.__lmpipeMallocGuard) return;
  const move = proto.move;
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
            (tf.memory().numBytes / 2 ** 30).toFixed(2)
          } GiB): ${OUT_OF_MEMORY_HINT}`,
        EXIT.memory,
      );
    }
    if (values != null) {
      this.wasm.HEAPU8.set(new Uint8Array(values.buffer, values.byteOffset, numBytes), data.memoryOffset);
    }
  };
  proto.__lmpipeMallocGuard = true;
}

// --- 4 and 5. Gradients with wrong shapes on every backend -----------------------------------------
/** Sums `g` over the batch dimensions that were broadcast in an input of shape `shape`. */
function reduceToShape(g: tf.Tensor, shape: number[]): tf.Tensor {
  if (util.arraysEqual(g.shape, shape)) return g;
  const axes = backend_util.getReductionAxes(shape, g.shape);
  const summed = axes.length > 0 ? tf.sum(g, axes) : g;
  return tf.reshape(summed, shape);
}

function registerGradients(): void {
  // Cumsum: d(cumsum x)/dx is the cumsum of dy in the opposite direction along the same axis. TF.js
  // 4.22 also transposes the result, giving a wrong shape whenever the axis is not the last one.
  tf.registerGradient({
    kernelName: tf.Cumsum,
    inputsToSave: ["x"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], _saved: tf.Tensor[], attrs: Attrs) => {
      const { axis, exclusive, reverse } = attrs;
      return { x: () => tf.cumsum(dy as tf.Tensor, axis, exclusive, !reverse) };
    },
  });

  // BatchMatMul: TF.js 4.22 forgets to sum the gradient over broadcast batch dimensions (e.g.
  // [B,T,K] @ [K,N] gives a [B,K,N] gradient for the [K,N] weight). A 2-D weight against a batched
  // input is computed as one 2-D matMul over all rows, which is also the fast path on wasm.
  tf.registerGradient({
    kernelName: tf.BatchMatMul,
    inputsToSave: ["a", "b"],
    gradFunc: (dyIn: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: Attrs) => {
      const dy = dyIn as tf.Tensor;
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      const gradA = () => {
        let g: tf.Tensor;
        if (!transposeA && !transposeB) g = tf.matMul(dy, b, false, true);
        else if (!transposeA && transposeB) g = tf.matMul(dy, b, false, false);
        else if (transposeA && !transposeB) g = tf.matMul(b, dy, false, true);
        else g = tf.matMul(b, dy, true, true);
        return reduceToShape(g, a.shape);
      };
      const gradB = () => {
        if (b.rank === 2 && a.rank > 2 && !transposeA) {
          const K = a.shape[a.rank - 1], N = dy.shape[dy.rank - 1];
          const a2 = tf.reshape(a, [-1, K]), dy2 = tf.reshape(dy, [-1, N]);
          return transposeB ? tf.matMul(dy2, a2, true, false) : tf.matMul(a2, dy2, true, false);
        }
        let g: tf.Tensor;
        if (!transposeA && !transposeB) g = tf.matMul(a, dy, true, false);
        else if (!transposeA && transposeB) g = tf.matMul(dy, a, true, false);
        else if (transposeA && !transposeB) g = tf.matMul(a, dy, false, false);
        else g = tf.matMul(dy, a, true, true);
        return reduceToShape(g, b.shape);
      };
      return { a: gradA, b: gradB };
    },
  });
}

let applied = false;

/** Registers every fill. Idempotent; called by backend.ts before any backend is started. */
export function applyFixes(): void {
  if (applied) return;
  applied = true;
  registerGradients();

  wasmTranspose = tf.getKernel(tf.Transpose, "wasm")?.kernelFunc as unknown as KernelFn | undefined;
  if (tf.getKernel(tf.BatchMatMul, "wasm") && wasmTranspose) {
    replaceKernel(tf.BatchMatMul, "wasm", (orig) => wasmFastMatMul(orig!));
    replaceKernel(tf.UnsortedSegmentSum, "wasm", () => unsortedSegmentSumKernel);
    replaceKernel(tf.Conv2DBackpropFilter, "wasm", () => conv2DBackpropFilterWasm);
    replaceKernel(tf.Conv2DBackpropInput, "wasm", () => conv2DBackpropInputWasm);
    replaceKernel(tf.MaxPoolGrad, "wasm", () => maxPoolGradKernel);
    replaceKernel(tf.Sum, "wasm", (orig) => sumLeadingAxes(orig!));
    replaceKernel(tf.OneHot, "wasm", () => oneHotKernel);
    replaceKernel(tf.GatherV2, "wasm", (orig) => (args) => {
      const bd = (args.attrs?.batchDims ?? 0) as number;
      return bd === 0 ? orig!(args) : gatherBatchedKernel(args);
    });
  }
  if (tf.getKernel(tf.UnsortedSegmentSum, "cpu")) {
    replaceKernel(tf.UnsortedSegmentSum, "cpu", () => unsortedSegmentSumKernel);
    // cpu's own filter gradient runs at ~0.02 GFLOP/s; the ops version at the speed of cpu matMul.
    replaceKernel(tf.Conv2DBackpropFilter, "cpu", (orig) => conv2DBackpropFilterByOps(orig!));
  }
  if (tf.getKernel(tf.AddN, "webgpu")) {
    replaceKernel(tf.AddN, "webgpu", (orig) => addNGrouped(orig!));
    replaceKernel(tf.Conv2DBackpropFilter, "webgpu", (orig) => conv2DBackpropFilterByOps(orig!));
  }
  guardWebGPUPrograms();
  explainWebGPUSyncReads();
  guardWasmMalloc();
}

// ---------------------------------------------------------------------------------------------
// Helpers for models: formulations that are correct and fast on every backend.

/**
 * x[..., in] @ W[in, out] (+ b[out]) as one 2-D matMul over all rows: the fast XNNPACK path on wasm
 * and a plain 2-D gradient everywhere.
 */
export function linear(x: tf.Tensor, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor {
  const inDim = w.shape[0], outDim = w.shape[1];
  if (x.shape[x.rank - 1] !== inDim) {
    throw new Error(
      `linear: input's last dimension ${x.shape[x.rank - 1]} does not match weight [${w.shape}]`,
    );
  }
  const x2 = x.rank === 2 ? x as tf.Tensor2D : tf.reshape(x, [-1, inDim]) as tf.Tensor2D;
  let y: tf.Tensor = tf.matMul(x2, w);
  if (b) y = tf.add(y, b);
  return x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), outDim]);
}

/** Rows of `table` [V, C] for int32 `ids` of any shape: [...ids.shape, C]. Differentiable in `table`. */
export function embeddingLookup(table: tf.Tensor2D, ids: tf.Tensor): tf.Tensor {
  const flat = ids.rank === 1 ? ids : tf.reshape(ids, [-1]);
  const rows = tf.gather(table, flat as tf.Tensor1D, 0);
  return ids.rank === 1 ? rows : tf.reshape(rows, [...ids.shape, table.shape[1]]);
}

/**
 * out[r] = x[r, idx[r]] for x [R, V] and int32 idx [R], via a gather on the flattened tensor (no
 * one-hot, no batchDims): correct forward and gradient on cpu, wasm and webgpu.
 */
export function takeAlongLastAxis(x: tf.Tensor2D, idx: tf.Tensor1D): tf.Tensor1D {
  const [R, V] = x.shape;
  const flatIdx = tf.add(tf.mul(tf.range(0, R, 1, "int32"), tf.scalar(V, "int32")), idx);
  return tf.gather(tf.reshape(x, [-1]), flatIdx as tf.Tensor1D) as tf.Tensor1D;
}
