// An optional oneDNN (libdnnl.so.2, the library PyTorch itself uses for CPU convolutions) for the wasm
// backend's convolutions: oneDNN's JIT conv kernels ran 5-15x faster per op than TF.js's wasm path here
// (issue 17). This module finds the library through Deno FFI, checks that it is oneDNN 2.x (whose C API
// takes fixed-size descriptor structs, laid out below; 3.x changed that API and is refused), creates
// the CPU engine and stream, and shares the cores with lmpipe's other threads (see loadDnnl).
// lib/tensor/ops/conv2d/dnnl.ts builds the convolution primitives on top. Nothing here may crash a run:
// no library, no FFI permission, a failed dlopen or a wrong version all mean "no oneDNN", with the
// reason in the backend description. LMPIPE_DNNL=off turns it off; LMPIPE_DNNL=PATH names the library;
// LMPIPE_DNNL_BF16=0 keeps its convs float32 under --precision bf16 (docs/precision.md). Its sgemm also takes
// the wasm matMuls (lib/tensor/kernel_choice.ts): on this VM's AVX-512 it ran 2-2.5x OpenBLAS's Haswell kernels
// on one thread and, on the same OpenMP threads as the convs, scaled 1.7-1.9x to two where OpenBLAS's
// pthreads gave 0.6-1.8x on the image models' shapes (bench/RESULTS.md); LMPIPE_DNNL_MATMUL=0 keeps
// them on OpenBLAS.

import type { Blas } from "./blas.ts";
import { heapPointers } from "./heap_pointer.ts";

/** Library names tried in order when $LMPIPE_DNNL does not name one (Debian's libdnnl2). */
const CANDIDATES = [
  "libdnnl.so.2",
  "/usr/lib/x86_64-linux-gnu/libdnnl.so.2",
  "/usr/lib/aarch64-linux-gnu/libdnnl.so.2",
];

// Sizes and constants of oneDNN 2.x's dnnl_types.h, printed by a C probe against oneDNN 2.6.3
// (sizeof / offsetof / enum values); loadDnnl checks the sizes it can against the library at startup.
/** sizeof(dnnl_memory_desc_t): ndims, dims[12], data_type, padded dims/offsets, offset0, format, extra. */
export const MEMORY_DESC_BYTES = 696;
/** sizeof(dnnl_convolution_desc_t); its last field, accum_data_type (int32), is at byte 5968. */
export const CONV_DESC_BYTES = 5976;
const CONV_DESC_ACCUM_OFFSET = 5968;
/** sizeof(dnnl_matmul_desc_t): primitive kind (padded to 8), 4 memory descs, accum_data_type (padded). */
export const MATMUL_DESC_BYTES = 2800;
/** sizeof(dnnl_exec_arg_t): int arg, 4 bytes padding, dnnl_memory_t memory. */
export const EXEC_ARG_BYTES = 16;
/** sizeof(dnnl_dims_t): 12 int64. */
export const DIMS_BYTES = 96;

export const DNNL = {
  success: 0,
  bf16: 2,
  f32: 3,
  tagAny: 1,
  nhwc: 20,
  hwio: 30,
  /** 1-D plain layout, for a bias. */
  tagA: 2,
  forwardTraining: 64,
  forwardInference: 96,
  /** Plain row-major 2-D layout. */
  tagAb: 3,
  /** dnnl_softmax_log: the log-softmax of softmax_v2. */
  softmaxLog: 0x30001,
  backwardData: 160,
  backwardWeights: 192,
  convolutionDirect: 1,
  primitiveConvolution: 5,
  primitiveMatmul: 18,
  queryImplInfoStr: 8,
  querySrcMd: 129,
  queryDiffSrcMd: 130,
  queryWeightsMd: 131,
  queryDiffWeightsMd: 132,
  queryDstMd: 133,
  queryDiffDstMd: 134,
  argSrc: 1,
  argDst: 17,
  argWeights: 33,
  argBias: 41,
  argDiffSrc: 129,
  argDiffDst: 145,
  argDiffWeights: 161,
  argDiffBias: 169,
  argFrom: 1,
  argTo: 17,
  engineCpu: 1,
  streamDefaultFlags: 1,
  runtimeOmp: 2,
} as const;

/** dnnl_status_t names for error messages (dnnl_types.h). */
const STATUS = [
  "success",
  "out_of_memory",
  "invalid_arguments",
  "unimplemented",
  "iterator_ends",
  "runtime_error",
  "not_required",
];

/**
 * Row-major sgemm: transa, transb ('N' or 'T'), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc. The two chars
 * go as i32: passed as i8 the register's upper bits were left as they were, and oneDNN now and then refused
 * the call (invalid_arguments); as i32 they are zero and the char is the low byte. Also opened by the wasm
 * kernels' threads (lib/tensor/wasm/row_gemm.ts).
 */
export const DNNL_SGEMM = {
  parameters: [
    "i32",
    "i32",
    "i64",
    "i64",
    "i64",
    "f32",
    "pointer",
    "i64",
    "pointer",
    "i64",
    "f32",
    "pointer",
    "i64",
  ],
  result: "i32",
} as const;

const SYMBOLS = {
  dnnl_version: { parameters: [], result: "pointer" },
  dnnl_engine_create: { parameters: ["buffer", "i32", "usize"], result: "i32" },
  dnnl_engine_destroy: { parameters: ["pointer"], result: "i32" },
  dnnl_stream_create: { parameters: ["buffer", "pointer", "u32"], result: "i32" },
  dnnl_stream_wait: { parameters: ["pointer"], result: "i32" },
  dnnl_stream_destroy: { parameters: ["pointer"], result: "i32" },
  dnnl_get_effective_cpu_isa: { parameters: [], result: "i32" },
  // md, ndims, dims, data_type, format_tag
  dnnl_memory_desc_init_by_tag: { parameters: ["buffer", "i32", "buffer", "i32", "i32"], result: "i32" },
  dnnl_memory_desc_equal: { parameters: ["pointer", "pointer"], result: "i32" },
  dnnl_memory_desc_get_size: { parameters: ["pointer"], result: "usize" },
  // desc, prop_kind, alg_kind, src, weights, bias, dst, strides, padding_l, padding_r
  dnnl_convolution_forward_desc_init: {
    parameters: [
      "buffer",
      "i32",
      "i32",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  // desc, alg_kind, diff_src, weights, diff_dst, strides, padding_l, padding_r
  dnnl_convolution_backward_data_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // desc, alg_kind, src, diff_weights, diff_bias, diff_dst, strides, padding_l, padding_r
  dnnl_convolution_backward_weights_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // out pd, op_desc, attr, engine, hint_forward_primitive_desc
  dnnl_primitive_desc_create: {
    parameters: ["buffer", "buffer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_desc_query_md: { parameters: ["pointer", "i32", "i32"], result: "pointer" },
  dnnl_primitive_desc_query: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
  dnnl_primitive_desc_destroy: { parameters: ["pointer"], result: "i32" },
  // out pd, src_md, src_engine, dst_md, dst_engine, attr
  dnnl_reorder_primitive_desc_create: {
    parameters: ["buffer", "pointer", "pointer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_create: { parameters: ["buffer", "pointer"], result: "i32" },
  // primitive, stream, nargs, args
  dnnl_primitive_execute: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  dnnl_primitive_destroy: { parameters: ["pointer"], result: "i32" },
  // out memory, md, engine, handle
  dnnl_memory_create: { parameters: ["buffer", "pointer", "pointer", "pointer"], result: "i32" },
  dnnl_memory_set_data_handle: { parameters: ["pointer", "pointer"], result: "i32" },
  dnnl_memory_destroy: { parameters: ["pointer"], result: "i32" },
  // md, ndims, dims, data_type, strides (lib/tensor/ops/matmul/dnnl.ts)
  dnnl_memory_desc_init_by_strides: {
    parameters: ["buffer", "i32", "buffer", "i32", "buffer"],
    result: "i32",
    optional: true,
  },
  // desc, src, weights, bias, dst (lib/tensor/ops/matmul/dnnl.ts)
  dnnl_matmul_desc_init: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
    optional: true,
  },
  // desc, prop_kind, alg_kind, src_desc, dst_desc, softmax_axis (lib/tensor/ops/softmax_rows/dnnl.ts)
  dnnl_softmax_v2_forward_desc_init: {
    parameters: ["buffer", "i32", "i32", "buffer", "buffer", "i32"],
    result: "i32",
    optional: true,
  },
  dnnl_sgemm: { ...DNNL_SGEMM, optional: true },
} as const;

export type DnnlSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** oneDNN's OpenMP runtime (libgomp, loaded by libdnnl): the thread count of its parallel regions. */
export const GOMP_SYMBOLS = {
  omp_set_num_threads: { parameters: ["i32"], result: "void" },
  omp_get_max_threads: { parameters: [], result: "i32" },
} as const;

export interface Dnnl {
  /** The library file that was opened. */
  path: string;
  /** e.g. "oneDNN 2.6.3 convs (avx512_core, OpenMP 2 threads)". */
  label: string;
  version: string;
  sym: DnnlSymbols;
  /** The CPU engine and its in-order stream. */
  engine: Deno.PointerValue;
  stream: Deno.PointerValue;
  /** Throws "oneDNN <what> failed: <status>" unless `status` is dnnl_success. */
  check(status: number, what: string): void;
  /** Sets oneDNN's OpenMP thread count (the shared thread budget). */
  setThreads(n: number): void;
  /** OpenMP's thread count for the next parallel region now (omp_get_max_threads; tests). */
  ompThreads(): number;
  /**
   * Whether oneDNN runs on OpenMP and its thread count can be set per calling thread (libgomp's
   * omp_set_num_threads): lib/tensor/wasm/row_gemm.ts runs one-thread sgemms on the wasm threads then.
   */
  openmp: boolean;
  /** Primitive executions so far (tests check that the oneDNN path ran). */
  calls: number;
  /** Of those, the ones on bfloat16 operands (lib/tensor/ops/conv2d/dnnl.ts's bf16 plans). */
  bf16Calls: number;
  /**
   * Whether bf16 convolutions may run: the CPU ISA oneDNN dispatches has native bfloat16 (avx512_core_bf16
   * or AMX) and LMPIPE_DNNL_BF16 is not "0". Elsewhere oneDNN would emulate bf16 or take reference code,
   * slower than its float32 kernels on the same (already rounded) values.
   */
  bf16: boolean;
  /** For the label: "bf16 convs" or why not. */
  bf16Status: string;
  /**
   * oneDNN's sgemm on the wasm heap (the Blas interface of lib/native/blas.ts: byte offsets into `heap`),
   * multithreaded on the same OpenMP threads as the convs; null where the library lacks dnnl_sgemm.
   */
  gemm: DnnlGemm | null;
}

/** dnnl_sgemm with lib/native/blas.ts's calling convention, and a count of its calls (tests). */
export interface DnnlGemm {
  calls: number;
  /** OpenMP's thread count during the last call (tests check the one-thread rule below). */
  lastThreads: number;
  sgemm: Blas["sgemm"];
}

/** sgemm's transa / transb: 'N' and 'T' (CHAR_N also lib/tensor/wasm/row_gemm.ts). */
export const CHAR_N = 78, CHAR_T = 84;

/**
 * Below this many multiply-adds (M*N*K) an sgemm runs on one OpenMP thread whatever the budget: waking a
 * sleeping (passive) OpenMP worker for each of an attention's 32 per-head slices [128x32]x[32x128] cost
 * more than the slice (the GPT eval profile at 2 threads: those matMuls 3-4x slower than on 1 thread;
 * bench/RESULTS.md, evaluation's second thread). 2^22 keeps the S preset's attention slices [256x64]x[64x256]
 * (exactly 2^22) on the budget as before. null (or LMPIPE_DNNL_GEMM_ONE_THREAD=0): every call on the
 * whole budget.
 */
let oneThreadBelow: number | null = env("LMPIPE_DNNL_GEMM_ONE_THREAD") === "0" ? null : 1 << 22;

/** For tests and benchmarks: the one-thread limit of oneDNN's sgemm (see above); returns the old one. */
export function setDnnlGemmOneThreadBelow(work: number | null): number | null {
  const old = oneThreadBelow;
  oneThreadBelow = work;
  return old;
}

/** C[M,N] = op(A) @ op(B) through dnnl_sgemm (row-major), A, B, C byte offsets into the wasm heap. */
function gemmOf(
  sym: DnnlSymbols,
  threads: () => number,
  setThreads: (n: number) => void,
  ompThreads: () => number,
): DnnlGemm | null {
  const fn = sym.dnnl_sgemm;
  if (!fn) return null;
  const gemm: DnnlGemm = {
    calls: 0,
    lastThreads: 0,
    sgemm(heap, transA, transB, M, N, K, a, b, c) {
      const at = heapPointers(heap, "dnnl.ts");
      gemm.calls++;
      const budget = threads();
      const alone = budget > 1 && oneThreadBelow !== null && M * N * K < oneThreadBelow;
      if (alone) setThreads(1);
      gemm.lastThreads = alone ? ompThreads() : budget;
      let status: number;
      try {
        status = fn(
          transA ? CHAR_T : CHAR_N,
          transB ? CHAR_T : CHAR_N,
          BigInt(M),
          BigInt(N),
          BigInt(K),
          1,
          at(a),
          BigInt(transA ? M : K),
          at(b),
          BigInt(transB ? K : N),
          0,
          at(c),
          BigInt(N),
        );
      } finally {
        if (alone) setThreads(budget);
      }
      if (status !== DNNL.success) {
        throw new Error(
          `oneDNN sgemm [${M}x${K}] x [${K}x${N}] (transA ${transA}, transB ${transB}, offsets ${a}, ${b}, ${c}) ` +
            `failed: ${statusName(status)}`,
        );
      }
    },
  };
  return gemm;
}

let loaded: Dnnl | null = null;
let reason = "not loaded";
let tried = false;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no env permission
  }
}

function ffiAllowed(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/** Reads a pointer written by a C function into an 8-byte out parameter. */
export function outPointer(buf: BigUint64Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(buf[0]);
}

function statusName(status: number): string {
  return STATUS[status] ?? `status ${status}`;
}

/**
 * The layout check the library allows: a memory descriptor and a convolution descriptor written by
 * oneDNN must end where dnnl_types.h (2.6) says, and no byte past them may be touched. Throws otherwise.
 */
function checkLayout(sym: DnnlSymbols): void {
  const guard = 64, sentinel = 0xa5;
  const md = new Uint8Array(MEMORY_DESC_BYTES + guard).fill(sentinel);
  const dims = new BigInt64Array([1n, 8n, 5n, 5n]);
  let st = sym.dnnl_memory_desc_init_by_tag(md, 4, dims, DNNL.f32, DNNL.nhwc);
  const size = Number(sym.dnnl_memory_desc_get_size(Deno.UnsafePointer.of(md)));
  const w = new Uint8Array(MEMORY_DESC_BYTES).fill(0);
  sym.dnnl_memory_desc_init_by_tag(w, 4, new BigInt64Array([8n, 8n, 3n, 3n]), DNNL.f32, DNNL.tagAny);
  const cd = new Uint8Array(CONV_DESC_BYTES + guard).fill(sentinel);
  const one = new BigInt64Array(12).fill(1n), pad = new BigInt64Array(12).fill(1n);
  if (st === DNNL.success) {
    st = sym.dnnl_convolution_forward_desc_init(
      cd,
      DNNL.forwardTraining,
      DNNL.convolutionDirect,
      md,
      w,
      null,
      md,
      one,
      pad,
      pad,
    );
  }
  const view = new DataView(cd.buffer);
  const ok = st === DNNL.success && size === 8 * 25 * 4 &&
    md.subarray(MEMORY_DESC_BYTES).every((b) => b === sentinel) &&
    cd.subarray(CONV_DESC_BYTES).every((b) => b === sentinel) &&
    view.getInt32(0, true) === DNNL.primitiveConvolution &&
    view.getInt32(CONV_DESC_ACCUM_OFFSET, true) === DNNL.f32;
  if (!ok) {
    throw new Error(
      "its descriptor structs do not have oneDNN 2.6's layout (memory desc 696 bytes, convolution desc 5976); " +
        "lib/native/dnnl.ts needs updating for this build",
    );
  }
}

function open(path: string, threads: number): Dnnl {
  const lib = Deno.dlopen(path, SYMBOLS);
  try {
    const sym = lib.symbols;
    const v = new Deno.UnsafePointerView(sym.dnnl_version()!);
    const [major, minor, patch, runtime] = [v.getInt32(0), v.getInt32(4), v.getInt32(8), v.getUint32(24)];
    const version = `${major}.${minor}.${patch}`;
    if (major !== 2) {
      throw new Error(
        `it is oneDNN ${version}; lmpipe speaks oneDNN 2.x's C API (3.x changed it): install libdnnl2 or ` +
          "set LMPIPE_DNNL to a 2.x libdnnl.so.2",
      );
    }
    checkLayout(sym);
    const check = (status: number, what: string) => {
      if (status !== DNNL.success) throw new Error(`oneDNN ${what} failed: ${statusName(status)}`);
    };
    const out = new BigUint64Array(1);
    check(sym.dnnl_engine_create(out, DNNL.engineCpu, 0n), "engine_create");
    const engine = outPointer(out);
    check(sym.dnnl_stream_create(out, engine, DNNL.streamDefaultFlags), "stream_create");
    const stream = outPointer(out);
    // oneDNN 2.x has no thread-count call for its OpenMP runtime: set it on libgomp, the same instance
    // libdnnl loaded (dlopen of an already loaded library returns it).
    let gomp: Deno.DynamicLibrary<typeof GOMP_SYMBOLS> | null = null;
    if (runtime === DNNL.runtimeOmp) {
      try {
        gomp = Deno.dlopen("libgomp.so.1", GOMP_SYMBOLS);
      } catch {
        gomp = null; // then OMP_NUM_THREADS (set by loadDnnl before the load) governs
      }
    }
    const isaValue = sym.dnnl_get_effective_cpu_isa();
    const isa = ISA_NAMES[isaValue] ?? "cpu";
    const bf16Isa = (isaValue & ISA_AVX512_CORE_BF16) === ISA_AVX512_CORE_BF16;
    const bf16Off = env("LMPIPE_DNNL_BF16") === "0";
    const bf16Status = !bf16Isa
      ? "bf16 convs: no (no avx512_core_bf16)"
      : bf16Off
      ? "bf16 convs: off (LMPIPE_DNNL_BF16=0)"
      : "bf16 convs for bf16 operands";
    let budget = 1; // the OpenMP thread budget, set by setThreads below
    const dnnl: Dnnl = {
      path,
      label: "",
      version,
      sym,
      engine,
      stream,
      check,
      calls: 0,
      bf16Calls: 0,
      bf16: bf16Isa && !bf16Off,
      bf16Status,
      gemm: gemmOf(sym, () => budget, (n) => gomp?.symbols.omp_set_num_threads(n), () => dnnl.ompThreads()),
      ompThreads: () => gomp ? gomp.symbols.omp_get_max_threads() : budget,
      openmp: gomp !== null,
      setThreads(n) {
        budget = Math.max(1, n);
        gomp?.symbols.omp_set_num_threads(Math.max(1, n));
        const t = gomp ? gomp.symbols.omp_get_max_threads() : n;
        const rt = runtime === DNNL.runtimeOmp
          ? `OpenMP ${t} thread${t === 1 ? "" : "s"}`
          : "runtime " + runtime;
        const what = dnnl.gemm && dnnlMatMulsWanted() ? "convs + sgemm" : "convs";
        dnnl.label = `oneDNN ${version} ${what} (${isa}, ${rt}, ${bf16Status})`;
      },
    };
    dnnl.setThreads(threads);
    return dnnl;
  } catch (err) {
    lib.close();
    throw err;
  }
}

/** Whether wasm matMuls may go to oneDNN's sgemm: LMPIPE_DNNL_MATMUL is not "0" (lib/tensor/kernel_choice.ts). */
export function dnnlMatMulsWanted(): boolean {
  return env("LMPIPE_DNNL_MATMUL") !== "0";
}

/** dnnl_cpu_isa_t's avx512_core_bf16: a bit mask that AMX's value contains too. */
const ISA_AVX512_CORE_BF16 = 231;

/** dnnl_cpu_isa_t values (dnnl_types.h 2.6) to names, for the backend description. */
const ISA_NAMES: Record<number, string> = {
  0: "all",
  1: "sse41",
  3: "avx",
  7: "avx2",
  15: "avx512_mic",
  31: "avx512_mic_4ops",
  39: "avx512_core",
  103: "avx512_core_vnni",
  231: "avx512_core_bf16",
  999: "avx512_core_amx",
  1031: "avx2_vnni",
};

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message.split("\n")[0] : String(err))
    .replace(/^(Could not open library: )+/, "");
}

/** Why a dlopen failed, with the fix when it is the OpenCL loader libdnnl2 links against. */
function explainOpenFailure(path: string, err: unknown): string {
  const msg = firstLine(err);
  if (/libOpenCL\.so\.1/.test(msg)) {
    return `${path} did not load: it needs libOpenCL.so.1 at load time (${msg}); apt-get install ocl-icd-libopencl1`;
  }
  return msg.includes(path) ? msg : `${path}: ${msg}`;
}

/**
 * Finds and opens oneDNN once ($LMPIPE_DNNL: "off", a library path, or unset for the automatic search)
 * and sets its OpenMP thread count to `threads` (the wasm thread count: one thread budget for oneDNN,
 * OpenBLAS and lmpipe's wasm workers, which never run at the same time). Before the library loads,
 * OMP_WAIT_POLICY is set to passive unless set already: OpenMP's idle workers otherwise spin on the
 * cores that lmpipe's wasm workers need next. Returns the library, or null with dnnlStatus() saying why.
 */
export function loadDnnl(threads: number): Dnnl | null {
  if (!tried) {
    tried = true;
    const given = env("LMPIPE_DNNL");
    if (given === "off" || given === "0") {
      reason = "oneDNN off (LMPIPE_DNNL=off)";
    } else if (typeof Deno.dlopen !== "function" || !ffiAllowed()) {
      reason = "no oneDNN: needs --allow-ffi";
    } else {
      try {
        if (env("OMP_WAIT_POLICY") === undefined) Deno.env.set("OMP_WAIT_POLICY", "passive");
        if (env("OMP_NUM_THREADS") === undefined) {
          Deno.env.set("OMP_NUM_THREADS", String(Math.max(1, threads)));
        }
      } catch {
        // no env permission: OpenMP's defaults
      }
      const failures: string[] = [];
      for (const path of given ? [given] : CANDIDATES) {
        try {
          loaded = open(path, threads);
          break;
        } catch (err) {
          failures.push(
            err instanceof Error && /^it /.test(err.message)
              ? `${path}: ${err.message}`
              : explainOpenFailure(path, err),
          );
          if (!/cannot open shared object file: No such file/.test(failures[failures.length - 1])) break;
        }
      }
      if (!loaded) {
        const missing = failures.every((f) => /No such file/.test(f));
        reason = given
          ? `no oneDNN: LMPIPE_DNNL=${given}: ${failures[0]}`
          : missing
          ? "no oneDNN found (apt-get install libdnnl2 for faster convolutions)"
          : `no oneDNN: ${failures[failures.length - 1]}`;
      }
    }
  }
  // LMPIPE_DNNL_THREADS overrides the shared budget for oneDNN alone (for measuring how the threads share)
  const own = Number(env("LMPIPE_DNNL_THREADS"));
  loaded?.setThreads(Number.isInteger(own) && own >= 1 ? own : threads);
  return loaded;
}

/** The open library, if loadDnnl() found one. */
export function currentDnnl(): Dnnl | null {
  return loaded;
}

/** For the backend description: "oneDNN 2.6.3 convs (...)", or why there is none. */
export function dnnlStatus(): string {
  return loaded ? loaded.label : reason;
}
