// The plumbing every host-side kernel of lmpipe uses: the loose types of TF.js's kernel calls, output
// allocation and input views that work on both the wasm heap and the cpu backend's typed arrays, and
// replaceKernel, which swaps a TF.js kernel for lmpipe's (patches/ and ops/ register through it).
// On wasm every allocation can grow (and detach) the heap, so a kernel allocates its outputs first and
// only then takes views of its inputs.
import * as tf from "@tensorflow/tfjs-core";

const { util } = tf;
export type TensorInfo = tf.TensorInfo;
export type Arr = Float32Array | Int32Array | Uint8Array;
// Backends are typed loosely on purpose: kernels reach into the wasm heap and the cpu data map.
// deno-lint-ignore no-explicit-any
export type AnyBackend = any;
// deno-lint-ignore no-explicit-any
export type Attrs = any;
export interface KernelArgs {
  inputs: Record<string, TensorInfo> | TensorInfo[];
  backend: AnyBackend;
  attrs?: Attrs;
}
export type KernelFn = (args: KernelArgs) => TensorInfo | TensorInfo[];

/** Whether `backend` is TF.js's wasm backend (its tensors live on the wasm heap). */
export function isWasm(backend: AnyBackend): boolean {
  return typeof backend.typedArrayFromHeap === "function";
}

/** A zeroed output tensor of `shape` on `backend` and a writable view of its values. */
export function alloc(
  backend: AnyBackend,
  shape: number[],
  dtype: tf.DataType,
): { info: TensorInfo; data: Arr } {
  if (isWasm(backend)) {
    const info = backend.makeOutput(shape, dtype);
    const data = backend.typedArrayFromHeap(info) as Arr;
    data.fill(0); // the wasm allocator does not zero memory
    return { info, data };
  }
  const data = util.getTypedArrayFromDType(dtype as "float32", util.sizeFromShape(shape)) as Arr;
  return { info: backend.makeTensorInfo(shape, dtype, data), data };
}

/** A view (wasm) or the stored array (cpu) of a tensor's values; valid until the next allocation. */
export function view(backend: AnyBackend, t: TensorInfo): Arr {
  if (isWasm(backend)) return backend.typedArrayFromHeap(t) as Arr;
  return backend.readSync(t.dataId) as Arr;
}

/** A view of a wasm tensor's values on the heap; valid until the next allocation. */
export function heapView(backend: AnyBackend, t: TensorInfo): Arr {
  return backend.typedArrayFromHeap(t) as Arr;
}

/** Replaces (or adds) the kernel `name` for `backendName`; `make` receives the kernel it replaces, if any. */
export function replaceKernel(name: string, backendName: string, make: (orig?: KernelFn) => KernelFn): void {
  const old = tf.getKernel(name, backendName);
  if (old) tf.unregisterKernel(name, backendName);
  const orig = old?.kernelFunc as unknown as KernelFn | undefined;
  tf.registerKernel({
    kernelName: name,
    backendName,
    kernelFunc: make(orig) as unknown as tf.KernelFunc,
    // wasm kernels bind their C++ functions in setupFunc when the backend starts: keep it for `orig`.
    setupFunc: old?.setupFunc,
    disposeFunc: old?.disposeFunc,
  });
}

/**
 * Registers each (name, kernel) of `kernels` for `backendName` unless a kernel of that name is registered
 * already: how lmpipe's own kernels (ops/<op>/wasm.ts, webgpu.ts) register when their module is imported.
 */
export function registerKernels(backendName: string, kernels: readonly (readonly [string, unknown])[]): void {
  for (const [kernelName, fn] of kernels) {
    if (!tf.getKernel(kernelName, backendName)) {
      tf.registerKernel({ kernelName, backendName, kernelFunc: fn as tf.KernelFunc });
    }
  }
}
