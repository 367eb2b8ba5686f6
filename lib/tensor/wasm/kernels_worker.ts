// A worker thread for lib/tensor/wasm/kernels.ts: instantiates lmpipe's wasm kernels on TF.js's shared
// wasm memory and, forever, waits for a job and takes rows of it, the workers' range first
// (lib/tensor/wasm/row_jobs.ts). The main thread unrefs it, so it never keeps a finished process alive.
// Rows of a product (KIND.gemmRows) run on oneDNN's sgemm, opened here at the first such job from the
// path the main thread left in `library` (row_gemm.ts); a worker that cannot open it leaves those jobs
// to the main thread.
import { parentPort, workerData } from "node:worker_threads";
import { jobArgs, MAX_ARGS, SLOT, takeRows, waitForJob } from "./row_jobs.ts";
import { type GemmPiece, type KernelExports, KIND, runPiece } from "./kernel_calls.ts";
import { openRowGemm, readLibraryPath } from "./row_gemm.ts";

const { module, memory, ctl, library } = workerData as {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctl: SharedArrayBuffer;
  library: SharedArrayBuffer;
};

/** oneDNN's sgemm on this thread: undefined until opened (or tried), null where it could not be. */
let gemm: GemmPiece | null | undefined;

function gemmPiece(): GemmPiece | null {
  if (gemm !== undefined) return gemm;
  const path = readLibraryPath(library);
  if (path === "") return null;
  try {
    gemm = openRowGemm(path, memory);
  } catch {
    gemm = null;
  }
  return gemm;
}

const kernels = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
const slots = new Int32Array(ctl);
parentPort?.postMessage("started");
let seen = Atomics.load(slots, SLOT.job);
for (;;) {
  waitForJob(ctl, seen);
  const job = Atomics.load(slots, SLOT.job);
  seen = job;
  const args = jobArgs(ctl, MAX_ARGS);
  if (args[0] === KIND.gemmRows && gemmPiece() === null) continue;
  takeRows(ctl, job, (r0, r1) => runPiece(kernels, args, r0, r1, gemm), "second");
}
