// Names of lmpipe's own TF.js kernels that more than one backend registers (wasm_kernels.ts,
// webgpu_kernels.ts), kept apart so that neither backend module imports the other for a name.

/** e = exp(x - rowmax), row maxima, row sums: lib/tensor/softmax_rows.ts. */
export const SOFTMAX_ROWS_KERNEL = "LmpipeSoftmaxRows";

/** LayerNorm forward (y, row means, row 1/std) and its gradient: lib/tensor/layer_norm.ts. */
export const LAYER_NORM_KERNEL = "LmpipeLayerNorm";
export const LAYER_NORM_GRAD_KERNEL = "LmpipeLayerNormGrad";
