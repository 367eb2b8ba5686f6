// Cheaper per-dispatch host work on webgpu. Every compute dispatch (TF.js's programs and lmpipe's kernels)
// goes through WebGPUBackend.recordAndSubmit, which in TF.js 4.22 takes a uniform buffer from the pool,
// writes the dispatch's uniforms into it (one queue.writeBuffer each), asks the pipeline for its bind group
// layout and creates a bind group. This replacement packs the uniforms of all dispatches of a submit batch
// into one uniform buffer (slots at the device's uniform offset alignment), written with ONE writeBuffer
// just before the batch is submitted, and asks each pipeline for its layout once. The bind group itself
// is still created per dispatch: caching it per (pipeline, buffers) was tried and hit ~5% of dispatches,
// because TF.js's buffer pool hands a step's tensors different buffers every step (bench/webgpu_host.ts
// measures the host time per dispatch). A batch whose uniforms outgrow the buffer, timed dispatches
// (activeTimers, bench/webgpu_audit.ts --measure) and texture bindings take TF.js's own path.
// LMPIPE_WEBGPU_UNIFORM_ARENA=0 turns it off.
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import * as tf from "@tensorflow/tfjs-core";
import { switchOn } from "../env_switch.ts";

// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type Uniform = { type: string; data: number[] };

/** Bytes of the per-batch uniform buffer (a batch is 15 dispatches by default: a few KiB). */
const ARENA_BYTES = 1 << 16;
let arenaBytes = ARENA_BYTES;

/** For tests: a uniform arena of `bytes` (null: the default), so that a batch can outgrow it. */
export function setUniformArenaBytesForTests(bytes: number | null): void {
  arenaBytes = bytes ?? ARENA_BYTES;
}

let enabled = switchOn("LMPIPE_WEBGPU_UNIFORM_ARENA");

/** Turns the shared uniform buffer on or off for this process (tests compare both). */
export function setUniformArenaEnabled(on: boolean): void {
  enabled = on;
}

/** Dispatches recorded through the arena, through TF.js's path, and arena writes, so far. */
export const uniformArenaStats = { arena: 0, fallbacks: 0, writes: 0 };

/**
 * The bytes of a uniform struct whose fields are `fields` in order, laid out as WGSL lays out the struct
 * TF.js declares for them: scalars 4-byte aligned, 2-vectors 8, 3- to 4-vectors 16; 5- and 6-long shapes are
 * TF.js's own 16-aligned types, and a field after one of those starts 16-aligned too; the size is rounded
 * up to the largest alignment. int32/uint32/float32 values as their type.
 */
export function packUniforms(fields: Uniform[]): ArrayBuffer {
  const offsets: number[] = [];
  let end = 0, maxAlign = 1, prevLen = 0;
  for (const f of fields) {
    const len = f.data.length === 0 ? 1 : f.data.length;
    if (len > 6) throw new Error(`webgpu uniforms: a field of ${len} values is not supported (at most 6)`);
    let align = len === 1 ? 4 : len === 2 ? 8 : 16;
    if (prevLen === 5 || prevLen === 6) align = 16;
    maxAlign = Math.max(maxAlign, align);
    end = Math.ceil(end / align) * align;
    offsets.push(end);
    end += len * 4;
    prevLen = len;
  }
  const bytes = new ArrayBuffer(Math.ceil(end / maxAlign) * maxAlign);
  const view = new DataView(bytes);
  fields.forEach((f, i) => {
    const data = f.data.length === 0 ? [1] : f.data;
    data.forEach((v, j) => {
      const at = offsets[i] + 4 * j;
      if (f.type === "int32") view.setInt32(at, v, true);
      else if (f.type === "uint32") view.setUint32(at, v, true);
      else view.setFloat32(at, v, true);
    });
  });
  return bytes;
}

/** The uniforms recordAndSubmit gives a program (TF.js 4.22's order), for non-pixel programs. */
function programUniforms(
  program: GpuBackend,
  output: tf.TensorInfo,
  inputs: tf.TensorInfo[],
  own?: Uniform[],
) {
  const fields: Uniform[] = [{ type: "float32", data: [NaN] }, { type: "float32", data: [Infinity] }];
  for (const t of [...inputs, output]) {
    fields.push({ type: "int32", data: t.shape }, { type: "int32", data: tf.util.computeStrides(t.shape) });
  }
  if (program.size) {
    const size = tf.util.sizeFromShape(program.outputShape);
    fields.push({ type: "int32", data: [program.outputComponent ? size / program.outputComponent : size] });
  }
  return own ? [...fields, ...own] : fields;
}

/** One backend's uniform arena: the GPU buffer, its CPU copy, and the bytes used by the open batch. */
interface Arena {
  buffer: GPUBuffer;
  bytes: Uint8Array;
  used: number;
  align: number;
}

const layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();

function layoutOf(pipeline: GPUComputePipeline): GPUBindGroupLayout {
  let l = layouts.get(pipeline);
  if (!l) layouts.set(pipeline, l = pipeline.getBindGroupLayout(0));
  return l;
}

function arenaOf(backend: GpuBackend): Arena {
  let a: Arena | undefined = backend.__lmpipeArena;
  if (a && a.used === 0 && a.bytes.length !== arenaBytes) a.buffer.destroy(), a = undefined;
  if (!a) {
    const device = backend.device as GPUDevice;
    a = {
      buffer: device.createBuffer({
        size: arenaBytes,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      }),
      bytes: new Uint8Array(arenaBytes),
      used: 0,
      align: device.limits.minUniformBufferOffsetAlignment,
    };
    backend.__lmpipeArena = a;
  }
  return a;
}

/** Installs the arena recordAndSubmit and the submit that writes the arena first on WebGPUBackend (once). */
export function installUniformArena(): void {
  const proto = WebGPUBackend.prototype as GpuBackend;
  if (proto.__lmpipeUniformArena) return;
  const original = proto.recordAndSubmit;
  const submit = proto.submitQueue;
  proto.submitQueue = function (this: GpuBackend, ...args: unknown[]) {
    const a: Arena | undefined = this.__lmpipeArena;
    if (a && a.used > 0) {
      // lands before the batch's commands; an earlier batch already submitted read its own values
      this.queue.writeBuffer(a.buffer, 0, a.bytes, 0, a.used);
      a.used = 0;
      uniformArenaStats.writes++;
    }
    return submit.apply(this, args);
  };
  proto.recordAndSubmit = function (
    this: GpuBackend,
    program: GpuBackend,
    output: tf.TensorInfo,
    inputs: tf.TensorInfo[],
    own?: Uniform[],
  ) {
    if (!enabled || program.pixelsOpType != null || this.activeTimers != null) {
      uniformArenaStats.fallbacks++;
      return original.call(this, program, output, inputs, own);
    }
    const bindings: GPUBufferBinding[] = []; // whole buffers, or the byte ranges ops/matmul binds
    for (const t of [output, ...inputs]) {
      const r = this.tensorToBinding(t);
      if (!(r?.buffer instanceof GPUBuffer)) {
        uniformArenaStats.fallbacks++;
        return original.call(this, program, output, inputs, own);
      }
      bindings.push(r);
    }
    const packed = new Uint8Array(packUniforms(programUniforms(program, output, inputs, own)));
    const a = arenaOf(this);
    const offset = Math.ceil(a.used / a.align) * a.align;
    if (offset + packed.length > a.bytes.length) {
      uniformArenaStats.fallbacks++;
      return original.call(this, program, output, inputs, own);
    }
    a.bytes.fill(0, a.used, offset); // the padding too: a recorded step's writes must not carry stale bytes
    a.bytes.set(packed, offset);
    a.used = offset + packed.length;
    uniformArenaStats.arena++;
    const entries: GPUBindGroupEntry[] = bindings.map((resource, i) => ({ binding: i, resource }));
    entries.push({ binding: bindings.length, resource: { buffer: a.buffer, offset, size: packed.length } });
    const bindGroup = this.device.createBindGroup({ layout: layoutOf(program.pipeline), entries });
    for (const t of inputs) this.commandQueueOwnedIds.add(t.dataId);
    this.commandQueueOwnedIds.add(output.dataId);
    this.ensureCommandEncoderReady();
    if (!this.computePassEncoder) this.computePassEncoder = this.commandEncoder.beginComputePass({});
    this.computePassEncoder.setPipeline(program.pipeline);
    this.computePassEncoder.setBindGroup(0, bindGroup);
    this.computePassEncoder.dispatchWorkgroups(program.dispatch[0], program.dispatch[1], program.dispatch[2]);
    this.dispatchCountInPass++;
    if ((tf.env().get("WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE") as number) <= this.dispatchCountInPass) {
      this.endComputePassEncoder();
      this.submitQueue();
    }
  };
  proto.__lmpipeUniformArena = true;
}
