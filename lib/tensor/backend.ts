// Picks and starts the TF.js tensor backend for every lmpipe command, so that models and the engine
// never touch backend set-up: `tf` exported here has gradients registered and the fixes of
// patches/ applied, and initBackend() can be called again to switch backends within one process
// (tests compare each backend with `cpu` in-process).
import "@tensorflow/tfjs"; // side effect: registers the gradients (tfjs-core's node build under Deno does not)
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import * as wasmBackend from "@tensorflow/tfjs-backend-wasm";
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { applyPatches } from "./patches/mod.ts";
import "./ops/matmul/webgpu.ts"; // wraps webgpu's BatchMatMul / _FusedMatMul with lmpipe's GEMM
import { installWebgpuConvKernels } from "./ops/conv2d/webgpu.ts";
import { enableWasmThreads } from "./wasm/threads.ts";
import { blasStatus, loadBlas } from "../native/blas.ts";
import { dnnlStatus, loadDnnl } from "../native/dnnl.ts";
import { registerDnnlConvKernels } from "./ops/conv2d/dnnl.ts";
import { startWasmKernels } from "./wasm/kernels.ts";
import { LmpipeError, usageError } from "../errors.ts";
import { info, warn } from "../log.ts";

export { tf };

export type BackendName = "auto" | "webgpu" | "tensorflow" | "wasm" | "cpu";
export const BACKEND_NAMES: readonly BackendName[] = ["auto", "webgpu", "tensorflow", "wasm", "cpu"];

export interface BackendInfo {
  name: Exclude<BackendName, "auto">;
  /**
   * Human-readable device, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" or "WebAssembly SIMD, 2 threads,
   * OpenBLAS sgemm" (wasm names its matMul path: lib/native/blas.ts).
   */
  device: string;
  threads?: number;
  /** The WebGPU device was created with the shader-f16 feature. */
  f16?: boolean;
}

export interface InitOptions {
  /**
   * wasm threads (default: $LMPIPE_WASM_THREADS, else 2 when the machine has at least 2 cores). Fixed
   * once wasm has started in a process.
   */
  threads?: number;
  /** Do not print the chosen backend to stderr. */
  quiet?: boolean;
}

/** Install instructions for the optional native backend, shown when it is requested but missing. */
export const TENSORFLOW_INSTALL_HELP =
  "The 'tensorflow' backend needs @tensorflow/tfjs-node-gpu (CUDA) or @tensorflow/tfjs-node (CPU), " +
  "which lmpipe does not bundle. On a compute node with CUDA 11.2 and cuDNN 8.1 (tfjs-node-gpu 4.22 " +
  "downloads libtensorflow 2.9.1 at install time, so the node needs network access once):\n" +
  '  1. add to deno.json "imports": "@tensorflow/tfjs-node-gpu": "npm:@tensorflow/tfjs-node-gpu@4.22.0"\n' +
  "  2. run: deno install --allow-scripts=npm:@tensorflow/tfjs-node-gpu\n" +
  "     (or, with npm in the project folder: npm i @tensorflow/tfjs-node-gpu@4.22.0)\n" +
  "Use @tensorflow/tfjs-node@4.22.0 the same way for the CPU-only build. On machines with newer CUDA " +
  "(12/13), use --backend webgpu instead.";

const wasmDist = new URL("../../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url);

let fixesApplied = false;
let wasmConfigured = false;
let gpuAdapter: GPUAdapter | null | undefined; // undefined = not probed yet
let webgpuF16 = false;
let tensorflowLoaded: string | null = null;

function ensureFixes(): void {
  if (fixesApplied) return;
  applyPatches();
  installWebgpuConvKernels(); // after the patches: their webgpu filter gradient becomes the fallback
  fixesApplied = true;
}

/** The one WebGPU adapter of this process (requested once and cached), or null when there is none. */
export async function getGpuAdapter(): Promise<GPUAdapter | null> {
  if (gpuAdapter !== undefined) return gpuAdapter;
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return gpuAdapter = null;
  // Mesa's Vulkan loader complains on stderr when XDG_RUNTIME_DIR is unset (headless nodes, CI).
  try {
    if (!Deno.env.get("XDG_RUNTIME_DIR")) {
      const dir = `/tmp/lmpipe-xdg-${Deno.uid() ?? "user"}`;
      Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      Deno.env.set("XDG_RUNTIME_DIR", dir);
    }
  } catch {
    // no env permission: the warning is harmless
  }
  try {
    gpuAdapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch {
    gpuAdapter = null;
  }
  return gpuAdapter;
}

/** A description of the adapter: the driver's description, else vendor/architecture/device. */
export function describeAdapter(adapter: GPUAdapter): string {
  const i = adapter.info;
  const parts = i.description ? [i.description] : [i.vendor, i.architecture, i.device].filter((s) => s);
  return parts.join(" ") || "unknown GPU";
}

/** Whether the adapter is a CPU emulation (fallback adapter, Mesa llvmpipe/lavapipe, SwiftShader). */
export function isSoftwareAdapter(adapter: GPUAdapter): boolean {
  const i = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const legacy = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  if (i.isFallbackAdapter || legacy) return true;
  // Mesa's software rasterisers report PCI vendor id 0x10005 (65541); SwiftShader uses Google's 0x1ae0
  // with a "SwiftShader" description.
  if (i.vendor === "65541" || i.vendor?.toLowerCase() === "0x10005" || i.vendor?.toLowerCase() === "mesa") {
    return true;
  }
  const text = `${i.vendor} ${i.architecture} ${i.device} ${i.description}`;
  return /llvmpipe|lavapipe|softpipe|swiftshader|software/i.test(text);
}

/**
 * Threads for XNNPACK's pool (TF.js's own wasm kernels) out of `threads`: $LMPIPE_XNNPACK_THREADS, else one
 * when a BLAS library takes the matMuls. What is left to XNNPACK then is elementwise work that is small per
 * op, where handing half of it to a pool thread costs more than it saves, and pool threads that have just
 * worked spin on the second core against OpenBLAS's, oneDNN's and lmpipe's threads: with a pool of 2 an
 * image model's Multiply and Relu ran 4-13x slower than with 1 (bench/RESULTS.md).
 */
function poolThreadsFor(threads: number): number {
  const env = Number(Deno.env.get("LMPIPE_XNNPACK_THREADS"));
  if (Number.isInteger(env) && env >= 1) return Math.min(env, threads);
  return loadBlas(threads) ? 1 : threads;
}

function configureWasm(threads: number): void {
  if (wasmConfigured) return;
  wasmBackend.setWasmPaths(Deno.realPathSync(wasmDist) + "/");
  if (threads > 1) enableWasmThreads(threads, poolThreadsFor(threads));
  wasmConfigured = true;
}

/**
 * Replaces TF.js's own webgpu factory (registered at import with the highest priority, and requesting
 * a fresh adapter each time) with one that uses this process's cached adapter, asks for the adapter's
 * full buffer limits (and shader-f16 when offered), and has the lowest priority: code that never calls
 * initBackend must not land on a GPU (or Mesa's slow software one) by accident.
 */
function registerWebGPU(): void {
  if (tf.findBackendFactory("webgpu")) tf.removeBackend("webgpu");
  tf.registerBackend("webgpu", async () => {
    const adapter = await getGpuAdapter();
    if (!adapter) throw new Error("no WebGPU adapter");
    const features: GPUFeatureName[] = [];
    for (const f of ["timestamp-query", "bgra8unorm-storage", "shader-f16"] as GPUFeatureName[]) {
      if (adapter.features.has(f)) features.push(f);
    }
    const l = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures: features,
      requiredLimits: {
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage, // more tensors per sum of squares
      },
    });
    webgpuF16 = device.features.has("shader-f16");
    // deno-lint-ignore no-explicit-any
    return new WebGPUBackend(device, adapter.info as any);
  }, 0);
}
registerWebGPU();
ensureFixes(); // also for code that uses `tf` before (or without) initBackend

/** Why each native TF package did not load, when one was found but failed (e.g. a missing libcudnn). */
const tensorflowFailures: string[] = [];

/** Tries to load the native TF backend; returns the package that loaded, or null. */
async function loadTensorflow(): Promise<string | null> {
  if (tensorflowLoaded) return tensorflowLoaded;
  tensorflowFailures.length = 0;
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      const spec = pkg; // a variable keeps Deno from resolving it when lmpipe is loaded
      await import(spec);
      if (tf.findBackendFactory("tensorflow")) return tensorflowLoaded = pkg;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      // An unmapped bare specifier means "not installed"; anything else is a broken install.
      if (!/not a dependency|Relative import path|Cannot find|not found/i.test(msg)) {
        tensorflowFailures.push(`${pkg}: ${msg.split("\n")[0]}`);
      }
    }
  }
  return null;
}

async function activate(name: string): Promise<void> {
  const ok = await tf.setBackend(name);
  if (!ok) throw new LmpipeError(`could not start the '${name}' TF.js backend`);
  await tf.ready();
  // The cpu backend greets Node users with a banner recommending tfjs-node on first use: not for us.
  const cpu = tf.findBackend("cpu") as unknown as { firstUse?: boolean } | null;
  if (cpu) cpu.firstUse = false;
}

/**
 * Starts backend `name` (or picks one for "auto": webgpu on a hardware GPU, then tensorflow when
 * installed, else wasm) and makes it current. Safe to call repeatedly to switch backends.
 */
export async function initBackend(name: BackendName, opts: InitOptions = {}): Promise<BackendInfo> {
  if (!BACKEND_NAMES.includes(name)) {
    throw usageError(`unknown backend '${name}': use one of ${BACKEND_NAMES.join(", ")}`);
  }
  ensureFixes();
  let chosen: Exclude<BackendName, "auto">;
  if (name === "auto") {
    const adapter = await getGpuAdapter();
    if (adapter && !isSoftwareAdapter(adapter)) chosen = "webgpu";
    else if (await loadTensorflow()) chosen = "tensorflow";
    else chosen = "wasm";
  } else {
    chosen = name;
  }

  let result: BackendInfo;
  if (chosen === "cpu") {
    await activate("cpu");
    result = { name: "cpu", device: "JavaScript (single thread)" };
  } else if (chosen === "wasm") {
    const startedBefore = wasmConfigured;
    const want = opts.threads ?? defaultThreads();
    configureWasm(want);
    await activate("wasm");
    const threads = wasmBackend.getThreadsCount();
    if (startedBefore && opts.threads !== undefined && opts.threads !== threads && !opts.quiet) {
      warn(`wasm started earlier in this process with ${threads} thread(s); ${opts.threads} requested now`);
    }
    loadBlas(threads); // big float32 matMuls go to a CBLAS sgemm when one is found (ops/matmul/wasm.ts)
    if (loadDnnl(threads)) registerDnnlConvKernels(); // convolutions on oneDNN when found (ops/conv2d)
    await startWasmKernels(); // lmpipe's own wasm kernels and their worker threads (wasm/kernels.ts)
    result = {
      name: "wasm",
      device: `WebAssembly SIMD, ${threads} thread${
        threads === 1 ? "" : "s"
      }, ${blasStatus()}, ${dnnlStatus()}`,
      threads,
    };
  } else if (chosen === "webgpu") {
    const adapter = await getGpuAdapter();
    if (!adapter) {
      throw new LmpipeError(
        "--backend webgpu: no WebGPU adapter found (navigator.gpu.requestAdapter() returned null). " +
          "Check that a Vulkan driver is installed (e.g. the GPU vendor's driver, or Mesa's software " +
          "driver: apt-get install mesa-vulkan-drivers libvulkan1), or use --backend wasm.",
      );
    }
    await activate("webgpu");
    const soft = isSoftwareAdapter(adapter) ? " [software]" : "";
    result = { name: "webgpu", device: describeAdapter(adapter) + soft, f16: webgpuF16 };
  } else {
    const pkg = await loadTensorflow();
    if (!pkg) {
      const why = tensorflowFailures.length > 0
        ? `installed but failed to load:\n  ${tensorflowFailures.join("\n  ")}`
        : "not installed.";
      throw usageError(`--backend tensorflow: ${why}\n${TENSORFLOW_INSTALL_HELP}`);
    }
    await activate("tensorflow");
    result = { name: "tensorflow", device: pkg };
  }
  if (!opts.quiet) info(`backend: ${result.name} (${result.device})`);
  return result;
}

/** wasm threads when not given: $LMPIPE_WASM_THREADS, else 2 where there are at least 2 cores. */
function defaultThreads(): number {
  let env: string | undefined;
  try {
    env = Deno.env.get("LMPIPE_WASM_THREADS");
  } catch {
    env = undefined; // no env permission
  }
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1) {
      throw usageError(`LMPIPE_WASM_THREADS=${env}: expected a whole number of threads >= 1`);
    }
    return n;
  }
  // 2 threads made a tiny GPT training step ~25% faster on a quiet 2-core machine, but slower on one
  // busy with other work, where XNNPACK's pool waits on occupied cores (bench/RESULTS.md): set
  // LMPIPE_WASM_THREADS=1 there.
  return Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1));
}

/** Reads a scalar back to the host (async: webgpu under Deno cannot dataSync). */
export async function readScalar(t: tf.Tensor): Promise<number> {
  const d = await t.data();
  if (d.length !== 1) throw new LmpipeError(`readScalar: expected one value, got shape [${t.shape}]`);
  return Number(d[0]);
}

/** Reads a tensor's values back to the host. */
export async function readData(t: tf.Tensor): Promise<Float32Array | Int32Array | Uint8Array> {
  return await t.data() as Float32Array | Int32Array | Uint8Array;
}
