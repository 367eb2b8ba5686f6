// Fixes to TF.js 4.22 on the webgpu backend:
//   - AddN with 8 or more inputs sums only the first 7 -> summed in groups;
//   - any tensor over the storage-buffer binding limit (webgpu/limits.ts) reads or writes garbage ->
//     a clear error, checked in runWebGPUProgram, which every TF.js webgpu kernel goes through;
//   - synchronous reads fail with an obscure canvas error under Deno -> a message saying what to do;
//   - Conv2DBackpropFilter at ~0.01 GFLOP/s -> composed from ops (ops/conv2d/mod.ts);
//   - a uniform buffer taken from the pool and written per dispatch -> one per submit batch (webgpu/record.ts).
import * as tf from "@tensorflow/tfjs-core";
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { type AnyBackend, type KernelFn, replaceKernel, type TensorInfo } from "../host_kernel.ts";
import { tensorBytes, webgpuMaxTensorBytes } from "../webgpu/limits.ts";
import { conv2DBackpropFilterByOps } from "../ops/conv2d/mod.ts";
import { installUniformArena } from "../webgpu/record.ts";

// --- AddN on webgpu (8 or more inputs: only the first 7 are summed) ---------------------------
// WebGPU allows 8 storage buffers per shader stage by default: 7 inputs + the output. Sum in groups.
const WEBGPU_ADDN_MAX = 7;

function addNGrouped(orig: KernelFn): KernelFn {
  return (args) => {
    const ts = args.inputs as TensorInfo[];
    if (ts.length <= WEBGPU_ADDN_MAX) return orig(args);
    let acc = orig({ ...args, inputs: ts.slice(0, WEBGPU_ADDN_MAX) }) as TensorInfo;
    for (let i = WEBGPU_ADDN_MAX; i < ts.length; i += WEBGPU_ADDN_MAX - 1) {
      const next = orig({ ...args, inputs: [acc, ...ts.slice(i, i + WEBGPU_ADDN_MAX - 1)] }) as TensorInfo;
      args.backend.disposeData(acc.dataId);
      acc = next;
    }
    return acc;
  };
}

function guardWebGPUPrograms(): void {
  const proto = WebGPUBackend.prototype as AnyBackend;
  if (proto.__lmpipeGuarded) return;
  const run = proto.runWebGPUProgram;
  proto.runWebGPUProgram = function (
    this: AnyBackend,
    program: AnyBackend,
    inputs: TensorInfo[],
    outputDtype: string,
    uniforms?: unknown,
    output?: TensorInfo,
  ) {
    const limit = webgpuMaxTensorBytes(this);
    const outShape: number[] = output?.shape ?? program.outputShape;
    const check = (what: string, shape: number[], dtype: string) => {
      const bytes = tensorBytes(shape, dtype);
      if (bytes > limit) {
        throw new Error(
          `webgpu: ${what} of ${program.constructor?.name ?? "a kernel"} has shape [${shape}] ` +
            `(${(bytes / 2 ** 20).toFixed(1)} MiB), over this GPU's storage-buffer binding limit of ` +
            `${(limit / 2 ** 20).toFixed(1)} MiB; TF.js would return garbage. Split the work into ` +
            `smaller pieces (e.g. rows of the output head: see maxRowsPerChunk in lib/nn.ts) ` +
            `or use a smaller batch.`,
        );
      }
    };
    check("the output", outShape, output?.dtype ?? outputDtype);
    inputs.forEach((t, i) => check(`input ${i}`, t.shape, t.dtype));
    return run.call(this, program, inputs, outputDtype, uniforms, output);
  };
  proto.__lmpipeGuarded = true;
}

// webgpu under Deno cannot read GPU data synchronously: TF.js's readSync draws through a canvas that
// Deno does not have and fails with "Cannot read properties of null (reading 'clearRect')".
export const WEBGPU_SYNC_READ_MESSAGE =
  "webgpu under Deno cannot read tensors synchronously (dataSync, arraySync, bufferSync): use " +
  "`await t.data()` / `await t.array()`, or readData/readScalar from lib/tensor/backend.ts";

function explainWebGPUSyncReads(): void {
  const proto = WebGPUBackend.prototype as AnyBackend;
  if (proto.__lmpipeReadSync) return;
  const readSync = proto.readSync;
  proto.readSync = function (this: AnyBackend, dataId: unknown) {
    try {
      return readSync.call(this, dataId);
    } catch (err) {
      if (/clearRect|getContext|OffscreenCanvas/.test(String(err))) throw new Error(WEBGPU_SYNC_READ_MESSAGE);
      throw err;
    }
  };
  proto.__lmpipeReadSync = true;
}

/**
 * How many rows of a [rows, cols] float32 result fit in one webgpu buffer binding (Infinity on other
 * backends); at least 1. Use it to size the row chunks of a large output head.

/** Registers the webgpu fixes above; once. */
export function applyWebGPUPatches(): void {
  if (tf.getKernel(tf.AddN, "webgpu")) {
    replaceKernel(tf.AddN, "webgpu", (orig) => addNGrouped(orig!));
    replaceKernel(tf.Conv2DBackpropFilter, "webgpu", (orig) => conv2DBackpropFilterByOps(orig!));
  }
  guardWebGPUPrograms();
  explainWebGPUSyncReads();
  installUniformArena();
}
