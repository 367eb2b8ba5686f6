// The training loop on webgpu computes the clip factor and the loss scaler's overflow verdict on the
// device and records AdamW before its one host read (lib/optim.ts deviceStepControl). It must take the
// same decisions as the host computing them after the read (LMPIPE_WEBGPU_DEVICE_CLIP=0): the same steps
// skipped under real binary16 overflows, skipped steps leaving every weight as it was, the same losses
// (the clip factor differs only in float32 against float64 rounding).
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { webgpuStatus } from "../lib/tensor/testing.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { type StepLog, trainLoop } from "../lib/train_loop.ts";
import { readData } from "../lib/tensor/backend.ts";
import { writeToyShard } from "./bigram_model.ts";

const gpu = await webgpuStatus();
const V = 64, T = 16, B = 2;

async function run(dir: string, deviceControl: boolean) {
  Deno.env.set("LMPIPE_WEBGPU_DEVICE_CLIP", deviceControl ? "1" : "0");
  const tr = await WindowSampler.open([join(dir, "toy_train_000001.bin")], T, V, 9);
  const val = await WindowSampler.open([join(dir, "toy_val_000000.bin")], T, V, 9, "validation");
  const model = createModel(resolveConfig("gpt", "tiny", { contextLength: T, vocabSize: V }), 5);
  const logs: StepLog[] = [];
  const snapshots: tf.Tensor[] = []; // the token embedding after each step (a clone keeps its data)
  const wte = model.params.get("transformer.wte.weight")!;
  const initial = new Float32Array(await readData(wte));
  try {
    await trainLoop({
      model,
      train: tr,
      val,
      out: await Deno.makeTempDir(),
      config: {},
      quiet: true,
      log: (r) => {
        logs.push(r);
        snapshots.push(tf.clone(wte));
      },
    }, {
      batchSize: B,
      gradAccum: 1,
      lr: 3e-3,
      minLr: 3e-4,
      warmup: 1,
      decaySteps: 12,
      schedule: "cosine" as const,
      weightDecay: 0.1,
      gradClip: 0.5, // active: the first good steps' gradient norms are above it
      maxSteps: 12,
      maxTimeS: null,
      precision: "mixed" as const,
      scaleWindow: 2000,
      initScale: 2 ** 24, // the binary16 backward pass overflows for the first several steps (below 2^17 here)
      ckptEvery: 0,
      evalEvery: 0,
      evalIters: 1,
      seed: 1,
    });
  } finally {
    Deno.env.delete("LMPIPE_WEBGPU_DEVICE_CLIP");
    tr.close(), val.close();
  }
  const weights: Float32Array[] = [];
  for (const t of snapshots) weights.push(new Float32Array(await readData(t)));
  tf.dispose(snapshots), model.dispose();
  return { logs, weights, initial };
}

Deno.test({
  name:
    "webgpu training: clip factor and overflow verdict on the device give the host's decisions and losses",
  ignore: !gpu.ok,
  fn: async () => {
    await initBackend("webgpu", { quiet: true });
    const dir = await Deno.makeTempDir({ prefix: "lmpipe-devctl-" });
    await writeToyShard(join(dir, "toy_train_000001.bin"), 4000, V, 1);
    await writeToyShard(join(dir, "toy_val_000000.bin"), 1000, V, 3);
    const device = await run(dir, true), host = await run(dir, false);
    const skips = (r: typeof device) => r.logs.map((l) => l.skipped);
    assert.deepEqual(skips(device), skips(host), "the same steps are skipped");
    const firstGood = skips(device).indexOf(false);
    assert(firstGood > 0 && firstGood < 10, `some steps overflow, then training goes on: ${skips(device)}`);
    for (let i = 0; i < firstGood; i++) {
      assert.deepEqual(
        device.weights[i],
        device.initial,
        `skipped step ${i + 1} left the embedding as it was`,
      );
    }
    assert.notDeepEqual(device.weights[firstGood], device.initial, "the first good step moved the weights");
    for (let i = 0; i < device.logs.length; i++) {
      const [a, b] = [device.logs[i], host.logs[i]];
      assert.equal(a.loss_scale, b.loss_scale, `step ${i + 1}: loss scale`);
      if (a.loss === null || b.loss === null) assert.equal(a.loss, b.loss, `step ${i + 1}: loss`);
      else {assert(
          Math.abs(a.loss - b.loss) <= 1e-4 * Math.abs(b.loss),
          `step ${i + 1}: ${a.loss} vs ${b.loss}`,
        );}
    }
    assert(device.logs.at(-1)!.loss! < Math.log(V), `the loss falls: ${device.logs.at(-1)!.loss}`);
  },
});
