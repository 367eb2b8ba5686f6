// `--preset study` trains as the study's code did (lib/preset_training.ts): per model AdamW settings
// (image models: PyTorch's defaults with decay on every parameter; the control GPT: nanoGPT's), nanoGPT's
// schedule, recorded in config.json; explicit flags win; old runs keep nanoGPT's values.
import assert from "node:assert/strict";
import { join } from "node:path";
import { EXIT } from "../lib/errors.ts";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { presetTraining } from "../lib/preset_training.ts";
import { adamWOptions } from "../lib/train_loop.ts";
import { AdamW } from "../lib/optim.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { writeToyShard } from "./bigram_model.ts";
import { readLog, rejectsWith } from "./helpers_run.ts";

await initBackend("cpu", { quiet: true });

Deno.test("presetTraining: the study's optimiser per model, nothing for other presets", () => {
  const schedule = {
    lr: 6e-4,
    minLr: 6e-5,
    warmup: 2000,
    decaySteps: 600_000,
    schedule: "cosine",
    gradClip: 1,
    beta1: 0.9,
    eps: 1e-8,
  };
  for (const m of ["pixel-cumsum", "pixel-attn", "pixel-attn-wide"]) {
    assert.deepEqual(presetTraining(m, "study"), {
      ...schedule,
      beta2: 0.999,
      weightDecay: 0.01,
      decayParams: "all",
    });
  }
  assert.deepEqual(presetTraining("gpt", "study"), {
    ...schedule,
    beta2: 0.95,
    weightDecay: 0.1,
    decayParams: "matrices",
  });
  assert.deepEqual(presetTraining("gpt", "gpt2"), {});
  assert.deepEqual(presetTraining("pixel-attn", "tiny"), {});
  assert.deepEqual(presetTraining("llama", "study"), {});
});

Deno.test("adamWOptions: decay on every parameter ('all') or the model's matrices, nanoGPT's betas when absent", () => {
  const model = createModel(resolveConfig("pixel-cumsum", "tiny", { vocabSize: 64, contextLength: 8 }), 1);
  const names = [...model.params.keys()];
  const all = adamWOptions(model, { weightDecay: 0.01, decayParams: "all", beta2: 0.999 });
  assert.ok(names.every((n) => all.decays(n)));
  assert.deepEqual([all.beta1, all.beta2, all.eps], [0.9, 0.999, 1e-8]);
  const matrices = adamWOptions(model, { weightDecay: 0.1 });
  const skipped = names.filter((n) => !matrices.decays(n));
  assert.ok(
    skipped.includes("ln_f.weight") && skipped.includes("transformer.h.0.ln_1.weight"),
    String(skipped),
  );
  assert.ok(names.filter((n) => matrices.decays(n)).every((n) => model.decays(n)));
  assert.deepEqual([matrices.beta1, matrices.beta2, matrices.eps], [0.9, 0.95, 1e-8]);
  model.dispose();
});

Deno.test("AdamW with the study's image-model settings: a LayerNorm weight decays, as torch.optim.AdamW (float64)", async () => {
  const model = createModel(resolveConfig("pixel-cumsum", "tiny", { vocabSize: 64, contextLength: 8 }), 1);
  const name = "ln_f.weight", p0 = Array.from(await readData(model.params.get(name)!));
  const lr = 6e-4, steps = 3;
  const grads = Array.from({ length: steps }, (_, t) => Float32Array.from(p0, (_, i) => Math.sin(i + t)));
  // three lmpipe updates of a copy of the weight, with the study's pixel settings or decay on matrices only
  const run = async (decayParams: "all" | "matrices") => {
    const w = tf.variable(tf.tensor1d(p0));
    const opt = new AdamW(new Map([[name, w]]), {
      ...adamWOptions(model, { ...presetTraining("pixel-cumsum", "study"), weightDecay: 0.01, decayParams }),
      fused: false,
    });
    for (const g of grads) {
      const gt = tf.tensor1d(g);
      opt.step(new Map([[name, gt]]), lr);
      gt.dispose();
    }
    const out = await readData(w);
    tf.dispose([w, ...opt.m.values(), ...opt.v.values()]);
    return out;
  };
  // torch.optim.AdamW's update, literally, in float64
  let w = p0.slice(), m = p0.map(() => 0), v = p0.map(() => 0);
  for (let t = 1; t <= steps; t++) {
    const g = grads[t - 1];
    w = w.map((x) => x * (1 - lr * 0.01));
    m = m.map((x, i) => 0.9 * x + 0.1 * g[i]);
    v = v.map((x, i) => 0.999 * x + 0.001 * g[i] * g[i]);
    const bc1 = 1 - 0.9 ** t, bc2 = 1 - 0.999 ** t;
    w = w.map((x, i) => x - (lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + 1e-8));
  }
  const maxDiff = (a: ArrayLike<number>) => Math.max(...w.map((x, i) => Math.abs(a[i] - x)));
  assert.ok(maxDiff(await run("all")) < 1e-6, `decay on every parameter: ${maxDiff(await run("all"))}`);
  // the check can tell: without decay on the norm weight (1.0) it is 3 lr wd ~ 1.8e-5 off
  assert.ok(maxDiff(await run("matrices")) > 1e-5, `matrices only: ${maxDiff(await run("matrices"))}`);
  model.dispose();
});

const env = { signals: false, stdout: async (_b: Uint8Array) => {} };
const data = await Deno.makeTempDir({ prefix: "lmpipe-preset-training-" });
await writeToyShard(join(data, "toy_train_000001.bin"), 3000, 64, 1);
await writeToyShard(join(data, "toy_val_000000.bin"), 1000, 64, 3);
const common = [
  "--data",
  data,
  "--backend",
  "cpu",
  "--batch-size",
  "2",
  "--max-steps",
  "1",
  "--eval-iters",
  "1",
];
const small = ["--set", "vocabSize=64", "--set", "contextLength=8"];
/** A one-layer, 16-wide gpt of `preset`. */
const gptArgs = (preset: string) => [
  ...["--model", "gpt", "--preset", preset, ...small],
  ...["--set", "nLayer=1", "--set", "nEmbd=16", "--set", "nHead=2"],
];
/** The values of `keys` in a run's stored training options. */
const fields = (training: Record<string, unknown>, keys: string[]) => keys.map((k) => training[k]);

async function trained(args: string[]) {
  const out = await Deno.makeTempDir({ prefix: "lmpipe-preset-training-run-" });
  await train([...common, ...args, "--out", out], env);
  const config = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
  return { training: config.training, model: config.model, log: await readLog(join(out, "log.jsonl")), out };
}

Deno.test("train --preset study: config.json records the study's optimiser per model; flags win", async () => {
  const pixel = await trained([
    "--model",
    "pixel-cumsum",
    "--preset",
    "study",
    ...small,
    ...["--set", "nEmbd=16", "--set", "nHead=2", "--set", "nWarmup=1", "--set", "channels=2"],
    ...["--set", "imageSize=6", "--set", "keyDim=4", "--set", "cnnWidth=4", "--set", "cnnDepth=3"],
  ]);
  const t = pixel.training;
  assert.deepEqual(
    [
      t.beta1,
      t.beta2,
      t.eps,
      t.weightDecay,
      t.decayParams,
      t.lr,
      t.minLr,
      t.warmup,
      t.decaySteps,
      t.schedule,
      t.gradClip,
    ],
    [0.9, 0.999, 1e-8, 0.01, "all", 6e-4, 6e-5, 2000, 600_000, "cosine", 1],
  );
  assert.equal(pixel.model.gelu, "exact");
  assert.equal(pixel.log[0].lr, 6e-4 / 2001); // nanoGPT's warm-up: lr (it + 1) / (warmup + 1)

  const keys = ["beta2", "weightDecay", "decayParams", "warmup"];
  const gpt = await trained(gptArgs("study"));
  assert.deepEqual(fields(gpt.training, keys), [0.95, 0.1, "matrices", 2000]);
  assert.deepEqual([gpt.model.bias, gpt.model.gelu], [false, "exact"]);

  const flags = await trained([
    ...gptArgs("study"),
    ...["--beta2", "0.98", "--adam-eps", "1e-6", "--decay-params", "all", "--weight-decay", "0.05"],
    ...["--warmup", "3"],
  ]);
  assert.deepEqual(fields(flags.training, [...keys, "eps"]), [0.98, 0.05, "all", 3, 1e-6]);

  const tiny = await trained(gptArgs("tiny"));
  assert.deepEqual(fields(tiny.training, keys), [0.95, 0.1, "matrices", null]);
});

Deno.test("train: a run stored without the AdamW fields resumes with nanoGPT's; bad values are usage errors", async () => {
  const { out } = await trained(gptArgs("study"));
  const path = join(out, "config.json");
  const config = JSON.parse(await Deno.readTextFile(path));
  for (const k of ["beta1", "beta2", "eps", "decayParams"]) delete config.training[k];
  config.training.weightDecay = 0.01;
  await Deno.writeTextFile(path, JSON.stringify(config));
  await train(["--resume", "--max-steps", "2", "--out", out], env);
  const resumed = JSON.parse(await Deno.readTextFile(path)).training;
  assert.deepEqual([resumed.beta1, resumed.beta2, resumed.eps, resumed.decayParams], [
    0.9,
    0.95,
    1e-8,
    "matrices",
  ]);
  assert.equal(resumed.weightDecay, 0.01); // the stored value, not the preset's

  const bad = async (flags: string[], re: RegExp) => {
    const o = await Deno.makeTempDir();
    await rejectsWith(
      train([...common, "--model", "gpt", ...small, ...flags, "--out", o], env),
      EXIT.usage,
      re,
    );
  };
  await bad(["--beta2", "1"], /--beta2 must be at least 0 and below 1, got 1/);
  await bad(["--adam-eps", "0"], /--adam-eps must be above 0/);
  await bad(["--decay-params", "biases"], /--decay-params must be matrices or all, got 'biases'/);
});
