// A worker thread for lib/tensor/wasm/kernels.ts: instantiates lmpipe's wasm kernels on TF.js's shared
// wasm memory and, forever, waits for a job and takes rows of it, the workers' range first
// (lib/tensor/wasm/row_jobs.ts). The main thread unrefs it, so it never keeps a finished process alive.
import { parentPort, workerData } from "node:worker_threads";
import { jobArgs, MAX_ARGS, SLOT, takeRows } from "./row_jobs.ts";
import { type KernelExports, runPiece } from "./kernel_calls.ts";

const { module, memory, ctl } = workerData as {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctl: SharedArrayBuffer;
};
const kernels = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
const slots = new Int32Array(ctl);
parentPort?.postMessage("started");
let seen = Atomics.load(slots, SLOT.job);
for (;;) {
  Atomics.wait(slots, SLOT.job, seen);
  const job = Atomics.load(slots, SLOT.job);
  seen = job;
  const args = jobArgs(ctl, MAX_ARGS);
  takeRows(ctl, job, (r0, r1) => runPiece(kernels, args, r0, r1), "second");
}
