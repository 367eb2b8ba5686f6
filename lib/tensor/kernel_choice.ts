// Which implementation of an op runs on each backend, decided here and nowhere else: lmpipe's own
// kernels (ops/<op>/, wasm/kernels.ts, webgpu/), a native library (lib/native/), or TF.js's stock
// kernels and op chains. Each op asks kernelFor(op) and runs what it names; docs/kernels.md explains
// the table and how to force each implementation for benchmarking.
//
// The rule is the order of TABLE: for an op on a backend, the first implementation whose `active()`
// holds runs; the last of each row is always available. A new kernel adds one implementation to its
// op's row (or a new row), with the file that holds it, why it wins and the switch that turns it off.
// The switches' state stays beside the kernels that obey them (wasm/kernels.ts setWasmKernelsEnabled,
// webgpu/kernels.ts setFusedKernelsEnabled, lib/native/blas.ts loadBlas), so no kernel imports this file
// back except to ask.
import * as tf from "@tensorflow/tfjs-core";
import { type Blas, blasThreads, currentBlas } from "../native/blas.ts";
import { wasmKernelsActive, wasmKernelThreads } from "./wasm/kernels.ts";
import { fusedKernelsActive } from "./webgpu/kernels.ts";
import { GELU_EXACT_KERNEL, GELU_KERNEL, LAYER_NORM_KERNEL, SOFTMAX_ROWS_KERNEL } from "./kernel_names.ts";
import { currentDnnl, type DnnlGemm, dnnlMatMulsWanted } from "../native/dnnl.ts";
import { ownMatMulEnabled } from "./ops/matmul/webgpu.ts";
import { dnnlMatMulAvailable } from "./ops/matmul/dnnl.ts";
import { wasmImageNormEnabled } from "./ops/image_norm/wasm.ts";
import { avgPoolEnabled } from "./ops/global_pool/wasm.ts";
import { round16Enabled } from "./ops/round16/wasm.ts";
import { switchOn } from "./env_switch.ts";

/** One way to compute an op on a backend. */
export interface Implementation {
  /** Short name callers compare against: "lmpipe", "blas", "tfjs", "ops", ... */
  name: string;
  /** Where it lives. */
  file: string;
  /**
   * Whether it runs now; `work` is the op's size where the choice depends on it (matMul: M*K*N), `rows`
   * its output's rows where that matters too (matMulBias: M).
   */
  active: (work: number, rows?: number) => boolean;
  /** Why it is preferred over the ones after it. */
  why: string;
}

/** An op on a backend and its implementations, most preferred first. */
export interface KernelChoice {
  op: string;
  backend: string;
  implementations: Implementation[];
  /** How to force the choice (environment variables), for benchmarking. */
  force: string;
}

// With a CBLAS library, sgemm matched or beat XNNPACK at every size measured from 16x16x16 up
// (bench/blas_matmul.ts); below blasMinWork multiply-adds per batch slice call overhead dominates.
let blasMinWork = 4096;

// oneDNN convolutions run whenever lib/native/dnnl.ts loaded the library; tests and bench/pixel.ts turn
// them off to compare against TF.js's kernels in one process.
let dnnlConvs = true;

// Wasm matMuls go to oneDNN's sgemm when the library is loaded and has one, unless LMPIPE_DNNL_MATMUL=0; tests
// and benchmarks turn it off to reach OpenBLAS or XNNPACK in one process.
let dnnlMatMuls = dnnlMatMulsWanted();

/** For tests and benchmarks: route wasm matMuls to oneDNN's sgemm (when loaded) or not; returns the old setting. */
export function setDnnlMatMuls(on: boolean): boolean {
  const old = dnnlMatMuls;
  dnnlMatMuls = on;
  return old;
}

// True batches of wasm matMuls go whole to oneDNN's matmul primitive (ops/matmul/dnnl.ts) unless
// LMPIPE_DNNL_BATCHED=0; benchmarks turn it off to time the per-slice sgemms in one process.
let dnnlBatched = switchOn("LMPIPE_DNNL_BATCHED");

/** For tests and benchmarks: true batches on oneDNN's matmul primitive or per slice; returns the old setting. */
export function setDnnlBatchedMatMuls(on: boolean): boolean {
  const old = dnnlBatched;
  dnnlBatched = on;
  return old;
}

// Linear layers outside a tape run as row jobs of the wasm threads on one-thread sgemms (ops/matmul/dnnl.ts
// LmpipeMatMulBiasRows) unless LMPIPE_DNNL_ROW_JOBS=0; benchmarks compare both in one process.
let dnnlRowJobs = switchOn("LMPIPE_DNNL_ROW_JOBS");

/** For tests and benchmarks: linear layers as row jobs of the wasm threads or not; returns the old setting. */
export function setDnnlRowJobs(on: boolean): boolean {
  const old = dnnlRowJobs;
  dnnlRowJobs = on;
  return old;
}

/**
 * Below these sizes a linear layer stays on the matmul primitive: a row job's pieces want at least
 * ROW_JOB_MIN_ROWS rows a thread, and a product under ROW_JOB_MIN_WORK multiply-adds is too small to share.
 */
const ROW_JOB_MIN_ROWS = 32, ROW_JOB_MIN_WORK = 1 << 21;

/**
 * Whether a product of `work` multiply-adds and `rows` output rows may run as a row job of the wasm
 * threads: oneDNN on OpenMP (its thread count set per thread), more than one wasm thread.
 */
function dnnlRowJob(work: number, rows = Number.POSITIVE_INFINITY): boolean {
  const threads = wasmKernelThreads();
  return dnnlRowJobs && threads > 1 && wasmKernelsActive() && dnnlGemm() !== null &&
    currentDnnl()?.openmp === true && work >= ROW_JOB_MIN_WORK && rows >= ROW_JOB_MIN_ROWS * threads;
}

/** Whether a wasm product of `work` multiply-adds may run on oneDNN's matmul primitive now. */
function dnnlMatMulPrimitive(work: number): boolean {
  return dnnlBatched && dnnlGemm() !== null && dnnlMatMulAvailable() && work >= blasMinWork;
}

/** oneDNN's sgemm when wasm matMuls may run on it now. */
function dnnlGemm(): DnnlGemm | null {
  return dnnlMatMuls ? currentDnnl()?.gemm ?? null : null;
}

/** For tests and benchmarks: route wasm convolutions to oneDNN (when loaded) or not; returns the old setting. */
export function setDnnlConvs(on: boolean): boolean {
  const old = dnnlConvs;
  dnnlConvs = on;
  return old;
}

// Evaluation's loss statistics (softmaxStatsAtTargets) go to oneDNN's log-softmax, in place, from this many
// logits up (a primitive per shape costs ~1 ms to build; the loss's chunks are [512, 50304]); null turns it
// off (LMPIPE_DNNL_SOFTMAX=0 at start; tests and benchmarks through setDnnlSoftmaxMin).
let dnnlSoftmaxMin: number | null = switchOn("LMPIPE_DNNL_SOFTMAX") ? 1 << 20 : null;

/** For tests and benchmarks: oneDNN's log-softmax from `work` logits up, or never (null); returns the old limit. */
export function setDnnlSoftmaxMin(work: number | null): number | null {
  const old = dnnlSoftmaxMin;
  dnnlSoftmaxMin = work;
  return old;
}

/** Whether the loaded oneDNN offers softmax_v2 (oneDNN 2.6 and later 2.x). */
function dnnlSoftmaxAvailable(): boolean {
  return currentDnnl()?.sym.dnnl_softmax_v2_forward_desc_init != null;
}

// oneDNN's bf16 convolutions (bf16 operands, float32 sums and output) for operands that hold bfloat16 values
// (--precision bf16), where the library found a CPU with native bf16 and LMPIPE_DNNL_BF16 is not 0
// (lib/native/dnnl.ts); tests and benchmarks turn them off to compare with the float32 convs.
let dnnlBf16Convs = true;

/** For tests and benchmarks: allow oneDNN's bf16 convs (where available) or not; returns the old setting. */
export function setDnnlBf16Convs(on: boolean): boolean {
  const old = dnnlBf16Convs;
  dnnlBf16Convs = on;
  return old;
}

// The one-row products of a cached decoding step (lib/tensor/ops/gemv/wasm.ts) go to BLAS's sgemv from
// this many multiply-adds up, to lmpipe's gemv kernels below (see the gemv row of TABLE). null: the measured
// rule (bench/RESULTS.md, cached decoding): on one thread the kernels were faster at every size (the head
// 1.1x, the block's linears 1.3-2.6x: FFI and OpenBLAS's own overhead); with more threads sgemv's own
// threads read the output head 1.4x faster than the kernels' threads, so products from 2^20 up (the
// head; no linear of a small model) go to BLAS then.
let gemvBlasMinWork: number | null = null;

function gemvBlasMin(): number {
  return gemvBlasMinWork ?? (blasThreads() > 1 ? 1 << 20 : Infinity);
}

/**
 * Sets the smallest K*N of a decoding step's one-row product that goes to BLAS (null: the measured rule
 * above); returns the previous setting.
 */
export function setGemvBlasMinWork(n: number | null): number | null {
  const prev = gemvBlasMinWork;
  gemvBlasMinWork = n;
  return prev;
}

/** Sets the smallest M*K*N (per batch slice) that goes to BLAS; returns the previous value. */
export function setBlasMinWork(n: number): number {
  const prev = blasMinWork;
  blasMinWork = n;
  return prev;
}

const always = () => true;

/** The op chain, always available: the reference the kernels are tested against. */
function opChain(file: string): Implementation {
  return {
    name: "ops",
    file,
    active: always,
    why: "TF.js op chain: the reference the kernels are tested against",
  };
}

/** A row where lmpipe's wasm SIMD kernel in `file` (run by wasm/kernels.ts) runs unless switched off. */
function wasmRow(op: string, file: string, opChainFile: string, force = ""): KernelChoice {
  const own: Implementation = {
    name: "lmpipe",
    file,
    active: () => wasmKernelsActive(),
    why: "one multithreaded SIMD pass where TF.js runs several single-threaded kernels",
  };
  return {
    op,
    backend: "wasm",
    implementations: [own, opChain(opChainFile)],
    force: "LMPIPE_WASM_FUSED=0 runs the op chain" + force,
  };
}

/**
 * A row where lmpipe's WGSL kernel runs while the fused kernels are on; `kernel` names a TF.js kernel
 * that must also be registered (tests unregister some to compare).
 */
function webgpuRow(op: string, file: string, opChainFile: string, kernel?: string, force = ""): KernelChoice {
  const own: Implementation = {
    name: "lmpipe",
    file,
    active: () =>
      fusedKernelsActive() && (kernel === undefined || tf.getKernel(kernel, "webgpu") !== undefined),
    why: "one or two dispatches where TF.js's op chain launches one per op",
  };
  return {
    op,
    backend: "webgpu",
    implementations: [own, opChain(opChainFile)],
    force: "LMPIPE_WEBGPU_FUSED=0 runs the op chain" + force,
  };
}

// lmpipe's implicit-GEMM convs on webgpu (lib/tensor/ops/conv2d/webgpu.ts) and its flash attention
// (lib/tensor/ops/attention/webgpu.ts): on with the other webgpu kernels, unless LMPIPE_WEBGPU_CONV=0 or
// LMPIPE_WEBGPU_ATTENTION=0 (then TF.js's stock Conv2D and Conv2DBackpropInput and the filter gradient of
// ops/conv2d/mod.ts run, or attention's op chain with its fused causal softmax). LMPIPE_WEBGPU_FUSED=0
// turns both off too.
let webgpuConvOn = switchOn("LMPIPE_WEBGPU_CONV");
let webgpuAttentionOn = switchOn("LMPIPE_WEBGPU_ATTENTION");

/** Turns lmpipe's webgpu convs on or off for this process (tests and benchmarks compare both). */
export function setWebgpuConvEnabled(on: boolean): void {
  webgpuConvOn = on;
}

/** Turns lmpipe's webgpu flash attention on or off for this process. */
export function setWebgpuAttentionEnabled(on: boolean): void {
  webgpuAttentionOn = on;
}

// lmpipe's causal attention kernel on wasm (lib/tensor/ops/attention/wasm.ts): on with lmpipe's wasm kernels,
// unless LMPIPE_WASM_ATTENTION=0 (then the split, transposes, matMuls and softmax of the op chain run).
let wasmAttentionOn = switchOn("LMPIPE_WASM_ATTENTION");

/** Turns lmpipe's wasm attention kernel on or off for this process (tests, benchmarks); returns the old state. */
export function setWasmAttentionEnabled(on: boolean): boolean {
  const old = wasmAttentionOn;
  wasmAttentionOn = on;
  return old;
}

// lmpipe's cached decoding step for gpt on wasm (lib/models/gpt_decode.ts): on with lmpipe's wasm kernels,
// unless LMPIPE_WASM_DECODE=0 (then decodeStep's TF.js op chain runs every token).
let wasmDecodeOn = switchOn("LMPIPE_WASM_DECODE");

/** Turns lmpipe's wasm decoding step on or off for this process (tests and bench/decode.ts compare both). */
export function setWasmDecodeEnabled(on: boolean): boolean {
  const old = wasmDecodeOn;
  wasmDecodeOn = on;
  return old;
}

// The decoding step's bounded 16-bit integer head (lib/models/gpt_decode_head.ts) for a sampler that draws from
// the top k, unless LMPIPE_DECODE_INT16_HEAD=0 (then every step reads the whole float32 head).
let decodeInt16HeadOn = switchOn("LMPIPE_DECODE_INT16_HEAD");

/** Turns the decoding step's integer head on or off for this process (tests, bench/decode.ts); returns the old setting. */
export function setDecodeInt16Head(on: boolean): boolean {
  const old = decodeInt16HeadOn;
  decodeInt16HeadOn = on;
  return old;
}

const FUSED_OPTION = "; AdamW's `fused: false` option";

/** The rule. Each row: an op on a backend, implementations in priority order. */
export const TABLE: KernelChoice[] = [
  {
    op: "matMul",
    backend: "wasm",
    implementations: [
      {
        name: "dnnl",
        file: "lib/native/dnnl.ts via lib/tensor/ops/matmul/wasm.ts",
        active: (work) => dnnlGemm() !== null && work >= blasMinWork,
        why: "oneDNN's sgemm on the wasm heap: 2-2.5x OpenBLAS's Haswell kernels on AVX-512, and on the " +
          "convs' OpenMP threads it scales to 2 threads where OpenBLAS's pthreads often do not (products " +
          "under 2^22 multiply-adds on one thread: lib/native/dnnl.ts setDnnlGemmOneThreadBelow)",
      },
      {
        name: "blas",
        file: "lib/native/blas.ts via lib/tensor/ops/matmul/wasm.ts",
        active: (work) => currentBlas() !== null && work >= blasMinWork,
        why: "OpenBLAS sgemm on the wasm heap: 3-4x XNNPACK, transposes as flags",
      },
      {
        name: "lmpipe",
        file: "lib/tensor/ops/matmul/wasm.ts",
        active: always,
        why: "every matMul reshaped onto XNNPACK's fast 2-D path (TF.js's own loop is 10x slower otherwise)",
      },
    ],
    force:
      "LMPIPE_DNNL_MATMUL=0 or LMPIPE_DNNL=off; LMPIPE_BLAS=off (or a library path); setDnnlMatMuls and " +
      "setBlasMinWork for tests and bench/blas_matmul.ts; LMPIPE_DNNL_GEMM_ONE_THREAD=0 runs small oneDNN " +
      "sgemms on the whole thread budget",
  },
  {
    op: "batchMatMul",
    backend: "wasm",
    implementations: [
      {
        name: "dnnl-matmul",
        file: "lib/tensor/ops/matmul/dnnl.ts via lib/tensor/ops/matmul/wasm.ts",
        active: dnnlMatMulPrimitive,
        why: "a true batch (attention's per-head products) in one call of oneDNN's matmul primitive, its " +
          "slices shared over the OpenMP threads: 1.0-1.6x the per-slice sgemms on one thread, 1.7-2.3x on " +
          "two, where each slice alone was too small to share (bench/batched_matmul.ts)",
      },
      {
        name: "matMul",
        file: "lib/tensor/ops/matmul/wasm.ts",
        active: always,
        why: "one product per batch slice, on what the matMul row chooses for the slice's size",
      },
    ],
    force: "LMPIPE_DNNL_BATCHED=0 (or LMPIPE_DNNL_MATMUL=0, LMPIPE_DNNL=off); setDnnlBatchedMatMuls for " +
      "tests and bench/batched_matmul.ts",
  },
  {
    op: "matMulBias",
    backend: "wasm",
    implementations: [
      {
        name: "dnnl-rows",
        file:
          "lib/tensor/ops/matmul/dnnl.ts via lib/tensor/ops/matmul/bias.ts and lib/tensor/wasm/row_gemm.ts",
        active: dnnlRowJob,
        why: "outside a gradient tape on more than one thread, a linear layer's rows shared by the wasm " +
          "threads as they share the LayerNorm's and the GELU's, each on a one-thread oneDNN sgemm",
      },
      {
        name: "dnnl-matmul",
        file: "lib/tensor/ops/matmul/dnnl.ts via lib/tensor/ops/matmul/bias.ts",
        active: dnnlMatMulPrimitive,
        why:
          "outside a gradient tape, a linear layer's product and bias in one oneDNN matmul primitive call, " +
          "the bias added as the product is written, where the op chain adds it in TF.js's one-thread Add " +
          "over the whole output (bench/batched_matmul.ts)",
      },
      {
        name: "ops",
        file: "lib/tensor/ops/matmul/bias.ts",
        active: always,
        why: "the product (the matMul row's choice), then an Add: the numbers and the tape of training",
      },
    ],
    force: "LMPIPE_DNNL_ROW_JOBS=0 keeps the primitive; LMPIPE_DNNL_BATCHED=0 (or LMPIPE_DNNL_MATMUL=0, " +
      "LMPIPE_DNNL=off) runs the op chain; setDnnlRowJobs and setDnnlBatchedMatMuls for tests",
  },
  {
    op: "conv2d",
    backend: "wasm",
    implementations: [
      {
        name: "dnnl-bf16",
        file: "lib/native/dnnl.ts via lib/tensor/ops/conv2d/dnnl.ts",
        active: () => dnnlConvs && dnnlBf16Convs && currentDnnl()?.bf16 === true,
        why: "oneDNN's bf16 convolutions (avx512_core_bf16/AMX, float32 sums and output) for a call whose " +
          "operands both hold bfloat16 values (lib/tensor/bf16_values.ts: --precision bf16); other calls " +
          "take the float32 oneDNN convs below",
      },
      {
        name: "dnnl",
        file: "lib/native/dnnl.ts via lib/tensor/ops/conv2d/dnnl.ts",
        active: () => dnnlConvs && currentDnnl() !== null,
        why: "oneDNN's direct convolutions (forward and both gradients), multithreaded, no im2col copy",
      },
      {
        name: "lmpipe",
        file: "lib/tensor/ops/conv2d/wasm.ts",
        active: always,
        why: "TF.js's XNNPACK forward; gradients by chunked im2col/col2im on the wasm heap",
      },
    ],
    force: "LMPIPE_DNNL=off (or a library path); LMPIPE_DNNL_BF16=0 keeps them float32; setDnnlConvs and " +
      "setDnnlBf16Convs for tests and bench/pixel.ts --dnnl",
  },
  {
    op: "matMul",
    backend: "webgpu",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/matmul/webgpu.ts",
        active: () => ownMatMulEnabled(),
        why: "register-tiled GEMM (128/64/32 tiles, deterministic split-K, fused bias/activation/residual " +
          "epilogue): TF.js's stock kernel ran at 3-6% of the card's fp32 rate",
      },
      {
        name: "tfjs",
        file: "lib/tensor/ops/matmul/webgpu.ts (its wrapper calls the stock BatchMatMul / _FusedMatMul)",
        active: always,
        why: "TF.js's stock kernel; also taken for inputs the GEMM does not handle",
      },
    ],
    force: "LMPIPE_WEBGPU_MATMUL=0 runs TF.js's stock kernel; setOwnMatMulEnabled for tests and bench/gpu",
  },
  wasmRow(
    "softmaxRows",
    "lib/tensor/ops/softmax_rows/wasm.ts",
    "lib/tensor/ops/softmax_rows/mod.ts",
    "; LMPIPE_WASM_RELAXED=0 keeps the kernel but takes its build without relaxed SIMD (no fused multiply-adds)",
  ),
  {
    op: "softmaxStats",
    backend: "wasm",
    implementations: [
      {
        name: "dnnl",
        file: "lib/native/dnnl.ts via lib/tensor/ops/softmax_rows/dnnl.ts",
        active: (work) => dnnlSoftmaxMin !== null && work >= dnnlSoftmaxMin && dnnlSoftmaxAvailable(),
        why: "oneDNN's AVX-512 log-softmax in place on OpenMP threads: 1.05-1.4x the wasm kernel per call " +
          "on [512, 50304], 1 and 2 threads (bench/RESULTS.md)",
      },
      {
        name: "lmpipe",
        file: "lib/tensor/ops/softmax_rows/wasm.ts",
        active: () => wasmKernelsActive(),
        why: "the softmax rows kernel without e: no [rows, cols] write",
      },
      opChain("lib/tensor/ops/softmax_rows/mod.ts"),
    ],
    force:
      "LMPIPE_DNNL=off or LMPIPE_DNNL_SOFTMAX=0 for the wasm kernel; LMPIPE_WASM_FUSED=0 also for the op " +
      "chain; setDnnlSoftmaxMin",
  },
  wasmRow("layerNorm", "lib/tensor/ops/layer_norm/wasm.ts", "lib/tensor/ops/layer_norm/mod.ts"),
  wasmRow("causalSoftmax", "lib/tensor/ops/causal_softmax/wasm.ts", "lib/tensor/ops/causal_softmax/mod.ts"),
  wasmRow("gelu", "lib/tensor/ops/gelu/wasm.ts", "lib/tensor/ops/gelu/mod.ts"),
  wasmRow(
    "geluExact",
    "lib/tensor/ops/gelu/wasm.ts (kernels.wat erf)",
    "lib/tensor/ops/gelu/mod.ts geluExact",
  ),
  wasmRow("adamW", "lib/tensor/wasm/kernels.ts", "lib/optim.ts", FUSED_OPTION),
  wasmRow("sumSquares", "lib/tensor/wasm/kernels.ts", "lib/optim.ts"),
  {
    op: "causalAttentionFromQkv",
    backend: "wasm",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/attention/wasm.ts (kernels.wat attn_fwd)",
        active: () => wasmAttentionOn && wasmKernelsActive(),
        why: "gpt's evaluation forward in one multithreaded pass over the fused projection, where the op " +
          "chain runs a split, 4 transposes, 2 batched matMuls, a scale and a causal softmax per layer",
      },
      opChain("lib/tensor/ops/attention/mod.ts"),
    ],
    force:
      "LMPIPE_WASM_ATTENTION=0 (or LMPIPE_WASM_FUSED=0) runs the op chain; setWasmAttentionEnabled for " +
      "tests and benchmarks",
  },
  {
    op: "gemv",
    backend: "wasm",
    implementations: [
      {
        name: "blas",
        file: "lib/native/blas.ts via lib/tensor/ops/gemv/wasm.ts",
        active: (work) => currentBlas() !== null && work >= gemvBlasMin(),
        why: "OpenBLAS sgemv on its own threads: the output head when BLAS has more than one thread",
      },
      {
        name: "lmpipe",
        file: "lib/tensor/ops/gemv/wasm.ts (kernels.wat gemv_rows, gemv_cols)",
        active: always,
        why: "SIMD loops called directly: faster than sgemv through FFI on one thread at every size of a " +
          "decoding step, and for the block's small linears on any (bench/RESULTS.md, cached decoding)",
      },
    ],
    force: "setGemvBlasMinWork for tests; bench/decode.ts --gemv-blas-min N",
  },
  {
    op: "cachedDecode",
    backend: "wasm",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/models/gpt_decode.ts (matrix-vector products: lib/tensor/ops/gemv/wasm.ts)",
        active: () => wasmDecodeOn && wasmKernelsActive(),
        why: "a whole token as direct kernel calls on the weights where they lie and a preallocated " +
          "key/value cache: no TF.js op (~170 a token on a 4-layer model), no concat, no tensor",
      },
      opChain("lib/models/gpt.ts (decodeStep)"),
    ],
    force: "LMPIPE_WASM_DECODE=0 (or LMPIPE_WASM_FUSED=0) runs decodeStep's op chain; setWasmDecodeEnabled " +
      "for tests and bench/decode.ts",
  },
  {
    op: "decodeHead",
    backend: "wasm",
    implementations: [
      {
        name: "int16",
        file: "lib/models/gpt_decode_head.ts (kernels.wat q16_head, gemv_bound_q16)",
        active: (work) =>
          decodeInt16HeadOn && wasmKernelsActive() && kernelFor("gemv", "wasm", work) === "lmpipe",
        why:
          "for top-k sampling: the head read as 16-bit integers (half the bytes and arithmetic of the step's " +
          "largest product, by i32x4.dot_i16x8_s) with a " +
          "proven bound per logit, then only the rows that can be in the top k by gemv_rows, so the same " +
          "tokens; where the head goes to BLAS (threads) its sgemv's rounding could not be matched row by row",
      },
      {
        name: "f32",
        file: "lib/tensor/ops/gemv/wasm.ts (headRow)",
        active: always,
        why: "every logit in float32: sampling from all tokens, the bound undecided (too many candidates, " +
          "weights not finite), or decodeStep's logits",
      },
    ],
    force:
      "LMPIPE_DECODE_INT16_HEAD=0 (or LMPIPE_WASM_FUSED=0) reads the whole float32 head; setDecodeInt16Head " +
      "for tests and bench/decode.ts --paths",
  },
  webgpuRow(
    "softmaxRows",
    "lib/tensor/ops/softmax_rows/webgpu.ts",
    "lib/tensor/ops/softmax_rows/mod.ts",
    SOFTMAX_ROWS_KERNEL,
  ),
  webgpuRow(
    "layerNorm",
    "lib/tensor/ops/layer_norm/webgpu.ts",
    "lib/tensor/ops/layer_norm/mod.ts",
    LAYER_NORM_KERNEL,
  ),
  webgpuRow("gelu", "lib/tensor/ops/gelu/webgpu.ts", "lib/tensor/ops/gelu/mod.ts", GELU_KERNEL),
  webgpuRow(
    "geluExact",
    "lib/tensor/ops/gelu/webgpu.ts",
    "lib/tensor/ops/gelu/mod.ts geluExact",
    GELU_EXACT_KERNEL,
  ),
  webgpuRow(
    "causalSoftmax",
    "lib/tensor/ops/causal_softmax/webgpu.ts",
    "lib/tensor/ops/causal_softmax/mod.ts",
  ),
  {
    op: "conv2d",
    backend: "webgpu",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/conv2d/webgpu.ts",
        active: () => webgpuConvOn && fusedKernelsActive(),
        why:
          "implicit GEMM (no im2col buffer), deterministic split-K for the filter gradient, f16 operands " +
          "under --precision mixed: TF.js's stock conv and its filter gradient are far slower",
      },
      {
        name: "tfjs",
        file:
          "lib/tensor/patches/webgpu.ts (TF.js's Conv2D, Conv2DBackpropInput; ops/conv2d/mod.ts's filter gradient)",
        active: always,
        why: "TF.js's stock kernels, with the filter gradient composed from matMuls",
      },
    ],
    force: "LMPIPE_WEBGPU_CONV=0 (or LMPIPE_WEBGPU_FUSED=0); setWebgpuConvEnabled for tests and benchmarks",
  },
  {
    op: "imageNorm",
    backend: "webgpu",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/image_norm/webgpu.ts",
        active: () => webgpuConvOn && fusedKernelsActive(),
        why:
          "norm + ReLU in one dispatch each way (one workgroup per image) where the op chain takes ~10 and ~14",
      },
      opChain("lib/tensor/ops/image_norm/mod.ts"),
    ],
    force: "goes with the conv kernels: LMPIPE_WEBGPU_CONV=0 (or LMPIPE_WEBGPU_FUSED=0) runs the op chain",
  },
  {
    op: "imageNorm",
    backend: "wasm",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/image_norm/wasm.ts",
        active: () => wasmImageNormEnabled() && wasmKernelsActive(),
        why:
          "norm + channel affine + ReLU in one multithreaded SIMD job each way, any H, W, C; the channel " +
          "gradients summed in the kernel",
      },
      {
        name: "layerNorm",
        file: "lib/tensor/ops/layer_norm/wasm.ts via lib/tensor/ops/image_norm/mod.ts",
        active: () => wasmKernelsActive(),
        why: "the LayerNorm kernel over rows of H·W·C (a multiple of 4) with g, b tiled, then TF.js's Relu",
      },
      opChain("lib/tensor/ops/image_norm/mod.ts"),
    ],
    force: "LMPIPE_WASM_IMAGE_NORM=0 runs the LayerNorm path, LMPIPE_WASM_FUSED=0 the op chain; " +
      "setWasmImageNormEnabled for tests and benchmarks",
  },
  {
    op: "globalAvgPool",
    backend: "wasm",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/global_pool/wasm.ts (kernels.wat image_means)",
        active: () => avgPoolEnabled() && wasmKernelsActive(),
        why: "per-image float64 means on all wasm threads; the gradient a threaded broadcast copy, where " +
          "AvgPool and its gradient's Multiply run on one thread",
      },
      {
        name: "avgPool",
        file: "lib/tensor/ops/global_pool/wasm.ts",
        active: () => avgPoolEnabled(),
        why:
          "TF.js's AvgPool (XNNPACK, NHWC in place) with one window per image: ~10x faster than its Mean, " +
          "which transposes first; the Mean's gradient",
      },
      opChain("lib/tensor/ops/global_pool/mod.ts"),
    ],
    force:
      "LMPIPE_WASM_FUSED=0 runs AvgPool; LMPIPE_WASM_AVGPOOL=0 runs tf.mean; setAvgPoolEnabled for tests",
  },
  {
    op: "causalAttention",
    backend: "webgpu",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/attention/webgpu.ts",
        active: () => webgpuAttentionOn && fusedKernelsActive(),
        why: "flash attention: scores never stored, memory O(T) per row block instead of O(T^2)",
      },
      opChain("lib/tensor/ops/attention/mod.ts"),
    ],
    force: "LMPIPE_WEBGPU_ATTENTION=0 (or LMPIPE_WEBGPU_FUSED=0); setWebgpuAttentionEnabled for tests",
  },
  webgpuRow("adamW", "lib/tensor/webgpu/kernels.ts", "lib/optim.ts", undefined, FUSED_OPTION),
  webgpuRow("sumSquares", "lib/tensor/webgpu/kernels.ts", "lib/optim.ts"),
  webgpuRow("toHalf", "lib/tensor/webgpu/kernels.ts", "lib/precision.ts"),
  webgpuRow("toBf16", "lib/tensor/webgpu/kernels.ts", "lib/precision.ts"),
  roundingRow("toHalf"),
  roundingRow("toBf16"),
];

/** Rounding to a 16-bit type on wasm (lib/precision.ts): one pass on the bits, or the op chain. */
function roundingRow(op: string): KernelChoice {
  return {
    op,
    backend: "wasm",
    implementations: [
      {
        name: "lmpipe",
        file: "lib/tensor/ops/round16/wasm.ts",
        active: () => round16Enabled() && wasmKernelsActive(),
        why: "one pass over the values' bits where the op chain runs 14-19 single-threaded TF.js kernels",
      },
      opChain("lib/precision.ts"),
    ],
    force: "LMPIPE_WASM_ROUND16=0 (or LMPIPE_WASM_FUSED=0) runs the op chain",
  };
}

/**
 * The name of the implementation of `op` that runs now on `backend` (default: the current one):
 * "ops" (or "tfjs") where the table has no row for the pair.
 *
 * @example
 * if (kernelFor("gelu") === "lmpipe") return geluByKernels(x); // else the op chain
 */
export function kernelFor(
  op: string,
  backend: string = tf.getBackend(),
  work = 0,
  rows = Number.POSITIVE_INFINITY,
): string {
  const row = TABLE.find((r) => r.op === op && r.backend === backend);
  if (!row) return "ops";
  for (const impl of row.implementations) if (impl.active(work, rows)) return impl.name;
  return row.implementations[row.implementations.length - 1].name;
}

/**
 * The native sgemm to run a wasm matMul of `work` = M*K*N multiply-adds per slice with (oneDNN's or the
 * BLAS library's, by the matMul row of TABLE), or null for XNNPACK.
 */
export function sgemmForMatMul(work: number): Pick<Blas, "sgemm"> | null {
  const choice = kernelFor("matMul", "wasm", work);
  return choice === "dnnl" ? dnnlGemm() : choice === "blas" ? currentBlas() : null;
}

/** The BLAS library to run a decoding step's one-row product of `work` = K*N multiply-adds with, or null. */
export function blasForGemv(work: number): Blas | null {
  return kernelFor("gemv", "wasm", work) === "blas" ? currentBlas() : null;
}

/**
 * Whether float32 matMuls with transposed operands cost no more than plain ones on the current
 * backend, so that a materialised transpose is pure overhead: wasm with a BLAS library (the flags go to
 * sgemm), and webgpu with lmpipe's GEMM (every transpose combination is its own shader; on an H200 the
 * tied head's h . W^T took 0.68 ms against 0.64 ms for h . W^T made beforehand, which also cost a 77 MB
 * transpose). Elsewhere callers keep their explicit, reused transposes.
 */
export function transposedMatMulsAreFree(): boolean {
  const backend = tf.getBackend();
  if (backend === "webgpu") return kernelFor("matMul", "webgpu") === "lmpipe";
  return backend === "wasm" && (currentBlas() !== null || dnnlGemm() !== null) && blasMinWork <= 1 << 20;
}

// Real f16 under --precision mixed (lib/train_loop.ts turns it on for a mixed run): where the GPU offers
// shader-f16, lmpipe's conv and attention kernels round every operand to binary16 as they load it
// (roundToHalf in lib/tensor/webgpu/wgsl.ts, the rule of lib/precision.ts toHalf) and hold the tiles in workgroup
// memory as f16; products and sums stay f32. Other webgpu kernels and backends keep the emulation.
let halfOperands = false;

/** Turns binary16 operands for lmpipe's webgpu conv and attention kernels on or off (see above). */
export function setWebgpuHalfOperands(on: boolean): void {
  halfOperands = on;
}

/** Whether the kernels of `device` load their operands as f16: switched on and shader-f16 offered. */
export function webgpuHalfOperands(device: GPUDevice): boolean {
  return halfOperands && device.features.has("shader-f16");
}
