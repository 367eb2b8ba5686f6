// `lmpipe train --batch-size auto` and the peak memory in the step log, on a GPT small enough that a
// step's peak grows with the batch size (1 layer, 32 wide, vocabulary 256, context 16): the chosen size
// fits the limit and the next size up measurably does not; training with it gives the same losses as an
// explicit --batch-size of that size (the trials leave the weights as they were); the logged peak is the
// trial's; the chosen size is printed and stored; bad flag values are usage errors; the search itself
// (searchBatchSize) on made-up memory curves, an out-of-memory failure and the cap; and the limit's
// defaults. The peak figure is exact on cpu (TF.js's count of live tensor bytes) and wasm (the heap bytes
// tensors hold), so these tests compare exact numbers. webgpu runs one small search where an adapter exists.
import assert from "node:assert/strict";
import { join } from "node:path";
import { EXIT, LmpipeError } from "../lib/errors.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { webgpuStatus } from "../lib/tensor/testing.ts";
import { currentBlas } from "../lib/native/blas.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import {
  findBatchSize,
  measureStepPeaks,
  nextBatchUp,
  parseMemorySize,
  type ProbeOptions,
  resolveMemoryLimit,
  searchBatchSize,
  snapBatch,
  WASM_DEFAULT_LIMIT,
} from "../lib/batch_size.ts";
import { loadCheckpoint } from "../lib/checkpoint.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { writeToyShard } from "./bigram_model.ts";
import { readLog, rejectsWith } from "./helpers_run.ts";

const env = { signals: false, stdout: async (_b: Uint8Array) => {} };
const SMALL = { nLayer: 1, nEmbd: 32, nHead: 2, contextLength: 16, vocabSize: 256 };
const SETS = Object.entries(SMALL).flatMap(([k, v]) => ["--set", `${k}=${v}`]);
const PROBE: ProbeOptions = { precision: "fp32", gradAccum: 1, weightDecay: 0.1 };
const MiB = 2 ** 20;

const data = await Deno.makeTempDir({ prefix: "lmpipe-batch-auto-" });
await writeToyShard(join(data, "toy_train_000001.bin"), 6000, 64, 1);
await writeToyShard(join(data, "toy_val_000000.bin"), 2000, 64, 3);

function args(backend: string, ...more: string[]): string[] {
  return [
    "--data",
    data,
    "--backend",
    backend,
    ...SETS,
    "--max-steps",
    "3",
    "--eval-iters",
    "1",
    "--seed",
    "3",
    ...more,
  ];
}

/** Peak bytes of one step at each size, on a fresh model of the test config. */
async function peaks(sizes: number[], o = PROBE): Promise<number[]> {
  const model = createModel(resolveConfig("gpt", "tiny", SMALL), 3);
  try {
    const p = await measureStepPeaks(model, sizes, o);
    return p.map((x) => {
      assert.ok(x !== null, "no out-of-memory expected at these sizes");
      return x;
    });
  } finally {
    model.dispose();
  }
}

for (const backend of ["cpu", "wasm"] as const) {
  Deno.test(`batch auto (${backend}): fits the limit, the next size up does not, and trains like the explicit size`, async () => {
    await initBackend(backend, { quiet: true });
    const limit = 3 * MiB;
    const auto = await Deno.makeTempDir(), fixed = await Deno.makeTempDir();
    await train(args(backend, "--batch-size", "auto", "--memory-limit", "3MiB", "--out", auto), env);
    const config = JSON.parse(await Deno.readTextFile(join(auto, "config.json")));
    const B = config.training.batchSize as number;
    assert.ok(Number.isInteger(B) && B >= 2, `chosen batch size ${B}`);
    const rec = config.training.batchSizeAuto;
    assert.equal(rec.memoryLimitBytes, limit);
    assert.equal(rec.memoryLimitSource, "--memory-limit");
    // measured independently: B fits, the next size up does not
    const [atB, above] = await peaks([B, nextBatchUp(B)]);
    assert.ok(atB <= limit, `peak at ${B}: ${atB} > ${limit}`);
    assert.ok(above > limit, `peak at ${nextBatchUp(B)}: ${above} <= ${limit}: a larger size fits`);
    assert.equal(rec.peakBytes, atB);
    // the log carries the size and the step's peak, which is the trial's peak at that size
    const la = await readLog(join(auto, "log.jsonl"));
    assert.equal(la.length, 3);
    for (const r of la) {
      assert.equal(r.batch_size, B);
      assert.equal(r.peak_bytes, atB, `step ${r.step} peak`);
    }
    // an explicit --batch-size B run from the same seed: identical losses, norms and weights
    await train(args(backend, "--batch-size", String(B), "--out", fixed), env);
    const lf = await readLog(join(fixed, "log.jsonl"));
    for (let i = 0; i < 3; i++) {
      assert.equal(la[i].loss, lf[i].loss, `step ${i + 1} loss`);
      assert.equal(la[i].grad_norm, lf[i].grad_norm, `step ${i + 1} grad norm`);
    }
    assert.equal(la[2].val_loss, lf[2].val_loss);
    const wa = (await loadCheckpoint(auto)).weights, wf = (await loadCheckpoint(fixed)).weights;
    for (const [n, t] of wa) assert.deepEqual(Array.from(wf.get(n)!.data), Array.from(t.data), n);
    const cf = JSON.parse(await Deno.readTextFile(join(fixed, "config.json")));
    assert.equal(cf.training.batchSize, B);
    assert.equal(cf.training.batchSizeAuto, undefined);
    // --resume keeps the chosen size and its record without searching again
    await train(["--resume", "--max-steps", "4", "--out", auto], env);
    const resumed = JSON.parse(await Deno.readTextFile(join(auto, "config.json")));
    assert.equal(resumed.training.batchSize, B);
    assert.deepEqual(resumed.training.batchSizeAuto, rec);
    assert.equal((await readLog(join(auto, "log.jsonl")))[3].batch_size, B);
    // nothing is left behind to inflate later peaks (a resume once left 3 copies of the weights)
    assert.equal(tf.memory().numBytes, 0, `${tf.memory().numTensors} tensors left after the runs`);
  });
}

Deno.test("batch auto (wasm): the step's memory grows linearly here, gradient accumulation and mixed precision are measured", async () => {
  await initBackend("wasm", { quiet: true });
  const p = await peaks([1, 2, 3, 4, 5, 6]);
  const steps = p.slice(1).map((x, i) => x - p[i]);
  // The step's peak is the largest of the live-byte totals at each moment of the step, each of them
  // affine in the batch size, so it is convex and piecewise linear: it grows by at least as much per
  // sequence as the size goes up. Which moment is the largest depends on the kernels and gradients
  // (without BLAS, XNNPACK's transposed operands move the peak at batch 4; with BLAS it moves there too
  // since Gather's gradient no longer copies the embedding's gradient through two transposes; since the
  // backward pass frees as it goes, batch 1 peaks at another moment than 2 and up), so exact linearity
  // from batch 2 to 6 is a BLAS-path fact.
  assert.ok(steps[0] > 0, "memory grows with the batch size");
  for (let i = 1; i < steps.length; i++) {
    assert.ok(steps[i] >= steps[i - 1], `per-sequence bytes shrink at batch ${i + 2}: ${p}`);
  }
  if (currentBlas()) {
    assert.deepEqual(steps.slice(1), steps.slice(1).map(() => steps[1]), `per-sequence bytes: ${p}`);
  }
  // a second micro-batch keeps the summed gradients alive beside the new ones: more memory, not less
  const [accum] = await peaks([4], { ...PROBE, gradAccum: 4 });
  assert.ok(accum > p[3], `grad-accum 4: ${accum} <= ${p[3]}`);
  // mixed precision's fp16 rounding adds temporaries
  const [mixed] = await peaks([4], { ...PROBE, precision: "mixed" as const });
  assert.ok(mixed > p[3], `mixed: ${mixed} <= ${p[3]}`);
  // findBatchSize on a model leaves its weights exactly as they were
  const model = createModel(resolveConfig("gpt", "tiny", SMALL), 3);
  try {
    const before = new Map<string, number[]>();
    for (const [n, v] of model.params) before.set(n, Array.from(await v.data()));
    const r = await findBatchSize(model, { ...PROBE, limitBytes: 2 * MiB });
    assert.ok(r.peakBytes <= 2 * MiB && r.converged);
    for (const [n, v] of model.params) assert.deepEqual(Array.from(await v.data()), before.get(n), n);
  } finally {
    model.dispose();
  }
});

Deno.test("batch auto: the chosen size is printed on stderr and logged in --json lines (CLI)", async () => {
  const out = await Deno.makeTempDir();
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const res = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      cli,
      "train",
      ...args("cpu", "--batch-size", "auto", "--memory-limit", "2MiB", "--json", "--out", out),
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(res.stderr), stdout = new TextDecoder().decode(res.stdout);
  assert.equal(res.code, 0, stderr);
  const m = /batch size auto: (\d+) \(step peak ([\d.]+) MiB of 2\.0 MiB/.exec(stderr);
  assert.ok(m, stderr);
  const B = Number(m[1]);
  assert.match(stderr, new RegExp(`training: ${B} x 16 tokens`));
  assert.match(stderr, /batch size auto: trial 1: peak/);
  assert.match(stderr, /done: .*peak memory [\d.]+ MiB/);
  const lines = stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  for (const l of lines) assert.equal(l.batch_size, B), assert.ok(l.peak_bytes <= 2 * MiB);
});

Deno.test("batch auto: bad values are usage errors before training", async () => {
  await initBackend("cpu", { quiet: true });
  const out = () => Deno.makeTempDir();
  await rejectsWith(
    train(args("cpu", "--batch-size", "autox", "--out", await out()), env),
    EXIT.usage,
    /--batch-size must be a whole number >= 1 or 'auto', got 'autox'/,
  );
  await rejectsWith(
    train(args("cpu", "--batch-size", "0", "--out", await out()), env),
    EXIT.usage,
    /--batch-size must be/,
  );
  await rejectsWith(
    train(args("cpu", "--batch-size", "2.5", "--out", await out()), env),
    EXIT.usage,
    /--batch-size must be/,
  );
  await rejectsWith(
    train(args("cpu", "--batch-size", "auto", "--memory-limit", "3 parsecs", "--out", await out()), env),
    EXIT.usage,
    /--memory-limit must be a memory size like 8GiB, 6GB, 512MiB or 2G, got '3 parsecs'/,
  );
  await rejectsWith(
    train(args("cpu", "--batch-size", "4", "--memory-limit", "1GiB", "--out", await out()), env),
    EXIT.usage,
    /--memory-limit only applies to --batch-size auto/,
  );
  await rejectsWith(
    train(args("cpu", "--batch-size", "auto", "--memory-limit", "100kB", "--out", await out()), env),
    EXIT.usage,
    /even batch size 1 does not fit the memory limit of 0\.1 MiB \(a step needs [\d.]+ MiB\)\. Raise --memory-limit/,
  );
});

Deno.test("batch auto: memory sizes and the default limits", async () => {
  assert.equal(parseMemorySize("train", "--memory-limit", "8GiB"), 8 * 2 ** 30);
  assert.equal(parseMemorySize("train", "--memory-limit", "6GB"), 6e9);
  assert.equal(parseMemorySize("train", "--memory-limit", "512MiB"), 512 * MiB);
  assert.equal(parseMemorySize("train", "--memory-limit", "2G"), 2 * 2 ** 30);
  assert.equal(parseMemorySize("train", "--memory-limit", "1.5 gib"), 1.5 * 2 ** 30);
  assert.equal(parseMemorySize("train", "--memory-limit", "4096"), 4096);
  for (const bad of ["", "GiB", "-1GiB", "8 GiBs", "1e9", "3 parsecs", "0"]) {
    assert.throws(() => parseMemorySize("train", "--memory-limit", bad), /--memory-limit must be/, bad);
  }
  const none = { gpuTotal: () => Promise.resolve(null), hostAvailable: () => 8e9 };
  assert.deepEqual(await resolveMemoryLimit("train", { name: "wasm" }, none), {
    bytes: WASM_DEFAULT_LIMIT,
    source: "wasm default (heap at most 4 GiB)",
  });
  assert.equal((await resolveMemoryLimit("train", { name: "cpu" }, none)).bytes, 6e9);
  assert.equal((await resolveMemoryLimit("train", { name: "webgpu", software: true }, none)).bytes, 6e9);
  const h100 = { ...none, gpuTotal: () => Promise.resolve(81559 * MiB) };
  const gpu = await resolveMemoryLimit("train", { name: "webgpu" }, h100);
  assert.equal(gpu.bytes, Math.floor(81559 * MiB * 0.9));
  assert.match(gpu.source, /90% of GPU memory \(nvidia-smi\)/);
  await assert.rejects(
    resolveMemoryLimit("train", { name: "webgpu" }, none),
    (e: unknown) =>
      e instanceof LmpipeError && e.exitCode === EXIT.usage &&
      /needs a memory limit.*--memory-limit/s.test(e.message),
  );
  assert.equal((await resolveMemoryLimit("train", { name: "tensorflow" }, none)).bytes, 6e9);
  // the flag wins over the environment, which wins over the defaults
  const both = { ...h100, flag: "1GiB", env: "2GiB" };
  assert.equal((await resolveMemoryLimit("train", { name: "webgpu" }, both)).bytes, 2 ** 30);
  assert.equal(
    (await resolveMemoryLimit("train", { name: "webgpu" }, { ...both, flag: undefined })).bytes,
    2 * 2 ** 30,
  );
  await assert.rejects(
    resolveMemoryLimit("train", { name: "wasm" }, { env: "lots" }),
    /LMPIPE_MEMORY_LIMIT must be/,
  );
});

Deno.test("batch auto: the search on made-up memory curves", async () => {
  const search = async (f: (b: number) => number, limit: number, maxBatch?: number) => {
    const sizes: number[] = [];
    const r = await searchBatchSize((b) => {
      sizes.push(b);
      const v = f(b);
      if (v === Infinity) return Promise.reject(new Error(`wasm: out of memory allocating ${b} MiB`));
      return Promise.resolve(v);
    }, { limitBytes: limit, maxBatch });
    return { ...r, sizes };
  };
  // linear: at most 4x per trial until a size fails, the line's answer (on the grid), its neighbour
  const lin = await search((b) => 100 + 10 * b, 1000);
  assert.equal(lin.batchSize, 88);
  assert.deepEqual(lin.sizes, [1, 2, 8, 32, 88, 96]);
  assert.deepEqual([lin.baseBytes, lin.bytesPerSequence, lin.converged, lin.capped], [100, 10, true, false]);
  // exact sizes up to 16, then multiples of 8: the answer is the largest such size that fits
  for (const limit of [150, 255, 265, 1000, 5000]) {
    const r = await search((b) => 100 + 10 * b, limit);
    const fits = (b: number) => 100 + 10 * b <= limit;
    assert.ok(fits(r.batchSize) && !fits(nextBatchUp(r.batchSize)), `limit ${limit}: ${r.batchSize}`);
    assert.equal(snapBatch(r.batchSize), r.batchSize);
  }
  // flat, then steps (chunked kernels): still the largest size that fits and the next one measured
  const steps = (b: number) => 1000 + 400 * Math.ceil(b / 16);
  const st = await search(steps, 2300);
  assert.equal(st.batchSize, 48);
  assert.ok(st.sizes.includes(56) && st.converged);
  // an allocation failure counts as "does not fit"
  const oom = await search((b) => (b > 20 ? Infinity : 50 * b), 1e9);
  assert.equal(oom.batchSize, 16);
  assert.ok(oom.trials.some((t) => t.peakBytes === null && /out of memory/.test(t.error!)));
  // the cap
  const cap = await search((b) => b, 1e9, 64);
  assert.deepEqual([cap.batchSize, cap.capped], [64, true]);
  // other errors are not swallowed
  await assert.rejects(
    searchBatchSize(() => Promise.reject(new Error("shape mismatch")), { limitBytes: 1 }),
    /shape mismatch/,
  );
});

Deno.test("batch auto (webgpu): a small search fits its limit and trains like the explicit size", async () => {
  if (!(await webgpuStatus()).ok) return;
  await initBackend("webgpu", { quiet: true });
  try {
    // GPU buffers TF.js holds (pooled ones included) grow with the batch size, less regularly than tensors
    const all = await peaks([1, 2, 3]);
    assert.ok(all[2] > all[0], `webgpu peaks ${all}`);
    const limit = Math.floor((all[1] + all[2]) / 2);
    const auto = await Deno.makeTempDir(), fixed = await Deno.makeTempDir();
    await train(args("webgpu", "--batch-size", "auto", "--memory-limit", String(limit), "--out", auto), env);
    const config = JSON.parse(await Deno.readTextFile(join(auto, "config.json")));
    const B = config.training.batchSize as number;
    assert.ok(B >= 2 && config.training.batchSizeAuto.peakBytes <= limit, JSON.stringify(config.training));
    const [atB, above] = await peaks([B, nextBatchUp(B)]);
    assert.ok(atB <= limit && above > limit, `${atB} at ${B}, ${above} above, limit ${limit}`);
    await train(args("webgpu", "--batch-size", String(B), "--out", fixed), env);
    const la = await readLog(join(auto, "log.jsonl")), lf = await readLog(join(fixed, "log.jsonl"));
    assert.deepEqual(la.map((r) => r.loss), lf.map((r) => r.loss));
    for (const r of la) assert.ok(r.peak_bytes > 0 && r.batch_size === B);
  } finally {
    await initBackend("cpu", { quiet: true });
  }
});
