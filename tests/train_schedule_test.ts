// The training schedules of `lmpipe train`: --lr-schedule cosine|onecycle|constant (the values each step
// logs, against the formulas written out here) and --batch-ramp (the micro-batch sizes each step logs,
// counted by hand; the tokens-seen count; how many steps a time budget fits; a resumed run continues the
// same ramp and reproduces the straight run). Run in-process on the cpu backend with the stand-in bigram
// family (tests/bigram_model.ts), so they depend only on the engine.
import assert from "node:assert/strict";
import { join } from "node:path";
import { EXIT } from "../lib/errors.ts";
import { initBackend } from "../lib/tensor/backend.ts";
import { loadCheckpoint } from "../lib/checkpoint.ts";
import { rampedBatchSize, rampStart, stepsToTokens, stepsWithin } from "../lib/batch_ramp.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { BIGRAM_FAMILY, writeToyShard } from "./bigram_model.ts";
import { readLog, rejectsWith } from "./helpers_run.ts";

await initBackend("cpu", { quiet: true });
const env = { families: { bigram: BIGRAM_FAMILY }, signals: false, stdout: async (_b: Uint8Array) => {} };

const data = await Deno.makeTempDir({ prefix: "lmpipe-schedule-data-" });
await writeToyShard(join(data, "toy_train_000001.bin"), 4000, 64, 1);
await writeToyShard(join(data, "toy_val_000000.bin"), 2000, 64, 3);
const BASE = ["--model", "bigram", "--data", data, "--backend", "cpu", "--seed", "5", "--eval-iters", "1"];

Deno.test("batch ramp sizes: from ceil(B/8) linearly in tokens seen to B, then B", () => {
  assert.deepEqual([1, 7, 8, 9, 16, 64].map(rampStart), [1, 1, 1, 2, 2, 8]);
  assert.equal(rampedBatchSize(0, 16, 1000), 2);
  assert.equal(rampedBatchSize(500, 16, 1000), 9); // 2 + floor(14 * 0.5)
  assert.equal(rampedBatchSize(999, 16, 1000), 15); // 2 + floor(14 * 0.999)
  assert.equal(rampedBatchSize(1000, 16, 1000), 16);
  assert.equal(rampedBatchSize(5000, 16, 1000), 16);
  assert.equal(rampedBatchSize(0, 16, 0), 16, "no ramp");
  assert.equal(rampedBatchSize(0, 1, 1000), 1);
});

Deno.test("batch ramp: steps that fit a time budget count the cheaper early steps", () => {
  const shape = { batchSize: 8, rampTokens: 256, gradAccum: 1, context: 16 };
  // sizes 1, 1, 1, 2, 3 cost 8 s at 1 s/sequence; the next (4) would pass 10 s
  assert.equal(stepsWithin(10, 1, 0, shape), 5);
  assert.equal(stepsWithin(10, 1, 0, { ...shape, rampTokens: 0 }), 1); // floor(10 / 8)
  assert.equal(stepsWithin(100, 1, 256, shape), 12); // ramp done: floor(100 / 8)
  // two micro-batches a step: sizes 1, 1, 2 (seen 0, 32, 64), costs 2 + 2 + 4 = 8 of 9 s
  assert.equal(stepsWithin(9, 1, 0, { ...shape, gradAccum: 2 }), 3);
  assert.equal(stepsWithin(0, 1, 0, shape), 0);
});

Deno.test("train --batch-ramp: the logged sizes and tokens follow the ramp; --resume continues it exactly", async () => {
  const a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
  const common = [...BASE, "--batch-size", "8", "--batch-ramp", "256", "--decay-steps", "9", "--warmup", "2"];
  await train([...common, "--max-steps", "9", "--eval-every", "4", "--out", a], env);
  const la = await readLog(join(a, "log.jsonl"));
  // B = 8, b0 = 1, T = 16: seen 0, 16, 32 -> 1; 48 -> 1 + floor(7*48/256) = 2; 80 -> 3; 128 -> 4; 192 -> 6;
  // 288 >= 256 -> 8
  assert.deepEqual(la.map((r) => r.batch_size), [1, 1, 1, 2, 3, 4, 6, 8, 8]);
  let seen = 0;
  for (const r of la) seen += r.batch_size * 16, assert.equal(r.tokens, seen);
  assert.equal(la[8].tokens, 544);
  const config = JSON.parse(await Deno.readTextFile(join(a, "config.json")));
  assert.equal(config.training.batchRamp, 256);
  assert.equal(config.training.batchSize, 8);

  // stopped mid-ramp at step 4 (seen 80), resumed with no flags but the budget
  await train([...common, "--max-steps", "4", "--eval-every", "4", "--out", b], env);
  assert.equal((await loadCheckpoint(b)).state!.tokensSeen, 80);
  await train(["--resume", "--max-steps", "9", "--out", b], env);
  const lb = await readLog(join(b, "log.jsonl"));
  assert.deepEqual(lb.map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (let i = 0; i < 9; i++) {
    for (const k of ["batch_size", "tokens", "loss", "lr", "grad_norm"] as const) {
      assert.equal(lb[i][k], la[i][k], `step ${i + 1} ${k}`);
    }
  }
  assert.equal(lb[8].val_loss, la[8].val_loss);
  const wa = (await loadCheckpoint(a)).weights, wb = (await loadCheckpoint(b)).weights;
  for (const [n, t] of wa) assert.deepEqual(Array.from(wb.get(n)!.data), Array.from(t.data), n);
  await Deno.remove(a, { recursive: true }), await Deno.remove(b, { recursive: true });
});

Deno.test("train --batch-ramp with --grad-accum: every micro-batch of a step has the step's size", async () => {
  const a = await Deno.makeTempDir();
  await train(
    [
      ...BASE,
      "--batch-size",
      "4",
      "--grad-accum",
      "2",
      "--batch-ramp",
      "100",
      "--max-steps",
      "4",
      "--out",
      a,
    ],
    env,
  );
  const la = await readLog(join(a, "log.jsonl"));
  // b0 = 1, 2 x 16 tokens a sequence: seen 0 -> 1; 32 -> 1 + floor(3*32/100) = 1; 64 -> 2; 128 >= 100 -> 4
  assert.deepEqual(la.map((r) => r.batch_size), [1, 1, 2, 4]);
  assert.deepEqual(la.map((r) => r.tokens), [32, 64, 128, 256]);
  await Deno.remove(a, { recursive: true });
});

/** The learning rate a schedule gives step s (0-based), written out for warmup 3, decay at 10. */
function expectedLr(schedule: string, s: number): number {
  const lr = 1e-2, min = 1e-3, w = 3, d = 10;
  const cos = (r: number) => 0.5 * (1 + Math.cos(Math.PI * r));
  if (schedule === "onecycle") {
    if (s < w) return lr / 25 + cos(1 - s / w) * (lr - lr / 25);
    return s >= d ? min : min + cos((s - w) / (d - w)) * (lr - min);
  }
  if (s < w) return lr * (s + 1) / (w + 1);
  if (schedule === "constant") return lr;
  return s >= d ? min : min + cos((s - w) / (d - w)) * (lr - min);
}

for (const schedule of ["cosine", "onecycle", "constant"]) {
  Deno.test(`train --lr-schedule ${schedule}: each step's logged lr is the formula's`, async () => {
    const a = await Deno.makeTempDir();
    const flags = ["--lr", "1e-2", "--min-lr", "1e-3", "--warmup", "3", "--decay-steps", "10"];
    await train(
      [...BASE, ...flags, "--batch-size", "2", "--lr-schedule", schedule, "--max-steps", "12", "--out", a],
      env,
    );
    const la = await readLog(join(a, "log.jsonl"));
    assert.equal(la.length, 12);
    for (const [i, r] of la.entries()) {
      assert.ok(Math.abs(r.lr - expectedLr(schedule, i)) < 1e-15, `step ${i + 1}: ${r.lr}`);
    }
    const stored = JSON.parse(await Deno.readTextFile(join(a, "config.json"))).training.schedule;
    assert.equal(stored, schedule);
    await Deno.remove(a, { recursive: true });
  });
}

Deno.test("train: bad schedule flags are usage errors naming the choices", async () => {
  const out = await Deno.makeTempDir();
  const base = [...BASE, "--max-steps", "1", "--out", out];
  await rejectsWith(
    train([...base, "--lr-schedule", "linear"], env),
    EXIT.usage,
    /cosine, onecycle, constant/,
  );
  await rejectsWith(
    train([...base, "--lr-schedule", "cosine", "--schedule", "onecycle"], env),
    EXIT.usage,
    /older spelling of --lr-schedule/,
  );
  await rejectsWith(
    train([...base, "--batch-ramp", "lots"], env),
    EXIT.usage,
    /--batch-ramp must be a count/,
  );
  await Deno.remove(out, { recursive: true });
});

Deno.test("train --max-tokens: stops at the first step reaching N tokens; the decay is fitted to those steps", async () => {
  const a = await Deno.makeTempDir();
  // 2 x 16 = 32 tokens a step: 100 tokens take 4 steps (128 tokens)
  await train([...BASE, "--batch-size", "2", "--max-tokens", "100", "--warmup", "1", "--out", a], env);
  const la = await readLog(join(a, "log.jsonl"));
  assert.deepEqual(la.map((r) => r.tokens), [32, 64, 96, 128]);
  assert.ok(
    Math.abs(la[3].lr - (6e-4 / 10 + 0.5 * (1 + Math.cos(Math.PI * 2 / 3)) * (6e-4 - 6e-4 / 10))) < 1e-15,
  );
  // with a ramp, the steps are counted along it: sizes 1, 1, 1, 2, 3, 4 reach 192 >= 150 tokens
  const b = await Deno.makeTempDir();
  await train(
    [...BASE, "--batch-size", "8", "--batch-ramp", "256", "--max-tokens", "150", "--warmup", "1", "--out", b],
    env,
  );
  const lb = await readLog(join(b, "log.jsonl"));
  assert.deepEqual(lb.map((r) => r.batch_size), [1, 1, 1, 2, 3, 4]);
  // decay steps 6 (not the 10 of full-size steps): step index 5 is 4/5 of the way down
  assert.ok(Math.abs(lb[5].lr - (6e-5 + 0.5 * (1 + Math.cos(Math.PI * 0.8)) * (6e-4 - 6e-5))) < 1e-15);
  assert.equal(stepsToTokens(150, 0, { batchSize: 8, rampTokens: 256, gradAccum: 1, context: 16 }), 6);
  assert.equal(stepsToTokens(100, 0, { batchSize: 2, rampTokens: 0, gradAccum: 1, context: 16 }), 4);
  await Deno.remove(a, { recursive: true }), await Deno.remove(b, { recursive: true });
});
