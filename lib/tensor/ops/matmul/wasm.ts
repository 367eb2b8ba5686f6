// lmpipe's matMul on the wasm backend, registered as TF.js's BatchMatMul kernel (patches/wasm.ts).
// The wasm backend hands a matMul to XNNPACK only when it is 2-D (batch 1) and not transposed; every
// other case runs a naive loop at 0.5-2 GFLOP/s against ~20 for XNNPACK (bench/ops.ts). This kernel
// turns every float32 matMul into fast ones: big ones go to a native sgemm straight on the wasm heap,
// oneDNN's (lib/native/dnnl.ts) or a CBLAS library's (lib/native/blas.ts), as kernel_choice.ts's
// sgemmForMatMul says, and a true batch goes whole to oneDNN's matmul primitive (ops/matmul/dnnl.ts) where
// kernel_choice.ts's batchMatMul row says so; otherwise a batched input against a 2-D weight becomes one
// 2-D XNNPACK matMul over all rows, transposed operands are transposed explicitly first (O(size), small
// next to the matMul), and a true batch runs as one XNNPACK matMul per batch slice.
import * as tf from "@tensorflow/tfjs-core";
import type { Blas } from "../../../native/blas.ts";
import { type AnyBackend, heapView, type KernelFn, type TensorInfo } from "../../host_kernel.ts";
import { kernelFor, sgemmForMatMul } from "../../kernel_choice.ts";
import { dnnlBatchedMatMul } from "./dnnl.ts";

const { util, backend_util } = tf;

/**
 * a @ b (b transposed when `transB`), 2-D float32, through the wasm BatchMatMul kernel registered now
 * (wasmFastMatMul below), for the conv gradient kernels (ops/conv2d/wasm.ts).
 */
export function wasmMatMul2D(backend: AnyBackend, a: TensorInfo, b: TensorInfo, transB: boolean): TensorInfo {
  const kernel = tf.getKernel(tf.BatchMatMul, "wasm")!.kernelFunc as unknown as KernelFn;
  return kernel({
    inputs: { a, b },
    backend,
    attrs: { transposeA: false, transposeB: transB },
  }) as TensorInfo;
}

/** t with its last two axes swapped, by the wasm backend's Transpose kernel. */
function transposeLast2(transpose: KernelFn, backend: AnyBackend, t: TensorInfo): TensorInfo {
  const r = t.shape.length, perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return transpose({ inputs: { x: t }, backend, attrs: { perm } }) as TensorInfo;
}

// With a CBLAS library, sgemm takes transposes as flags and batch slices as offsets: no copies, ~3x
// XNNPACK's rate on the output head (bench/RESULTS.md).
function blasMatMul(
  blas: Pick<Blas, "sgemm">,
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

/** The BatchMatMul kernel for wasm around TF.js's own (`orig`) and its Transpose kernel. */
export function wasmFastMatMul(orig: KernelFn, transpose: KernelFn): KernelFn {
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
    const KB = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
    // TF.js's matMul op leaves this check to the kernel; sgemm would read past b's values.
    if (K !== KB) {
      throw new Error(
        `matMul: the inner dimensions of a [${a.shape}] and b [${b.shape}] differ (${K} and ${KB}, ` +
          `transposeA ${transposeA}, transposeB ${transposeB}): fix the operands' shapes or transposes`,
      );
    }
    const outBatch = backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
    const outShape = [...outBatch, M, N];
    if (batchA !== batchB && batchA !== 1 && batchB !== 1) return orig(args); // partial broadcast: rare
    const folded = batchB === 1 && (batchA === 1 || !transposeA);
    if (!folded && kernelFor("batchMatMul", "wasm", M * K * N) === "dnnl-matmul") {
      const shape = { batchA, batchB, M, K, N, transposeA, transposeB };
      const out = dnnlBatchedMatMul(backend, a, b, shape, outShape);
      if (out) return out; // else a shape oneDNN refused: one product per slice below
    }
    const blas = sgemmForMatMul(M * K * N);
    if (blas) {
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
      const tt = transposeLast2(transpose, backend, t);
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
