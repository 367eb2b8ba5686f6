// A run killed after its last checkpoint and resumed with the same --log: the resumed run replays the
// steps since that checkpoint, and the log must then hold every step once (cut back to the
// checkpoint's step before appending, atomically), not the replayed steps twice.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend } from "../lib/tensor/backend.ts";
import { truncateStepLog } from "../lib/step_log.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { BIGRAM_ENV, bigramTrainFlags, toyData } from "./helpers_bigram_run.ts";
import { readLog } from "./helpers_run.ts";

await initBackend("cpu", { quiet: true });
const env = BIGRAM_ENV;

Deno.test("train --resume after a kill: log.jsonl holds each step once", async () => {
  const data = await toyData();
  const out = await Deno.makeTempDir();
  const base = bigramTrainFlags(data);
  await train([...base, "--max-steps", "3", "--out", out], env);
  // Keep the step-3 checkpoint, run on to step 5, then put the step-3 checkpoint back: the folder is
  // now what a kill -9 after step 5 (and before its checkpoint) leaves, with a log of steps 1..5.
  const saved = await Deno.makeTempDir();
  for (const f of ["model.safetensors", "optimizer.safetensors", "config.json", "state.json"]) {
    await Deno.copyFile(join(out, f), join(saved, f));
  }
  await train(["--resume", "--max-steps", "5", "--out", out], env);
  for (const f of ["model.safetensors", "optimizer.safetensors", "config.json", "state.json"]) {
    await Deno.copyFile(join(saved, f), join(out, f));
  }
  await Deno.writeTextFile(join(out, "log.jsonl"), '{"step": 6, "loss"', { append: true }); // a cut line
  await train(["--resume", "--max-steps", "6", "--out", out], env);
  const steps = (await readLog(join(out, "log.jsonl"))).map((r) => r.step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
});

Deno.test("truncateStepLog keeps records up to the step and lines without a step", async () => {
  const p = join(await Deno.makeTempDir(), "log.jsonl");
  await Deno.writeTextFile(p, '{"step":1}\n{"note":"x"}\n{"step":2}\n{"step":3}\n{"step":4');
  assert.equal(await truncateStepLog(p, 2), 2);
  assert.equal(await Deno.readTextFile(p), '{"step":1}\n{"note":"x"}\n{"step":2}\n');
  assert.equal(await truncateStepLog(join(p, "..", "missing.jsonl"), 2), 0);
});
