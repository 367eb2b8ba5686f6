// conv2d's filter gradient (Conv2DBackpropFilter) composed from TF.js ops, and the NHWC geometry every
// lmpipe conv kernel starts from. TF.js's own filter-gradient kernel loops over every output pixel per
// filter element: ~0.01 GFLOP/s on webgpu (llvmpipe) and ~0.02 on cpu. Here, for each filter offset
// (kh, kw), the strided slice of the padded input that it sees, [rows, Ci], times dy [rows, Co] (a
// transposeA matMul) gives dW[kh, kw], at the speed of the backend's matMul. patches/cpu.ts and
// patches/webgpu.ts register it; wasm has its own kernels (wasm.ts beside this file).
import * as tf from "@tensorflow/tfjs-core";
import type { KernelArgs, KernelFn, TensorInfo } from "../../host_kernel.ts";

const { backend_util } = tf;

/**
 * The geometry of a conv2d kernel's call from its attributes (with `dilations`, default 1), or null when
 * the data format is not NHWC (channelsLast), the only layout lmpipe's conv kernels handle.
 */
export function nhwcConvInfo(
  inShape: readonly number[],
  filterShape: readonly number[],
  attrs: KernelArgs["attrs"],
  dilations: number | [number, number] = 1,
): ReturnType<typeof backend_util.computeConv2DInfo> | null {
  const { strides, pad, dataFormat, dimRoundingMode } = attrs as unknown as {
    strides: [number, number] | number;
    pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding;
    dataFormat?: "NHWC" | "NCHW";
    dimRoundingMode?: "floor" | "round" | "ceil";
  };
  if (backend_util.convertConv2DDataFormat(dataFormat ?? "NHWC") !== "channelsLast") return null;
  return backend_util.computeConv2DInfo(
    inShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    dilations,
    pad,
    dimRoundingMode,
    false,
    "channelsLast",
  );
}

/** A conv's geometry as flat numbers, NHWC input, HWIO filter, TF.js's (possibly asymmetric) padding. */
export interface ConvGeometry {
  B: number;
  H: number;
  W: number;
  Ci: number;
  OH: number;
  OW: number;
  Co: number;
  KH: number;
  KW: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
  pt: number;
  pb: number;
  pl: number;
  pr: number;
}

/** The flat geometry of TF.js's conv info (what lmpipe's conv kernels, webgpu and oneDNN, read). */
export function flatConvGeometry(ci: ReturnType<typeof backend_util.computeConv2DInfo>): ConvGeometry {
  return {
    B: ci.batchSize,
    H: ci.inHeight,
    W: ci.inWidth,
    Ci: ci.inChannels,
    OH: ci.outHeight,
    OW: ci.outWidth,
    Co: ci.outChannels,
    KH: ci.filterHeight,
    KW: ci.filterWidth,
    sh: ci.strideHeight,
    sw: ci.strideWidth,
    dh: ci.dilationHeight,
    dw: ci.dilationWidth,
    pt: ci.padInfo.top,
    pb: ci.padInfo.bottom,
    pl: ci.padInfo.left,
    pr: ci.padInfo.right,
  };
}

/**
 * The Conv2DBackpropFilter kernel from ops, around the backend's own (`orig`, still used for NCHW).
 * Ops run inside a kernel are not recorded for gradients; the kernel returns the resulting tensor itself.
 */
export function conv2DBackpropFilterByOps(orig: KernelFn): KernelFn {
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
