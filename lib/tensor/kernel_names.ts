// Names of lmpipe's own TF.js kernels that more than one backend registers (wasm_kernels.ts,
// webgpu_kernels.ts), kept apart so that neither backend module imports the other for a name.

/** e = exp(x - rowmax), row maxima, row sums: lib/tensor/softmax_rows.ts. */
export const SOFTMAX_ROWS_KERNEL = "LmpipeSoftmaxRows";
