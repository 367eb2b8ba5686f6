// Evaluation's loss statistics (softmaxStatsAtTargets in mod.ts) on oneDNN (lib/native/dnnl.ts): its
// softmax_v2 log-softmax, AVX-512 on the OpenMP threads, ran 1.05-1.4x as fast as lmpipe's wasm kernel on
// one and two threads over the loss's [512, 50304] chunks (bench/RESULTS.md). It works in place on the wasm heap
// (out of place it was slower than the wasm kernel: a second [rows, cols] buffer written), so the logits
// become log-probabilities; the loss reads the target's one. A primitive per shape, cached; its memory is
// re-pointed at the logits on every call (the heap may have grown and moved).
import { currentDnnl, DNNL, type Dnnl } from "../../../native/dnnl.ts";
import {
  createMemory,
  createPrimitive,
  memoryDesc,
  pointMemories,
  primitiveDesc,
  runSteps,
  type Step,
  step,
} from "../../../native/dnnl_primitives.ts";

/**
 * Room for dnnl_softmax_v2_desc_t: 2,800 bytes in oneDNN 2.6 (kind, prop kind, four memory descriptors,
 * axis, algorithm); oneDNN writes within that.
 */
const SOFTMAX_DESC_BYTES = 4096;

/** One shape's primitive, in place on one memory whose data pointer is set per call. */
interface Plan {
  step: Step;
  mem: Deno.PointerValue;
}

const plans = new Map<string, Plan>();

function planFor(dnnl: Dnnl, rows: number, cols: number): Plan {
  const key = `${rows}x${cols}`;
  const cached = plans.get(key);
  if (cached) return cached;
  const md = memoryDesc(dnnl, [rows, cols], DNNL.tagAb);
  const desc = new Uint8Array(SOFTMAX_DESC_BYTES);
  const init = dnnl.sym.dnnl_softmax_v2_forward_desc_init!;
  dnnl.check(init(desc, DNNL.forwardInference, DNNL.softmaxLog, md, md, 1), "softmax_v2_forward_desc_init");
  const pd = primitiveDesc(dnnl, desc, null, "softmax primitive_desc_create");
  let prim: Deno.PointerValue;
  try {
    prim = createPrimitive(dnnl, pd, "softmax primitive_create");
  } finally {
    dnnl.sym.dnnl_primitive_desc_destroy(pd);
  }
  // no buffer yet (DNNL_MEMORY_NONE): each call points it at the logits
  const mem = createMemory(dnnl, md, null);
  // source and destination are the same memory: in place
  const plan = { step: step(prim, [[DNNL.argSrc, mem], [DNNL.argDst, mem]]), mem };
  plans.set(key, plan);
  return plan;
}

/**
 * Overwrites the float32 matrix [rows, cols] at byte offset `offset` of the wasm heap `heap` with its
 * row-wise log-softmax, x - logsumexp(row), on oneDNN. Throws if oneDNN is not loaded or refuses.
 */
export function dnnlLogSoftmaxInPlace(
  heap: ArrayBufferLike,
  offset: number,
  rows: number,
  cols: number,
): void {
  const dnnl = currentDnnl();
  if (!dnnl) throw new Error("ops/softmax_rows/dnnl.ts: oneDNN is not loaded");
  const plan = planFor(dnnl, rows, cols);
  pointMemories(dnnl, heap, "ops/softmax_rows/dnnl.ts", [[plan.mem, offset]]);
  runSteps(dnnl, [plan.step], "softmax primitive_execute");
  dnnl.calls++;
}
