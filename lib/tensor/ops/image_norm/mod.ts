// imageNormRelu: what follows each conv of the image models' CNNs (lib/models/cnn.ts): a LayerNorm over one
// image's own H, W and C with a per-channel scale g and shift b, then (optionally) ReLU. It is not fused
// into the conv itself (lib/tensor/ops/conv2d/webgpu.ts): the norm needs the mean and variance of the whole
// conv output of an image, spread over many of the conv's tiles, before any element can be written.
//   - On webgpu with lmpipe's conv kernels on: ./webgpu.ts, one dispatch forward (one workgroup per
//     image: mean, variance, then the normalised, scaled, shifted, rectified output; it keeps each image's
//     mean and 1/std) and one backward (dx per image, and per image and channel the sums that make dg and
//     db, added over the images by one TF.js sum). The op chain takes ~10 dispatches forward, ~14 backward.
//   - On wasm with lmpipe's kernels on: ./wasm.ts, one job forward (per image: mean, variance, then the
//     normalised, scaled, shifted, rectified output; keeps each image's mean and 1/std) and one backward
//     (dx, and dg and db summed over the images), for any H, W and C.
//   - On wasm with that kernel switched off (LMPIPE_WASM_IMAGE_NORM=0), the path before it: exactly a
//     LayerNorm of rows of H·W·C values whose weight and bias are the per-channel ones tiled over the
//     pixels, so lmpipe's LayerNorm kernel runs it (../layer_norm; the tiles' gradients sum back to the
//     channels), then tf.relu.
//   - Everywhere else the op chain: tf.moments, (x - mean) * rsqrt(variance + eps) * g + b, tf.relu.
// kernel_choice.ts decides (rows "imageNorm").
import * as tf from "@tensorflow/tfjs-core";
import { kernelFor } from "../../kernel_choice.ts";
import { gradientsRecorded } from "../../tape_state.ts";
import { layerNorm } from "../layer_norm/mod.ts";
import { imageNormCall, imageNormGradCall } from "./webgpu.ts";
import "./wasm.ts"; // registers the wasm kernels

/** The norm's epsilon (added to the variance). */
export const IMAGE_NORM_EPS = 1e-5;

/** The reference: the op chain with TF.js's own gradients (~10 kernels forward, ~20 backward). */
export function imageNormReluByOps(x: tf.Tensor4D, g: tf.Tensor, b: tf.Tensor, relu: boolean): tf.Tensor4D {
  const { mean, variance } = tf.moments(x, [1, 2, 3], true);
  const xhat = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, IMAGE_NORM_EPS)));
  const y = tf.add(tf.mul(xhat, g), b) as tf.Tensor4D;
  return relu ? tf.relu(y) : y;
}

/**
 * A per-channel vector [C] repeated over `pixels` pixels, as one row [pixels·C]: a broadcasting multiply
 * (wasm's Tile kernel took ~0.25 ms for these few thousand values, this ~0.05); its gradient sums over the pixels.
 */
function spreadOverPixels(t: tf.Tensor, pixels: number): tf.Tensor1D {
  return tf.reshape(tf.mul(tf.ones([pixels, 1]), tf.reshape(t, [1, t.size])), [
    pixels * t.size,
  ]) as tf.Tensor1D;
}

/** On wasm: one LayerNorm kernel pass over rows of H·W·C values with the channel affine tiled. */
function imageNormReluByLayerNorm(x: tf.Tensor4D, g: tf.Tensor, b: tf.Tensor, relu: boolean): tf.Tensor4D {
  const [N, H, W, C] = x.shape;
  const row = H * W * C;
  const tile = (t: tf.Tensor) => spreadOverPixels(t, H * W);
  const y = tf.reshape(layerNorm(tf.reshape(x, [N, row]), tile(g), tile(b), IMAGE_NORM_EPS), [N, H, W, C]);
  return (relu ? tf.relu(y) : y) as tf.Tensor4D;
}

/** The fused kernels' gradient: dx from the saved x, g, b and per-image stats; dg, db summed over images. */
function fusedNormGrad(relu: boolean, N: number, C: number) {
  return (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]): tf.Tensor[] => {
    const [sx, sg, sb, st] = saved;
    const [dx, ...sums] = imageNormGradCall(sx, sg, sb, st, dy as tf.Tensor, relu);
    // wasm's kernel sums dg and db itself; webgpu's gives per image and channel sums of dy * xhat and
    // dy, added over the images here
    const [dg, db] = sums.length === 2 ? sums : tf.unstack(tf.sum(tf.reshape(sums[0], [N, 2, C]), 0));
    return [dx, tf.reshape(dg, sg.shape), tf.reshape(db, sb.shape)];
  };
}

function imageNormReluFused(x: tf.Tensor4D, g: tf.Tensor, b: tf.Tensor, relu: boolean): tf.Tensor4D {
  const [N, , , C] = x.shape;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xx, gg, bb, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [y, stats] = imageNormCall(xx, gg, bb, relu, IMAGE_NORM_EPS);
    save([xx, gg, bb, stats]);
    return { value: y, gradFunc: fusedNormGrad(relu, N, C) };
  }) as (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.Tensor;
  return f(x, g, b) as tf.Tensor4D;
}

/** What the fused kernels gave on one call: the output and each image's mean and 1/std, for replaying it. */
export interface KeptImageNorm {
  y: tf.Tensor4D;
  stats: tf.Tensor;
}

/**
 * imageNormRelu for a pass whose gradient is taken later by replaying it (lib/models/cnn.ts cnnCheckpointed,
 * which records with no gradient being recorded): where the fused kernels run the norm, its output and
 * stats are handed to `keep` (kept past any tidy: the caller disposes them) and the output is returned
 * without a gradient; elsewhere it is imageNormRelu and nothing is kept.
 */
export function imageNormReluKeeping(
  x: tf.Tensor4D,
  g: tf.Tensor,
  b: tf.Tensor,
  relu: boolean,
  keep: (k: KeptImageNorm) => void,
): tf.Tensor4D {
  checkOperands(x, g, b);
  if (!(fusable(x, g, b) && kernelFor("imageNorm") === "lmpipe")) return imageNormRelu(x, g, b, relu);
  if (gradientsRecorded()) {
    throw new Error("imageNormReluKeeping: called while a gradient is recorded; its output would have none");
  }
  const [y, stats] = imageNormCall(x, g, b, relu, IMAGE_NORM_EPS);
  keep({ y: tf.keep(y) as tf.Tensor4D, stats: tf.keep(stats) });
  return y as tf.Tensor4D;
}

/**
 * The norm whose value is `kept.y`, what imageNormReluKeeping gave on the same x, g and b before, and whose
 * gradient is the fused kernels' own from the kept stats: the forward work is not done again.
 */
export function imageNormReluReplayed(
  x: tf.Tensor4D,
  g: tf.Tensor,
  b: tf.Tensor,
  relu: boolean,
  kept: KeptImageNorm,
): tf.Tensor4D {
  const [N, , , C] = x.shape;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xx, gg, bb, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([xx, gg, bb, kept.stats]);
    return { value: tf.reshape(kept.y, kept.y.shape), gradFunc: fusedNormGrad(relu, N, C) }; // a view
  }) as (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.Tensor;
  return f(x, g, b) as tf.Tensor4D;
}

/** Throws unless x is [N, H, W, C] and g and b have C values each. */
function checkOperands(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor): void {
  const C = x.shape[3];
  if (x.rank !== 4 || g.size !== C || b.size !== C) {
    throw new Error(
      `imageNormRelu (lib/tensor/ops/image_norm/mod.ts): expected x [N, H, W, C] with g and b of C values; ` +
        `got x [${x.shape}], g [${g.shape}], b [${b.shape}]`,
    );
  }
}

/** Whether the fused kernels can take these operands (float32, not empty). */
function fusable(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor): boolean {
  return x.dtype === "float32" && g.dtype === "float32" && b.dtype === "float32" && x.size > 0;
}

/**
 * The per-image norm of x [N, H, W, C] over (H, W, C) with per-channel scale g [C] and shift b [C], then
 * ReLU when `relu`. Differentiable in x, g and b.
 */
export function imageNormRelu(x: tf.Tensor4D, g: tf.Tensor, b: tf.Tensor, relu: boolean): tf.Tensor4D {
  checkOperands(x, g, b);
  if (!fusable(x, g, b)) return imageNormReluByOps(x, g, b, relu);
  const kernel = kernelFor("imageNorm");
  if (kernel === "lmpipe") return imageNormReluFused(x, g, b, relu);
  if (kernel === "layerNorm" && (x.size / x.shape[0]) % 4 === 0) {
    return imageNormReluByLayerNorm(x, g, b, relu);
  }
  return imageNormReluByOps(x, g, b, relu);
}
