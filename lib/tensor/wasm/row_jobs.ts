// A job over the rows of a matrix, shared out between the main thread and worker threads through one
// SharedArrayBuffer: whoever is free takes the next few rows (a compare-and-swap on a cursor that also
// carries the job's number), so a slow, busy or not yet started worker never holds the others up and
// the result does not depend on who computed which row. lib/tensor/wasm/kernels.ts runs the jobs; its
// worker (kernels_worker.ts) waits for them. Kept free of TF.js so that the worker stays small.

/** Int32 slots of the control buffer after the 8-byte cursor. */
export const SLOT = {
  /** The current job's number (workers wait on it). */
  job: 2,
  /** Rows finished in the current job (the main thread waits on it). */
  done: 3,
  rows: 4,
  /** Rows taken at a time. */
  chunk: 5,
  /** The job's own arguments (byte offsets, sizes) start here. */
  args: 6,
} as const;

export const MAX_ARGS = 20;

/** A fresh control buffer: the cursor (BigInt64 at 0) and the Int32 slots above. */
export function newControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (SLOT.args + MAX_ARGS));
}

/** The cursor: job number in the high 32 bits, next free row in the low 32. */
function cursorOf(job: number, row: number): bigint {
  return (BigInt(job >>> 0) << 32n) | BigInt(row);
}

/**
 * Takes rows of job `job` until none are left (or another job has started), calling `work(r0, r1)`
 * for each piece and counting the rows done. A piece is taken only while its job is unfinished, so the
 * arguments read for `job` before calling this are still that job's when `work` runs.
 */
export function takeRows(ctl: SharedArrayBuffer, job: number, work: (r0: number, r1: number) => void): void {
  const cursor = new BigInt64Array(ctl, 0, 1);
  const slots = new Int32Array(ctl);
  const rows = Atomics.load(slots, SLOT.rows), chunk = Atomics.load(slots, SLOT.chunk);
  const mine = BigInt(job >>> 0);
  for (;;) {
    const c = Atomics.load(cursor, 0);
    if (c >> 32n !== mine) return;
    const r0 = Number(c & 0xffffffffn);
    if (r0 >= rows) return;
    const r1 = Math.min(rows, r0 + chunk);
    if (Atomics.compareExchange(cursor, 0, c, cursorOf(job, r1)) !== c) continue;
    work(r0, r1);
    Atomics.add(slots, SLOT.done, r1 - r0);
    Atomics.notify(slots, SLOT.done);
  }
}

/**
 * Starts job `job` (the previous one must be finished): its arguments, row count and piece size, then
 * the cursor and the job number, which wakes the workers.
 */
export function startJob(
  ctl: SharedArrayBuffer,
  job: number,
  rows: number,
  chunk: number,
  args: number[],
): void {
  if (args.length > MAX_ARGS) throw new Error(`row job: ${args.length} arguments, at most ${MAX_ARGS}`);
  const slots = new Int32Array(ctl);
  args.forEach((a, i) => Atomics.store(slots, SLOT.args + i, a));
  Atomics.store(slots, SLOT.rows, rows);
  Atomics.store(slots, SLOT.chunk, chunk);
  Atomics.store(slots, SLOT.done, 0);
  Atomics.store(new BigInt64Array(ctl, 0, 1), 0, cursorOf(job, 0));
  Atomics.store(slots, SLOT.job, job);
  Atomics.notify(slots, SLOT.job);
}

/** The arguments of the current job, as stored by startJob. */
export function jobArgs(ctl: SharedArrayBuffer, n: number): number[] {
  const slots = new Int32Array(ctl);
  return Array.from({ length: n }, (_, i) => Atomics.load(slots, SLOT.args + i));
}

/**
 * Blocks until all `rows` rows of the current job are done. Throws when no row finishes for
 * `stallMs` (a worker that died holding rows), rather than waiting forever.
 */
export function waitForRows(ctl: SharedArrayBuffer, rows: number, stallMs: number): void {
  const slots = new Int32Array(ctl);
  for (;;) {
    const done = Atomics.load(slots, SLOT.done);
    if (done >= rows) return;
    if (
      Atomics.wait(slots, SLOT.done, done, stallMs) === "timed-out" && Atomics.load(slots, SLOT.done) === done
    ) {
      throw new Error(`a worker thread stopped with ${rows - done} of ${rows} rows unfinished`);
    }
  }
}
