// Evaluation's linear layers as row jobs of the wasm threads (lib/tensor/wasm/row_gemm.ts: each thread's
// share of the rows on a one-thread oneDNN sgemm, the bias added per piece): they match a float64 loop and
// the matmul primitive, give the same bits call after call whichever thread took a piece, let the worker
// threads take rows, stay off under a gradient tape and on one thread. Each thread count runs in its own
// child (the count is fixed per process). Skipped without oneDNN, unless LMPIPE_REQUIRE_NATIVE is set.
import assert from "node:assert/strict";
import { denoChildJson } from "./helpers_run.ts";
import { dnnlSkipReason } from "./helpers_conv.ts";

const child = (threads: string) =>
  denoChildJson(["run", "-A", "tests/helpers_row_gemm_child.ts"], { LMPIPE_WASM_THREADS: threads });

interface Result {
  shape: number[];
  choice: string;
  rowJobs: number;
  workerRows: number;
  err: number;
  sameBits: boolean;
  primitiveRan: number;
  fromPrimitive: number;
  tapeRowJobs: number;
}

Deno.test("linears as row jobs of the wasm threads: right, repeatable, shared, and only outside a tape on 2+ threads", async () => {
  const [one, two, three] = [await child("1"), await child("2"), await child("3")];
  if (dnnlSkipReason(one.skip ?? "", "oneDNN row-job linear tests")) return;
  assert.deepEqual([one.threads, two.threads, three.threads], [1, 2, 3]);
  for (const r of one.results as Result[]) {
    assert.equal(r.choice, "dnnl-matmul", `1 thread, [${r.shape}]: the primitive`);
    assert.equal(r.rowJobs, 0, `1 thread, [${r.shape}]: no row job`);
  }
  for (const run of [two, three]) {
    for (const r of run.results as Result[]) {
      const what = `${run.threads} threads, [${r.shape}]`;
      // at least 32 rows a thread (kernel_choice.ts ROW_JOB_MIN_ROWS): [64, ...] on 2 threads, not on 3
      const rows = r.shape[0] >= 32 * run.threads;
      assert.equal(r.choice, rows ? "dnnl-rows" : "dnnl-matmul", `${what}: kernel choice`);
      assert.equal(r.rowJobs, rows ? 21 : 0, `${what}: row jobs in 21 calls`);
      // GPT T's fc layer is ~0.3 ms a half: a worker wakes in time for its piece (the small products may
      // be done by the main thread before it does)
      if (r.shape[0] === 1024) assert.ok(r.workerRows > 0, `${what}: the workers took no row in 21 calls`);
      // float32 sums of K products: each multiply-add rounds by up to 6e-8 of the running sum
      const K = r.shape[1];
      assert.ok(r.err < 1e-7 * K + 2e-6, `${what}: relative error ${r.err} against float64`);
      assert.equal(r.sameBits, true, `${what}: calls gave different bits`);
      assert.equal(r.primitiveRan, 1, `${what}: with row jobs off, the primitive`);
      assert.ok(r.fromPrimitive < 1e-3, `${what}: ${r.fromPrimitive} from the primitive's product`);
      assert.equal(r.tapeRowJobs, 0, `${what}: a row job under a gradient tape`);
    }
  }
});
