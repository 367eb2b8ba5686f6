// An optional native sgemm for the wasm backend: XNNPACK reaches ~20-30 GFLOP/s per core on the big
// output-head matMuls of a GPT, OpenBLAS 85-100 (bench/RESULTS.md). This module finds a CBLAS library,
// opens it through Deno FFI and exposes a row-major sgemm on byte offsets into the wasm heap; ops/matmul/wasm.ts
// decides which matMuls use it. Nothing here may crash a run: no library, no FFI permission or a failed
// dlopen all mean "no BLAS", with the reason in the backend description.
import { heapPointers } from "./heap_pointer.ts";

/**
 * Library names tried in order when $LMPIPE_BLAS does not name one: Debian's pthread build of OpenBLAS
 * first (see loadBlas on the OpenMP build), then whatever the system's alternatives point at.
 */
const CANDIDATES = [
  "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
  "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
  "libopenblas.so.0",
  "libopenblas.so",
  "libblas.so.3",
];

const ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112;

const SYMBOLS = {
  cblas_sgemm: {
    // order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "pointer",
      "i32",
      "pointer",
      "i32",
      "f32",
      "pointer",
      "i32",
    ],
    result: "void",
  },
  cblas_sgemv: {
    // order, trans, M, N, alpha, A, lda, x, incx, beta, y, incy
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "pointer",
      "i32",
      "pointer",
      "i32",
      "f32",
      "pointer",
      "i32",
    ],
    result: "void",
    optional: true,
  },
  openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
  openblas_get_config: { parameters: [], result: "pointer", optional: true },
  /** The kernel family OpenBLAS dispatched on this CPU (e.g. "Haswell", "SkylakeX"); OPENBLAS_CORETYPE forces one. */
  openblas_get_corename: { parameters: [], result: "pointer", optional: true },
  /** 0 sequential, 1 pthreads, 2 OpenMP. */
  openblas_get_parallel: { parameters: [], result: "i32", optional: true },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

export interface Blas {
  /** The library file that was opened. */
  path: string;
  /** Short name for the backend description, e.g. "OpenBLAS sgemm". */
  label: string;
  /**
   * C[M,N] = op(A) @ op(B), row-major float32, where A, B and C are byte offsets into `heap` (the wasm
   * memory; pass a fresh buffer after any allocation, as memory can grow). op(A) is [M,K]: stored
   * [K,M] when transA. op(B) is [K,N]: stored [N,K] when transB.
   */
  sgemm(
    heap: ArrayBufferLike,
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    a: number,
    b: number,
    c: number,
  ): void;
  /** How many sgemm calls ran (tests check that the BLAS path was taken). */
  calls: number;
  /** OpenBLAS's kernel family (openblas_get_corename), or null for another CBLAS. */
  core: string | null;
}

let loaded: Blas | null = null;
let openLib: Lib | null = null;
let openmpBuild = false;
let poolThreads = 1;
let reason = "not loaded";
let tried = false;

function envBlas(): string | undefined {
  try {
    return Deno.env.get("LMPIPE_BLAS");
  } catch {
    return undefined; // no env permission: the automatic search
  }
}

function ffiAllowed(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/** Debian's netlib reference BLAS (installed under .../blas/) is slower than XNNPACK: not worth it. */
function isReferenceBlas(path: string): boolean {
  for (const dir of ["/usr/lib/x86_64-linux-gnu/", "/usr/lib/aarch64-linux-gnu/", "/usr/lib/"]) {
    try {
      const real = Deno.realPathSync(dir + path);
      return /\/blas\/libblas\.so/.test(real);
    } catch {
      // not in this directory
    }
  }
  return false;
}

function open(path: string): Lib {
  spinBriefly();
  return Deno.dlopen(path, SYMBOLS);
}

function wrap(lib: Lib, path: string): Blas {
  openLib = lib;
  openmpBuild = lib.symbols.openblas_get_parallel?.() === 2;
  const fn = lib.symbols.cblas_sgemm;
  const gemv = lib.symbols.cblas_sgemv ?? null;
  const corePtr = lib.symbols.openblas_get_corename?.() ?? null;
  const core = corePtr === null ? null : new Deno.UnsafePointerView(corePtr).getCString();
  const label = !lib.symbols.openblas_get_config
    ? `CBLAS sgemm (${path})`
    : `OpenBLAS sgemm (${core ?? "?"} kernels${openmpBuild ? ", OpenMP build: 1 thread" : ""})`;
  const blas: Blas = {
    path,
    label,
    calls: 0,
    core,
    sgemm(heap, transA, transB, M, N, K, a, b, c) {
      const at = heapPointers(heap, "blas.ts");
      blas.calls++;
      // A one-row or one-column product is a matrix-vector product, and OpenBLAS's sgemm does not notice:
      // sgemv reads the matrix 3-4x faster (the output head of a decoding step, [1, C] x [C, vocab]).
      // The vector side is contiguous either way: a [1, K] row, or a [K, 1] column stored as a row.
      if (gemv !== null && M === 1) {
        const [rows, cols] = transB ? [N, K] : [K, N]; // B as stored
        gemv(ROW_MAJOR, transB ? NO_TRANS : TRANS, rows, cols, 1, at(b), cols, at(a), 1, 0, at(c), 1);
        return;
      }
      if (gemv !== null && N === 1) {
        const [rows, cols] = transA ? [K, M] : [M, K]; // A as stored
        gemv(ROW_MAJOR, transA ? TRANS : NO_TRANS, rows, cols, 1, at(a), cols, at(b), 1, 0, at(c), 1);
        return;
      }
      fn(
        ROW_MAJOR,
        transA ? TRANS : NO_TRANS,
        transB ? TRANS : NO_TRANS,
        M,
        N,
        K,
        1,
        at(a),
        transA ? M : K,
        at(b),
        transB ? K : N,
        0,
        at(c),
        N,
      );
    },
  };
  return blas;
}

/**
 * Finds and opens the CBLAS library once ($LMPIPE_BLAS: "off", a library path, or unset for the
 * automatic search) and sets its thread pool to `threads` (the wasm thread count) on every call.
 * Returns the library, or null with blasStatus() saying why.
 */
export function loadBlas(threads: number): Blas | null {
  if (!tried) {
    tried = true;
    const env = envBlas();
    if (env === "off" || env === "0") {
      reason = "BLAS off (LMPIPE_BLAS=off)";
    } else if (typeof Deno.dlopen !== "function" || !ffiAllowed()) {
      reason = "no BLAS: needs --allow-ffi";
    } else if (env) {
      try {
        loaded = wrap(open(env), env);
      } catch (err) {
        const msg = (err instanceof Error ? err.message.split("\n")[0] : String(err))
          .replace(/^(Could not open library: )+/, "");
        reason = `no BLAS: LMPIPE_BLAS=${env} did not open (${msg}); set LMPIPE_BLAS to a CBLAS library ` +
          "with cblas_sgemm, or unset it";
      }
    } else {
      for (const name of CANDIDATES) {
        if (name === "libblas.so.3" && isReferenceBlas(name)) continue;
        try {
          loaded = wrap(open(name), name);
          break;
        } catch {
          // missing, or no cblas_sgemm: try the next
        }
      }
      if (!loaded) reason = "no BLAS found (apt-get install libopenblas0-pthread for faster matMuls)";
    }
  }
  // OpenBLAS's OpenMP build with 2 threads crashed Deno at exit in 6 of 43 runs (libgomp's workers
  // against process teardown, most likely; the pthread build: 0 of 30): it gets one thread.
  poolThreads = openmpBuild ? 1 : Math.max(1, threads);
  openLib?.symbols.openblas_set_num_threads?.(poolThreads);
  return loaded;
}

/** The threads loadBlas gave the library (1 for OpenBLAS's OpenMP build, see above). */
export function blasThreads(): number {
  return loaded ? poolThreads : 0;
}

/**
 * OpenBLAS's pthread build keeps its idle threads spinning for 2^28 cycles (~0.1 s) after each sgemm
 * before they sleep. On a machine whose cores lmpipe's other threads need (XNNPACK's pool, oneDNN's
 * OpenMP threads, lmpipe's kernel workers, the main thread) that spin takes a core away between matMuls:
 * an image model's elementwise ops ran 4-10x slower next to it. OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles,
 * the least OpenBLAS allows) makes them sleep at once; it is read when the library loads, so it is set
 * here, before the dlopen, unless the user set it.
 */
function spinBriefly(): void {
  try {
    if (Deno.env.get("OPENBLAS_THREAD_TIMEOUT") === undefined) Deno.env.set("OPENBLAS_THREAD_TIMEOUT", "4");
  } catch {
    // no env permission: OpenBLAS keeps its default
  }
}

/** The open library, if loadBlas() found one. */
export function currentBlas(): Blas | null {
  return loaded;
}

/** For the backend description: "OpenBLAS sgemm", or why there is none. */
export function blasStatus(): string {
  return loaded ? loaded.label : reason;
}
