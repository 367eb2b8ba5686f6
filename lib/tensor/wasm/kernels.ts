// lmpipe's own kernels for the wasm backend (kernels.wat), run straight on TF.js's heap and shared
// between the main thread and, with the threaded wasm build, one worker thread per extra wasm thread
// (TF.js's own elementwise and reduction kernels use one thread whatever the count). Registered as TF.js
// kernels: LmpipeSoftmaxRows (ops/softmax_rows/), LmpipeAdamW (the name of webgpu's fused AdamW, so
// lib/optim.ts calls both the same way), LmpipeLayerNorm and LmpipeLayerNormGrad (ops/layer_norm/),
// LmpipeGelu and LmpipeGeluGrad (ops/gelu/), and Tanh on wasm, which replaces TF.js's scalar one; and
// im2colOnHeap / col2imOnHeap for the conv gradient kernels (ops/conv2d/wasm.ts). LMPIPE_WASM_FUSED=0 turns them
// all off (the op chains, TF.js's Tanh and ops/conv2d/wasm.ts's JavaScript loops run instead).
import * as tf from "@tensorflow/tfjs-core";
import { Worker } from "node:worker_threads";
import { KERNELS_WASM } from "./kernels_bytes.ts";
import { newControl, startJob, takeRows, waitForRows } from "./row_jobs.ts";
import { BLOCK, floatBits, type KernelExports, KIND, runPiece } from "./kernel_calls.ts";
import {
  ADAMW_KERNEL,
  type AdamWConstants,
  GELU_C,
  GELU_GRAD_KERNEL,
  GELU_K,
  GELU_KERNEL,
  LAYER_NORM_GRAD_KERNEL,
  LAYER_NORM_KERNEL,
  SOFTMAX_ROWS_KERNEL,
} from "../kernel_names.ts";

/** Below this many values a job runs on the calling thread alone (waking workers costs more). */
const PARALLEL_MIN_VALUES = 1 << 16;
/** Values per piece of a row job (rowsPerPiece) taken at a time by one thread. */
const PIECE_VALUES = 1 << 16;
/** A job fails if no row finishes for this long (a worker died holding rows). */
const STALL_MS = 60_000;
/** How long backend start waits for the workers (they only join jobs once started). */
const START_TIMEOUT_MS = 10_000;

let enabled = readEnabledFromEnv();

function readEnabledFromEnv(): boolean {
  try {
    return Deno.env.get("LMPIPE_WASM_FUSED") !== "0";
  } catch {
    return true; // no env permission
  }
}

/** Turns the kernels on or off for this process (callers fall back to op chains); returns the old state. */
export function setWasmKernelsEnabled(on: boolean): boolean {
  const old = enabled;
  enabled = on;
  return old;
}

/**
 * The kernels' module bytes for a shared memory (TF.js's threaded wasm build) or a plain one (its
 * single-threaded build). The .wat imports a shared memory; the plain variant differs only in the
 * import's limits flag (binary format: 0x03 = maximum + shared, 0x01 = maximum), patched here.
 */
function moduleBytes(shared: boolean): Uint8Array<ArrayBuffer> {
  const bytes = Uint8Array.from(atob(KERNELS_WASM), (c) => c.charCodeAt(0));
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
  #job = 0;
  /** Rows computed so far, and how many of them by worker threads. */
  readonly stats = { rows: 0, rowsOnWorkers: 0 };
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

  /**
   * Runs a job of `rows` rows (`values` values in all, which decides whether the workers are woken),
   * `chunk` rows at a time, with job arguments `args` (kernel_calls.ts).
   */
  run(args: number[], rows: number, chunk: number, values: number): void {
    this.stats.rows += rows;
    if (this.#workers.length === 0 || rows < 2 || values < PARALLEL_MIN_VALUES) {
      runPiece(this.#kernels, args, 0, rows);
      return;
    }
    const job = this.#job = (this.#job + 1) >>> 0;
    let mine = 0;
    startJob(this.#ctl, job, rows, chunk, args);
    takeRows(this.#ctl, job, (r0, r1) => {
      runPiece(this.#kernels, args, r0, r1);
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
type KernelFn = (args: { inputs: unknown; backend: AnyBackend; attrs?: unknown }) => unknown;

/** The wasm backend's memory: exported by the threaded build's glue, by the plain build's instance. */
function memoryOf(backend: AnyBackend): WebAssembly.Memory | undefined {
  const memory = backend?.wasm?.wasmMemory ?? backend?.wasm?.asm?.memory;
  return memory instanceof WebAssembly.Memory ? memory : undefined;
}

/** Whether the kernels are on and can run on `backend` (a wasm backend with its memory in reach). */
function usable(backend: AnyBackend): boolean {
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

/** Threads the kernels run on in this process (0 before they start). */
export function wasmKernelThreads(): number {
  return runner?.threads ?? 0;
}

/** Rows the kernels have computed in this process, and how many of them on worker threads. */
export function wasmKernelStats(): { rows: number; rowsOnWorkers: number } {
  return { ...(runner?.stats ?? { rows: 0, rowsOnWorkers: 0 }) };
}

/** A tensor's byte offset in the heap (read after any allocation: the heap may grow, offsets stay). */
function offsetOf(backend: AnyBackend, t: TensorInfo): number {
  return backend.dataIdMap.get(t.dataId).memoryOffset as number;
}

function requireFloat32(kernel: string, what: string, t: TensorInfo, shape?: number[]): void {
  if (t.dtype !== "float32" || (shape && !tf.util.arraysEqual(t.shape, shape))) {
    throw new Error(
      `${kernel}: ${what} is ${t.dtype} [${t.shape}], expected float32${shape ? ` [${shape}]` : ""}`,
    );
  }
}

function softmaxRowsKernel(
  { inputs, backend }: { inputs: { x: TensorInfo }; backend: AnyBackend },
): TensorInfo[] {
  const { x } = inputs;
  requireFloat32(SOFTMAX_ROWS_KERNEL, "x", x);
  if (x.shape.length !== 2) throw new Error(`${SOFTMAX_ROWS_KERNEL}: x must be 2-D, got [${x.shape}]`);
  const [rows, cols] = x.shape;
  const e = backend.makeOutput([rows, cols], "float32") as TensorInfo;
  const m = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  const s = backend.makeOutput([rows, 1], "float32") as TensorInfo;
  if (rows > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    runnerFor(backend).run(
      [KIND.softmaxRows, o(x), o(e), o(m), o(s), cols],
      rows,
      rowsPerPiece(cols),
      rows * cols,
    );
  }
  return [e, m, s];
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

/** Rows of `cols` values per piece of a row job: about PIECE_VALUES values. */
function rowsPerPiece(cols: number): number {
  return Math.max(1, Math.floor(PIECE_VALUES / Math.max(1, cols)));
}

/** Runs an elementwise job over `n` values (kernel_calls.ts: rows are blocks of BLOCK values). */
function runElementwise(backend: AnyBackend, args: number[], n: number): void {
  runnerFor(backend).run(args, Math.ceil(n / BLOCK), 1, n);
}

function layerNormKernel(
  { inputs, backend, attrs }: { inputs: Record<string, TensorInfo>; backend: AnyBackend; attrs: unknown },
): TensorInfo[] {
  const { x, w, b } = inputs;
  const { eps } = attrs as { eps: number };
  const C = x.shape[x.shape.length - 1], rows = tf.util.sizeFromShape(x.shape) / C;
  requireFloat32(LAYER_NORM_KERNEL, "x", x);
  requireFloat32(LAYER_NORM_KERNEL, "the weight", w, [C]);
  if (b) requireFloat32(LAYER_NORM_KERNEL, "the bias", b, [C]);
  if (C % 4 !== 0) {
    throw new Error(`${LAYER_NORM_KERNEL}: rows of ${C} values; the kernel needs a multiple of 4`);
  }
  const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  const mean = backend.makeOutput([rows], "float32") as TensorInfo;
  const rstd = backend.makeOutput([rows], "float32") as TensorInfo;
  if (rows > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    const args = [
      KIND.layerNorm,
      o(x),
      o(w),
      b ? o(b) : 0,
      o(y),
      o(mean),
      o(rstd),
      C,
      floatBits(eps),
      b ? 1 : 0,
    ];
    runnerFor(backend).run(args, rows, rowsPerPiece(C), rows * C);
  }
  return [y, mean, rstd];
}

function layerNormGradKernel(
  { inputs, backend }: { inputs: Record<string, TensorInfo>; backend: AnyBackend },
): TensorInfo[] {
  const { dy, x, w, mean, rstd } = inputs;
  const C = x.shape[x.shape.length - 1], rows = tf.util.sizeFromShape(x.shape) / C;
  for (
    const [what, t, shape] of [["dy", dy, x.shape], ["mean", mean, [rows]], ["rstd", rstd, [rows]]] as const
  ) {
    requireFloat32(LAYER_NORM_GRAD_KERNEL, what, t, shape as number[]);
  }
  const dx = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  const dw = backend.makeOutput([C], "float32") as TensorInfo;
  const db = backend.makeOutput([C], "float32") as TensorInfo;
  const o = (t: TensorInfo) => offsetOf(backend, t);
  const r = runnerFor(backend);
  if (rows > 0) {
    r.run([KIND.layerNormDx, o(dy), o(x), o(w), o(mean), o(rstd), o(dx), C], rows, rowsPerPiece(C), rows * C);
  }
  r.run([KIND.layerNormDwDb, o(dy), o(x), o(mean), o(rstd), o(dw), o(db), rows, C], 1, 1, 0);
  return [dx, dw, db];
}

function geluKernel({ inputs, backend }: { inputs: { x: TensorInfo }; backend: AnyBackend }): TensorInfo {
  const { x } = inputs;
  requireFloat32(GELU_KERNEL, "x", x);
  const n = tf.util.sizeFromShape(x.shape);
  const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  if (n > 0) {
    const args = [
      KIND.gelu,
      offsetOf(backend, x),
      offsetOf(backend, y),
      n,
      floatBits(GELU_C),
      floatBits(GELU_K),
    ];
    runElementwise(backend, args, n);
  }
  return y;
}

function geluGradKernel(
  { inputs, backend }: { inputs: { x: TensorInfo; dy: TensorInfo }; backend: AnyBackend },
): TensorInfo {
  const { x, dy } = inputs;
  requireFloat32(GELU_GRAD_KERNEL, "x", x);
  requireFloat32(GELU_GRAD_KERNEL, "dy", dy, x.shape);
  const n = tf.util.sizeFromShape(x.shape);
  const dx = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  if (n > 0) {
    const o = (t: TensorInfo) => offsetOf(backend, t);
    const consts = [GELU_C, 3 * GELU_C, GELU_K].map(floatBits);
    runElementwise(backend, [KIND.geluGrad, o(x), o(dy), o(dx), n, ...consts], n);
  }
  return dx;
}

/** NHWC convolution geometry for the conv gradient helpers below (TF.js's conv info, flattened). */
export interface ConvGeometry {
  H: number;
  W: number;
  Ci: number;
  OH: number;
  OW: number;
  KH: number;
  KW: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
  pt: number;
  pl: number;
}

/**
 * Fills col [KH KW Ci, nb OH OW] with the im2col matrix of images b0 .. b0 + nb - 1 of x (both on the
 * heap), rows shared between threads. Returns false, doing nothing, when the kernels are off or cannot
 * run here: the caller (lib/tensor/ops/conv2d/wasm.ts) then runs its JavaScript loop.
 */
export function im2colOnHeap(
  backend: AnyBackend,
  x: TensorInfo,
  col: TensorInfo,
  b0: number,
  nb: number,
  g: ConvGeometry,
): boolean {
  if (!usable(backend)) return false;
  const K = g.KH * g.KW * g.Ci, rows = nb * g.OH * g.OW;
  const args = [
    KIND.im2col,
    offsetOf(backend, x),
    offsetOf(backend, col),
    b0,
    nb,
    g.H,
    g.W,
    g.Ci,
    g.OH,
    g.OW,
  ];
  args.push(g.KW, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, rows);
  runnerFor(backend).run(args, K, rowsPerPiece(rows), K * rows);
  return true;
}

/**
 * Adds the im2col-shaped gradient col [nb OH OW, KH KW Ci] of images b0 .. b0 + nb - 1 into dx (NHWC, on
 * the heap), images shared between threads. Returns false, doing nothing, when the kernels are off or
 * cannot run here (the caller runs its JavaScript loop).
 */
export function col2imOnHeap(
  backend: AnyBackend,
  col: TensorInfo,
  dx: TensorInfo,
  b0: number,
  nb: number,
  g: ConvGeometry,
): boolean {
  if (!usable(backend)) return false;
  const perImage = g.OH * g.OW * g.KH * g.KW * g.Ci;
  const args = [KIND.col2im, offsetOf(backend, col), offsetOf(backend, dx), b0, g.H, g.W, g.Ci, g.OH, g.OW];
  args.push(g.KH, g.KW, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl);
  runnerFor(backend).run(args, nb, rowsPerPiece(perImage), nb * perImage);
  return true;
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

for (
  const [kernelName, kernelFunc] of [
    [SOFTMAX_ROWS_KERNEL, softmaxRowsKernel],
    [ADAMW_KERNEL, adamWKernel],
    [LAYER_NORM_KERNEL, layerNormKernel],
    [LAYER_NORM_GRAD_KERNEL, layerNormGradKernel],
    [GELU_KERNEL, geluKernel],
    [GELU_GRAD_KERNEL, geluGradKernel],
  ] as const
) {
  if (!tf.getKernel(kernelName, "wasm")) {
    tf.registerKernel({
      kernelName,
      backendName: "wasm",
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
    });
  }
}
{
  const tfjsTanh = tf.getKernel(tf.Tanh, "wasm");
  if (tfjsTanh && !(tfjsTanh.kernelFunc as { lmpipe?: boolean }).lmpipe) {
    const f = tanhKernel(tfjsTanh.kernelFunc as unknown as KernelFn) as KernelFn & { lmpipe?: boolean };
    f.lmpipe = true;
    tf.unregisterKernel(tf.Tanh, "wasm");
    tf.registerKernel({ ...tfjsTanh, kernelFunc: f as unknown as tf.KernelFunc });
  }
}
