// Resume exactness with the study's real model families (tests/train_test.ts proves the engine with a
// stand-in model): `lmpipe train` for 3 steps, then --resume to 6, must log the same losses, gradient
// norms, loss scales and validation loss as a straight 6-step run, and end with identical weights.
// Mixed precision is used so the loss scaler's state is part of what must survive the restart.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend } from "../lib/tensor/backend.ts";
import { loadCheckpoint } from "../lib/checkpoint.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { readLog, TINY_SHAPES, tinyModelFlags } from "./helpers_run.ts";

await initBackend("wasm", { quiet: true });
const env = { signals: false, stdout: async (_b: Uint8Array) => {} };

for (const model of Object.keys(TINY_SHAPES)) {
  Deno.test(`train ${model}: 3 steps + --resume to 6 reproduces a straight 6-step run (mixed precision, wasm)`, async () => {
    const a = await Deno.makeTempDir({ prefix: "lmpipe-resume-a-" }),
      b = await Deno.makeTempDir({ prefix: "lmpipe-resume-b-" });
    const common = [
      ...tinyModelFlags(model),
      "--data",
      "fixtures/shards",
      "--backend",
      "wasm",
      "--batch-size",
      "2",
      "--seed",
      "11",
      "--lr",
      "3e-3",
      "--precision",
      "mixed",
      "--decay-steps",
      "6",
      "--warmup",
      "2",
      "--eval-every",
      "3",
      "--eval-iters",
      "1",
    ];
    await train([...common, "--max-steps", "6", "--out", a], env);
    await train([...common, "--max-steps", "3", "--out", b], env);
    await train(["--resume", "--max-steps", "6", "--out", b], env);
    const la = await readLog(join(a, "log.jsonl")), lb = await readLog(join(b, "log.jsonl"));
    assert.deepEqual(lb.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
    for (let i = 0; i < 6; i++) {
      for (const k of ["loss", "lr", "grad_norm", "loss_scale", "skipped", "tokens"] as const) {
        assert.equal(lb[i][k], la[i][k], `step ${i + 1} ${k}`);
      }
    }
    assert.equal(lb[5].val_loss, la[5].val_loss);
    const stats = JSON.parse(await Deno.readTextFile(join(a, "config.json"))).stats;
    assert.ok(
      Number.isInteger(stats.params) && stats.params > 0 && stats.flops_per_token > 0,
      JSON.stringify(stats),
    );
    const wa = (await loadCheckpoint(a)).weights, wb = (await loadCheckpoint(b)).weights;
    assert.equal(wb.size, wa.size);
    for (const [n, t] of wa) assert.deepEqual(Array.from(wb.get(n)!.data), Array.from(t.data), n);
    await Deno.remove(a, { recursive: true }), await Deno.remove(b, { recursive: true });
  });
}
