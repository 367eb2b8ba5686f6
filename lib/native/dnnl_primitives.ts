// The oneDNN C API steps every lmpipe primitive on the wasm heap goes through (lib/tensor/ops/conv2d/dnnl.ts,
// lib/tensor/ops/softmax_rows/dnnl.ts, lib/tensor/ops/matmul/dnnl.ts): memory descriptors and memories,
// primitive descriptors and primitives, a primitive's argument list, pointing memories at the wasm heap,
// and running a list of primitives on the library's stream. Each call is checked (Dnnl.check names the
// step that failed).
import { DNNL, type Dnnl, EXEC_ARG_BYTES, MEMORY_DESC_BYTES, outPointer } from "./dnnl.ts";
import { heapPointers } from "./heap_pointer.ts";

/**
 * A memory descriptor of `dims` (oneDNN's logical order: N C H W for data, O I H W for weights, rows and
 * columns for a matrix) in layout `tag`, holding `dataType` (float32 unless told).
 */
export function memoryDesc(dnnl: Dnnl, dims: number[], tag: number, dataType: number = DNNL.f32): Uint8Array {
  const md = new Uint8Array(MEMORY_DESC_BYTES);
  dnnl.check(
    dnnl.sym.dnnl_memory_desc_init_by_tag(
      md,
      dims.length,
      BigInt64Array.from(dims.map(BigInt)),
      dataType,
      tag,
    ),
    "memory_desc_init_by_tag",
  );
  return md;
}

/** A memory of descriptor `md` over `handle` (null: none yet, set per call with dnnl_memory_set_data_handle). */
export function createMemory(
  dnnl: Dnnl,
  md: Deno.PointerValue | Uint8Array,
  handle: Deno.PointerValue,
): Deno.PointerValue {
  const out = new BigUint64Array(1);
  const mdPtr = md instanceof Uint8Array ? Deno.UnsafePointer.of(md) : md;
  dnnl.check(dnnl.sym.dnnl_memory_create(out, mdPtr, dnnl.engine, handle), "memory_create");
  return outPointer(out);
}

/** The primitive descriptor of operation descriptor `desc` (`hint`: the forward one, for a backward pass). */
export function primitiveDesc(
  dnnl: Dnnl,
  desc: Uint8Array,
  hint: Deno.PointerValue,
  what: string,
): Deno.PointerValue {
  const out = new BigUint64Array(1);
  dnnl.check(dnnl.sym.dnnl_primitive_desc_create(out, desc, null, dnnl.engine, hint), what);
  return outPointer(out);
}

export function createPrimitive(
  dnnl: Dnnl,
  pd: Deno.PointerValue,
  what = "primitive_create",
): Deno.PointerValue {
  const out = new BigUint64Array(1);
  dnnl.check(dnnl.sym.dnnl_primitive_create(out, pd), what);
  return outPointer(out);
}

/** A primitive with its argument list (memories fixed; their data pointers change per call). */
export interface Step {
  prim: Deno.PointerValue;
  args: Uint8Array;
  n: number;
}

/** `prim` with its (argument kind, memory) pairs as oneDNN's dnnl_exec_arg_t array. */
export function step(prim: Deno.PointerValue, args: [number, Deno.PointerValue][]): Step {
  const buf = new Uint8Array(EXEC_ARG_BYTES * args.length);
  const v = new DataView(buf.buffer);
  args.forEach(([arg, mem], i) => {
    v.setInt32(i * EXEC_ARG_BYTES, arg, true);
    v.setBigUint64(i * EXEC_ARG_BYTES + 8, BigInt(Deno.UnsafePointer.value(mem)), true);
  });
  return { prim, args: buf, n: args.length };
}

/**
 * Points each memory at its byte offset into the wasm heap `heap`, as it is now (the heap can grow and
 * move between calls, so every call re-points them). `who` names the caller in a pointer error.
 */
export function pointMemories(
  dnnl: Dnnl,
  heap: ArrayBufferLike,
  who: string,
  memories: [Deno.PointerValue, number][],
): void {
  const at = heapPointers(heap, who);
  for (const [mem, offset] of memories) {
    dnnl.check(dnnl.sym.dnnl_memory_set_data_handle(mem, at(offset)), "memory_set_data_handle");
  }
}

/** Runs `steps` in order on the library's stream and waits for them. */
export function runSteps(dnnl: Dnnl, steps: Step[], what = "primitive_execute"): void {
  for (const st of steps) {
    dnnl.check(dnnl.sym.dnnl_primitive_execute(st.prim, dnnl.stream, st.n, st.args), what);
  }
  dnnl.check(dnnl.sym.dnnl_stream_wait(dnnl.stream), "stream_wait");
}
