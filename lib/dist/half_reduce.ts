// Gradient sums over MPI in 16-bit floats (`lmpipe train --grad-reduce bf16|fp16`): half the bytes of the
// float32 all-reduce. MPI has no 16-bit float sum (Open MPI 4.1 defines none, and a user-defined op would
// call back into JavaScript from MPI's thread), so the sum is built from two plain collectives on 2-byte
// payloads: each rank rounds its bucket to 16 bits and cuts it into N chunks; MPI_Alltoall gives rank r
// every rank's chunk r; rank r adds them in float32 in rank order 0..N-1 and rounds the sum to 16 bits;
// MPI_Allgather gives every rank every summed chunk, which it widens back to float32. Every rank ends with
// the same bits (the weights stay identical), and the result does not depend on MPI's reduction order.
//
// Rounding is to nearest, ties to even; a value past the format's largest finite one becomes infinite
// (so an fp16 overflow reaches the loss scaler's overflow check), NaN stays NaN. The loops run on typed
// arrays: about 1 ns a value in V8 (bench/RESULTS.md), small next to moving the bytes.
import type { Mpi } from "../native/mpi.ts";

/** How gradients are summed between ranks. */
export type GradReduce = "f32" | "bf16" | "fp16";
export const GRAD_REDUCES: readonly GradReduce[] = ["f32", "bf16", "fp16"];
export type Half = Exclude<GradReduce, "f32">;

/** Rounds `src` to bfloat16 bit patterns in `dst` (same length or longer). */
export function roundToBf16(src: Float32Array, dst: Uint16Array, dstOffset = 0): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    // NaN: keep the sign and the top mantissa bits, set the quiet bit (rounding could carry into inf)
    dst[dstOffset + i] = (u & 0x7fffffff) > 0x7f800000
      ? (u >>> 16) | 0x40
      : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
}

/** Widens bfloat16 bit patterns to float32 (exact). */
export function expandBf16(src: Uint16Array, dst: Float32Array, srcOffset = 0): void {
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < bits.length; i++) bits[i] = src[srcOffset + i] << 16;
}

/** Rounds `src` to IEEE binary16 bit patterns in `dst` (V8's Float16Array conversion: ties to even). */
export function roundToFp16(src: Float32Array, dst: Uint16Array, dstOffset = 0): void {
  new Float16Array(dst.buffer, dst.byteOffset + 2 * dstOffset, src.length).set(src);
}

/** Widens binary16 bit patterns to float32 (exact). */
export function expandFp16(src: Uint16Array, dst: Float32Array, srcOffset = 0): void {
  dst.set(new Float16Array(src.buffer, src.byteOffset + 2 * srcOffset, dst.length));
}

/** Rounds float32 values to `format` bit patterns. */
export function roundTo(format: Half, src: Float32Array, dst: Uint16Array, dstOffset = 0): void {
  if (format === "bf16") roundToBf16(src, dst, dstOffset);
  else roundToFp16(src, dst, dstOffset);
}

/** Widens `format` bit patterns to float32. */
export function expand(format: Half, src: Uint16Array, dst: Float32Array, srcOffset = 0): void {
  if (format === "bf16") expandBf16(src, dst, srcOffset);
  else expandFp16(src, dst, srcOffset);
}

/**
 * The summed chunk: `parts` holds `ranks` chunks of `chunk` values (rank 0's first); `out[i]` = the
 * float32 sum of the ranks' values i, added in rank order, rounded to `format`. `acc` and `tmp` are
 * float32 scratch of at least `chunk` values.
 */
export function sumChunks(
  format: Half,
  parts: Uint16Array,
  ranks: number,
  chunk: number,
  out: Uint16Array,
  acc: Float32Array,
  tmp: Float32Array,
): void {
  const a = acc.subarray(0, chunk), t = tmp.subarray(0, chunk);
  expand(format, parts, a, 0);
  for (let r = 1; r < ranks; r++) {
    expand(format, parts, t, r * chunk);
    for (let i = 0; i < chunk; i++) a[i] += t[i]; // stored into a Float32Array: a float32 addition
  }
  roundTo(format, a, out);
}

/**
 * The buffers of one bucket's 16-bit reduction, reused from step to step; reduceHalf keeps four in turn so
 * that one bucket is packed, one summed and one unpacked while the others' collectives run.
 */
export class HalfReducer {
  private send = new Uint16Array(0);
  private recv = new Uint16Array(0);
  private mine = new Uint16Array(0);
  private all = new Uint16Array(0);
  private acc = new Float32Array(0);
  private tmp = new Float32Array(0);
  private chunk = 0;
  private count = 0;

  constructor(readonly mpi: Mpi, readonly format: Half) {}

  /** Rounds the bucket's values to 16 bits into the send buffer (N chunks, the last padded with zeros). */
  pack(pieces: Float32Array[]): void {
    const n = this.mpi.size;
    this.count = pieces.reduce((s, p) => s + p.length, 0);
    this.chunk = Math.ceil(this.count / n);
    const padded = this.chunk * n;
    if (this.send.length < padded) {
      this.send = new Uint16Array(padded), this.recv = new Uint16Array(padded);
      this.all = new Uint16Array(padded);
    }
    if (this.mine.length < this.chunk) {
      this.mine = new Uint16Array(this.chunk);
      this.acc = new Float32Array(this.chunk), this.tmp = new Float32Array(this.chunk);
    }
    let off = 0;
    for (const p of pieces) roundTo(this.format, p, this.send, off), off += p.length;
    this.send.fill(0, this.count, padded);
  }

  /** MPI_Alltoall: rank r receives every rank's chunk r. */
  alltoall(what: string): Promise<void> {
    const p = Deno.UnsafePointer.of;
    return this.mpi.alltoall16(p(this.send), p(this.recv), this.chunk, what);
  }

  /** This rank's chunk of the sum: the ranks' chunks added in rank order in float32, rounded. */
  sum(): void {
    sumChunks(this.format, this.recv, this.mpi.size, this.chunk, this.mine, this.acc, this.tmp);
  }

  /** MPI_Allgather: every rank's summed chunk to every rank. */
  allgather(what: string): Promise<void> {
    const p = Deno.UnsafePointer.of;
    return this.mpi.allgather16(p(this.mine), p(this.all), this.chunk, what);
  }

  /** alltoall, sum and allgather: the whole reduction of one packed bucket, nothing overlapped. */
  async reduce(what: string): Promise<void> {
    await this.alltoall(what);
    this.sum();
    await this.allgather(what);
  }

  /** Widens the sums into `pieces` (the same lengths, in the same order, as packed). */
  unpack(pieces: Float32Array[]): void {
    let off = 0;
    for (const p of pieces) expand(this.format, this.all, p, off), off += p.length;
  }
}

/**
 * Sums `buckets` buckets over the ranks in 16 bits, `pieces(k)` giving bucket k's values (read to pack,
 * then overwritten with the sums; fetched again each time, since wasm heap views go stale when the heap
 * grows). One MPI call is in flight at a time, in the order alltoall 0, alltoall 1, allgather 0,
 * alltoall 2, allgather 1, ...; while alltoall k+1 runs this rank sums bucket k and packs bucket k+2, and
 * while allgather k runs it unpacks bucket k-1. `reducers` (grown to four) are reused across calls.
 */
export async function reduceHalf(
  mpi: Mpi,
  format: Half,
  reducers: HalfReducer[],
  buckets: number,
  pieces: (k: number) => Float32Array[],
): Promise<void> {
  while (reducers.length < 4) reducers.push(new HalfReducer(mpi, format));
  const r = (k: number) => reducers[k % 4];
  const what = (k: number) => `${format} gradient bucket ${k + 1}/${buckets}`;
  if (buckets === 0) return;
  r(0).pack(pieces(0));
  let next = r(0).alltoall(what(0));
  if (buckets > 1) r(1).pack(pieces(1));
  await next;
  for (let k = 0; k < buckets; k++) {
    // alltoall k is done
    next = k + 1 < buckets ? r(k + 1).alltoall(what(k + 1)) : Promise.resolve();
    r(k).sum();
    if (k + 2 < buckets) r(k + 2).pack(pieces(k + 2));
    await next;
    const gather = r(k).allgather(what(k));
    if (k >= 1) r(k - 1).unpack(pieces(k - 1));
    await gather;
  }
  r(buckets - 1).unpack(pieces(buckets - 1));
}
