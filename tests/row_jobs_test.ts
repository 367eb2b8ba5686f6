// The row jobs the wasm kernels share out (lib/tensor/wasm/row_jobs.ts), on one thread with the takers'
// turns written out: every row taken exactly once, the main thread's range first for it and the workers'
// first for them, rows of the other range taken once a thread's own are gone, nothing taken for a job that
// has been replaced, and bad job shapes refused.
import assert from "node:assert/strict";
import {
  jobArgs,
  newControl,
  setSpin,
  SLOT,
  startJob,
  takeRows,
  waitForJob,
  waitForRows,
} from "../lib/tensor/wasm/row_jobs.ts";

/** Takes rows of `job` as `start` would, recording the pieces; `during` runs inside the first piece. */
function take(
  ctl: SharedArrayBuffer,
  job: number,
  start: "first" | "second",
  during?: () => void,
): [number, number][] {
  const pieces: [number, number][] = [];
  takeRows(ctl, job, (r0, r1) => {
    pieces.push([r0, r1]);
    if (pieces.length === 1) during?.();
  }, start);
  return pieces;
}

const done = (ctl: SharedArrayBuffer) => Atomics.load(new Int32Array(ctl), SLOT.done);

Deno.test("row jobs: the main thread takes its range first, then the workers' rows", () => {
  const ctl = newControl();
  startJob(ctl, 1, 10, 3, [7, 8, 9], 4);
  assert.deepEqual(jobArgs(ctl, 3), [7, 8, 9]);
  assert.deepEqual(take(ctl, 1, "first"), [[0, 3], [3, 4], [4, 7], [7, 10]]);
  assert.equal(done(ctl), 10);
});

Deno.test("row jobs: a worker takes the second range first, then what is left of the first", () => {
  const ctl = newControl();
  startJob(ctl, 2, 10, 3, [], 4);
  assert.deepEqual(take(ctl, 2, "second"), [[4, 7], [7, 10], [0, 3], [3, 4]]);
  assert.equal(done(ctl), 10);
});

Deno.test("row jobs: two takers in turn take every row once, each from its own range while it lasts", () => {
  const ctl = newControl();
  startJob(ctl, 3, 11, 2, [], 6);
  let worker: [number, number][] = [];
  // the worker joins while the main thread computes its first piece, and takes everything it can
  const main = take(ctl, 3, "first", () => worker = take(ctl, 3, "second"));
  assert.deepEqual(main, [[0, 2]]);
  assert.deepEqual(worker, [[6, 8], [8, 10], [10, 11], [2, 4], [4, 6]]);
  assert.equal(done(ctl), 11);
});

Deno.test("row jobs: without a second range the workers take the main thread's rows in turn", () => {
  const ctl = newControl();
  startJob(ctl, 4, 5, 2, []); // split defaults to every row: the workers' range is empty
  let worker: [number, number][] = [];
  const main = take(ctl, 4, "first", () => worker = take(ctl, 4, "second"));
  assert.deepEqual(main, [[0, 2]]);
  assert.deepEqual(worker, [[2, 4], [4, 5]]);
  assert.equal(done(ctl), 5);
});

Deno.test("row jobs: a taker of a replaced job takes nothing; bad splits and argument lists are refused", () => {
  const ctl = newControl();
  startJob(ctl, 5, 8, 2, [], 4);
  startJob(ctl, 6, 8, 2, [], 4);
  assert.deepEqual(take(ctl, 5, "first"), []);
  assert.deepEqual(take(ctl, 5, "second"), []);
  assert.equal(done(ctl), 0);
  assert.throws(() => startJob(ctl, 7, 8, 2, [], 9), /split 9 outside 0\.\.8/);
  assert.throws(() => startJob(ctl, 7, 8, 2, new Array(21).fill(0)), /21 arguments, at most 20/);
});

Deno.test("row jobs: a thread out of work spins first, then sleeps; a stalled job still fails", () => {
  const ctl = newControl();
  startJob(ctl, 8, 4, 2, [1, 2, 3]);
  setSpin(ctl, 2000);
  assert.equal(new Int32Array(ctl)[SLOT.spin], 2000);
  assert.deepEqual(jobArgs(ctl, 3), [1, 2, 3], "the spin slot is not an argument");
  const t0 = performance.now();
  waitForJob(ctl, 7); // job 8 is already there: no spin, no sleep
  assert.ok(performance.now() - t0 < 1, "waited for a job that had started");
  // no row ever finishes: the main thread spins 2 ms, then sleeps until the stall limit
  const t1 = performance.now();
  assert.throws(() => waitForRows(ctl, 4, 20), /stopped with 4 of 4 rows unfinished/);
  assert.ok(performance.now() - t1 >= 20, "gave up before the stall limit");
  setSpin(ctl, -5);
  assert.equal(new Int32Array(ctl)[SLOT.spin], 0, "a negative spin is none");
});
