// The runtime of lmpipe's own wasm kernels (kernels.wat): one module instantiated on TF.js's heap and
// shared between the main thread and, with the threaded wasm build, one worker thread per extra wasm
// thread (TF.js's own elementwise and reduction kernels use one thread whatever the count). Ops run jobs
// through runRows / runElementwise: their kernels live in lib/tensor/ops/<op>/wasm.ts (softmax rows,
// LayerNorm, GELU, the conv gradients' im2col / col2im). Registered here: LmpipeAdamW and
// LmpipeSumSquares (the names of webgpu's fused AdamW and gradient-norm reduction, so lib/optim.ts calls
// both backends the same way) and Tanh on wasm, which replaces TF.js's scalar one. LMPIPE_WASM_FUSED=0
// turns them all off (the op chains, TF.js's Tanh and the conv gradients' JavaScript loops run instead).
// The module comes in two builds (scripts/build_wasm.ts): with relaxed SIMD's fused multiply-adds (the
// softmax's exp), taken where the runtime validates it, and without; LMPIPE_WASM_RELAXED=0 takes the one
// without.
import * as tf from "@tensorflow/tfjs-core";
import { Worker } from "node:worker_threads";
import { registerKernels } from "../host_kernel.ts";
import { KERNELS_WASM, KERNELS_WASM_NO_RELAXED } from "./kernels_bytes.ts";
import { newControl, setSpin, startJob, takeRows, waitForRows } from "./row_jobs.ts";
import { BLOCK, floatBits, type GemmPiece, type KernelExports, KIND, runPiece } from "./kernel_calls.ts";
import { LIBRARY_PATH_BYTES, openRowGemm, writeLibraryPath } from "./row_gemm.ts";
import { ADAMW_KERNEL, type AdamWConstants, SUM_SQUARES_KERNEL } from "../kernel_names.ts";
import { switchOn } from "../env_switch.ts";

/** Below this many values a job runs on the calling thread alone (waking workers costs more). */
const PARALLEL_MIN_VALUES = 1 << 16;
/**
 * The same for kernels that do next to no arithmetic per value (adds, copies): bound by memory, they gain
 * from a second thread only from a few hundred thousand values. On 2 threads, median of 400 calls each, the
 * job shared out against run on the calling thread: Add of two [8, 128, 128] 0.045 against 0.024 ms, of
 * two [8, 128, 512] 0.078 against 0.086-0.091, of two [8, 256, 384] 0.097-0.10 against 0.13; a transpose of
 * [8, 128, 4, 32] 0.080-0.087 against 0.067-0.070, of [8, 256, 4, 64] 0.085 against 0.078.
 */
export const MEMORY_BOUND_MIN_VALUES = 1 << 19;
/** Values per piece of a row job (rowsPerPiece) taken at a time by one thread. */
const PIECE_VALUES = 1 << 16;
/**
 * While linear layers run as row jobs (runGemmRows), a thread that runs out of work spins this long for
 * the next job before it sleeps: between a block's linears, attention, GELU and LayerNorm the gaps are
 * 0.1-1.5 ms, and a sleeping thread takes 10-90 µs to wake. Elsewhere (training, whose matMuls run on
 * OpenMP's threads; the image models' oneDNN convs) a spinning worker would take the core from OpenMP's
 * thread, so the spin ends SPIN_WINDOW_MS after the last row-job linear. Evaluation of GPT T on 2 threads
 * (scratch probe, one process, modes in turn): the linears as row jobs with a 200 µs spin 1.6% faster than
 * on the primitive without, the row jobs alone 0.5-1.5% slower or faster, the spin alone 2-3% slower
 * (bench/RESULTS.md).
 */
let spinUs = 200;
const SPIN_WINDOW_MS = 2;
/** A job fails if no row finishes for this long (a worker died holding rows). */
const STALL_MS = 60_000;
/** How long backend start waits for the workers (they only join jobs once started). */
const START_TIMEOUT_MS = 10_000;

let enabled = switchOn("LMPIPE_WASM_FUSED");
let rowAffinity = switchOn("LMPIPE_WASM_ROW_AFFINITY");

/** Turns the kernels on or off for this process (callers fall back to op chains); returns the old state. */
export function setWasmKernelsEnabled(on: boolean): boolean {
  const old = enabled;
  enabled = on;
  return old;
}

/**
 * Turns the threads' own row ranges on or off for this process (row_jobs.ts; off: every thread takes the
 * next few rows of one range in turn, as before the ranges); returns the old state. For benchmarks and
 * tests; LMPIPE_WASM_ROW_AFFINITY=0 too. The results are the same either way, bit for bit.
 */
export function setRowAffinity(on: boolean): boolean {
  const old = rowAffinity;
  rowAffinity = on;
  return old;
}

const decode = (base64: string) => Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));

let relaxedSimd: boolean | undefined;

/**
 * Whether the kernels use relaxed SIMD (the build with fused multiply-adds): the runtime accepts it and
 * LMPIPE_WASM_RELAXED is not "0". Decided once per process, when the kernels are first built (validating
 * the module costs ~10 ms, which commands that never run the wasm kernels do not pay).
 */
export function wasmRelaxedSimd(): boolean {
  relaxedSimd ??= switchOn("LMPIPE_WASM_RELAXED") && WebAssembly.validate(decode(KERNELS_WASM));
  return relaxedSimd;
}

/**
 * The kernels' module bytes for a shared memory (TF.js's threaded wasm build) or a plain one (its
 * single-threaded build). The .wat imports a shared memory; the plain variant differs only in the
 * import's limits flag (binary format: 0x03 = maximum + shared, 0x01 = maximum), patched here.
 */
function moduleBytes(shared: boolean): Uint8Array<ArrayBuffer> {
  const bytes = decode(wasmRelaxedSimd() ? KERNELS_WASM : KERNELS_WASM_NO_RELAXED);
  if (shared) return bytes;
  const name = [6, ...new TextEncoder().encode("memory"), 2]; // "memory", then import kind 2 (memory)
  for (let i = 0; i + name.length < bytes.length; i++) {
    if (name.every((b, j) => bytes[i + j] === b) && bytes[i + name.length] === 3) {
      bytes[i + name.length] = 1;
      return bytes;
    }
  }
  throw new Error("wasm kernels: no shared memory import found in the module");
}

/** The kernels bound to one wasm memory, with their worker threads. */
class Runner {
  readonly memory: WebAssembly.Memory;
  readonly #kernels: KernelExports;
  readonly #ctl = newControl();
  readonly #workers: Worker[] = [];
  /** oneDNN's library path for the workers' gemmRows pieces (row_gemm.ts), and the main thread's sgemm. */
  readonly #library = new SharedArrayBuffer(LIBRARY_PATH_BYTES);
  #gemm: GemmPiece | null = null;
  #gemmPath = "";
  /** When the last row-job linear started (performance.now()), -Infinity before any. */
  #gemmAt = Number.NEGATIVE_INFINITY;
  #job = 0;
  /** Rows computed so far, how many of them by worker threads, and the jobs offered to the workers. */
  readonly stats = { rows: 0, rowsOnWorkers: 0, sharedJobs: 0 };
  /** Settles when every worker has started or failed to (jobs never wait for a worker anyway). */
  readonly started: Promise<void>;

  constructor(memory: WebAssembly.Memory, threads: number) {
    this.memory = memory;
    const shared = memory.buffer instanceof SharedArrayBuffer;
    const module = new WebAssembly.Module(moduleBytes(shared));
    this.#kernels = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
    const starts: Promise<void>[] = [];
    for (let i = 1; shared && i < threads; i++) {
      try {
        const w = new Worker(new URL("./kernels_worker.ts", import.meta.url), {
          workerData: { module, memory, ctl: this.#ctl, library: this.#library },
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

  /**
   * Runs a job of `rows` rows (`values` values in all: the workers are woken from `minValues` up),
   * `chunk` rows at a time, with job arguments `args` (kernel_calls.ts).
   */
  run(args: number[], rows: number, chunk: number, values: number, minValues = PARALLEL_MIN_VALUES): void {
    this.stats.rows += rows;
    const now = performance.now();
    if (args[0] === KIND.gemmRows) this.#gemmAt = now;
    const awake = spinUs > 0 && now - this.#gemmAt < SPIN_WINDOW_MS;
    // While the threads spin for their next job a worker starts on its rows at once, so the small kernels
    // kept on the calling thread for the wake-up (LayerNorm under 2^18 values, adds and copies under 2^19)
    // share from PARALLEL_MIN_VALUES again: GPT T evaluation on 2 threads, in turn in one process, 1.002-1.024
    // (median 1.011) against keeping them on the calling thread (bench/RESULTS.md).
    if (awake) minValues = Math.min(minValues, PARALLEL_MIN_VALUES);
    if (this.#workers.length === 0 || rows < 2 || values < minValues) {
      runPiece(this.#kernels, args, 0, rows, this.#gemm);
      return;
    }
    const job = this.#job = (this.#job + 1) >>> 0;
    this.stats.sharedJobs++;
    let mine = 0;
    // the main thread's range: its share of the rows in whole pieces (row_jobs.ts: the same rows each job),
    // or without affinity all of them (the workers then take their rows from it too)
    const split = rowAffinity ? Math.min(rows, chunk * Math.ceil(rows / this.threads / chunk)) : rows;
    setSpin(this.#ctl, awake ? spinUs : 0);
    startJob(this.#ctl, job, rows, chunk, args, split);
    takeRows(this.#ctl, job, (r0, r1) => {
      runPiece(this.#kernels, args, r0, r1, this.#gemm);
      mine += r1 - r0;
    });
    waitForRows(this.#ctl, rows, STALL_MS);
    this.stats.rowsOnWorkers += rows - mine;
  }

  get threads(): number {
    return 1 + this.#workers.length;
  }

  /**
   * Opens oneDNN's sgemm at `path` on the main thread for gemmRows jobs and hands the path to the workers
   * (each opens it at its first such job). Throws where the main thread cannot open it.
   */
  useRowGemm(path: string): void {
    if (this.#gemmPath === path) return;
    this.#gemm = openRowGemm(path, this.memory);
    this.#gemmPath = path;
    writeLibraryPath(this.#library, path);
  }

  /** The kernels on the calling thread, for direct calls too small to share out. */
  get kernels(): KernelExports {
    return this.#kernels;
  }
}

let runner: Runner | null = null;

// deno-lint-ignore no-explicit-any
export type AnyBackend = any;
export interface TensorInfo {
  dataId: object;
  shape: number[];
  dtype: string;
}
type KernelFn = (args: { inputs: unknown; backend: AnyBackend; attrs?: unknown }) => unknown;

/** The wasm backend's memory: exported by the threaded build's glue, by the plain build's instance. */
function memoryOf(backend: AnyBackend): WebAssembly.Memory | undefined {
  const memory = backend?.wasm?.wasmMemory ?? backend?.wasm?.asm?.memory;
  return memory instanceof WebAssembly.Memory ? memory : undefined;
}

/** Whether the kernels are on and can run on `backend` (a wasm backend with its memory in reach). */
export function usable(backend: AnyBackend): boolean {
  return enabled && memoryOf(backend) !== undefined;
}

/** Whether the kernels are on and can run on the current backend. */
export function wasmKernelsActive(): boolean {
  return tf.getBackend() === "wasm" && usable(tf.backend());
}

function runnerFor(backend: AnyBackend): Runner {
  const memory = memoryOf(backend);
  if (!memory) throw new Error("wasm kernels: the wasm backend's memory is not reachable");
  if (runner === null || runner.memory !== memory) {
    const threads = typeof backend.wasm.tfjs?.getThreadsCount === "function"
      ? backend.wasm.tfjs.getThreadsCount()
      : 1;
    runner = new Runner(memory, threads);
  }
  return runner;
}

/**
 * Starts the kernels' worker threads for the current wasm backend and waits until they run (worker
 * threads start only while the main thread is free, so this belongs to backend start, before the
 * first synchronous training step). Returns the threads the kernels will use, 0 where they are off or
 * cannot run.
 */
export async function startWasmKernels(): Promise<number> {
  if (!wasmKernelsActive()) return 0; // off (LMPIPE_WASM_FUSED=0): no threads to start
  const r = runnerFor(tf.backend());
  await r.started;
  return r.threads;
}

/**
 * The kernels' exports on the calling thread and the memory they work on, for a caller that runs many
 * tiny kernels in a row (a decoding step: lib/tensor/ops/decode/wasm.ts) where a job per call would cost
 * more than the work. Byte offsets as for jobs; views of the memory must be renewed after it grows.
 */
export function wasmKernelsOn(backend: AnyBackend): { kernels: KernelExports; memory: WebAssembly.Memory } {
  const r = runnerFor(backend);
  return { kernels: r.kernels, memory: r.memory };
}

/** Threads the kernels run on in this process (0 before they start). */
export function wasmKernelThreads(): number {
  return runner?.threads ?? 0;
}

/**
 * Rows the kernels have computed in this process, how many of them on worker threads, and how many jobs
 * were offered to the workers (a worker that joins late may take none of a job's rows).
 */
export function wasmKernelStats(): { rows: number; rowsOnWorkers: number; sharedJobs: number } {
  return { ...(runner?.stats ?? { rows: 0, rowsOnWorkers: 0, sharedJobs: 0 }) };
}

/** A tensor's byte offset in the heap (read after any allocation: the heap may grow, offsets stay). */
export function offsetOf(backend: AnyBackend, t: TensorInfo): number {
  return backend.dataIdMap.get(t.dataId).memoryOffset as number;
}

/** Throws, naming the kernel, unless `t` is float32 (of `shape`, when given). */
export function requireFloat32(kernel: string, what: string, t: TensorInfo, shape?: number[]): void {
  if (t.dtype !== "float32" || (shape && !tf.util.arraysEqual(t.shape, shape))) {
    throw new Error(
      `${kernel}: ${what} is ${t.dtype} [${t.shape}], expected float32${shape ? ` [${shape}]` : ""}`,
    );
  }
}

function adamWKernel(
  { inputs, backend, attrs }: { inputs: Record<string, TensorInfo>; backend: AnyBackend; attrs: unknown },
): TensorInfo[] {
  const { p, g, m, v } = inputs;
  const c = attrs as AdamWConstants;
  requireFloat32(ADAMW_KERNEL, "the parameter", p);
  for (const [what, t] of [["gradient", g], ["m", m], ["v", v]] as const) {
    requireFloat32(ADAMW_KERNEL, what, t, p.shape);
  }
  const n = tf.util.sizeFromShape(p.shape);
  const outs = [0, 1, 2].map(() => backend.makeOutput(p.shape.slice(), "float32") as TensorInfo);
  if (n > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    const consts = [
      c.gradScale,
      c.beta1,
      c.oneMinusBeta1,
      c.beta2,
      c.oneMinusBeta2,
      c.decay,
      c.sqrtBc2,
      c.eps,
      c.stepSize,
    ].map(floatBits);
    runElementwise(backend, [KIND.adamW, o(p), o(g), o(m), o(v), ...outs.map(o), n, ...consts], n);
  }
  return outs;
}

/**
 * The sum of squares of float32 tensors, each times `scale` (kernel_names.ts SUM_SQUARES_KERNEL): one job
 * per tensor writes a float64 partial sum per block of BLOCK values into a scratch buffer (kernels.wat
 * sum_squares), and the partials are added here in block order, in float64. The result depends neither
 * on the thread count nor on how the blocks were shared out, and is at least as accurate as the op
 * chain's float32 sums; the float32 scalar it returns is inf wherever that chain's would overflow.
 */
function sumSquaresKernel(
  { inputs, backend, attrs }: { inputs: unknown; backend: AnyBackend; attrs: unknown },
): TensorInfo {
  const ts = Object.values(inputs as Record<string, TensorInfo>);
  const scale = (attrs as { scale: number }).scale;
  const blocks = ts.map((t, i) => {
    requireFloat32(SUM_SQUARES_KERNEL, `tensor ${i}`, t);
    return Math.ceil(tf.util.sizeFromShape(t.shape) / BLOCK);
  });
  const all = blocks.reduce((a, b) => a + b, 0);
  const out = backend.makeOutput([], "float32") as TensorInfo;
  // float64 partials: two float32 slots each
  const part = backend.makeOutput([2 * Math.max(1, all)], "float32") as TensorInfo;
  const partAt = offsetOf(backend, part);
  let first = 0; // the tensor's first block among all
  ts.forEach((t, i) => {
    const n = tf.util.sizeFromShape(t.shape);
    if (n === 0) return;
    const args = [KIND.sumSquares, offsetOf(backend, t), partAt + 8 * first, n, floatBits(scale)];
    runnerFor(backend).run(args, blocks[i], 1, n);
    first += blocks[i];
  });
  const heap = new DataView(backend.wasm.HEAPU8.buffer as ArrayBuffer);
  let total = 0;
  for (let b = 0; b < all; b++) total += heap.getFloat64(partAt + 8 * b, true);
  heap.setFloat32(offsetOf(backend, out), total, true);
  backend.disposeData(part.dataId);
  return out;
}

/**
 * Runs a job of `rows` rows of `valuesPerRow` values each (job arguments `args`: kernel_calls.ts) on all
 * the kernels' threads, a piece of about PIECE_VALUES values, and at least `minRowsPerPiece` rows, at a
 * time (a kernel that carries work from one row to the next in its range wants a few rows a piece); on
 * the calling thread alone below `minValues` values in all (MEMORY_BOUND_MIN_VALUES for adds and copies).
 */
export function runRows(
  backend: AnyBackend,
  args: number[],
  rows: number,
  valuesPerRow: number,
  minRowsPerPiece = 1,
  minValues = PARALLEL_MIN_VALUES,
): void {
  const chunk = Math.max(minRowsPerPiece, rowsPerPiece(valuesPerRow));
  runnerFor(backend).run(args, rows, chunk, rows * valuesPerRow, minValues);
}

/** Rows of `cols` values per piece of a row job: about PIECE_VALUES values. */
function rowsPerPiece(cols: number): number {
  return Math.max(1, Math.floor(PIECE_VALUES / Math.max(1, cols)));
}

/**
 * Runs C [M, N] = A [M, K] @ B [K, N] (+ bias [N] on every row) as a job over C's rows on oneDNN's sgemm
 * (its library at `library`), one OpenMP thread per piece (row_gemm.ts), one piece per thread: the rows cut
 * in `threads` ranges of whole multiples of 8 rows. The pieces depend only on M and the thread count, not on
 * which thread took them, so neither do the bits. Offsets are bytes into the heap.
 */
export function runGemmRows(
  backend: AnyBackend,
  library: string,
  s: { A: number; B: number; C: number; bias: number | null; M: number; K: number; N: number },
): void {
  const r = runnerFor(backend);
  r.useRowGemm(library);
  const chunk = 8 * Math.ceil(s.M / r.threads / 8);
  const args = [KIND.gemmRows, s.A, s.B, s.C, s.bias ?? -1, s.K, s.N, s.M];
  r.run(args, s.M, chunk, s.M * s.N, 0);
}

/**
 * For tests and benchmarks: how long (µs) a thread out of work spins for the next job while linears run as
 * row jobs (see spinUs); 0 sleeps at once. Returns the old value.
 */
export function setWasmSpin(us: number): number {
  const old = spinUs;
  spinUs = Math.max(0, us);
  return old;
}

/** Runs an elementwise job over `n` values (kernel_calls.ts: rows are blocks of BLOCK values). */
export function runElementwise(backend: AnyBackend, args: number[], n: number): void {
  runnerFor(backend).run(args, Math.ceil(n / BLOCK), 1, n);
}

function tanhKernel(orig: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    const backend = args.backend;
    if (x.dtype !== "float32" || !usable(backend)) return orig(args);
    const n = tf.util.sizeFromShape(x.shape);
    const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
    if (n > 0) runElementwise(backend, [KIND.tanh, offsetOf(backend, x), offsetOf(backend, y), n], n);
    return y;
  };
}

registerKernels("wasm", [[ADAMW_KERNEL, adamWKernel], [SUM_SQUARES_KERNEL, sumSquaresKernel]]);
{
  const tfjsTanh = tf.getKernel(tf.Tanh, "wasm");
  if (tfjsTanh && !(tfjsTanh.kernelFunc as { lmpipe?: boolean }).lmpipe) {
    const f = tanhKernel(tfjsTanh.kernelFunc as unknown as KernelFn) as KernelFn & { lmpipe?: boolean };
    f.lmpipe = true;
    tf.unregisterKernel(tf.Tanh, "wasm");
    tf.registerKernel({ ...tfjsTanh, kernelFunc: f as unknown as tf.KernelFunc });
  }
}
