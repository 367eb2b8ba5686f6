// The gpt model family (lib/models/gpt.ts on lib/nn.ts): parameter names and counts, initialisation,
// a finite-difference check of the whole model's gradient, causality, KV-cached decoding against the
// full forward pass, overfitting one batch, agreement of every backend with cpu, and config resolution.
import assert from "node:assert/strict";
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import { Gpt, GPT_PRESETS, gptFlopsPerToken, gptParamCount, gptParamSpecs } from "../lib/models/gpt.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { LmpipeError } from "../lib/errors.ts";
import { assertClose, randomArray, testBackends } from "../lib/tensor/testing.ts";
import { assertAgrees, lossAndGrads } from "./helpers_backends.ts";

const backends = await testBackends();

/** A small config for unit tests: the tiny preset's structure with a short context and small vocab. */
const small = (extra: Record<string, unknown> = {}) =>
  resolveConfig("gpt", "tiny", { vocabSize: 61, contextLength: 12, nEmbd: 16, nHead: 2, ...extra });

function tokens(B: number, T: number, vocab: number, seed: number): number[][] {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) % vocab;
  return Array.from({ length: B }, () => Array.from({ length: T }, next));
}

function batch(B: number, T: number, vocab: number, seed: number) {
  const rows = tokens(B, T + 1, vocab, seed);
  return {
    idx: tf.tensor2d(rows.map((r) => r.slice(0, T)), [B, T], "int32"),
    tgt: tf.tensor2d(rows.map((r) => r.slice(1)), [B, T], "int32"),
  };
}

/** Replaces every weight by larger random values, so the check exercises every nonlinearity. */
function randomizeWeights(model: Gpt, seed: number): void {
  let k = seed;
  for (const [name, v] of model.params) {
    const r = randomArray(v.size, k++);
    const scale = name.endsWith(".weight") && v.rank === 1 ? 1 : 0.5; // LayerNorm gains around 1
    const vals = r.map((x) => (v.rank === 1 && name.endsWith(".weight") ? 1 + 0.5 * x : scale * x));
    v.assign(tf.tensor(vals, v.shape));
  }
}

Deno.test("parameter names, shapes and counts; presets' sizes and FLOPs per token", async () => {
  await initBackend("cpu", { quiet: true });
  assert.equal(gptParamCount(GPT_PRESETS.gpt2), 124_475_904); // nanoGPT: 123.69M + 0.79M (wpe)
  assert.equal(gptParamCount(GPT_PRESETS.small), 30_062_592);
  assert.equal(gptParamCount(GPT_PRESETS.tiny), 3_323_648);
  // nanoGPT's estimate: 6 N + 12 L C T with N excluding wpe
  assert.equal(gptFlopsPerToken(GPT_PRESETS.gpt2), 6 * 123_689_472 + 12 * 12 * 768 * 1024);
  const model = new Gpt(small(), 3);
  const names = [...model.params.keys()];
  assert.deepEqual(names.slice(0, 8), [
    "transformer.wte.weight",
    "transformer.wpe.weight",
    "transformer.h.0.ln_1.weight",
    "transformer.h.0.ln_1.bias",
    "transformer.h.0.attn.c_attn.weight",
    "transformer.h.0.attn.c_attn.bias",
    "transformer.h.0.attn.c_proj.weight",
    "transformer.h.0.attn.c_proj.bias",
  ]);
  assert.equal(names.at(-1), "transformer.ln_f.bias");
  assert.ok(!names.some((n) => n.includes("lm_head")), "the head is tied to wte");
  assert.deepEqual(model.params.get("transformer.h.1.mlp.c_fc.weight")!.shape, [16, 64]); // [in, out]
  assert.deepEqual(model.params.get("transformer.h.1.mlp.c_proj.weight")!.shape, [64, 16]);
  assert.equal(model.paramCount(), gptParamCount(model.config as typeof GPT_PRESETS.tiny));
  assert.equal(model.flopsPerToken(), gptFlopsPerToken(model.config as typeof GPT_PRESETS.tiny));
  assert.ok(model.decays("transformer.wte.weight") && model.decays("transformer.h.0.attn.c_attn.weight"));
  assert.ok(!model.decays("transformer.h.0.attn.c_attn.bias") && !model.decays("transformer.ln_f.weight"));
  const noBias = resolveConfig("gpt", "tiny", { bias: false });
  assert.ok(gptParamSpecs(noBias as typeof GPT_PRESETS.tiny).every(({ name: n }) => !n.endsWith(".bias")));
  model.dispose();
});

Deno.test("GPT-2 initialisation: std 0.02, residual projections 0.02/sqrt(2L), zero biases, unit LN", async () => {
  await initBackend("cpu", { quiet: true });
  const model = new Gpt(resolveConfig("gpt", "tiny", { vocabSize: 512, nLayer: 4 }), 11);
  const std = async (name: string) => {
    const d = await readData(model.params.get(name)!);
    let s = 0, m = 0;
    for (const v of d) m += v;
    m /= d.length;
    for (const v of d) s += (v - m) ** 2;
    return Math.sqrt(s / d.length);
  };
  const close = (a: number, b: number) => Math.abs(a - b) < 0.05 * b;
  assert.ok(close(await std("transformer.wte.weight"), 0.02));
  assert.ok(close(await std("transformer.h.2.attn.c_attn.weight"), 0.02));
  assert.ok(close(await std("transformer.h.3.mlp.c_proj.weight"), 0.02 / Math.sqrt(8)));
  assert.ok(close(await std("transformer.h.0.attn.c_proj.weight"), 0.02 / Math.sqrt(8)));
  assert.ok((await readData(model.params.get("transformer.h.1.mlp.c_fc.bias")!)).every((v) => v === 0));
  assert.ok((await readData(model.params.get("transformer.h.1.ln_2.weight")!)).every((v) => v === 1));
  // the same seed gives the same weights
  const again = new Gpt(model.config, 11);
  assertClose(
    await readData(again.params.get("transformer.h.1.mlp.c_fc.weight")!),
    await readData(model.params.get("transformer.h.1.mlp.c_fc.weight")!),
    0,
    "seeded init",
  );
  model.dispose(), again.dispose();
});

Deno.test("finite differences agree with the model's gradient for every parameter tensor (cpu)", async () => {
  await initBackend("cpu", { quiet: true });
  const model = new Gpt(small({ contextLength: 8, nEmbd: 8 }), 5);
  randomizeWeights(model, 100);
  const { idx, tgt } = batch(2, 8, 61, 9);
  const lossAt = () => tf.tidy(() => model.loss(idx, tgt).dataSync()[0]);
  const { value, grads } = tf.variableGrads(() => model.loss(idx, tgt));
  assert.ok(Number.isFinite(await readScalar(value)));
  // float32 loss resolution is ~4e-7 (2^-23 x loss ~ 3), so a central difference with eps 1e-2 carries
  // ~4e-5 of rounding noise and O(eps^2) truncation error: 2% + 2e-4 separates right from wrong.
  const eps = 1e-2, rel = 2e-2, abs = 2e-4;
  const failures: string[] = [];
  for (const [name, v] of model.params) {
    const g = await readData(grads[v.name]);
    const w = await readData(v) as Float32Array;
    // the two entries with the largest gradient, and the one in the middle of the tensor
    const order = Array.from(g.keys()).sort((a, b) => Math.abs(g[b]) - Math.abs(g[a]));
    for (const i of new Set([order[0], order[1], Math.floor(g.length / 2)])) {
      const orig = w[i];
      const at = (x: number) => {
        const c = w.slice();
        c[i] = x;
        v.assign(tf.tensor(c, v.shape));
        return lossAt();
      };
      const fd = (at(orig + eps) - at(orig - eps)) / (2 * eps);
      at(orig);
      if (!(Math.abs(fd - g[i]) <= rel * Math.abs(g[i]) + abs)) {
        failures.push(`${name}[${i}]: fd ${fd} vs grad ${g[i]}`);
      }
    }
  }
  assert.deepEqual(failures, []);
  tf.dispose([value, ...Object.values(grads), idx, tgt]);
  model.dispose();
});

Deno.test("causality: changing token t+1 never changes the logits at positions <= t", async () => {
  await initBackend("cpu", { quiet: true });
  const model = new Gpt(small(), 8);
  randomizeWeights(model, 200);
  const T = 10;
  const base = tokens(1, T, 61, 4)[0];
  const ref = await readData(tf.tidy(() => model.logits(tf.tensor2d([base], [1, T], "int32"))));
  const V = 61;
  for (let t = 0; t < T - 1; t++) {
    const changed = base.slice();
    changed[t + 1] = (changed[t + 1] + 17) % V;
    const got = await readData(tf.tidy(() => model.logits(tf.tensor2d([changed], [1, T], "int32"))));
    for (let i = 0; i < (t + 1) * V; i++) {
      assert.equal(
        got[i],
        ref[i],
        `token ${t + 1} changed the logit ${i % V} at position ${Math.floor(i / V)}`,
      );
    }
    // and the change is visible from position t+1 on (the test could fail)
    let diff = 0;
    for (let i = (t + 1) * V; i < (t + 2) * V; i++) diff += Math.abs(got[i] - ref[i]);
    assert.ok(diff > 1e-3, `changing token ${t + 1} did not change its own position's logits`);
  }
  model.dispose();
});

Deno.test("KV-cached decoding gives the full forward pass's logits, position by position", async () => {
  await initBackend("cpu", { quiet: true });
  const model = new Gpt(small(), 12);
  randomizeWeights(model, 300);
  const B = 2, T = 12, V = 61;
  const rows = tokens(B, T, V, 6);
  const full = await readData(tf.tidy(() => model.logits(tf.tensor2d(rows, [B, T], "int32"))));
  const before = tf.memory().numTensors;
  const state = model.startDecode(B);
  for (let t = 0; t < T; t++) {
    const step = tf.tensor1d(rows.map((r) => r[t]), "int32");
    const logits = model.decodeStep(state, step);
    assert.deepEqual(logits.shape, [B, V]);
    const got = await readData(logits);
    for (let b = 0; b < B; b++) {
      const want = full.slice((b * T + t) * V, (b * T + t + 1) * V);
      assertClose(got.slice(b * V, (b + 1) * V), want, 1e-5, `sequence ${b}, position ${t}`);
    }
    tf.dispose([step, logits]);
  }
  assert.equal(state.length, T);
  const extra = tf.tensor1d([1, 2], "int32");
  assert.throws(
    () => model.decodeStep(state, extra),
    (e) => e instanceof LmpipeError && /context .* is full/.test(e.message),
  );
  extra.dispose();
  state.dispose();
  assert.equal(tf.memory().numTensors, before, "decoding leaked tensors");
  model.dispose();
});

Deno.test("the tiny preset overfits a single batch to near-zero loss (wasm, Adam)", async () => {
  await initBackend("wasm", { quiet: true });
  const model = createModel(resolveConfig("gpt", "tiny"), 1) as Gpt;
  const { idx, tgt } = batch(1, 16, 50304, 21);
  const opt = tf.train.adam(1e-2);
  const vars = [...model.params.values()];
  let first = NaN, last = NaN;
  for (let step = 0; step < 80 && !(last < 0.05); step++) {
    const l = opt.minimize(() => model.loss(idx, tgt), true, vars)!;
    last = await readScalar(l);
    l.dispose();
    if (step === 0) first = last;
  }
  assert.ok(Math.abs(first - Math.log(50304)) < 0.5, `initial loss ${first} should be near ln(50304)`);
  assert.ok(last < 0.05, `loss after overfitting: ${last}`);
  opt.dispose();
  tf.dispose([idx, tgt]);
  model.dispose();
});

for (const backend of backends.filter((b) => b !== "cpu")) {
  Deno.test(`${backend} agrees with cpu on the model's loss and gradients (fp32 and mixed)`, async () => {
    const rows = tokens(2, 13, 61, 33);
    const build = () => {
      const model = new Gpt(small(), 42);
      randomizeWeights(model, 400);
      return model;
    };
    for (const precision of ["fp32", "mixed"] as const) {
      const want = await lossAndGrads("cpu", precision, build, rows);
      const got = await lossAndGrads(backend, precision, build, rows);
      assertAgrees(got, want, precision, `${backend} ${precision}`);
    }
  });
}

Deno.test("config resolution: presets, overrides and clear errors", () => {
  const c = resolveConfig("gpt", "small", { nLayer: 3, bias: false });
  assert.equal(c.nLayer, 3);
  assert.equal(c.nEmbd, 384);
  assert.equal(c.preset, "small");
  const usage = (re: RegExp) => (e: unknown) =>
    e instanceof LmpipeError && e.exitCode === 2 && re.test(e.message);
  assert.throws(() => resolveConfig("gpt", "huge"), usage(/unknown preset 'huge'.*gpt2, small, tiny/));
  assert.throws(() => resolveConfig("gpt2", "tiny"), usage(/unknown model 'gpt2'/));
  assert.throws(() => resolveConfig("gpt", "tiny", { nLayers: 3 }), usage(/unknown config field 'nLayers'/));
  assert.throws(() => resolveConfig("gpt", "tiny", { nLayer: "3" }), usage(/'nLayer' must be a number/));
  assert.throws(
    () => resolveConfig("gpt", "tiny", { nLayer: 0 }),
    usage(/'nLayer' must be a positive integer/),
  );
  assert.throws(() => resolveConfig("gpt", "tiny", { nEmbd: 65 }), usage(/multiple of 'nHead'/));
  assert.throws(() => resolveConfig("gpt", "tiny", { model: "pixel-attn" }), usage(/conflicts/));
});

Deno.test("attention maps for viz: causal rows that sum to one", async () => {
  await initBackend("cpu", { quiet: true });
  const model = new Gpt(small(), 2);
  const maps = model.attentionMaps(tf.tensor2d([tokens(1, 6, 61, 1)[0]], [1, 6], "int32"));
  assert.equal(maps.length, 2);
  for (const m of maps) {
    assert.deepEqual(m.probs.shape, [1, 2, 6, 6]);
    const p = await readData(m.probs);
    for (let h = 0; h < 2; h++) {
      for (let i = 0; i < 6; i++) {
        let s = 0;
        for (let j = 0; j < 6; j++) {
          const v = p[(h * 6 + i) * 6 + j];
          if (j > i) assert.equal(v, 0);
          s += v;
        }
        assert.ok(Math.abs(s - 1) < 1e-5);
      }
    }
  }
  tf.dispose(maps.map((m) => m.probs));
  model.dispose();
});
