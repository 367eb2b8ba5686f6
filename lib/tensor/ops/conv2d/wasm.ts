// conv2d's gradients on the wasm backend, registered by patches/wasm.ts. TF.js 4.22's wasm backend has
// no Conv2DBackpropFilter at all, and its Conv2DBackpropInput is a naive loop (~2 GFLOP/s against ~20
// for the XNNPACK forward conv). Both run here as im2col / col2im plus one fast matMul per chunk of
// whole images (chunks bound the extra memory):
//   - filter: dW[kh,kw,ci,co] = sum over (b,oh,ow) of x[b, oh*s+kh-pt, ow*s+kw-pl, ci] * dy[b,oh,ow,co]:
//     the transposed im2col matrix colT [kh*kw*Ci, rows], then colT @ dy[rows, Co], already in filter
//     layout;
//   - input: dcol [rows, kh*kw*Ci] = dy [rows, Co] @ W^T [Co, kh*kw*Ci], then col2im adds each row's
//     patch back into dx.
// im2col / col2im run as lmpipe's wasm kernels on all threads (kernels.wat, run by wasm/kernels.ts) or,
// with those off, as the JavaScript loops below.
import {
  alloc,
  type AnyBackend,
  type Arr,
  heapView,
  type KernelArgs,
  type TensorInfo,
} from "../../host_kernel.ts";
import { offsetOf, runRows, usable } from "../../wasm/kernels.ts";
import { KIND } from "../../wasm/kernel_calls.ts";
import { wasmMatMul2D } from "../matmul/wasm.ts";
import { type ConvGeometry, flatConvGeometry, nhwcConvInfo } from "./mod.ts";

const IM2COL_MAX_FLOATS = 16 << 20; // 64 MB per chunk
let im2colMaxFloats = IM2COL_MAX_FLOATS;

/** For tests: a smaller im2col chunk, to exercise the chunked path (null restores the default). */
export function setIm2colChunkFloatsForTests(n: number | null): void {
  im2colMaxFloats = n ?? IM2COL_MAX_FLOATS;
}

/** The sizes both gradient kernels work in: the im2col width K, rows per image, images per chunk. */
function chunkPlan(ci: NonNullable<ReturnType<typeof nhwcConvInfo>>) {
  const geometry = flatConvGeometry(ci);
  const { B, Co, KH, KW, Ci, OH, OW } = geometry;
  const K = KH * KW * Ci, perImage = OH * OW;
  const imgsPerChunk = Math.max(1, Math.min(B, Math.floor(im2colMaxFloats / Math.max(1, K * perImage))));
  return { B, Co, K, perImage, geometry, imgsPerChunk };
}

/**
 * dy's rows [rows, Co] of images b0 .. b0 + nb - 1: dy itself when the chunk is the whole batch, else a
 * copy (the rows are contiguous); the caller disposes a copy.
 */
function dyRows(
  backend: AnyBackend,
  dy: TensorInfo,
  b0: number,
  nb: number,
  B: number,
  perImage: number,
  Co: number,
): TensorInfo {
  const rows = nb * perImage;
  if (nb === B) return { dataId: dy.dataId, shape: [rows, Co], dtype: "float32" };
  const dyc = backend.makeOutput([rows, Co], "float32") as TensorInfo;
  heapView(backend, dyc).set(heapView(backend, dy).subarray(b0 * perImage * Co, (b0 + nb) * perImage * Co));
  return dyc;
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

export function conv2DBackpropFilterWasm({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { x, dy } = inputs as Record<string, TensorInfo>;
  const filterShape = attrs.filterShape as number[];
  const ci = nhwcConvInfo(x.shape, filterShape, attrs);
  if (!ci) {
    throw new Error("Conv2DBackpropFilter (lmpipe wasm kernel): only NHWC (channelsLast) is supported");
  }
  const { B, Co, K, perImage, geometry, imgsPerChunk } = chunkPlan(ci);
  let result: TensorInfo | undefined;
  for (let b0 = 0; b0 < B; b0 += imgsPerChunk) {
    const nb = Math.min(imgsPerChunk, B - b0), rows = nb * perImage;
    const col = backend.makeOutput([K, rows], "float32") as TensorInfo;
    const dyc = dyRows(backend, dy, b0, nb, B, perImage, Co);
    // lmpipe's wasm kernel on all threads, or (kernels off) the same loop in JavaScript
    if (!im2colOnHeap(backend, x, col, b0, nb, geometry)) {
      im2colJs(heapView(backend, x), heapView(backend, col), b0, nb, rows, geometry);
    }
    const part = wasmMatMul2D(backend, col, dyc, false);
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

export function conv2DBackpropInputWasm({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { dy, filter } = inputs as Record<string, TensorInfo>;
  const inputShape = attrs.inputShape as number[];
  const ci = nhwcConvInfo(inputShape, filter.shape, attrs);
  if (!ci) throw new Error("Conv2DBackpropInput (lmpipe wasm kernel): only NHWC (channelsLast) is supported");
  const { B, Co, K, perImage, geometry, imgsPerChunk } = chunkPlan(ci);
  const out = alloc(backend, inputShape.slice(), "float32");
  const w2 = { ...filter, shape: [K, Co] };
  for (let b0 = 0; b0 < B; b0 += imgsPerChunk) {
    const nb = Math.min(imgsPerChunk, B - b0);
    const dyc = dyRows(backend, dy, b0, nb, B, perImage, Co);
    const col = wasmMatMul2D(backend, dyc, w2, true); // dy [rows, Co] @ W^T [Co, K]
    // lmpipe's wasm kernel on all threads, or (kernels off) the same loop in JavaScript
    if (!col2imOnHeap(backend, col, out.info, b0, nb, geometry)) {
      col2imJs(heapView(backend, col), heapView(backend, out.info), b0, nb, geometry);
    }
    backend.disposeData(col.dataId);
    if (dyc.dataId !== dy.dataId) backend.disposeData(dyc.dataId);
  }
  return out.info;
}

/**
 * Fills col [KH KW Ci, nb OH OW] with the im2col matrix of images b0 .. b0 + nb - 1 of x (both on the
 * heap), rows shared between threads. Returns false, doing nothing, when the kernels are off or cannot
 * run here: the caller then runs its JavaScript loop.
 */
function im2colOnHeap(
  backend: AnyBackend,
  x: TensorInfo,
  col: TensorInfo,
  b0: number,
  nb: number,
  g: ConvGeometry,
): boolean {
  if (!usable(backend)) return false;
  const K = g.KH * g.KW * g.Ci, rows = nb * g.OH * g.OW;
  const args = [
    KIND.im2col,
    offsetOf(backend, x),
    offsetOf(backend, col),
    b0,
    nb,
    g.H,
    g.W,
    g.Ci,
    g.OH,
    g.OW,
  ];
  args.push(g.KW, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, rows);
  runRows(backend, args, K, rows);
  return true;
}

/**
 * Adds the im2col-shaped gradient col [nb OH OW, KH KW Ci] of images b0 .. b0 + nb - 1 into dx (NHWC, on
 * the heap), images shared between threads. Returns false, doing nothing, when the kernels are off or
 * cannot run here (the caller runs its JavaScript loop).
 */
function col2imOnHeap(
  backend: AnyBackend,
  col: TensorInfo,
  dx: TensorInfo,
  b0: number,
  nb: number,
  g: ConvGeometry,
): boolean {
  if (!usable(backend)) return false;
  const perImage = g.OH * g.OW * g.KH * g.KW * g.Ci;
  const args = [KIND.col2im, offsetOf(backend, col), offsetOf(backend, dx), b0, g.H, g.W, g.Ci, g.OH, g.OW];
  args.push(g.KH, g.KW, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl);
  runRows(backend, args, nb, perImage);
  return true;
}
