// A real binary16 gradient overflow under --precision mixed (nothing injected): a tiny GPT whose scaled loss
// is finite and whose float32 backward pass is finite at the same loss scale, but whose fp16-rounded
// backward pass overflows in an activation gradient, so inf reaches every parameter upstream of it (the
// embeddings too). The training loop must skip that step without touching the weights, halve the scale,
// and keep halving on each further overflow until the steps go through and the loss is finite.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import type { Precision } from "../lib/models/types.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { type StepLog, trainLoop } from "../lib/train_loop.ts";
import { writeToyShard } from "./bigram_model.ts";

await initBackend("cpu", { quiet: true });

const V = 64, T = 16, B = 2;
/**
 * The starting loss scale: measured on this model and data, the fp16 backward pass first overflows
 * between 2^19.5 and 2^20 (an activation gradient passes 65504) while the float32 one stays finite.
 */
const S0 = 2 ** 22;

function gptConfig() {
  return resolveConfig("gpt", "tiny", { contextLength: T, vocabSize: V });
}

/** Gradients of S * loss on one fixed batch: finite or not, the largest finite magnitude per parameter. */
async function scaledGrads(precision: Precision, S: number) {
  const model = createModel(gptConfig(), 5);
  const x = tf.tensor2d(Int32Array.from({ length: B * T }, (_, i) => (i * 7) % V), [B, T], "int32");
  const y = tf.tensor2d(Int32Array.from({ length: B * T }, (_, i) => (i * 11 + 3) % V), [B, T], "int32");
  const vars = [...model.params.values()];
  const { value, grads } = tf.variableGrads(
    () => tf.mul(model.loss(x, y, { precision, training: true }), S) as tf.Scalar,
    vars,
  );
  const finite = new Map<string, boolean>();
  for (const [name, v] of model.params) finite.set(name, (await grads[v.name].data()).every(Number.isFinite));
  const scaledLoss = (await value.data())[0];
  tf.dispose([value, x, y, ...Object.values(grads)]);
  model.dispose();
  return { scaledLoss, finite };
}

Deno.test("loss scale: a real fp16 overflow in the backward pass (fp32 stays finite at the same scale)", async () => {
  const fp32 = await scaledGrads("fp32", S0);
  assert.ok(
    Number.isFinite(fp32.scaledLoss),
    "the scaled loss itself is finite (it is float32 under autocast)",
  );
  assert.ok([...fp32.finite.values()].every((f) => f), "float32 gradients at this scale are finite");
  const mixed = await scaledGrads("mixed", S0);
  // The overflow happened in an activation's gradient: it travelled down to the position embedding, which
  // only receives gradient through the whole network (a weight gradient's own overflow would stay local).
  assert.equal(mixed.finite.get("transformer.wpe.weight"), false, "inf reaches the position embedding");
  // four halvings later the fp16 backward pass is finite again
  const low = await scaledGrads("mixed", S0 / 16);
  assert.ok([...low.finite.values()].every((f) => f), `mixed gradients at S = ${S0 / 16} are finite`);
});

Deno.test("loss scale: the training loop skips real fp16 overflows, halves S, keeps the weights, then trains", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-overflow-" });
  await writeToyShard(join(dir, "toy_train_000001.bin"), 4000, V, 1);
  await writeToyShard(join(dir, "toy_val_000000.bin"), 1000, V, 3);
  const tr = await WindowSampler.open([join(dir, "toy_train_000001.bin")], T, V, 9);
  const val = await WindowSampler.open([join(dir, "toy_val_000000.bin")], T, V, 9, "validation");
  const model = createModel(gptConfig(), 5);
  const before = new Map<string, Float32Array>();
  for (const [name, v] of model.params) before.set(name, (await v.data()) as Float32Array);
  const logs: StepLog[] = [];
  const snapshots: Map<string, Float32Array>[] = [];
  const opts = {
    batchSize: B,
    gradAccum: 1,
    lr: 3e-3,
    minLr: 3e-4,
    warmup: 1,
    decaySteps: 10,
    schedule: "cosine" as const,
    weightDecay: 0.1,
    gradClip: 1,
    maxSteps: 8,
    maxTimeS: null,
    precision: "mixed" as const,
    scaleWindow: 2000,
    initScale: S0,
    ckptEvery: 0,
    evalEvery: 0,
    evalIters: 1,
    seed: 1,
  };
  await trainLoop({
    model,
    train: tr,
    val,
    out: await Deno.makeTempDir(),
    config: {},
    quiet: true,
    log: (r) => {
      logs.push(r);
      // weights right after this step (the log line is written once the step is done)
      const snap = new Map<string, Float32Array>();
      for (const [name, v] of model.params) snap.set(name, v.dataSync() as Float32Array);
      snapshots.push(snap);
    },
  }, opts);
  const skipped = logs.map((r) => r.skipped);
  const firstGood = skipped.indexOf(false);
  assert.ok(skipped[0], "the first step overflows and is skipped");
  assert.ok(firstGood > 0 && firstGood < 6, `the scale falls low enough within a few steps: ${skipped}`);
  logs.forEach((r, i) => {
    if (i <= firstGood) {
      assert.equal(r.loss_scale, S0 / 2 ** i, `step ${i + 1} ran at S0 / 2^${i}`);
    }
  });
  for (let i = 0; i < firstGood; i++) {
    assert.equal(logs[i].loss, null, `skipped step ${i + 1} logs no loss`);
    for (const [name, w] of snapshots[i]) {
      assert.deepEqual(w, before.get(name), `step ${i + 1} (skipped) left ${name} untouched`);
    }
  }
  assert.notDeepEqual(
    snapshots[firstGood].get("transformer.wte.weight"),
    before.get("transformer.wte.weight"),
  );
  const last = logs[logs.length - 1];
  assert.equal(logs.length, 8);
  assert.ok(
    Number.isFinite(last.loss!) && !last.skipped,
    `training continued to a finite loss: ${last.loss}`,
  );
  assert.ok(last.loss! < Math.log(V) + 0.5, `loss ${last.loss} is a trained-model value`);
  tr.close(), val.close(), model.dispose();
});
