// Matrix-vector products on the wasm heap, for a cached decoding step (lib/models/gpt_decode.ts), where
// every product has one row and a TF.js matMul costs more in engine overhead than in arithmetic. Each
// takes byte offsets into the heap and runs lmpipe's SIMD kernels (kernels.wat gemv_rows / gemv_cols),
// or OpenBLAS's sgemv where the one kernel-choice rule (kernel_choice.ts, its gemv row) gives the product
// to BLAS; nothing is allocated or copied.
import { blasForGemv } from "../../kernel_choice.ts";
import { type KernelExports, KIND } from "../../wasm/kernel_calls.ts";
import { type AnyBackend, runRows, wasmKernelsOn } from "../../wasm/kernels.ts";

/** The heap a decoding step works on: the kernels, their memory and a float view of it. */
export class HeapView {
  readonly kernels: KernelExports;
  readonly memory: WebAssembly.Memory;
  #f32: Float32Array;

  constructor(readonly backend: AnyBackend) {
    const on = wasmKernelsOn(backend);
    this.kernels = on.kernels, this.memory = on.memory;
    this.#f32 = new Float32Array(on.memory.buffer);
  }

  /** The heap as floats (renewed when the memory has grown: index = byte offset / 4). */
  get f32(): Float32Array {
    const buffer = this.memory.buffer;
    if (this.#f32.buffer !== buffer || this.#f32.byteLength !== buffer.byteLength) {
      this.#f32 = new Float32Array(buffer);
    }
    return this.#f32;
  }
}

/**
 * y[N] = x[K] @ w[K, N] (+ b[N]): a linear layer of one row, w stored [in, out] (lib/nn.ts linear).
 * Offsets in bytes; `b` < 0 for no bias.
 */
export function linearRow(heap: HeapView, x: number, w: number, b: number, y: number, K: number, N: number) {
  const blas = blasForGemv(K * N);
  if (blas === null) {
    heap.kernels.gemv_cols(w, N, x, Math.max(b, 0), y, K, 0, N, b >= 0 ? 1 : 0);
    return;
  }
  blas.sgemm(heap.memory.buffer, false, false, 1, N, K, x, w, y);
  if (b >= 0) {
    const f = heap.f32, y0 = y >> 2, b0 = b >> 2;
    for (let i = 0; i < N; i++) f[y0 + i] += f[b0 + i];
  }
}

/**
 * y[R] = a[R, K] @ x[K]: the output head of one row (a the [vocab, C] embedding or lm_head, stored as
 * it is). Without BLAS the rows are shared out between the kernels' threads.
 */
export function headRow(heap: HeapView, a: number, x: number, y: number, R: number, K: number) {
  const blas = blasForGemv(R * K);
  if (blas !== null) blas.sgemm(heap.memory.buffer, false, true, 1, R, K, x, a, y);
  else runRows(heap.backend, [KIND.gemvRows, a, K, x, y, K], R, K);
}
