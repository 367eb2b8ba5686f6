// Batched float32 matMuls on oneDNN's matmul primitive (lib/native/dnnl.ts) for the wasm backend's
// BatchMatMul (ops/matmul/wasm.ts). A true batch (attention's [B, H, T, T] x [B, H, T, D] products)
// otherwise runs one sgemm per slice: each slice under a few million multiply-adds, too small for two
// threads to share (the second thread's wake-up cost more than its half), so the batch ran on one thread
// whatever the budget. The primitive takes the whole batch in one call and shares the slices out over
// oneDNN's OpenMP threads. Transposed operands are strides of the memory descriptors (no copies), a batch
// of 1 on one side is broadcast, and the memories wrap the tensors' bytes on the wasm heap as the conv
// primitives do (ops/conv2d/dnnl.ts). Primitives are built once per shape and cached; a shape oneDNN
// refuses is remembered and left to the per-slice path.
import * as tf from "@tensorflow/tfjs-core";
import { currentDnnl, DNNL, type Dnnl, MATMUL_DESC_BYTES, MEMORY_DESC_BYTES } from "../../../native/dnnl.ts";
import { heapPointers } from "../../../native/heap_pointer.ts";
import {
  createMemory,
  createPrimitive,
  primitiveDesc,
  runSteps,
  type Step,
  step,
} from "../../../native/dnnl_primitives.ts";

type TensorInfo = tf.TensorInfo;
// deno-lint-ignore no-explicit-any
type AnyBackend = any;

/** The operands of one batched product: C[i] = op(A[i or 0]) @ op(B[i or 0]), i < max(batchA, batchB). */
export interface BatchedMatMulShape {
  batchA: number;
  batchB: number;
  M: number;
  K: number;
  N: number;
  transposeA: boolean;
  transposeB: boolean;
}

interface Plan {
  step: Step;
  src: Deno.PointerValue;
  weights: Deno.PointerValue;
  dst: Deno.PointerValue;
}

const plans = new Map<string, Plan | null>();

/** A memory descriptor of float32 `dims` with element strides `strides`. */
function stridedDesc(dnnl: Dnnl, dims: number[], strides: number[]): Uint8Array {
  const md = new Uint8Array(MEMORY_DESC_BYTES);
  const fn = dnnl.sym.dnnl_memory_desc_init_by_strides!;
  dnnl.check(
    fn(
      md,
      dims.length,
      BigInt64Array.from(dims.map(BigInt)),
      DNNL.f32,
      BigInt64Array.from(strides.map(BigInt)),
    ),
    "memory_desc_init_by_strides",
  );
  return md;
}

/**
 * A [batch, rows, cols] row-major matrix's descriptor, read transposed when `transposed` (it is then
 * stored [batch, cols, rows]).
 */
function matrixDesc(dnnl: Dnnl, batch: number, rows: number, cols: number, transposed: boolean): Uint8Array {
  const strides = transposed ? [rows * cols, 1, rows] : [rows * cols, cols, 1];
  return stridedDesc(dnnl, [batch, rows, cols], strides);
}

function planFor(dnnl: Dnnl, s: BatchedMatMulShape): Plan | null {
  const key = `${s.batchA},${s.batchB},${s.M},${s.K},${s.N},${s.transposeA},${s.transposeB}`;
  if (plans.has(key)) return plans.get(key)!;
  let plan: Plan | null = null;
  try {
    const batch = Math.max(s.batchA, s.batchB);
    const src = matrixDesc(dnnl, s.batchA, s.M, s.K, s.transposeA);
    const weights = matrixDesc(dnnl, s.batchB, s.K, s.N, s.transposeB);
    const dst = matrixDesc(dnnl, batch, s.M, s.N, false);
    const desc = new Uint8Array(MATMUL_DESC_BYTES);
    dnnl.check(dnnl.sym.dnnl_matmul_desc_init!(desc, src, weights, null, dst), "matmul_desc_init");
    const pd = primitiveDesc(dnnl, desc, null, "matmul primitive_desc_create");
    const prim = createPrimitive(dnnl, pd, "matmul primitive_create");
    const mem = (md: Uint8Array) => createMemory(dnnl, md, null);
    const [a, b, c] = [mem(src), mem(weights), mem(dst)];
    plan = {
      step: step(prim, [[DNNL.argSrc, a], [DNNL.argWeights, b], [DNNL.argDst, c]]),
      src: a,
      weights: b,
      dst: c,
    };
  } catch {
    plan = null;
  }
  plans.set(key, plan);
  return plan;
}

/** Whether the loaded oneDNN has the matmul primitive's calls. */
export function dnnlMatMulAvailable(): boolean {
  const dnnl = currentDnnl();
  return dnnl !== null && dnnl.sym.dnnl_matmul_desc_init !== undefined &&
    dnnl.sym.dnnl_memory_desc_init_by_strides !== undefined;
}

/**
 * The batched product of `a` and `b` ([batchA or batchB slices of] op(a) [M, K], op(b) [K, N]) into a
 * new [batch, M, N] output on the wasm heap (the caller reshapes it), or null where oneDNN is not
 * loaded or refuses the shape.
 */
export function dnnlBatchedMatMul(
  backend: AnyBackend,
  a: TensorInfo,
  b: TensorInfo,
  s: BatchedMatMulShape,
  outShape: number[],
): TensorInfo | null {
  const dnnl = currentDnnl();
  if (!dnnl || !dnnlMatMulAvailable()) return null;
  const plan = planFor(dnnl, s);
  if (!plan) return null;
  const out = backend.makeOutput(outShape, "float32") as TensorInfo;
  // Offsets are read after the allocation above: it can grow (and replace) the heap buffer.
  const at = heapPointers(backend.wasm.HEAPU8.buffer as ArrayBufferLike, "ops/matmul/dnnl.ts");
  const off = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset as number;
  for (const [mem, t] of [[plan.src, a], [plan.weights, b], [plan.dst, out]] as const) {
    dnnl.check(dnnl.sym.dnnl_memory_set_data_handle(mem, at(off(t))), "memory_set_data_handle");
  }
  runSteps(dnnl, [plan.step], "matmul primitive_execute");
  dnnl.calls++;
  return out;
}
