// Replayed training steps on webgpu (lib/train_replay.ts, lib/tensor/webgpu/replay.ts) must compute exactly
// what the same steps compute through TF.js: the same losses and gradient norms at every step and the same
// weights and AdamW moments at the end, bit for bit, for a gpt and an image model; and a step whose GPU work
// varies in a way no step input explains must be refused rather than replayed.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { webgpuStatus } from "../lib/tensor/testing.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { type StepLog, trainLoop } from "../lib/train_loop.ts";
import { replayStats } from "../lib/train_replay.ts";
import { captureStep, stepInputWrite } from "../lib/tensor/webgpu/replay.ts";
import { writeToyShard } from "./bigram_model.ts";

const gpu = await webgpuStatus();
const V = 64, T = 16;

async function train(
  dir: string,
  family: string,
  replay: boolean,
  steps: number,
  batchRamp = 0,
  precision: "fp32" | "mixed" = "fp32",
  initScale = 1,
) {
  const small = family !== "gpt"; // the image models are slow on llvmpipe: one micro-batch of 2
  Deno.env.set("LMPIPE_WEBGPU_REPLAY", replay ? "1" : "0");
  const tr = await WindowSampler.open([join(dir, "toy_train_000001.bin")], T, V, 9);
  const val = await WindowSampler.open([join(dir, "toy_val_000000.bin")], T, V, 9, "validation");
  const model = createModel(resolveConfig(family, "tiny", { contextLength: T, vocabSize: V }), 5);
  const logs: StepLog[] = [];
  const before = replayStats.replayed, aheadBefore = replayStats.issuedAhead;
  const out = await Deno.makeTempDir();
  try {
    await trainLoop({ model, train: tr, val, out, config: {}, quiet: true, log: (r) => logs.push(r) }, {
      batchSize: small ? 2 : 3,
      gradAccum: small ? 1 : 2,
      lr: 3e-3,
      minLr: 3e-4,
      warmup: 2,
      decaySteps: steps,
      schedule: "cosine" as const,
      weightDecay: 0.1,
      gradClip: 0.5,
      maxSteps: steps,
      maxTimeS: null,
      precision,
      scaleWindow: 2000,
      initScale,
      ckptEvery: 4, // a checkpoint in the middle reads the weights between replays
      evalEvery: 3, // and an eval: neither may see the next step, issued ahead, in the weights
      evalIters: 1,
      seed: 1,
      ...(batchRamp > 0 ? { batchRamp } : {}),
    });
  } finally {
    Deno.env.delete("LMPIPE_WEBGPU_REPLAY");
    tr.close(), val.close();
    await Deno.remove(out, { recursive: true });
  }
  const weights = new Map<string, Float32Array>();
  for (const [name, p] of model.params) weights.set(name, new Float32Array(await readData(p)));
  model.dispose();
  return {
    logs,
    weights,
    replayed: replayStats.replayed - before,
    ahead: replayStats.issuedAhead - aheadBefore,
  };
}

async function toyData(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-replay-" });
  await writeToyShard(join(dir, "toy_train_000001.bin"), 4000, V, 1);
  await writeToyShard(join(dir, "toy_val_000000.bin"), 1000, V, 3);
  return dir;
}

/** The same training run with replays and without, on fresh toy data (removed after). */
async function bothWays(
  family: string,
  steps: number,
  batchRamp = 0,
  precision: "fp32" | "mixed" = "fp32",
  scale = 1,
) {
  await initBackend("webgpu", { quiet: true });
  const dir = await toyData();
  try {
    const replayed = await train(dir, family, true, steps, batchRamp, precision, scale);
    const plain = await train(dir, family, false, steps, batchRamp, precision, scale);
    return { replayed, plain };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function assertSameRun(a: Awaited<ReturnType<typeof train>>, b: Awaited<ReturnType<typeof train>>) {
  assert.deepEqual(a.logs.map((l) => l.loss), b.logs.map((l) => l.loss), "losses per step");
  assert.deepEqual(a.logs.map((l) => l.grad_norm), b.logs.map((l) => l.grad_norm), "gradient norms");
  assert.deepEqual(a.logs.map((l) => l.val_loss), b.logs.map((l) => l.val_loss), "validation losses");
  for (const [name, w] of a.weights) assert.deepEqual(w, b.weights.get(name), `weights of ${name}`);
}

for (const family of ["gpt", "pixel-attn"]) {
  Deno.test({
    name: `webgpu training: replayed ${family} steps equal TF.js steps bit for bit`,
    ignore: !gpu.ok,
    fn: async () => {
      const steps = family === "gpt" ? 9 : 5;
      const { replayed, plain } = await bothWays(family, steps);
      assert.equal(plain.replayed, 0);
      // step 1 as usual, steps 2 and 3 recorded, then replays (the checkpoint at step 4 reads weights)
      assert.equal(replayed.replayed, steps - 3, `replayed steps (refusals: ${replayStats.refusals})`);
      // gpt: steps 6 and 8 go out before 5's and 7's reads (4, 6 and 8 end in a checkpoint or an eval)
      if (family === "gpt") assert.equal(replayed.ahead, 2);
      assertSameRun(replayed, plain);
    },
  });
}

Deno.test({
  name: "webgpu training: mixed precision with binary16 overflows records again at each loss scale, exact",
  ignore: !gpu.ok,
  fn: async () => {
    // 2^24 overflows the binary16 backward pass for the first steps: skipped steps halve the scale, and
    // each new scale is recorded again before replays resume
    const { replayed, plain } = await bothWays("gpt", 12, 0, "mixed", 2 ** 24);
    assert.ok(plain.logs.some((l) => l.skipped), "some steps overflow and are skipped");
    assert.ok(replayed.replayed > 0, `replayed steps (refusals: ${replayStats.refusals})`);
    assert.equal(replayed.ahead, 0, "no step is issued ahead under mixed");
    assert.deepEqual(replayed.logs.map((l) => l.skipped), plain.logs.map((l) => l.skipped), "skipped steps");
    assert.deepEqual(replayed.logs.map((l) => l.loss_scale), plain.logs.map((l) => l.loss_scale), "scales");
    assertSameRun(replayed, plain);
  },
});

Deno.test({
  name: "webgpu training: a batch-size ramp records again at each new size and stays exact",
  ignore: !gpu.ok,
  fn: async () => {
    const { replayed, plain } = await bothWays("gpt", 10, 200);
    const sizes = replayed.logs.map((l) => l.batch_size);
    assert.ok(new Set(sizes).size > 1, `the ramp changes the batch size: ${sizes}`);
    assertSameRun(replayed, plain);
  },
});

Deno.test({
  name: "webgpu replay: a step that writes other untagged values each time is refused; tagged inputs are not",
  ignore: !gpu.ok,
  fn: async () => {
    await initBackend("webgpu", { quiet: true });
    const w = tf.variable(tf.ones([4]));
    const step = (k: number, tagged: boolean) => () => {
      const t = tf.tensor1d([k, k + 1, k + 2, k + 3]);
      if (tagged) stepInputWrite("input", t);
      const out = tf.mul(w, t);
      w.assign(tf.add(w, out));
      t.dispose(), out.dispose();
      return tf.sum(w);
    };
    for (const tagged of [false, true]) {
      const a = captureStep([w], step(1, tagged)), b = captureStep([w], step(2, tagged));
      a.result.dispose(), b.result.dispose();
      const why = b.capture.compare(a.capture);
      a.capture.dispose(), b.capture.dispose();
      if (tagged) assert.equal(why, null);
      else assert.match(why ?? "", /untagged write of other values/);
    }
    // a replay with a new input computes what TF.js would: w <- w + w * x
    const first = captureStep([w], step(1, true));
    first.result.dispose(), first.capture.dispose();
    const { capture, result } = captureStep([w], step(1, true));
    result.dispose();
    capture.carryState(); // the recorded step left w's new values in its new buffer only
    const w0 = new Float32Array(await readData(w));
    capture.replay(new Map([["input", new Uint8Array(new Float32Array([5, 6, 7, 8]).buffer)]]), [w]);
    const sum = (await capture.readResult())[0];
    const expect = w0.map((x, i) => Math.fround(x + Math.fround(x * (5 + i))));
    assert.deepEqual(new Float32Array(await readData(w)), expect);
    assert.equal(sum, expect.reduce((s, x) => s + x, 0));
    capture.dispose();
    w.dispose();
  },
});
