// A worker thread for lib/tensor/wasm_softmax.ts: instantiates the softmax kernel on TF.js's shared
// wasm memory and, forever, waits for a row job and takes rows of it (lib/tensor/row_jobs.ts). The
// main thread unrefs it, so it never keeps a finished process alive.
import { parentPort, workerData } from "node:worker_threads";
import { jobArgs, SLOT, takeRows } from "./row_jobs.ts";

const { module, memory, ctl } = workerData as {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctl: SharedArrayBuffer;
};
const softmaxRows = new WebAssembly.Instance(module, { env: { memory } }).exports.softmax_rows as (
  ...args: number[]
) => void;
const slots = new Int32Array(ctl);
parentPort?.postMessage("started");
let seen = Atomics.load(slots, SLOT.job);
for (;;) {
  Atomics.wait(slots, SLOT.job, seen);
  const job = Atomics.load(slots, SLOT.job);
  seen = job;
  const [x, e, m, s, cols] = jobArgs(ctl, 5);
  takeRows(ctl, job, (r0, r1) => softmaxRows(x, e, m, s, r0, r1, cols));
}
