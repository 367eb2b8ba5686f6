// Native libraries (OpenBLAS, oneDNN) read and write tensors where the wasm backend keeps them: at byte
// offsets into its heap. This turns those offsets into pointers, from the heap buffer as it is now (it can
// be replaced when the heap grows, so a caller takes it afresh for each call).

/**
 * A function from byte offsets into `heap` to native pointers. `who` names the caller in the error
 * thrown where Deno gives no pointer to the buffer.
 */
export function heapPointers(heap: ArrayBufferLike, who: string): (offset: number) => Deno.PointerValue {
  const base = Deno.UnsafePointer.of(new Uint8Array(heap));
  if (base === null) throw new Error(`${who}: could not take a pointer to the wasm heap`);
  return (offset) => Deno.UnsafePointer.offset(base, offset);
}
