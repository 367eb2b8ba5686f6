// Batched float32 matMuls on oneDNN's matmul primitive (lib/native/dnnl.ts) for the wasm backend's
// BatchMatMul (ops/matmul/wasm.ts). A true batch (attention's [B, H, T, T] x [B, H, T, D] products)
// otherwise runs one sgemm per slice: each slice under a few million multiply-adds, too small for two
// threads to share (the second thread's wake-up cost more than its half), so the batch ran on one thread
// whatever the budget. The primitive takes the whole batch in one call and shares the slices out over
// oneDNN's OpenMP threads. Transposed operands are strides of the memory descriptors (no copies), a batch
// of 1 on one side is broadcast, and the memories wrap the tensors' bytes on the wasm heap as the conv
// primitives do (ops/conv2d/dnnl.ts). A primitive is built on a shape's first call and cached, up to
// MAX_PLANS shapes; a shape oneDNN refuses, or one past the cap, takes the per-slice path on every call.
// Building on the second call instead (as until 2026-12-05) gave a shape's first call the per-slice sgemms'
// bits and its later calls the primitive's: a training step's gradients then depended on whether its shapes
// had been met before (the first step of a run or of a resume against the steps after it).
import * as tf from "@tensorflow/tfjs-core";
import { currentDnnl, DNNL, type Dnnl, MATMUL_DESC_BYTES, MEMORY_DESC_BYTES } from "../../../native/dnnl.ts";
import { registerKernels } from "../../host_kernel.ts";
import { offsetOf, runGemmRows } from "../../wasm/kernels.ts";
import {
  createMemory,
  createPrimitive,
  pointMemories,
  primitiveDesc,
  runSteps,
  type Step,
  step,
} from "../../../native/dnnl_primitives.ts";

type TensorInfo = tf.TensorInfo;
// deno-lint-ignore no-explicit-any
type AnyBackend = any;

/**
 * The operands of one batched product: C[i] = op(A[i or 0]) @ op(B[i or 0]) (+ bias [N] on every row
 * when `bias`), i < max(batchA, batchB).
 */
export interface BatchedMatMulShape {
  batchA: number;
  batchB: number;
  M: number;
  K: number;
  N: number;
  transposeA: boolean;
  transposeB: boolean;
  bias?: boolean;
}

interface Plan {
  step: Step;
  src: Deno.PointerValue;
  weights: Deno.PointerValue;
  dst: Deno.PointerValue;
  bias: Deno.PointerValue | null;
}

const plans = new Map<string, Plan | null>();

/** Matmul primitive calls so far (tests; kept apart from the conv primitives' count, Dnnl.calls). */
let matMulPrimitiveCalls = 0;

/** How many products the matmul primitive has run in this process (tests check which path ran). */
export function dnnlMatMulCalls(): number {
  return matMulPrimitiveCalls;
}

/**
 * Plans built at most. Building one costs 1-5 ms, 3-30x a call of the attention-sized products it runs, and
 * a shape that changes with every call (attention over a growing context: sampling without a cache) builds
 * and keeps one a call; past the cap, new shapes take the per-slice path. A training run's shapes are a few
 * dozen, so every call of them runs on the primitive.
 */
const MAX_PLANS = 256;

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
  const key = `${s.batchA},${s.batchB},${s.M},${s.K},${s.N},${s.transposeA},${s.transposeB},${
    s.bias === true
  }`;
  const known = plans.get(key);
  if (known !== undefined) return known;
  if (plans.size >= MAX_PLANS) return null;
  let plan: Plan | null = null;
  try {
    const batch = Math.max(s.batchA, s.batchB);
    const src = matrixDesc(dnnl, s.batchA, s.M, s.K, s.transposeA);
    const weights = matrixDesc(dnnl, s.batchB, s.K, s.N, s.transposeB);
    const dst = matrixDesc(dnnl, batch, s.M, s.N, false);
    // a bias [N] is the same row for every batch and row: [1, 1, N]
    const bias = s.bias ? stridedDesc(dnnl, [1, 1, s.N], [s.N, s.N, 1]) : null;
    const desc = new Uint8Array(MATMUL_DESC_BYTES);
    dnnl.check(dnnl.sym.dnnl_matmul_desc_init!(desc, src, weights, bias, dst), "matmul_desc_init");
    const pd = primitiveDesc(dnnl, desc, null, "matmul primitive_desc_create");
    const prim = createPrimitive(dnnl, pd, "matmul primitive_create");
    const mem = (md: Uint8Array) => createMemory(dnnl, md, null);
    const [a, b, c] = [mem(src), mem(weights), mem(dst)];
    const d = bias ? mem(bias) : null;
    const args: [number, Deno.PointerValue][] = [[DNNL.argSrc, a], [DNNL.argWeights, b], [DNNL.argDst, c]];
    if (d) args.push([DNNL.argBias, d]);
    plan = { step: step(prim, args), src: a, weights: b, dst: c, bias: d };
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
 * The batched product of `a` and `b` ([batchA or batchB slices of] op(a) [M, K], op(b) [K, N]), plus
 * `bias` [N] on every row when given (s.bias set), into a new output of `outShape` ([batch, M, N] in
 * some shape) on the wasm heap, or null where oneDNN is not loaded or refuses the shape.
 */
export function dnnlBatchedMatMul(
  backend: AnyBackend,
  a: TensorInfo,
  b: TensorInfo,
  s: BatchedMatMulShape,
  outShape: number[],
  bias?: TensorInfo,
): TensorInfo | null {
  const dnnl = currentDnnl();
  if (!dnnl || !dnnlMatMulAvailable() || (s.bias === true) !== (bias !== undefined)) return null;
  const plan = planFor(dnnl, s);
  if (!plan) return null;
  const out = backend.makeOutput(outShape, "float32") as TensorInfo;
  // Offsets are read after the allocation above: it can grow (and replace) the heap buffer.
  const memories: [Deno.PointerValue, TensorInfo][] = [[plan.src, a], [plan.weights, b], [plan.dst, out]];
  if (plan.bias && bias) memories.push([plan.bias, bias]);
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset as number;
  pointMemories(
    dnnl,
    backend.wasm.HEAPU8.buffer as ArrayBufferLike,
    "ops/matmul/dnnl.ts",
    memories.map(([mem, t]) => [mem, offset(t)]),
  );
  runSteps(dnnl, [plan.step], "matmul primitive_execute");
  matMulPrimitiveCalls++;
  return out;
}

/** x [M, K] @ w [K, N] + b [N] in one primitive call: evaluation's linear layers (ops/matmul/bias.ts). */
export const MATMUL_BIAS_KERNEL = "LmpipeMatMulBias";

/**
 * The same product as a row job of the wasm kernels' threads, each taking its share of the rows on a
 * one-thread sgemm (lib/tensor/wasm/row_gemm.ts), the bias added to each piece as it is finished.
 */
export const MATMUL_BIAS_ROWS_KERNEL = "LmpipeMatMulBiasRows";

interface MatMulBiasInputs {
  inputs: { x: TensorInfo; w: TensorInfo; b: TensorInfo };
  backend: AnyBackend;
}

/** [M, K, N] after checking that the inputs are float32 x [M, K], w [K, N], b [N]. */
function matMulBiasSizes(kernel: string, { x, w, b }: MatMulBiasInputs["inputs"]): [number, number, number] {
  const [M, K] = x.shape, N = w.shape[1];
  if (
    x.shape.length !== 2 || w.shape.length !== 2 || w.shape[0] !== K || b.shape.length !== 1 ||
    b.shape[0] !== N || [x, w, b].some((t) => t.dtype !== "float32")
  ) {
    throw new Error(
      `${kernel} (lib/tensor/ops/matmul/dnnl.ts): expected float32 x [M, K], w [K, N], b [N]; got ` +
        `x [${x.shape}] ${x.dtype}, w [${w.shape}] ${w.dtype}, b [${b.shape}] ${b.dtype}`,
    );
  }
  return [M, K, N];
}

function matMulBiasKernel({ inputs, backend }: MatMulBiasInputs): TensorInfo {
  const { x, w, b } = inputs;
  const [M, K, N] = matMulBiasSizes(MATMUL_BIAS_KERNEL, inputs);
  const shape = { batchA: 1, batchB: 1, M, K, N, transposeA: false, transposeB: false, bias: true };
  const y = dnnlBatchedMatMul(backend, x, w, shape, [M, N], b);
  if (y) return y;
  // a shape oneDNN refused: the product and the add as the op chain runs them
  const product = tf.getKernel(tf.BatchMatMul, "wasm")!.kernelFunc({
    inputs: { a: x, b: w },
    backend,
    attrs: { transposeA: false, transposeB: false },
  }) as TensorInfo;
  const sum = tf.getKernel(tf.Add, "wasm")!.kernelFunc({ inputs: { a: product, b }, backend }) as TensorInfo;
  backend.disposeData(product.dataId);
  return sum;
}

/** Products run as row jobs so far. */
let rowJobCalls = 0;

/** How many products ran as row jobs of the wasm threads in this process (tests check which path ran). */
export function matMulRowJobCalls(): number {
  return rowJobCalls;
}

function matMulBiasRowsKernel({ inputs, backend }: MatMulBiasInputs): TensorInfo {
  const { x, w, b } = inputs;
  const [M, K, N] = matMulBiasSizes(MATMUL_BIAS_ROWS_KERNEL, inputs);
  const dnnl = currentDnnl();
  if (!dnnl) {
    throw new Error(`${MATMUL_BIAS_ROWS_KERNEL} (lib/tensor/ops/matmul/dnnl.ts): oneDNN is not loaded`);
  }
  const y = backend.makeOutput([M, N], "float32") as TensorInfo;
  // offsets after the allocation above (the heap may grow; offsets stay)
  const at = (t: TensorInfo) => offsetOf(backend, t);
  runGemmRows(backend, dnnl.path, { A: at(x), B: at(w), C: at(y), bias: at(b), M, K, N });
  rowJobCalls++;
  return y;
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[MATMUL_BIAS_KERNEL, matMulBiasKernel], [
  MATMUL_BIAS_ROWS_KERNEL,
  matMulBiasRowsKernel,
]]);
