// Multithreaded wasm under Deno. TF.js sees Node's `process` in Deno and never uses its threaded wasm
// build; forcing it is blocked twice more: Emscripten's Node-style pthread workers need a worker *file*
// (TF.js hands them a blob: URL), and the C++ side caps XNNPACK's pool at logical cores / 2 (1 thread
// on a 2-core machine). This module builds the threaded module itself (worker file:
// wasm_pthread_worker.cjs; cores reported as 2 x the wanted threads while it starts) and registers it
// as the 'wasm' backend, falling back to TF.js's own single-threaded factory if anything goes wrong.
import * as tf from "@tensorflow/tfjs-core";
import * as wasmBackend from "@tensorflow/tfjs-backend-wasm";
import { createRequire } from "node:module";
import { warn } from "../../log.ts";

const require = createRequire(import.meta.url);
const wasmOut = new URL("../../../node_modules/@tensorflow/tfjs-backend-wasm/wasm-out/", import.meta.url);
const workerShim = new URL("./pthread_worker.cjs", import.meta.url);
const START_TIMEOUT_MS = 60_000;

// deno-lint-ignore no-explicit-any
type EmscriptenModule = any;

async function startThreaded(threads: number, poolThreads: number): Promise<tf.KernelBackend> {
  const dir = Deno.realPathSync(wasmOut);
  const file = (name: string) => `${dir}/${name}`;
  Deno.env.set("LMPIPE_TFJS_WASM_WORKER", file("tfjs-backend-wasm-threaded-simd.worker.js"));
  const factory = require(file("tfjs-backend-wasm-threaded-simd.js"));
  const os = require("node:os");
  const cpus = os.cpus;
  os.cpus = () => Array.from({ length: 2 * threads }, () => cpus()[0] ?? {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const ready: Promise<EmscriptenModule> = factory({
      locateFile: (path: string, prefix: string) => {
        if (path.endsWith(".worker.js")) return Deno.realPathSync(workerShim);
        if (path.endsWith(".wasm")) return file("tfjs-backend-wasm-threaded-simd.wasm");
        return prefix + path;
      },
      mainScriptUrlOrBlob: file("tfjs-backend-wasm-threaded-simd.js"),
    });
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`threads did not start in ${START_TIMEOUT_MS / 1000}s`)),
        START_TIMEOUT_MS,
      );
    });
    const module = await Promise.race([ready, timeout]);
    // The same JS <-> C++ bridge that TF.js's own init() attaches.
    module.tfjs = {
      init: module.cwrap("init", null, []),
      initWithThreadsCount: module.cwrap("init_with_threads_count", null, ["number"]),
      getThreadsCount: module.cwrap("get_threads_count", "number", []),
      registerTensor: module.cwrap("register_tensor", null, ["number", "number", "number"]),
      disposeData: module.cwrap("dispose_data", null, ["number"]),
      dispose: module.cwrap("dispose", null, []),
    };
    // XNNPACK's pool gets `poolThreads` (TF.js's own kernels: elementwise ops, and matMuls and convs where no
    // native library takes them); the backend still reports `threads`, which lmpipe's kernels run on.
    const initWith = module.tfjs.initWithThreadsCount;
    module.tfjs.initWithThreadsCount = () => initWith(poolThreads);
    module.tfjs.getThreadsCount = () => threads;
    wasmBackend.setThreadsCount(threads);
    const backend = new wasmBackend.BackendWasm(module); // its constructor starts the thread pool
    // Emscripten refs each worker running a pthread, and XNNPACK's pool threads never end: without
    // this, the process would never exit when its work is done.
    for (const w of module.PThread?.runningWorkers ?? []) w.unref?.();
    return backend;
  } finally {
    clearTimeout(timer);
    os.cpus = cpus;
  }
}

/**
 * Replaces the 'wasm' backend factory with one that starts the threaded build with `threads` threads, of
 * which XNNPACK's pool uses `poolThreads` (call before the wasm backend first starts). Returns false when
 * this runtime cannot run it.
 */
export function enableWasmThreads(threads: number, poolThreads = threads): boolean {
  if (threads <= 1 || typeof SharedArrayBuffer === "undefined") return false;
  try {
    Deno.statSync(wasmOut);
  } catch {
    return false;
  }
  const singleThreaded = tf.findBackendFactory("wasm");
  if (!singleThreaded) return false;
  tf.removeBackend("wasm");
  tf.registerBackend("wasm", async () => {
    try {
      return await startThreaded(threads, poolThreads);
    } catch (err) {
      warn(
        `wasm: ${threads} threads unavailable (${err instanceof Error ? err.message : err}); using 1 thread`,
      );
      return await singleThreaded();
    }
  }, 2);
  return true;
}
