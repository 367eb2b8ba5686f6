// Evaluation's loss statistics (softmaxStatsAtTargets in mod.ts) on oneDNN (lib/native/dnnl.ts): its
// softmax_v2 log-softmax, AVX-512 on the OpenMP threads, ran 1.05-1.4x as fast as lmpipe's wasm kernel on
// one and two threads over the loss's [512, 50304] chunks (bench/RESULTS.md). It works in place on the wasm heap
// (out of place it was slower than the wasm kernel: a second [rows, cols] buffer written), so the logits
// become log-probabilities; the loss reads the target's one. A primitive per shape, cached; its memory is
// re-pointed at the logits on every call (the heap may have grown and moved).
import {
  currentDnnl,
  DNNL,
  type Dnnl,
  EXEC_ARG_BYTES,
  MEMORY_DESC_BYTES,
  outPointer,
} from "../../../native/dnnl.ts";
import { heapPointers } from "../../../native/heap_pointer.ts";

/**
 * Room for dnnl_softmax_v2_desc_t: 2,800 bytes in oneDNN 2.6 (kind, prop kind, four memory descriptors,
 * axis, algorithm); oneDNN writes within that.
 */
const SOFTMAX_DESC_BYTES = 4096;

interface Plan {
  prim: Deno.PointerValue;
  mem: Deno.PointerValue;
  args: Uint8Array;
}

const plans = new Map<string, Plan>();

function planFor(dnnl: Dnnl, rows: number, cols: number): Plan {
  const key = `${rows}x${cols}`;
  const cached = plans.get(key);
  if (cached) return cached;
  const out = new BigUint64Array(1);
  const md = new Uint8Array(MEMORY_DESC_BYTES);
  const dims = new BigInt64Array([BigInt(rows), BigInt(cols)]);
  dnnl.check(
    dnnl.sym.dnnl_memory_desc_init_by_tag(md, 2, dims, DNNL.f32, DNNL.tagAb),
    "memory_desc_init_by_tag",
  );
  const desc = new Uint8Array(SOFTMAX_DESC_BYTES);
  const init = dnnl.sym.dnnl_softmax_v2_forward_desc_init!;
  dnnl.check(init(desc, DNNL.forwardInference, DNNL.softmaxLog, md, md, 1), "softmax_v2_forward_desc_init");
  dnnl.check(
    dnnl.sym.dnnl_primitive_desc_create(out, desc, null, dnnl.engine, null),
    "softmax primitive_desc_create",
  );
  const pd = outPointer(out);
  try {
    dnnl.check(dnnl.sym.dnnl_primitive_create(out, pd), "softmax primitive_create");
  } finally {
    dnnl.sym.dnnl_primitive_desc_destroy(pd);
  }
  const prim = outPointer(out);
  // no buffer yet (DNNL_MEMORY_NONE): each call points it at the logits
  dnnl.check(dnnl.sym.dnnl_memory_create(out, Deno.UnsafePointer.of(md), dnnl.engine, null), "memory_create");
  const mem = outPointer(out);
  // source and destination are the same memory: in place
  const args = new Uint8Array(2 * EXEC_ARG_BYTES);
  const v = new DataView(args.buffer);
  [DNNL.argSrc, DNNL.argDst].forEach((arg, i) => {
    v.setInt32(i * EXEC_ARG_BYTES, arg, true);
    v.setBigUint64(i * EXEC_ARG_BYTES + 8, BigInt(Deno.UnsafePointer.value(mem)), true);
  });
  const plan = { prim, mem, args };
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
  const at = heapPointers(heap, "ops/softmax_rows/dnnl.ts");
  dnnl.check(dnnl.sym.dnnl_memory_set_data_handle(plan.mem, at(offset)), "memory_set_data_handle");
  dnnl.check(
    dnnl.sym.dnnl_primitive_execute(plan.prim, dnnl.stream, 2, plan.args),
    "softmax primitive_execute",
  );
  dnnl.check(dnnl.sym.dnnl_stream_wait(dnnl.stream), "stream_wait");
  dnnl.calls++;
}
