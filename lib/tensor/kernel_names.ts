// Names of lmpipe's own TF.js kernels that more than one backend registers (wasm/kernels.ts,
// webgpu/kernels.ts, ...), and the constants of their contracts, kept apart so that no backend module
// imports another (or an op module) for them.

/** One parameter's AdamW update (lib/optim.ts): [new param, m, v] from {p, g, m, v}. */
export const ADAMW_KERNEL = "LmpipeAdamW";

/**
 * The sum of squares of any number of float32 tensors, each multiplied by the attribute `scale` first, as
 * one float32 scalar (lib/optim.ts sumOfSquares): the global gradient norm and the loss scaler's overflow
 * check (inf and NaN propagate).
 */
export const SUM_SQUARES_KERNEL = "LmpipeSumSquares";

/**
 * Per-update constants of AdamW, computed on the host in float64 exactly as lib/optim.ts computes
 * them; each becomes a float32 in the shader, as TF.js turns a JS number operand into a float32
 * scalar tensor, so the fused update sees the same float32 constants as the op chain.
 */
export interface AdamWConstants {
  /** Multiplies the gradient first (loss-scale unscale times clip factor; 1: none). */
  gradScale: number;
  beta1: number;
  oneMinusBeta1: number;
  beta2: number;
  oneMinusBeta2: number;
  /** p is multiplied by this before the update (1 - lr * wd, or 1 without decay). */
  decay: number;
  /** Whether the parameter gets weight decay at all (decay is then 1 - lr * wd; with a device control
   * the webgpu kernel reads that factor from the control and needs only this). */
  decays?: boolean;
  sqrtBc2: number;
  eps: number;
  stepSize: number;
}

/** e = exp(x - rowmax), row maxima, row sums: lib/tensor/ops/softmax_rows/mod.ts. */
export const SOFTMAX_ROWS_KERNEL = "LmpipeSoftmaxRows";

/** LayerNorm forward (y, row means, row 1/std) and its gradient: lib/tensor/ops/layer_norm/mod.ts. */
export const LAYER_NORM_KERNEL = "LmpipeLayerNorm";
export const LAYER_NORM_GRAD_KERNEL = "LmpipeLayerNormGrad";

/**
 * The image models' per-image norm + channel affine + ReLU: lib/tensor/ops/image_norm/mod.ts. Forward:
 * [y, per-image (mean, 1/std) [N, 2]]. Gradient: webgpu [dx, per image and channel sums of dy * xhat and
 * dy [N * 2 * C]]; wasm [dx, dg [C], db [C]].
 */
export const IMAGE_NORM_KERNEL = "LmpipeImageNorm";
export const IMAGE_NORM_GRAD_KERNEL = "LmpipeImageNormGrad";

/** GELU (tanh form) forward, y only, and its gradient from x and dy (tanh recomputed): lib/tensor/ops/gelu/mod.ts. */
export const GELU_KERNEL = "LmpipeGelu";
/** GELU's k = sqrt(2 / pi) and c: 0.5 x (1 + tanh(k (x + c x^3))). */
export const GELU_K = Math.sqrt(2 / Math.PI);
export const GELU_C = 0.044715;
export const GELU_GRAD_KERNEL = "LmpipeGeluGrad";
/** Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), forward and gradient from x and dy (erf recomputed). */
export const GELU_EXACT_KERNEL = "LmpipeGeluExact";
export const GELU_EXACT_GRAD_KERNEL = "LmpipeGeluExactGrad";

/**
 * Attention's causal softmax over the last axis of scores [..., T, past + T] (attribute past) and the
 * softmax gradient from y and dy: lib/tensor/ops/causal_softmax/mod.ts.
 */
export const CAUSAL_SOFTMAX_KERNEL = "LmpipeCausalSoftmax";
export const CAUSAL_SOFTMAX_GRAD_KERNEL = "LmpipeCausalSoftmaxGrad";

/**
 * The CNNs' global average pool on wasm (lib/tensor/ops/global_pool/wasm.ts): x [N, H, W, C] -> per-image
 * channel means [N, C]; and its gradient's broadcast, g [N, C] -> [N, H, W, C] (attrs H, W).
 */
export const IMAGE_MEANS_KERNEL = "LmpipeImageMeans";
export const BROADCAST_PIXELS_KERNEL = "LmpipeBroadcastPixels";
