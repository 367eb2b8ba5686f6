// Peak memory of the current TF.js backend, for `train --batch-size auto` and the step log. TF.js only
// offers a snapshot (tf.memory()), so a hook on the engine's tensor registration raises a watermark at
// every allocation. The figure is the one that limits what fits on each backend:
// - webgpu: the bytes of GPU buffers TF.js holds (numBytesInGPUAllocated: in use plus freed buffers it
//   pools for reuse; WebGPU itself reports no total or free memory);
// - wasm: the bytes of heap the tensors hold, counted where the backend allocates and frees them
//   (patches/wasm.ts; TF.js's own count can take a shared buffer twice). The heap cannot pass 4 GiB and
//   also holds allocator slack and kernel scratch space, so wasmHeapBytes() is reported beside it;
// - cpu, tensorflow: the bytes of live tensors (tf.memory().numBytes).
// It also knows which errors mean "out of memory" on each backend, and WebGPU's out-of-memory error
// scope, since TF.js does not surface GPU allocation failures itself.
import { tf } from "./backend.ts";
import { wasmTensorHeapBytes } from "./patches/wasm.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

let watermark = 0;
let hooked = false;

function engine(): Any {
  return tf.engine() as Any;
}

function bufferManager(): Any | null {
  const e = engine();
  if (e.backendName !== "webgpu") return null;
  return e.backendInstance?.bufferManager ?? null;
}

/** The backend's current memory figure (see the top of this file). */
export function backendBytes(): number {
  const bm = bufferManager();
  if (bm) return bm.numBytesAllocated as number;
  if (engine().backendName === "wasm") return wasmTensorHeapBytes(engine().backendInstance);
  return engine().state.numBytes as number;
}

/** Bytes of live tensors as TF.js counts them (every backend). */
export function tensorBytes(): number {
  return engine().state.numBytes as number;
}

/** The size of the wasm heap (it only grows; at most 4 GiB), or null on other backends. */
export function wasmHeapBytes(): number | null {
  const e = engine();
  if (e.backendName !== "wasm") return null;
  const heap = e.backendInstance?.wasm?.HEAPU8;
  return heap ? heap.buffer.byteLength as number : null;
}

function installHook(): void {
  if (hooked) return;
  const e = engine();
  const track = e.trackTensor;
  e.trackTensor = function (this: Any, ...args: unknown[]) {
    const r = track.apply(this, args);
    const now = backendBytes();
    if (now > watermark) watermark = now;
    return r;
  };
  hooked = true;
}

/** Starts a new peak measurement from the current figure. */
export function resetPeak(): void {
  installHook();
  watermark = backendBytes();
}

/** The highest figure since resetPeak() (sampled at every tensor allocation and now). */
export function peakBytes(): number {
  return Math.max(watermark, backendBytes());
}

/**
 * webgpu: destroys the buffers TF.js keeps for reuse but no tensor uses, so that the next measurement
 * starts from the memory live tensors need (a trial at one batch size otherwise leaves buffers of its
 * sizes behind, counted in every later figure). A no-op on other backends.
 */
export function releasePooledBuffers(): void {
  const bm = bufferManager();
  if (!bm?.freeBuffers) return;
  for (const buffers of bm.freeBuffers.values() as Iterable<Any[]>) {
    for (const b of buffers) {
      bm.numBytesAllocated -= b.size;
      b.destroy();
    }
    buffers.length = 0; // keep the keys: releaseBuffer() ignores buffers while the map is empty
  }
  bm.numFreeBuffers = 0;
}

/** Whether `err` is an allocation failure (wasm heap full, JS array buffers, GPU buffers). */
export function isOutOfMemory(err: unknown): boolean {
  const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return /out of memory|Array buffer allocation failed|Invalid typed array length|memory access out of bounds|OutOfMemory|GPUOutOfMemoryError|allocation failed/i
    .test(msg);
}

/** Thrown when a WebGPU out-of-memory error scope caught a failed allocation. */
export class GpuOutOfMemory extends Error {
  constructor(detail: string) {
    super(`webgpu: out of memory (${detail})`);
    this.name = "GpuOutOfMemory";
  }
}

/**
 * Runs `f` inside a WebGPU out-of-memory error scope (on webgpu; elsewhere just runs it) and throws
 * GpuOutOfMemory when an allocation failed during it, even though TF.js carried on.
 */
export async function withGpuOomScope<T>(f: () => Promise<T>): Promise<T> {
  const e = engine();
  const device: GPUDevice | undefined = e.backendName === "webgpu" ? e.backendInstance?.device : undefined;
  if (!device || typeof device.pushErrorScope !== "function") return await f();
  device.pushErrorScope("out-of-memory");
  let result: T | undefined, failed = false, failure: unknown;
  try {
    result = await f();
  } catch (err) {
    failed = true, failure = err;
  }
  const oom = await device.popErrorScope().catch(() => null);
  if (oom) throw new GpuOutOfMemory(oom.message || "a buffer could not be allocated");
  if (failed) throw failure;
  return result as T;
}
