// Data-parallel training over MPI with the semantics of one process: the engine (lib/train_loop.ts)
// draws the same micro-batch sequence on every rank and rank r trains on every N-th of them; this module
// sums the ranks' gradients (MPI_Allreduce in buckets, or with --grad-reduce bf16|fp16 in 16 bits through
// half_reduce.ts), puts the micro-batch losses back in their global order, makes every rank take the same
// decisions (overflow skip, stop, time budget) from one small reduction per step, and splits the
// validation batches. With the same --batch-size and --grad-accum,
// `mpirun -np N` then trains the same model on the same data as one process.
//
// Gradients on the wasm backend are reduced where they live: a large gradient in place on the wasm heap
// (its address handed to MPI), small ones packed into a host bucket and unpacked again. Other backends
// read gradients to the host, reduce them there and upload the sums. One bucket is reduced while the
// next is packed or read back (a single MPI call in flight, as MPI_THREAD_SERIALIZED allows).
import { LmpipeError } from "../errors.ts";
import { warn } from "../log.ts";
import type { Mpi } from "../native/mpi.ts";
import { type GradReduce, type Half, type HalfReducer, reduceHalf } from "./half_reduce.ts";
import type { LanguageModel, Precision } from "../models/types.ts";
import type { Batch } from "../sampler.ts";
import { tf } from "../tensor/backend.ts";

/** What the training engine asks of a data-parallel runtime (lib/train_loop.ts). */
export interface DataParallelHooks {
  rank: number;
  size: number;
  /** The rank that writes checkpoints, logs and progress (rank 0). */
  writer: boolean;
  /** Whether this rank trains on micro-batch `micro` (0-based within the step). */
  owns(micro: number): boolean;
  /** Sums every rank's gradients; returns the sums in the same order (the inputs are reused or disposed). */
  allreduceGradients(grads: tf.Tensor[]): Promise<tf.Tensor[]>;
  /**
   * The scaled losses of all `total` micro-batches of the step in their global order, from this rank's
   * `parts` (micro-batches `micro`); `parts` are disposed.
   */
  gatherLosses(parts: tf.Tensor[], micro: number[], total: number): Promise<tf.Scalar[]>;
  /** One reduction per step: the decisions every rank must take alike. */
  agree(local: StepAgreement): Promise<StepAgreement>;
  /** Mean validation loss over `batches`, each rank scoring every N-th batch. */
  evaluate(model: LanguageModel, batches: Batch[], precision: Precision): Promise<number>;
  /**
   * Checks that every rank holds the same weights (at each checkpoint); where they drifted apart, rank 0's
   * are copied to all with a warning. Returns whether they had drifted.
   */
  syncReplicas(params: Map<string, tf.Variable>): Promise<boolean>;
}

export interface StepAgreement {
  /** Gradients and loss finite (false on any rank: false everywhere). */
  finite: boolean;
  /** A stop was asked for (SIGINT/SIGTERM on any rank: true everywhere). */
  stop: boolean;
  /** Run time so far in seconds: rank 0's, so time budgets end at the same step everywhere. */
  elapsedS: number;
  /** The step's duration in ms: rank 0's. */
  stepMs: number;
}

/** Timing of the gradient reductions (bench/dist.ts reads it). */
export interface ReduceStats {
  calls: number;
  /** Wall time inside allreduceGradients, ms (packing, reading back and waiting for MPI included). */
  ms: number;
  /** Gradient payload bytes each rank put in (4 a value in f32, 2 in bf16/fp16). */
  bytes: number;
}

/** Per-batch validation losses (from lib/train_loop.ts; passed in to avoid an import cycle). */
export type BatchLosses = (
  model: LanguageModel,
  batches: Batch[],
  precision: Precision,
) => Promise<Float32Array>;

/** One bucket's reduction: started while the next bucket is prepared; `done` puts the sums back. */
interface BucketWork {
  reduce: () => Promise<void>;
  done: () => void;
}

/** Gradients at least this large are reduced on their own (in place on the wasm heap). */
const ALONE_BYTES = 1 << 20;
/** Small gradients are packed into buckets of up to this many bytes. */
export const DEFAULT_BUCKET_BYTES = 4 << 20;

// deno-lint-ignore no-explicit-any
type WasmBackend = any;

export class DataParallel implements DataParallelHooks {
  readonly rank: number;
  readonly size: number;
  readonly writer: boolean;
  readonly stats: ReduceStats = { calls: 0, ms: 0, bytes: 0 };
  /** Two host buckets for the wasm path: one is packed while the other is reduced. */
  private staging: Float32Array[] = [];
  /** How gradients are summed between ranks (--grad-reduce); f32 unless setGradReduce says otherwise. */
  gradReduce: GradReduce = "f32";
  /** The 16-bit reductions' buffers (lib/dist/half_reduce.ts's reduceHalf keeps four). */
  private halfReducers: HalfReducer[] = [];

  constructor(
    readonly mpi: Mpi,
    private readonly batchLosses: BatchLosses,
    private readonly bucketBytes = DEFAULT_BUCKET_BYTES,
  ) {
    this.rank = mpi.rank;
    this.size = mpi.size;
    this.writer = mpi.rank === 0;
  }

  /** Sets --grad-reduce: f32 (MPI_Allreduce, exact) or a 16-bit format (half the bytes, rounded). */
  setGradReduce(mode: GradReduce): void {
    this.gradReduce = mode;
    this.halfReducers = [];
  }

  owns(micro: number): boolean {
    return micro % this.size === this.rank;
  }

  async allreduceGradients(grads: tf.Tensor[]): Promise<tf.Tensor[]> {
    const t0 = performance.now();
    for (const g of grads) {
      if (g.dtype !== "float32") {
        throw new LmpipeError(`data-parallel: a ${g.dtype} gradient cannot be reduced`);
      }
    }
    const out = tf.getBackend() === "wasm" ? await this.reduceOnHeap(grads) : await this.reduceOnHost(grads);
    this.stats.calls++;
    this.stats.ms += performance.now() - t0;
    this.stats.bytes += grads.reduce((n, g) => n + (this.half ? 2 : 4) * g.size, 0);
    return out;
  }

  /** Consecutive gradients grouped: a large one alone, small ones together up to the bucket size. */
  private buckets(grads: tf.Tensor[]): number[][] {
    const out: number[][] = [];
    let cur: number[] = [], bytes = 0;
    for (let i = 0; i < grads.length; i++) {
      const b = 4 * grads[i].size;
      if (b >= ALONE_BYTES) {
        out.push([i]);
        continue;
      }
      if (cur.length && bytes + b > this.bucketBytes) out.push(cur), cur = [], bytes = 0;
      cur.push(i), bytes += b;
    }
    if (cur.length) out.push(cur);
    return out;
  }

  /**
   * Runs `steps` (one per bucket) with one MPI call in flight: each step prepares its bucket and returns
   * its reduction and what to do once it is done; the next bucket is prepared, and the previous one's
   * results put back, while a bucket's collective runs.
   */
  private async pipeline(steps: (() => Promise<BucketWork>)[]): Promise<void> {
    let inflight: Promise<void> | null = null, finish: (() => void) | null = null;
    for (const prepare of steps) {
      const work = await prepare();
      if (inflight) await inflight;
      const previous = finish;
      inflight = work.reduce(), finish = work.done;
      previous?.();
    }
    if (inflight) await inflight, finish!();
  }

  /**
   * The 16-bit path's buckets: consecutive ranges [gradient, start, end) of up to a bucket's worth of values
   * each, large gradients cut into several, so that the reduction pipeline has work to overlap.
   */
  private halfBuckets(grads: tf.Tensor[]): [number, number, number][][] {
    const limit = this.bucketBytes / 4, out: [number, number, number][][] = [];
    let cur: [number, number, number][] = [], n = 0;
    grads.forEach((g, i) => {
      for (let start = 0; start < g.size;) {
        const end = Math.min(g.size, start + limit - n);
        cur.push([i, start, end]), n += end - start, start = end;
        if (n === limit) out.push(cur), cur = [], n = 0;
      }
    });
    if (cur.length) out.push(cur);
    return out;
  }

  /** Sums the gradients held in `arrays(i)` (fetched when used) in 16 bits, in place. */
  private async reduceHalfInPlace(grads: tf.Tensor[], arrays: (i: number) => Float32Array): Promise<void> {
    const buckets = this.halfBuckets(grads);
    await reduceHalf(
      this.mpi,
      this.gradReduce as Half,
      this.halfReducers,
      buckets.length,
      (k) => buckets[k].map(([i, start, end]) => arrays(i).subarray(start, end)),
    );
  }

  /** Whether gradients are summed in 16 bits (with one rank nothing is summed: they stay float32). */
  private get half(): boolean {
    return this.gradReduce !== "f32" && this.size > 1;
  }

  private async reduceOnHeap(input: tf.Tensor[]): Promise<tf.Tensor[]> {
    const backend = tf.backend() as WasmBackend;
    // A buffer shared with another tensor (a reshape's output shares its input's) must not be summed in
    // place twice or under another tensor's feet: such gradients get their own copy first.
    const grads = input.slice(), seen = new Set<unknown>();
    for (let i = 0; i < grads.length; i++) {
      const g = grads[i];
      if (seen.has(g.dataId) || backend.refCount(g.dataId) !== 1) {
        grads[i] = tf.tensor(await g.data(), g.shape, "float32");
        g.dispose();
      }
      seen.add(grads[i].dataId);
    }
    const heapPtr = (t: tf.Tensor) => {
      const base = Deno.UnsafePointer.of(new Uint8Array(backend.wasm.HEAPU8.buffer as ArrayBufferLike));
      if (base === null) throw new LmpipeError("data-parallel: no pointer to the wasm heap");
      return Deno.UnsafePointer.offset(base, backend.dataIdMap.get(t.dataId).memoryOffset as number);
    };
    const view = (t: tf.Tensor) => backend.typedArrayFromHeap(t) as Float32Array;
    // views are fetched when used: the heap may have grown (and moved) in between
    if (this.half) {
      await this.reduceHalfInPlace(grads, (i) => view(grads[i]));
      return grads;
    }
    const buckets = this.buckets(grads);
    const steps = buckets.map((bucket, k) => (): Promise<BucketWork> => {
      const what = `gradient bucket ${k + 1}/${buckets.length}`;
      if (bucket.length === 1) {
        const t = grads[bucket[0]];
        return Promise.resolve({
          reduce: () => this.mpi.allreduceF32(heapPtr(t), t.size, "sum", what),
          done: () => {},
        });
      }
      const count = bucket.reduce((n, i) => n + grads[i].size, 0);
      const stage = this.stagingBuffer(k % 2, count);
      let off = 0;
      for (const i of bucket) stage.set(view(grads[i]), off), off += grads[i].size;
      const done = () => {
        let o = 0;
        for (const i of bucket) view(grads[i]).set(stage.subarray(o, o + grads[i].size)), o += grads[i].size;
      };
      return Promise.resolve({
        reduce: () => this.mpi.allreduceF32(Deno.UnsafePointer.of(stage), count, "sum", what),
        done,
      });
    });
    await this.pipeline(steps);
    return grads;
  }

  private stagingBuffer(which: number, count: number): Float32Array {
    if (!this.staging[which] || this.staging[which].length < count) {
      this.staging[which] = new Float32Array(Math.max(count, this.bucketBytes / 4));
    }
    return this.staging[which];
  }

  private async reduceOnHost(grads: tf.Tensor[]): Promise<tf.Tensor[]> {
    const out: tf.Tensor[] = new Array(grads.length);
    if (this.half) {
      // all read back first (the f32 path below overlaps reading back with the reduction)
      const arrays = await Promise.all(grads.map((g) => g.data() as Promise<Float32Array>));
      await this.reduceHalfInPlace(grads, (i) => arrays[i]);
      grads.forEach((g, i) => (out[i] = tf.tensor(arrays[i], g.shape, "float32"), g.dispose()));
      return out;
    }
    const buckets = this.buckets(grads);
    const steps = buckets.map((bucket, k) => async (): Promise<BucketWork> => {
      // fresh arrays: the cpu backend keeps the array a tensor is made from
      const parts = await Promise.all(bucket.map((i) => grads[i].data() as Promise<Float32Array>));
      const upload = (piece: (j: number) => Float32Array) => () =>
        bucket.forEach((i, j) => {
          out[i] = tf.tensor(piece(j), grads[i].shape, "float32");
          grads[i].dispose();
        });
      const buf = parts.length === 1 ? parts[0] : new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      const offsets: number[] = [];
      let off = 0;
      for (const p of parts) {
        if (parts.length > 1) buf.set(p, off);
        offsets.push(off), off += p.length;
      }
      return {
        reduce: () =>
          this.mpi.allreduceF32(
            Deno.UnsafePointer.of(buf),
            buf.length,
            "sum",
            `gradient bucket ${k + 1}/${buckets.length}`,
          ),
        done: upload((j) => buf.subarray(offsets[j], offsets[j] + parts[j].length)),
      };
    });
    await this.pipeline(steps);
    return out;
  }

  async gatherLosses(parts: tf.Tensor[], micro: number[], total: number): Promise<tf.Scalar[]> {
    const all = new Float64Array(total);
    if (parts.length) {
      const stacked = tf.stack(parts);
      const values = await stacked.data();
      stacked.dispose();
      micro.forEach((m, i) => all[m] = values[i]);
    }
    parts.forEach((t) => t.dispose());
    // Each slot holds one rank's value and zeros elsewhere: the sum is exact.
    await this.mpi.allreduceF64(all, "sum", "micro-batch losses");
    return Array.from(all, (v) => tf.scalar(v, "float32"));
  }

  async agree(local: StepAgreement): Promise<StepAgreement> {
    const v = new Float64Array([
      local.finite ? 0 : 1,
      local.stop ? 1 : 0,
      this.writer ? local.elapsedS : 0,
      this.writer ? local.stepMs : 0,
    ]);
    await this.mpi.allreduceF64(v, "sum", "step decisions");
    return { finite: v[0] === 0, stop: v[1] > 0, elapsedS: v[2], stepMs: v[3] };
  }

  async evaluate(model: LanguageModel, batches: Batch[], precision: Precision): Promise<number> {
    const mine = batches.map((_, i) => i).filter((i) => this.owns(i));
    const values = mine.length ? await this.batchLosses(model, mine.map((i) => batches[i]), precision) : [];
    const all = new Float64Array(batches.length);
    mine.forEach((b, k) => all[b] = values[k]);
    await this.mpi.allreduceF64(all, "sum", "validation losses");
    let sum = 0;
    for (const v of all) sum += v; // in batch order, as one process sums them
    return sum / all.length;
  }

  /** Rank 0's values of `params` on every rank (start of training: one set of weights everywhere). */
  async broadcastParams(params: Map<string, tf.Variable>): Promise<void> {
    for (const [name, v] of params) {
      if (v.dtype !== "float32") throw new LmpipeError(`data-parallel: parameter ${name} is ${v.dtype}`);
      const data = await v.data() as Float32Array;
      await this.mpi.bcastF32(Deno.UnsafePointer.of(data), data.length, 0, `parameter ${name}`);
      if (!this.writer) tf.tidy(() => v.assign(tf.tensor(data, v.shape, "float32")));
    }
  }

  async syncReplicas(params: Map<string, tf.Variable>): Promise<boolean> {
    // A 32-bit digest of every weight's bits; ranks agree when the largest digest equals the smallest.
    let h = 0x811c9dc5;
    for (const v of params.values()) {
      const data = await v.data() as Float32Array;
      const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
      for (let i = 0; i < bits.length; i++) h = Math.imul(h ^ bits[i], 0x01000193) >>> 0;
    }
    const v = new Float64Array([h, -h]);
    await this.mpi.allreduceF64(v, "max", "weight digests");
    if (v[0] === -v[1]) return false;
    warn(
      `the ranks' weights differ in their last bits (the devices compute differently, or MPI's sums differ ` +
        `between ranks); copying rank 0's weights to every rank`,
    );
    await this.broadcastParams(params);
    return true;
  }

  /** The smallest of every rank's `x` (e.g. a batch size each rank found on its own). */
  async min(x: number, what: string): Promise<number> {
    const v = new Float64Array([-x]);
    await this.mpi.allreduceF64(v, "max", what);
    return -v[0];
  }
}
