// Record a training step's GPU work once, then replay it without TF.js. On a GPU a webgpu training step is
// bound by host time: ~105 us of JavaScript per dispatch (TF.js's engine, bind groups, uniforms) over ~550
// dispatches, where the GPU's own share is a fraction of that (docs/gpu.md). A replayed step issues the
// same queue operations as the recorded one (uniform writes, then per submit its compute passes:
// pipeline, bind groups, dispatch sizes, copies) on the same buffers, so it computes exactly what the
// recorded step computed, bit for bit, at a few Deno calls per dispatch.
//
// What makes that sound:
//   - Every buffer the recorded step touched is kept out of TF.js's buffer pool for as long as the plan
//     lives (temporaries, the step's inputs and outputs), so nothing else writes them between replays.
//   - What changes from step to step enters as a tagged write (stepInputWrite): the batch's token ids, and
//     AdamW's learning-rate terms (lib/optim.ts); a replay writes the new bytes in their place.
//   - The parameters and AdamW moments are read from the buffers the variables held when the step began
//     and written to fresh ones; the plan ends by copying each new buffer back over the old one, and the
//     variables keep pointing at the new ones: after a replay both hold the updated values.
//   - Two consecutive steps are recorded and must be the same computation: the same operations, pipelines
//     and dispatch sizes, buffers in the same roles, and the same bytes in every untagged write. Anything
//     that varies unseen (a random dropout seed, a host read in the middle of the step, a shape that
//     changes) makes them differ, and the step is then never replayed (reason in StepCapture.compare).
// lib/train_replay.ts decides when a training step is recorded and replayed.
import * as tf from "@tensorflow/tfjs-core";

// deno-lint-ignore no-explicit-any
type GpuBackend = any;

/** One recorded command inside a command encoder. */
type Command =
  | { op: "pass" }
  | { op: "end" }
  | { op: "pipeline"; pipeline: GPUComputePipeline }
  | { op: "bind"; index: number; group: GPUBindGroup }
  | { op: "dispatch"; x: number; y: number; z: number }
  | { op: "copy"; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; size: number }
  | { op: "clear"; buffer: GPUBuffer; offset: number; size: number };

/** One recorded queue operation, in order. */
type QueueOp =
  | { op: "write"; buffer: GPUBuffer; offset: number; bytes: Uint8Array; tag: string | null }
  | { op: "submit"; encoders: Command[][] };

/** The entries of a bind group, as created: binding index, buffer, byte offset and size. */
interface BindEntry {
  binding: number;
  buffer: GPUBuffer;
  offset: number;
  size: number | undefined;
}

interface BindInfo {
  layout: GPUBindGroupLayout;
  entries: BindEntry[];
}

/** Descriptors of every bind group created while a capture runs (kept for comparing two captures). */
const bindInfos = new WeakMap<GPUBindGroup, BindInfo>();

/** Milliseconds spent inside queue.submit by replays (on llvmpipe a submit runs the work itself). */
export const replaySubmitMs = { value: 0 };

/** The capture in progress, if any (one at a time). */
let active: Recorder | null = null;

/** The tag of writes made by stepInputWrite while it runs. */
let currentTag: string | null = null;

class Recorder {
  readonly ops: QueueOp[] = [];
  readonly encoderCommands = new WeakMap<GPUCommandBuffer, Command[]>();
  /** Why this capture cannot be replayed (null: it can). */
  refusal: string | null = null;

  refuse(why: string): void {
    this.refusal ??= why;
  }
}

function bytesOf(data: BufferSource | SharedArrayBuffer, dataOffset?: number, size?: number): Uint8Array {
  if (ArrayBuffer.isView(data)) {
    const el = (data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
    const count = (data as unknown as { length?: number }).length ?? data.byteLength;
    const start = data.byteOffset + (dataOffset ?? 0) * el;
    const len = (size ?? count - (dataOffset ?? 0)) * el;
    return new Uint8Array(data.buffer, start, len).slice();
  }
  const buf = data as ArrayBuffer;
  const start = dataOffset ?? 0;
  return new Uint8Array(buf, start, size ?? buf.byteLength - start).slice();
}

/** A compute pass that records what it is asked to do and forwards it to the real pass. */
function recordingPass(real: GPUComputePassEncoder, cmds: Command[], rec: Recorder): GPUComputePassEncoder {
  return new Proxy(real, {
    get(target, prop) {
      switch (prop) {
        case "setPipeline":
          return (
            p: GPUComputePipeline,
          ) => (cmds.push({ op: "pipeline", pipeline: p }), target.setPipeline(p));
        case "setBindGroup":
          return (index: number, group: GPUBindGroup, ...rest: unknown[]) => {
            if (rest.length > 0 && (rest[0] as ArrayLike<number>)?.length) rec.refuse("dynamic bind offsets");
            cmds.push({ op: "bind", index, group });
            return target.setBindGroup(index, group);
          };
        case "dispatchWorkgroups":
          return (
            x: number,
            y = 1,
            z = 1,
          ) => (cmds.push({ op: "dispatch", x, y, z }), target.dispatchWorkgroups(x, y, z));
        case "end":
          return () => (cmds.push({ op: "end" }), target.end());
        default: {
          const v = Reflect.get(target, prop, target);
          if (typeof v !== "function") return v;
          return (...args: unknown[]) => {
            rec.refuse(`compute pass call ${String(prop)}`);
            return (v as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
      }
    },
  });
}

/** A command encoder that records its commands and forwards them to the real encoder. */
function recordingEncoder(real: GPUCommandEncoder, rec: Recorder): GPUCommandEncoder {
  const cmds: Command[] = [];
  return new Proxy(real, {
    get(target, prop) {
      switch (prop) {
        case "beginComputePass":
          return (desc?: GPUComputePassDescriptor) => {
            if (desc?.timestampWrites) rec.refuse("timestamp queries (timed dispatches)");
            cmds.push({ op: "pass" });
            return recordingPass(target.beginComputePass(desc), cmds, rec);
          };
        case "copyBufferToBuffer":
          return (src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number) => {
            cmds.push({ op: "copy", src, srcOffset, dst, dstOffset, size });
            return target.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
          };
        case "clearBuffer":
          return (buffer: GPUBuffer, offset = 0, size?: number) => {
            cmds.push({ op: "clear", buffer, offset, size: size ?? buffer.size - offset });
            return target.clearBuffer(buffer, offset, size);
          };
        case "finish":
          return (desc?: GPUCommandBufferDescriptor) => {
            const cb = target.finish(desc);
            rec.encoderCommands.set(cb, cmds);
            return cb;
          };
        default: {
          const v = Reflect.get(target, prop, target);
          if (typeof v !== "function") return v;
          return (...args: unknown[]) => {
            rec.refuse(`command encoder call ${String(prop)}`);
            return (v as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
      }
    },
  });
}

/** TF.js's uploadToGPU, but the values go in with queue.writeBuffer (which a capture can see). */
function uploadByWrite(backend: GpuBackend, dataId: object): void {
  const d = backend.tensorMap.get(dataId);
  if (d.resource != null) return;
  const size = 4 * tf.util.sizeFromShape(d.shape);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const buffer = backend.bufferManager.acquireBuffer(size, usage);
  if (d.values) {
    const v = d.dtype === "float32"
      ? (d.values instanceof Float32Array ? d.values : Float32Array.from(d.values))
      : (d.values instanceof Int32Array ? d.values : Int32Array.from(d.values));
    if (size > 0) backend.queue.writeBuffer(buffer, 0, v.buffer, v.byteOffset, size);
    d.values = null;
  }
  d.resource = buffer;
}

function bufferOf(backend: GpuBackend, t: tf.Tensor): GPUBuffer {
  const r = backend.tensorMap.get(t.dataId)?.resource;
  if (!(r instanceof GPUBuffer)) throw new Error("replay: a tensor is not in a GPU buffer");
  return r;
}

/** Submits TF.js's pending commands (and so settles its pending disposals). */
function flush(backend: GpuBackend): void {
  if (backend.commandEncoder) {
    backend.endComputePassEncoder();
    backend.submitQueue();
  }
}

function poolKey(b: GPUBuffer): string {
  return `${b.size}_${b.usage}`;
}

/** Every buffer TF.js's pool has handed out and not taken back. */
function usedBuffers(backend: GpuBackend): Set<GPUBuffer> {
  const out = new Set<GPUBuffer>();
  for (const list of backend.bufferManager.usedBuffers.values()) for (const b of list) out.add(b);
  return out;
}

/** Takes `b` out of TF.js's free pool; false when it is not there. */
function takeFromPool(backend: GpuBackend, b: GPUBuffer): boolean {
  const bm = backend.bufferManager;
  const list: GPUBuffer[] | undefined = bm.freeBuffers.get(poolKey(b));
  const i = list ? list.indexOf(b) : -1;
  if (i < 0) return false;
  list!.splice(i, 1);
  bm.numFreeBuffers--;
  return true;
}

function returnToPool(backend: GpuBackend, b: GPUBuffer): void {
  const bm = backend.bufferManager;
  const key = poolKey(b);
  if (!bm.freeBuffers.has(key)) bm.freeBuffers.set(key, []);
  bm.freeBuffers.get(key).push(b);
  bm.numFreeBuffers++;
}

/**
 * Pinned buffers: when TF.js releases one (its tensor is disposed) it does not go back to the pool; the
 * pin's owner gets it instead. Installed on the backend's buffer manager once.
 */
const pinOwner = new Map<GPUBuffer, (b: GPUBuffer) => void>();

function installPinning(backend: GpuBackend): void {
  const bm = backend.bufferManager;
  if (bm.__lmpipePinning) return;
  const release = bm.releaseBuffer.bind(bm);
  bm.releaseBuffer = (buffer: GPUBuffer, reuse = true) => {
    const owner = pinOwner.get(buffer);
    if (!owner) return release(buffer, reuse);
    release(buffer, true); // out of the used lists...
    takeFromPool(backend, buffer); // ...and not into the free ones
    pinOwner.delete(buffer);
    owner(buffer);
  };
  bm.__lmpipePinning = true;
}

/** Writes made inside `fn` are the step input `tag` of a capture in progress. */
function withTag<T>(tag: string, fn: () => T): T {
  const before = currentTag;
  currentTag = tag;
  try {
    return fn();
  } finally {
    currentTag = before;
  }
}

/**
 * Puts tensor `t` (values still on the host) into a GPU buffer now, with one queue write that a capture in
 * progress marks as the step input `tag`: a replay writes that input's new bytes in its place.
 */
export function stepInputWrite(tag: string, t: tf.Tensor): void {
  const backend = tf.backend() as GpuBackend;
  withTag(tag, () => uploadByWrite(backend, t.dataId));
}

/**
 * One training step's GPU work as recorded by captureStep: its queue operations, the buffers it keeps out
 * of TF.js's pool, and the copies that carry the variables' new values back into the buffers the next
 * replay reads.
 */
export class StepCapture {
  /** Buffers this capture owns (out of TF.js's pool until dispose). */
  private readonly owned = new Set<GPUBuffer>();
  /** Live tensors' buffers this capture pinned (released to it, not the pool, when their tensor dies). */
  private readonly pinned = new Set<GPUBuffer>();
  private readonly staging: (GPUBuffer | undefined)[] = [undefined, undefined];
  private nextStaging = 0;
  private disposed = false;

  constructor(
    private readonly backend: GpuBackend,
    readonly ops: QueueOp[],
    /** Why this capture cannot be replayed (null: it can). */
    public refusal: string | null,
    /** The variables' buffers the step reads (at its start) and the ones they hold after it. */
    readonly varsBefore: GPUBuffer[],
    readonly varsAfter: GPUBuffer[],
    /** Buffers that existed when the capture began (live tensors, the uniform arena): not the step's own. */
    readonly preexisting: Set<GPUBuffer>,
    /** The buffer of the step's result tensor (read after each replay). */
    readonly result: GPUBuffer,
  ) {}

  private touched: Set<GPUBuffer> | null = null;

  /** Every buffer the recorded operations touch. */
  buffers(): Set<GPUBuffer> {
    if (this.touched) return this.touched;
    const seen = new Set<GPUBuffer>();
    const add = (b: GPUBuffer) => seen.add(b);
    for (const o of this.ops) {
      if (o.op === "write") add(o.buffer);
      else {
        for (const cmds of o.encoders) {
          for (const c of cmds) {
            if (c.op === "bind") { for (const e of bindInfos.get(c.group)?.entries ?? []) add(e.buffer); }
            else if (c.op === "copy") add(c.src), add(c.dst);
            else if (c.op === "clear") add(c.buffer);
          }
        }
      }
    }
    for (const b of [...this.varsBefore, ...this.varsAfter, this.result]) seen.add(b);
    return this.touched = seen;
  }

  /**
   * Takes the buffers it needs out of TF.js's hands (called once, by captureStep); a buffer it cannot hold
   * makes the capture a refused one.
   */
  adopt(releasedDuring: Set<GPUBuffer>, usedAtEnd: Set<GPUBuffer>): void {
    for (const b of this.buffers()) {
      if (releasedDuring.has(b)) this.owned.add(b);
      else if (takeFromPool(this.backend, b)) this.owned.add(b);
      else if (usedAtEnd.has(b) || this.preexisting.has(b)) this.pin(b);
      else {
        this.refusal ??=
          `a buffer the step used (${b.size} bytes, usage ${b.usage}) is neither live nor in the pool`;
        return;
      }
    }
  }

  private pin(b: GPUBuffer): void {
    if (this.pinned.has(b) || this.owned.has(b)) return;
    this.pinned.add(b);
    pinOwner.set(b, (x) => (this.pinned.delete(x), this.owned.add(x)));
  }

  /**
   * Copies the variables' values into the buffers a replay reads them from: called once when the recorded
   * step becomes the plan (the recorded step itself left them in the new buffers only).
   */
  carryState(): void {
    flush(this.backend);
    const device = this.backend.device as GPUDevice;
    const enc = device.createCommandEncoder();
    this.copyBack(enc);
    device.queue.submit([enc.finish()]);
  }

  /** The copies that end a replay: each variable's new buffer over the one the next replay reads. */
  private copyBack(encoder: GPUCommandEncoder): void {
    for (let i = 0; i < this.varsBefore.length; i++) {
      const from = this.varsAfter[i], to = this.varsBefore[i];
      if (from !== to) encoder.copyBufferToBuffer(from, 0, to, 0, Math.min(from.size, to.size));
    }
  }

  /**
   * Whether `vars` still hold the buffers this capture left them in (no step ran outside it since), and
   * nothing else shares their data: a replay changes those buffers in place, which a tf.clone of a
   * variable (it shares the variable's data) must not see.
   */
  matches(vars: tf.Tensor[]): boolean {
    if (this.disposed || vars.length !== this.varsAfter.length) return false;
    for (let i = 0; i < vars.length; i++) {
      if (vars[i].isDisposed || bufferOf(this.backend, vars[i]) !== this.varsAfter[i]) return false;
      if (this.backend.tensorMap.get(vars[i].dataId).refCount !== 1) return false;
    }
    return true;
  }

  /**
   * Issues the recorded queue operations again, with `inputs` (bytes by tag) in place of the tagged
   * writes, then the copies back. TF.js's own pending commands are submitted first.
   */
  replay(inputs: Map<string, Uint8Array>, vars: tf.Tensor[]): void {
    if (this.disposed) throw new Error("replay: the step capture was disposed");
    // TF.js keeps values it has read on the host; the variables' buffers are about to change under them
    for (const v of vars) this.backend.tensorMap.get(v.dataId).values = null;
    flush(this.backend);
    const device = this.backend.device as GPUDevice, queue = device.queue;
    for (const o of this.ops) {
      if (o.op === "write") {
        let bytes = o.bytes;
        if (o.tag !== null) {
          const b = inputs.get(o.tag);
          if (!b || b.byteLength !== o.bytes.byteLength) {
            throw new Error(
              `replay: step input '${o.tag}' has ${b?.byteLength ?? "no"} bytes, the recorded step wrote ` +
                `${o.bytes.byteLength}`,
            );
          }
          bytes = b;
        }
        queue.writeBuffer(o.buffer, o.offset, bytes as Uint8Array<ArrayBuffer>, 0, bytes.byteLength);
        continue;
      }
      const cbs: GPUCommandBuffer[] = [];
      for (const cmds of o.encoders) {
        const enc = device.createCommandEncoder();
        let pass: GPUComputePassEncoder | null = null;
        let pipeline: GPUComputePipeline | null = null;
        for (const c of cmds) {
          switch (c.op) {
            case "pass":
              pass = enc.beginComputePass(), pipeline = null;
              break;
            case "end":
              pass!.end(), pass = null;
              break;
            case "pipeline":
              if (c.pipeline !== pipeline) pass!.setPipeline(pipeline = c.pipeline);
              break;
            case "bind":
              pass!.setBindGroup(c.index, c.group);
              break;
            case "dispatch":
              pass!.dispatchWorkgroups(c.x, c.y, c.z);
              break;
            case "copy":
              enc.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.size);
              break;
            case "clear":
              enc.clearBuffer(c.buffer, c.offset, c.size);
              break;
          }
        }
        cbs.push(enc.finish());
      }
      const t0 = performance.now();
      queue.submit(cbs);
      replaySubmitMs.value += performance.now() - t0;
    }
    const enc = device.createCommandEncoder();
    this.copyBack(enc);
    queue.submit([enc.finish()]);
  }

  /**
   * The step's result (the buffer of the tensor captureStep's function returned) as float32 values. The
   * copy is queued at once, so a next replay may be issued before this read resolves (two read buffers
   * take turns; a third read before the first resolved would fail).
   */
  async readResult(): Promise<Float32Array> {
    const device = this.backend.device as GPUDevice;
    const size = this.result.size;
    const usage = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    const staging = this.staging[this.nextStaging] ??= device.createBuffer({ size, usage });
    this.nextStaging ^= 1;
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(this.result, 0, staging, 0, size);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    return out;
  }

  /**
   * Why this capture and the `earlier` one (the step before) are not the same computation, or null when
   * they are: same operations in the same order, same pipelines, dispatch sizes, offsets and sizes, the same
   * bytes in every untagged write, and buffers in the same roles (a one-to-one renaming; buffers that
   * existed before the step and are not variables must be the very same buffers).
   */
  compare(earlier: StepCapture): string | null {
    if (this.refusal) return this.refusal;
    if (earlier.refusal) return earlier.refusal;
    const a = earlier.ops, b = this.ops;
    if (a.length !== b.length) return `the steps issued ${a.length} and ${b.length} queue operations`;
    const fwd = new Map<GPUBuffer, GPUBuffer>(), back = new Map<GPUBuffer, GPUBuffer>();
    const varA = new Set(earlier.varsBefore), varB = new Set(this.varsBefore);
    const same = (x: GPUBuffer, y: GPUBuffer): boolean => {
      const fx = fwd.get(x), by = back.get(y);
      if (fx === undefined && by === undefined) {
        if (this.preexisting.has(y) && !varB.has(y) && x !== y) return false;
        if (varA.has(x) !== varB.has(y)) return false;
        fwd.set(x, y), back.set(y, x);
        return true;
      }
      return fx === y && by === x;
    };
    for (let i = 0; i < a.length; i++) {
      const p = a[i], q = b[i];
      const where = `queue operation ${i + 1} of ${a.length}`;
      if (p.op !== q.op) return `${where}: a ${p.op} against a ${q.op}`;
      if (p.op === "write" && q.op === "write") {
        if (p.tag !== q.tag || p.offset !== q.offset || p.bytes.byteLength !== q.bytes.byteLength) {
          return `${where}: writes of different places or inputs`;
        }
        if (!same(p.buffer, q.buffer)) return `${where}: a write to a buffer in another role`;
        if (p.tag === null && !bytesEqual(p.bytes, q.bytes)) {
          const first = p.bytes.findIndex((x, k) => x !== q.bytes[k]);
          return `${where}: an untagged write of other values (something in the step varies per step: ` +
            `${p.bytes.byteLength} bytes to a buffer of usage ${q.buffer.usage}, first difference at byte ${first})`;
        }
        continue;
      }
      if (p.op !== "submit" || q.op !== "submit") continue;
      if (p.encoders.length !== q.encoders.length) return `${where}: submits of different sizes`;
      for (let e = 0; e < p.encoders.length; e++) {
        const cp = p.encoders[e], cq = q.encoders[e];
        if (cp.length !== cq.length) return `${where}: command lists of different lengths`;
        for (let j = 0; j < cp.length; j++) {
          const why = compareCommand(cp[j], cq[j], same);
          if (why) return `${where}, command ${j + 1}: ${why}`;
        }
      }
    }
    for (let i = 0; i < this.varsBefore.length; i++) {
      if (!same(earlier.varsAfter[i], this.varsAfter[i])) {
        return "the variables' new buffers play other roles";
      }
    }
    if (!same(earlier.result, this.result)) return "the result is in a buffer of another role";
    return null;
  }

  /** Gives every owned buffer back to TF.js's pool and unpins the rest. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.pinned) pinOwner.delete(b);
    for (const b of this.owned) returnToPool(this.backend, b);
    this.pinned.clear(), this.owned.clear();
    for (const b of this.staging) b?.destroy();
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function compareCommand(
  p: Command,
  q: Command,
  same: (x: GPUBuffer, y: GPUBuffer) => boolean,
): string | null {
  if (p.op !== q.op) return `${p.op} against ${q.op}`;
  switch (p.op) {
    case "pipeline":
      return p.pipeline === (q as typeof p).pipeline ? null : "other pipelines";
    case "dispatch": {
      const d = q as typeof p;
      return p.x === d.x && p.y === d.y && p.z === d.z ? null : "other dispatch sizes";
    }
    case "copy": {
      const c = q as typeof p;
      if (p.srcOffset !== c.srcOffset || p.dstOffset !== c.dstOffset || p.size !== c.size) {
        return "other copies";
      }
      return same(p.src, c.src) && same(p.dst, c.dst) ? null : "a copy between buffers of other roles";
    }
    case "clear": {
      const c = q as typeof p;
      if (p.offset !== c.offset || p.size !== c.size) return "other clears";
      return same(p.buffer, c.buffer) ? null : "a clear of a buffer in another role";
    }
    case "bind": {
      const g = q as typeof p;
      const x = bindInfos.get(p.group), y = bindInfos.get(g.group);
      if (p.index !== g.index || !x || !y || x.layout !== y.layout || x.entries.length !== y.entries.length) {
        return "other bind groups";
      }
      for (let i = 0; i < x.entries.length; i++) {
        const s = x.entries[i], t = y.entries[i];
        if (s.binding !== t.binding || s.offset !== t.offset || s.size !== t.size) return "other bindings";
        if (!same(s.buffer, t.buffer)) return `binding ${s.binding} holds a buffer of another role`;
      }
      return null;
    }
    default:
      return null;
  }
}

/**
 * Runs `step` (which records one training step through TF.js and returns its result tensor, e.g. the
 * gradient norm and loss) while recording every queue operation it causes, with `vars` (parameters,
 * optimizer moments) as the state carried between steps. Returns the capture and the result tensor (the
 * capture keeps the tensor's buffer; the caller may read and dispose the tensor as usual).
 */
export function captureStep(
  vars: tf.Tensor[],
  step: () => tf.Tensor,
): { capture: StepCapture; result: tf.Tensor } {
  if (active) throw new Error("replay: a step capture is already running");
  const backend = tf.backend() as GpuBackend;
  if (tf.getBackend() !== "webgpu") throw new Error("replay: step capture needs the webgpu backend");
  installPinning(backend);
  for (const v of vars) backend.uploadToGPU(v.dataId); // a variable whose values are still on the host
  flush(backend);
  const device = backend.device as GPUDevice, queue = device.queue;
  const preexisting = usedBuffers(backend);
  const varsBefore = vars.map((v) => bufferOf(backend, v));
  // Live tensors' buffers released during the step stay out of the pool (the step must not reuse
  // them for its temporaries: it may read them before they would be overwritten).
  const releasedDuring = new Set<GPUBuffer>();
  const pinnedHere: GPUBuffer[] = [];
  for (const b of preexisting) {
    if (!pinOwner.has(b)) pinOwner.set(b, (x) => releasedDuring.add(x)), pinnedHere.push(b);
  }
  const rec = new Recorder();
  active = rec;
  const saved = {
    createCommandEncoder: device.createCommandEncoder,
    createBindGroup: device.createBindGroup,
    submit: queue.submit,
    writeBuffer: queue.writeBuffer,
    uploadToGPU: backend.uploadToGPU,
    mapAsync: GPUBuffer.prototype.mapAsync,
  };
  device.createCommandEncoder = (desc?: GPUCommandEncoderDescriptor) =>
    recordingEncoder(saved.createCommandEncoder.call(device, desc), rec);
  device.createBindGroup = (desc: GPUBindGroupDescriptor) => {
    const group = saved.createBindGroup.call(device, desc);
    const entries: BindEntry[] = [];
    for (const e of desc.entries) {
      const r = e.resource as GPUBufferBinding;
      if (!(r?.buffer instanceof GPUBuffer)) {
        rec.refuse("a bind group with a texture or sampler");
        continue;
      }
      entries.push({ binding: e.binding, buffer: r.buffer, offset: r.offset ?? 0, size: r.size });
    }
    bindInfos.set(group, { layout: desc.layout, entries });
    return group;
  };
  queue.submit = (cbs: Iterable<GPUCommandBuffer>) => {
    const list = [...cbs];
    const encoders: Command[][] = [];
    for (const cb of list) {
      const cmds = rec.encoderCommands.get(cb);
      if (!cmds) rec.refuse("a command buffer encoded before the capture began");
      encoders.push(cmds ?? []);
    }
    rec.ops.push({ op: "submit", encoders });
    return saved.submit.call(queue, list);
  };
  queue.writeBuffer = ((
    buffer: GPUBuffer,
    offset: number,
    data: BufferSource,
    dataOffset?: number,
    size?: number,
  ) => {
    rec.ops.push({ op: "write", buffer, offset, bytes: bytesOf(data, dataOffset, size), tag: currentTag });
    return saved.writeBuffer.call(queue, buffer, offset, data, dataOffset, size);
  }) as typeof queue.writeBuffer;
  backend.uploadToGPU = (dataId: object) => {
    const dtype = backend.tensorMap.get(dataId)?.dtype;
    if (dtype === "float32" || dtype === "int32" || dtype === "bool") return uploadByWrite(backend, dataId);
    rec.refuse(`an upload of a ${dtype} tensor`);
    return saved.uploadToGPU.call(backend, dataId);
  };
  GPUBuffer.prototype.mapAsync = function (this: GPUBuffer, ...args: Parameters<GPUBuffer["mapAsync"]>) {
    rec.refuse("a host read inside the step");
    return saved.mapAsync.apply(this, args);
  };
  let result: tf.Tensor;
  try {
    result = step();
    flush(backend);
  } catch (err) {
    // the step failed: no capture; what the pins held goes back to TF.js
    for (const b of pinnedHere) pinOwner.delete(b);
    for (const b of releasedDuring) returnToPool(backend, b);
    throw err;
  } finally {
    active = null;
    device.createCommandEncoder = saved.createCommandEncoder;
    device.createBindGroup = saved.createBindGroup;
    queue.submit = saved.submit;
    queue.writeBuffer = saved.writeBuffer;
    backend.uploadToGPU = saved.uploadToGPU;
    GPUBuffer.prototype.mapAsync = saved.mapAsync;
  }
  // the uniform arena (lib/tensor/webgpu/record.ts) lives outside TF.js's pool, made at its first use
  if (backend.__lmpipeArena) preexisting.add(backend.__lmpipeArena.buffer);
  const varsAfter = vars.map((v) => bufferOf(backend, v));
  const capture = new StepCapture(
    backend,
    rec.ops,
    rec.refusal,
    varsBefore,
    varsAfter,
    preexisting,
    bufferOf(backend, result),
  );
  const usedAtEnd = usedBuffers(backend);
  capture.adopt(releasedDuring, usedAtEnd);
  // pins this capture set only for the step: released buffers it does not use go back to the pool
  const touched = capture.buffers();
  for (const b of pinnedHere) if (!touched.has(b) && pinOwner.has(b)) pinOwner.delete(b);
  for (const b of releasedDuring) if (!touched.has(b)) returnToPool(backend, b);
  return { capture, result: result! };
}
