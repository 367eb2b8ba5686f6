// A job over the rows of a matrix, shared out between the main thread and worker threads through one
// SharedArrayBuffer. The rows come in two ranges, each with a cursor that also carries the job's number:
// the main thread starts on the first range (its share: rows / threads), the workers on the second, and
// whoever runs out takes the next few rows of the other range (a compare-and-swap on its cursor). So a slow,
// busy or not yet started worker never holds the others up, the result does not depend on who computed
// which row, and, as far as the threads keep pace, each thread computes the same rows in every job: the
// rows one kernel wrote are still in that core's cache when the next kernel reads them (taking the rows
// in turns from one cursor moved half of them between the cores at every kernel). lib/tensor/wasm/kernels.ts
// runs the jobs; its worker (kernels_worker.ts) waits for them. Kept free of TF.js so that the worker stays
// small.

/** Byte offsets of the two cursors (BigInt64: job number in the high 32 bits, next free row in the low 32). */
const CURSOR = { first: 0, second: 8 } as const;

/** Int32 slots of the control buffer after the two cursors. */
export const SLOT = {
  /** The current job's number (workers wait on it). */
  job: 4,
  /** Rows finished in the current job (the main thread waits on it). */
  done: 5,
  rows: 6,
  /** Rows taken at a time. */
  chunk: 7,
  /** The first row of the second range (the end of the first). */
  split: 8,
  /**
   * Microseconds a thread that has run out of work spins (a worker for the next job, the main thread for
   * the job's last rows) before it sleeps; 0: sleep at once.
   */
  spin: 9,
  /** The job's own arguments (byte offsets, sizes) start here. */
  args: 10,
} as const;

export const MAX_ARGS = 20;

/** A fresh control buffer: the two cursors and the Int32 slots above. */
export function newControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(4 * (SLOT.args + MAX_ARGS));
}

/** A cursor's value: job number in the high 32 bits, next free row in the low 32. */
function cursorOf(job: number, row: number): bigint {
  return (BigInt(job >>> 0) << 32n) | BigInt(row);
}

/**
 * Takes rows of job `job` until none are left (or another job has started), calling `work(r0, r1)`
 * for each piece and counting the rows done: first from the range `start` ("first": the main thread's,
 * "second": the workers'), then from the other. A piece is taken only while its job is unfinished, so the
 * arguments read for `job` before calling this are still that job's when `work` runs.
 */
export function takeRows(
  ctl: SharedArrayBuffer,
  job: number,
  work: (r0: number, r1: number) => void,
  start: "first" | "second" = "first",
): void {
  const slots = new Int32Array(ctl);
  const rows = Atomics.load(slots, SLOT.rows), chunk = Atomics.load(slots, SLOT.chunk);
  const split = Atomics.load(slots, SLOT.split);
  const ranges = [
    { cursor: new BigInt64Array(ctl, CURSOR.first, 1), end: split },
    { cursor: new BigInt64Array(ctl, CURSOR.second, 1), end: rows },
  ];
  if (start === "second") ranges.reverse();
  const mine = BigInt(job >>> 0);
  for (const { cursor, end } of ranges) {
    for (;;) {
      const c = Atomics.load(cursor, 0);
      if (c >> 32n !== mine) return;
      const r0 = Number(c & 0xffffffffn);
      if (r0 >= end) break;
      const r1 = Math.min(end, r0 + chunk);
      if (Atomics.compareExchange(cursor, 0, c, cursorOf(job, r1)) !== c) continue;
      work(r0, r1);
      Atomics.add(slots, SLOT.done, r1 - r0);
      Atomics.notify(slots, SLOT.done);
    }
  }
}

/**
 * Starts job `job` (the previous one must be finished): its cursors, then its arguments, row count, piece
 * size and the rows of the first range (`split`, at most `rows`), then the job number, which wakes the
 * workers. The cursors go first: a worker still on the previous job that reads any of the new values
 * (takeRows reads them before the cursors) then finds the new job's number on the cursors and takes
 * nothing, where it could otherwise take rows past the previous job's end with that job's arguments.
 */
export function startJob(
  ctl: SharedArrayBuffer,
  job: number,
  rows: number,
  chunk: number,
  args: number[],
  split = rows,
): void {
  if (args.length > MAX_ARGS) throw new Error(`row job: ${args.length} arguments, at most ${MAX_ARGS}`);
  if (!(split >= 0 && split <= rows)) throw new Error(`row job: split ${split} outside 0..${rows}`);
  const slots = new Int32Array(ctl);
  Atomics.store(new BigInt64Array(ctl, CURSOR.first, 1), 0, cursorOf(job, 0));
  Atomics.store(new BigInt64Array(ctl, CURSOR.second, 1), 0, cursorOf(job, split));
  args.forEach((a, i) => Atomics.store(slots, SLOT.args + i, a));
  Atomics.store(slots, SLOT.rows, rows);
  Atomics.store(slots, SLOT.chunk, chunk);
  Atomics.store(slots, SLOT.split, split);
  Atomics.store(slots, SLOT.done, 0);
  Atomics.store(slots, SLOT.job, job);
  Atomics.notify(slots, SLOT.job);
}

/** Sets the spin before sleeping (SLOT.spin) to `us` microseconds, for every thread on `ctl`. */
export function setSpin(ctl: SharedArrayBuffer, us: number): void {
  Atomics.store(new Int32Array(ctl), SLOT.spin, Math.max(0, Math.round(us)));
}

/**
 * Spins while slot `slot` holds `value`, for at most SLOT.spin microseconds; true when it changed. A
 * sleeping thread takes 10-90 µs to wake (bench/RESULTS.md), as long as a small job itself.
 */
function spinWhile(slots: Int32Array, slot: number, value: number): boolean {
  const us = Atomics.load(slots, SLOT.spin);
  if (us <= 0) return false;
  const end = performance.now() + us / 1000;
  for (let i = 0;; i++) {
    if (Atomics.load(slots, slot) !== value) return true;
    if ((i & 63) === 63 && performance.now() > end) return false;
  }
}

/** Blocks a worker until the job number differs from `seen`: spinning first (SLOT.spin), then asleep. */
export function waitForJob(ctl: SharedArrayBuffer, seen: number): void {
  const slots = new Int32Array(ctl);
  if (!spinWhile(slots, SLOT.job, seen)) Atomics.wait(slots, SLOT.job, seen);
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
    if (spinWhile(slots, SLOT.done, done)) continue;
    if (
      Atomics.wait(slots, SLOT.done, done, stallMs) === "timed-out" && Atomics.load(slots, SLOT.done) === done
    ) {
      throw new Error(`a worker thread stopped with ${rows - done} of ${rows} rows unfinished`);
    }
  }
}
