// oneDNN's sgemm on a range of a product's rows, on one OpenMP thread, for the wasm kernels' row jobs
// (KIND.gemmRows, kernel_calls.ts): evaluation's linear layers run on lmpipe's own threads, each computing
// its share of the rows, so that a step's second core is one thread that stays awake between jobs instead of
// two (lmpipe's worker and OpenMP's) that each sleep while the other works. Opened in each thread that runs
// such a piece (the main thread and kernels_worker.ts), from the library the main thread loaded (dlopen of
// a loaded library returns it). Kept free of TF.js, like the worker.
import { CHAR_N, DNNL_SGEMM, GOMP_SYMBOLS } from "../../native/dnnl.ts";
import { heapPointers } from "../../native/heap_pointer.ts";
import type { GemmPiece } from "./kernel_calls.ts";

/**
 * Opens oneDNN's sgemm from `path` (libdnnl.so.2, loaded by the main thread; its OpenMP runtime is
 * libgomp) as gemmRows pieces on `memory`, for the calling thread. Throws where either library cannot be
 * opened.
 */
export function openRowGemm(path: string, memory: WebAssembly.Memory): GemmPiece {
  const sgemm = Deno.dlopen(path, { dnnl_sgemm: DNNL_SGEMM }).symbols.dnnl_sgemm;
  const gomp = Deno.dlopen("libgomp.so.1", GOMP_SYMBOLS).symbols;
  // a: KIND, A [M, K], B [K, N], C [M, N] (byte offsets), the bias (added by the caller), K, N, M
  return (a, r0, r1) => {
    const [A, B, C, K, N, M] = [a[1], a[2], a[3], a[5], a[6], a[7]];
    const at = heapPointers(memory.buffer, "lib/tensor/wasm/row_gemm.ts");
    // OpenMP's thread count belongs to the calling thread: one for this call, then back (the main
    // thread's budget serves oneDNN's other calls)
    const before = gomp.omp_get_max_threads();
    if (before !== 1) gomp.omp_set_num_threads(1);
    let status: number;
    try {
      const rows = BigInt(r1 - r0);
      status = sgemm(
        CHAR_N,
        CHAR_N,
        rows,
        BigInt(N),
        BigInt(K),
        1,
        at(A + 4 * r0 * K),
        BigInt(K),
        at(B),
        BigInt(N),
        0,
        at(C + 4 * r0 * N),
        BigInt(N),
      );
    } finally {
      if (before !== 1) gomp.omp_set_num_threads(before);
    }
    if (status !== 0) {
      throw new Error(
        `oneDNN sgemm, rows ${r0}..${r1} of [${M}x${K}] x [${K}x${N}] (lib/tensor/wasm/row_gemm.ts): status ${status}`,
      );
    }
  };
}

/** Bytes of the shared buffer that hands the library's path to the worker threads. */
export const LIBRARY_PATH_BYTES = 4096;

/** Writes `path` into `buf` (its length in the first int32, written last) for readLibraryPath. */
export function writeLibraryPath(buf: SharedArrayBuffer, path: string): void {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length > buf.byteLength - 4) throw new Error(`row_gemm.ts: library path too long: ${path}`);
  new Uint8Array(buf, 4).set(bytes);
  Atomics.store(new Int32Array(buf, 0, 1), 0, bytes.length);
}

/** The path writeLibraryPath wrote into `buf`, "" before it did. */
export function readLibraryPath(buf: SharedArrayBuffer): string {
  const n = Atomics.load(new Int32Array(buf, 0, 1), 0);
  return n > 0 ? new TextDecoder().decode(new Uint8Array(buf, 4, n).slice()) : "";
}
