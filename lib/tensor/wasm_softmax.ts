// The wasm backend's kernel for lib/tensor/softmax_rows.ts: the SIMD module of wasm_softmax.wat run
// straight on TF.js's heap, its rows shared between the main thread and (with the threaded wasm build)
// worker threads, one per extra wasm thread. TF.js's own Max/Sub/Exp/Sum kernels run on one thread
// whatever the thread count; this one uses them all.
import * as tf from "@tensorflow/tfjs-core";
import { Worker } from "node:worker_threads";
import { PLAIN_MEMORY_WASM, SHARED_MEMORY_WASM } from "./wasm_softmax_bytes.ts";
import { newControl, startJob, takeRows, waitForRows } from "./row_jobs.ts";

export const SOFTMAX_ROWS_KERNEL = "LmpipeSoftmaxRows";

/** Below this many values a job runs on the calling thread alone (waking workers costs more). */
const PARALLEL_MIN_VALUES = 1 << 16;
/** Values per piece of rows taken at a time by one thread. */
const PIECE_VALUES = 1 << 16;
/** A job fails if no row finishes for this long (a worker died holding rows). */
const STALL_MS = 60_000;
/** How long backend start waits for the workers (they only join jobs once started). */
const START_TIMEOUT_MS = 10_000;

type SoftmaxRowsFn = (
  x: number,
  e: number,
  m: number,
  s: number,
  r0: number,
  r1: number,
  cols: number,
) => void;

function decode(b64: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** The kernel bound to one wasm memory, with its worker threads. */
class Runner {
  readonly memory: WebAssembly.Memory;
  readonly #fn: SoftmaxRowsFn;
  readonly #ctl = newControl();
  readonly #workers: Worker[] = [];
  #job = 0;
  /** Rows computed so far, and how many of them by worker threads. */
  readonly stats = { rows: 0, rowsOnWorkers: 0 };
  /** Settles when every worker has started or failed to (jobs never wait for a worker anyway). */
  readonly started: Promise<void>;

  constructor(memory: WebAssembly.Memory, threads: number) {
    this.memory = memory;
    const shared = memory.buffer instanceof SharedArrayBuffer;
    const module = new WebAssembly.Module(decode(shared ? SHARED_MEMORY_WASM : PLAIN_MEMORY_WASM));
    this.#fn = new WebAssembly.Instance(module, { env: { memory } }).exports.softmax_rows as SoftmaxRowsFn;
    const starts: Promise<void>[] = [];
    for (let i = 1; shared && i < threads; i++) {
      try {
        const w = new Worker(new URL("./wasm_softmax_worker.ts", import.meta.url), {
          workerData: { module, memory, ctl: this.#ctl },
        });
        w.unref();
        // A worker that fails to start only leaves its share to the others.
        starts.push(
          new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, START_TIMEOUT_MS);
            const done = () => (clearTimeout(timer), resolve());
            w.once("message", done);
            w.once("error", done);
          }),
        );
        this.#workers.push(w);
      } catch {
        break;
      }
    }
    this.started = Promise.all(starts).then(() => {});
  }

  /** Rows [0, rows) of x [rows, cols] into e, m, s (byte offsets into the memory). */
  run(x: number, e: number, m: number, s: number, rows: number, cols: number): void {
    this.stats.rows += rows;
    if (this.#workers.length === 0 || rows < 2 || rows * cols < PARALLEL_MIN_VALUES) {
      this.#fn(x, e, m, s, 0, rows, cols);
      return;
    }
    const job = this.#job = (this.#job + 1) >>> 0;
    const chunk = Math.max(1, Math.floor(PIECE_VALUES / Math.max(1, cols)));
    let mine = 0;
    startJob(this.#ctl, job, rows, chunk, [x, e, m, s, cols]);
    takeRows(this.#ctl, job, (r0, r1) => {
      this.#fn(x, e, m, s, r0, r1, cols);
      mine += r1 - r0;
    });
    waitForRows(this.#ctl, rows, STALL_MS);
    this.stats.rowsOnWorkers += rows - mine;
  }

  get threads(): number {
    return 1 + this.#workers.length;
  }
}

let runner: Runner | null = null;

// deno-lint-ignore no-explicit-any
type AnyBackend = any;
interface TensorInfo {
  dataId: object;
  shape: number[];
  dtype: string;
}

/** The wasm backend's memory: exported by the threaded build's glue, by the plain build's instance. */
function memoryOf(backend: AnyBackend): WebAssembly.Memory | undefined {
  const memory = backend?.wasm?.wasmMemory ?? backend?.wasm?.asm?.memory;
  return memory instanceof WebAssembly.Memory ? memory : undefined;
}

/** Whether the kernel can run on the current backend (wasm, with its memory in reach). */
export function wasmSoftmaxUsable(): boolean {
  return tf.getBackend() === "wasm" && memoryOf(tf.backend()) !== undefined;
}

function runnerFor(backend: AnyBackend): Runner {
  const memory = memoryOf(backend)!;
  if (runner === null || runner.memory !== memory) {
    const threads = typeof backend.wasm.tfjs?.getThreadsCount === "function"
      ? backend.wasm.tfjs.getThreadsCount()
      : 1;
    runner = new Runner(memory, threads);
  }
  return runner;
}

/**
 * Starts the kernel's worker threads for the current wasm backend and waits until they run (worker
 * threads start only while the main thread is free, so this belongs to backend start, before the
 * first synchronous training step). Returns the threads the kernel will use, 0 where it cannot run.
 */
export async function startWasmSoftmax(): Promise<number> {
  if (!wasmSoftmaxUsable()) return 0;
  const r = runnerFor(tf.backend());
  await r.started;
  return r.threads;
}

/** Threads the kernel runs on in this process (0 before it starts). */
export function wasmSoftmaxThreads(): number {
  return runner?.threads ?? 0;
}

/** Rows the kernel has computed in this process, and how many of them on worker threads. */
export function wasmSoftmaxStats(): { rows: number; rowsOnWorkers: number } {
  return { ...(runner?.stats ?? { rows: 0, rowsOnWorkers: 0 }) };
}

function softmaxRowsKernel(
  { inputs, backend }: { inputs: { x: TensorInfo }; backend: AnyBackend },
): TensorInfo[] {
  const { x } = inputs;
  if (x.shape.length !== 2 || x.dtype !== "float32") {
    throw new Error(`${SOFTMAX_ROWS_KERNEL}: needs a 2-D float32 tensor, got ${x.dtype} [${x.shape}]`);
  }
  const [rows, cols] = x.shape;
  const e = backend.makeOutput([rows, cols], "float32") as TensorInfo;
  const m = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  const s = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  if (rows > 0) {
    // Offsets are read after the allocations (they may grow the heap; the offsets stay valid).
    const off = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset as number;
    runnerFor(backend).run(off(x), off(e), off(m), off(s), rows, cols);
  }
  return [e, m, s];
}

if (!tf.getKernel(SOFTMAX_ROWS_KERNEL, "wasm")) {
  tf.registerKernel({
    kernelName: SOFTMAX_ROWS_KERNEL,
    backendName: "wasm",
    kernelFunc: softmaxRowsKernel as unknown as tf.KernelFunc,
  });
}
