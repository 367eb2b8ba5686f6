// The architecture options of docs/variants.md (lib/models/variants.ts, lib/nn.ts, lib/positions.ts):
// for each option and some combinations, the model's logits against the float64 literal forward of
// helpers_gpt_reference.ts, causality, KV-cached decoding against the full pass, literal parameter
// counts, finite-difference gradients, backends against cpu, the image models' warm-up blocks, config
// errors, and checkpoints that carry the options (and old ones without them that still load).
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import { Gpt, type GptConfig, gptFlopsPerToken, gptParamCount, LLAMA_PRESETS } from "../lib/models/gpt.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { gluHidden } from "../lib/models/params.ts";
import { alibiBias, alibiSlopes, applyRope, ropeTables } from "../lib/positions.ts";
import { LmpipeError } from "../lib/errors.ts";
import { loadCheckpoint } from "../lib/checkpoint.ts";
import { modelFromCheckpoint } from "../lib/checkpoint_model.ts";
import { FAMILIES } from "../lib/models/registry.ts";
import type { LanguageModel } from "../lib/models/types.ts";
import {
  assertClose,
  dispatchedByAsync,
  maxRelErr,
  randomArray,
  testBackends,
} from "../lib/tensor/testing.ts";
import { setOpChainRoundsScores } from "../lib/tensor/ops/attention/mod.ts";
import { referenceLogits, type RefTensor } from "./helpers_gpt_reference.ts";
import { assertAgrees, lossAndGrads } from "./helpers_backends.ts";
import { saveUntrainedRun } from "./helpers_run.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { run as evaluate } from "../pipelines/eval/mod.ts";
import { run as sample } from "../pipelines/sample/mod.ts";
import { presetFor } from "../pipelines/study/specs.ts";

const V = 61;

/** Four heads of size 4 (so kv_heads can be 1 or 2), two layers, a short context and a small vocabulary. */
const small = (extra: Record<string, unknown> = {}, family = "gpt") =>
  resolveConfig(family, "tiny", { vocabSize: V, contextLength: 12, nEmbd: 16, nHead: 4, ...extra });

/** The options one at a time, then together. */
const CASES: Record<string, Record<string, unknown>> = {
  "default (GPT-2)": {},
  "norm=rmsnorm": { norm: "rmsnorm" },
  "mlp=swiglu": { mlp: "swiglu" },
  "mlp=geglu": { mlp: "geglu" },
  "pos=sinusoidal": { pos: "sinusoidal" },
  "pos=rope": { pos: "rope" },
  "pos=alibi": { pos: "alibi" },
  "pos=none": { pos: "none" },
  "qkv=separate": { qkv: "separate" },
  "qkv_act=gelu": { qkv_act: "gelu" },
  "qkv_act=gelu bias=false": { qkv_act: "gelu", bias: false },
  "attn_extra=linear": { attn_extra: "linear" },
  "kv_heads=1": { kv_heads: 1 },
  "kv_heads=2": { kv_heads: 2 },
  "bias=false": { bias: false },
  "tie=false": { tie: false },
  "rope + kv_heads=2 + separate + attn_extra": {
    pos: "rope",
    kv_heads: 2,
    qkv: "separate",
    attn_extra: "linear",
  },
  "everything else": {
    norm: "rmsnorm",
    mlp: "geglu",
    pos: "alibi",
    qkv: "separate",
    qkv_act: "gelu",
    attn_extra: "linear",
    kv_heads: 2,
    bias: false,
    tie: false,
  },
};

function tokens(B: number, T: number, vocab: number, seed: number): number[][] {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) % vocab;
  return Array.from({ length: B }, () => Array.from({ length: T }, next));
}

/** Replaces every weight by larger random values, so each nonlinearity and option matters. */
function randomizeWeights(model: LanguageModel, seed: number): void {
  let k = seed;
  for (const [name, v] of model.params) {
    const r = randomArray(v.size, k++);
    const gain = v.rank === 1 && name.endsWith(".weight"); // norm gains around 1
    v.assign(tf.tensor(r.map((x) => (gain ? 1 + 0.5 * x : 0.5 * x)), v.shape));
  }
}

function gpt(extra: Record<string, unknown>, seed: number, family = "gpt"): Gpt {
  const model = new Gpt(small(extra, family), seed);
  randomizeWeights(model, seed * 100);
  return model;
}

Deno.test("every option and combination matches the float64 literal forward pass (cpu)", async () => {
  await initBackend("cpu", { quiet: true });
  const cases = { ...CASES, "llama preset": { family: "llama" } };
  for (const [name, extra] of Object.entries(cases)) {
    const { family, ...fields } = extra as Record<string, unknown> & { family?: string };
    const model = gpt(fields, 3, family);
    const params = new Map<string, RefTensor>();
    for (const [n, v] of model.params) {
      params.set(n, { data: Float64Array.from(await readData(v)), shape: v.shape });
    }
    const seq = tokens(1, 10, V, 5)[0];
    const want = referenceLogits(model.config, params, seq).flat();
    const got = await readData(tf.tidy(() => model.logits(tf.tensor2d([seq], [1, 10], "int32"))));
    assertClose(got, want, 2e-5, name);
    model.dispose();
  }
});

Deno.test("the reference check can fail: a wrong option in the reference is caught", async () => {
  await initBackend("cpu", { quiet: true });
  const pairs: [Record<string, unknown>, Record<string, unknown>][] = [
    [{ pos: "rope" }, { pos: "none" }],
    [{ pos: "alibi" }, { pos: "none" }],
    [{ attn_extra: "linear" }, { attn_extra: "none" }],
    [{ mlp: "swiglu" }, { mlp: "geglu" }],
    [{ norm: "rmsnorm" }, { norm: "layernorm" }],
    [{ qkv_act: "gelu" }, { qkv_act: "none" }],
  ];
  for (const [real, wrong] of pairs) {
    const model = gpt(real, 4);
    const params = new Map<string, RefTensor>();
    for (const [n, v] of model.params) {
      params.set(n, { data: Float64Array.from(await readData(v)), shape: v.shape });
    }
    const seq = tokens(1, 10, V, 6)[0];
    const ref = referenceLogits({ ...model.config, ...wrong } as GptConfig, params, seq).flat();
    const got = await readData(tf.tidy(() => model.logits(tf.tensor2d([seq], [1, 10], "int32"))));
    assert.ok(maxRelErr(got, ref) > 1e-3, `${JSON.stringify(real)} vs ${JSON.stringify(wrong)}`);
    model.dispose();
  }
});

Deno.test("causality under every option: token t+1 never changes the logits at positions <= t", async () => {
  await initBackend("cpu", { quiet: true });
  for (const [name, extra] of Object.entries(CASES)) {
    const model = gpt(extra, 8);
    const T = 10;
    const base = tokens(1, T, V, 4)[0];
    const ref = await readData(tf.tidy(() => model.logits(tf.tensor2d([base], [1, T], "int32"))));
    for (const t of [0, 4, 8]) {
      const changed = base.slice();
      changed[t + 1] = (changed[t + 1] + 17) % V;
      const got = await readData(tf.tidy(() => model.logits(tf.tensor2d([changed], [1, T], "int32"))));
      for (let i = 0; i < (t + 1) * V; i++) {
        assert.equal(got[i], ref[i], `${name}: token ${t + 1} changed logit ${i}`);
      }
      let diff = 0;
      for (let i = (t + 1) * V; i < (t + 2) * V; i++) diff += Math.abs(got[i] - ref[i]);
      assert.ok(diff > 1e-3, `${name}: changing token ${t + 1} did not change its own position's logits`);
    }
    model.dispose();
  }
});

Deno.test("KV-cached decoding gives the full pass's logits under every option (rope/alibi positions too)", async () => {
  await initBackend("cpu", { quiet: true });
  for (const [name, extra] of Object.entries(CASES)) {
    const model = gpt(extra, 12);
    const B = 2, T = 12;
    const rows = tokens(B, T, V, 6);
    const full = await readData(tf.tidy(() => model.logits(tf.tensor2d(rows, [B, T], "int32"))));
    const before = tf.memory().numTensors;
    const state = model.startDecode(B);
    for (let t = 0; t < T; t++) {
      const step = tf.tensor1d(rows.map((r) => r[t]), "int32");
      const logits = model.decodeStep(state, step);
      const got = await readData(logits);
      for (let b = 0; b < B; b++) {
        const want = full.slice((b * T + t) * V, (b * T + t + 1) * V);
        assertClose(got.slice(b * V, (b + 1) * V), want, 1e-5, `${name}: sequence ${b}, position ${t}`);
      }
      tf.dispose([step, logits]);
    }
    state.dispose();
    assert.equal(tf.memory().numTensors, before, `${name}: decoding leaked tensors`);
    model.dispose();
  }
});

Deno.test("parameter counts of the tiny preset under each option (literal) and FLOPs per token", () => {
  // tiny: V 50304, T 64, C 64, 2 heads, 2 layers. wte 50304·64 = 3,219,456; wpe 64·64 = 4,096;
  // a block: ln_1 128 + c_attn 64·192+192 = 12,480 + c_proj 4,160 + ln_2 128 + c_fc 16,640 + c_proj
  // 16,448 = 49,984; ln_f 128. Total 3,219,456 + 4,096 + 2·49,984 + 128 = 3,323,648.
  const count = (extra: Record<string, unknown>, family = "gpt") =>
    gptParamCount(resolveConfig(family, "tiny", extra) as GptConfig);
  assert.equal(count({}), 3_323_648);
  assert.equal(count({ norm: "rmsnorm" }), 3_323_648); // same gains and shifts
  assert.equal(count({ qkv: "separate" }), 3_323_648); // c_q 64·64+64, c_k, c_v the same: 12,480
  assert.equal(gluHidden(64), 176); // 2/3 of 256 = 170.7, up to a multiple of 8
  // gated: c_fc 64·352+352 = 22,880, c_proj 176·64+64 = 11,328: +1,120 a block
  assert.equal(count({ mlp: "swiglu" }), 3_325_888);
  assert.equal(count({ mlp: "geglu" }), 3_325_888);
  for (const pos of ["sinusoidal", "rope", "alibi", "none"]) assert.equal(count({ pos }), 3_319_552); // no wpe
  assert.equal(count({ bias: false }), 3_322_176); // -704 a block, -64 ln_f
  assert.equal(count({ qkv_act: "gelu" }), 3_323_648);
  assert.equal(count({ qkv_act: "gelu", bias: false }), 3_322_560); // c_attn keeps its 192 biases
  assert.equal(count({ attn_extra: "linear" }), 3_323_904); // c_extra 64·2 a block
  assert.equal(count({ kv_heads: 1 }), 3_315_328); // c_attn 64·128+128 = 8,320: -4,160 a block
  assert.equal(count({ tie: false }), 6_543_104); // + lm_head 50304·64
  // llama: wte + 2·(64 + 12,288 + 4,096 + 64 + 22,528 + 11,264) + 64 + lm_head
  assert.equal(count({}, "llama"), 6_539_584);
  const llama = resolveConfig("llama", "tiny") as GptConfig;
  // the untied head is a matMul, the token embedding a lookup; no wpe
  assert.equal(gptFlopsPerToken(llama), 6 * (6_539_584 - 3_219_456) + 12 * 2 * 64 * 64);
  assert.equal(
    gptFlopsPerToken(resolveConfig("gpt", "tiny", { pos: "rope" }) as GptConfig),
    6 * 3_319_552 + 12 * 2 * 64 * 64,
  );
  // models count what the specs say, and the names are the documented ones
  const m = new Gpt(
    small({ qkv: "separate", attn_extra: "linear", kv_heads: 2, tie: false, pos: "rope" }),
    1,
  );
  assert.equal(m.paramCount(), gptParamCount(m.config));
  const names = [...m.params.keys()];
  for (const n of ["attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.c_extra.weight"]) {
    assert.ok(names.includes(`transformer.h.0.${n}`), n);
  }
  assert.deepEqual(m.params.get("transformer.h.1.attn.c_k.weight")!.shape, [16, 8]); // 2 kv heads of 4
  assert.deepEqual(m.params.get("transformer.h.1.attn.c_extra.weight")!.shape, [16, 4]);
  assert.ok(!names.includes("transformer.wpe.weight") && names.at(-1) === "lm_head.weight");
  assert.ok(m.decays("lm_head.weight") && m.decays("transformer.h.0.attn.c_extra.weight"));
  m.dispose();
  for (const name of Object.keys(LLAMA_PRESETS)) {
    const g = resolveConfig("gpt", name), l = resolveConfig("llama", name);
    for (const f of ["nLayer", "nHead", "nEmbd", "contextLength", "vocabSize"]) {
      assert.equal(l[f], g[f], `${name} ${f}`);
    }
  }
});

Deno.test("qkv=separate with c_attn's column blocks is the fused model; kv_heads=nHead is the default", async () => {
  await initBackend("cpu", { quiet: true });
  for (const kv_heads of [0, 2]) {
    const fused = gpt({ kv_heads }, 21), sep = new Gpt(small({ kv_heads, qkv: "separate" }), 1);
    const kvC = kv_heads ? 8 : 16;
    for (const [n, v] of sep.params) {
      const m = /^(transformer\.h\.\d+\.attn)\.c_([qkv])\.(weight|bias)$/.exec(n);
      if (!m) {
        v.assign(fused.params.get(n)!);
        continue;
      }
      const src = fused.params.get(`${m[1]}.c_attn.${m[3]}`)!;
      const [begin, size] = m[2] === "q" ? [0, 16] : m[2] === "k" ? [16, kvC] : [16 + kvC, kvC];
      v.assign(src.rank === 2 ? tf.slice(src, [0, begin], [16, size]) : tf.slice(src, [begin], [size]));
    }
    const idx = tf.tensor2d(tokens(2, 12, V, 3), [2, 12], "int32");
    assertClose(
      await readData(sep.logits(idx)),
      await readData(fused.logits(idx)),
      1e-6,
      `kv_heads ${kv_heads}`,
    );
    idx.dispose(), fused.dispose(), sep.dispose();
  }
  const a = gpt({ kv_heads: 4 }, 5), b = gpt({}, 5);
  const idx = tf.tensor2d(tokens(1, 12, V, 3), [1, 12], "int32");
  assert.deepEqual(await readData(a.logits(idx)), await readData(b.logits(idx)));
  idx.dispose(), a.dispose(), b.dispose();
});

Deno.test("finite differences agree with the gradient for every parameter under the options (cpu)", async () => {
  await initBackend("cpu", { quiet: true });
  const configs = [CASES["everything else"], CASES["rope + kv_heads=2 + separate + attn_extra"], {
    mlp: "swiglu",
  }];
  const failures: string[] = [];
  for (const extra of configs) {
    const model = new Gpt(
      small({ ...extra, contextLength: 8, nEmbd: 8, nHead: 2, kv_heads: extra.kv_heads ? 1 : 0 }),
      5,
    );
    randomizeWeights(model, 100);
    const rows = tokens(2, 9, V, 9);
    const idx = tf.tensor2d(rows.map((r) => r.slice(0, 8)), [2, 8], "int32");
    const tgt = tf.tensor2d(rows.map((r) => r.slice(1)), [2, 8], "int32");
    const lossAt = () => tf.tidy(() => model.loss(idx, tgt).dataSync()[0]);
    const { value, grads } = tf.variableGrads(() => model.loss(idx, tgt));
    assert.ok(Number.isFinite(await readScalar(value)));
    const eps = 1e-2, rel = 2e-2, abs = 2e-4; // as tests/gpt_test.ts: float32 loss noise vs truncation
    for (const [name, v] of model.params) {
      const g = await readData(grads[v.name]);
      const w = await readData(v) as Float32Array;
      const order = Array.from(g.keys()).sort((a, b) => Math.abs(g[b]) - Math.abs(g[a]));
      for (const i of new Set([order[0], Math.floor(g.length / 2)])) {
        const at = (x: number) => {
          const c = w.slice();
          c[i] = x;
          v.assign(tf.tensor(c, v.shape));
          return lossAt();
        };
        const fd = (at(w[i] + eps) - at(w[i] - eps)) / (2 * eps);
        at(w[i]);
        if (!(Math.abs(fd - g[i]) <= rel * Math.abs(g[i]) + abs)) {
          failures.push(`${JSON.stringify(extra)} ${name}[${i}]: fd ${fd} vs grad ${g[i]}`);
        }
      }
    }
    tf.dispose([value, ...Object.values(grads), idx, tgt]);
    model.dispose();
  }
  assert.deepEqual(failures, []);
});

for (const backend of (await testBackends()).filter((b) => b !== "cpu")) {
  Deno.test(`${backend} agrees with cpu under the options (loss and gradients, fp32 and mixed)`, async () => {
    const rows = tokens(2, 13, V, 33);
    for (const extra of [CASES["everything else"], CASES["rope + kv_heads=2 + separate + attn_extra"]]) {
      for (const precision of ["fp32", "mixed"] as const) {
        const want = await lossAndGrads("cpu", precision, () => gpt(extra, 42), rows);
        const got = await lossAndGrads(backend, precision, () => gpt(extra, 42), rows);
        assertAgrees(got, want, precision, `${backend} ${precision} ${JSON.stringify(extra)}`);
      }
    }
  });
}

if ((await testBackends()).includes("webgpu")) {
  Deno.test("webgpu: rope and grouped kv heads stay on flash attention, a score bias takes the op chain", async () => {
    const rows = tokens(2, 13, V, 35);
    const cases: [Record<string, unknown>, boolean][] = [
      [{ pos: "rope", kv_heads: 2, norm: "rmsnorm", mlp: "swiglu", qkv: "separate" }, true],
      [{ pos: "alibi" }, false],
      [{ attn_extra: "linear" }, false],
    ];
    try {
      for (const [extra, flash] of cases) {
        for (const precision of ["fp32", "mixed"] as const) {
          // flash attention keeps scores float32 under mixed; cpu's op chain does too when comparing with it
          const before = setOpChainRoundsScores(!flash);
          const want = await lossAndGrads("cpu", precision, () => gpt(extra, 42), rows);
          setOpChainRoundsScores(before);
          const { result: got, names } = await dispatchedByAsync(() =>
            lossAndGrads("webgpu", precision, () => gpt(extra, 42), rows)
          );
          const what = `webgpu ${precision} ${JSON.stringify(extra)}`;
          assert.equal(names.includes("LmpipeFlashAttentionProgram"), flash, `${what}: flash attention ran?`);
          assertAgrees(got, want, precision, what);
        }
      }
    } finally {
      await initBackend("cpu", { quiet: true });
    }
  });
}

Deno.test("positions: ALiBi slopes and bias, RoPE keeps norms and depends only on the offset", async () => {
  await initBackend("cpu", { quiet: true });
  assert.deepEqual(alibiSlopes(8), [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]);
  // Press et al.'s rule for 6 heads: the 4-head slopes, then every other 8-head slope
  assert.deepEqual(alibiSlopes(6), [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]);
  const bias = await readData(alibiBias(2, 3, 2)); // [2, 2, 5]: queries at 3 and 4
  assert.deepEqual(Array.from(bias.slice(0, 5)), [-3 / 16, -2 / 16, -1 / 16, 0, 0]);
  assert.deepEqual(Array.from(bias.slice(15, 20)), [-4 / 256, -3 / 256, -2 / 256, -1 / 256, 0]);
  // q(m)·k(n) after rotation depends on m - n only: positions (5, 2) and (9, 6) give the same score
  const D = 8, q = tf.tensor2d(randomArray(D, 1), [1, D]), k = tf.tensor2d(randomArray(D, 2), [1, D]);
  const score = (m: number, n: number) =>
    tf.tidy(() =>
      tf.sum(tf.mul(applyRope(q, ropeTables(m, 1, D)), applyRope(k, ropeTables(n, 1, D)))).dataSync()[0]
    );
  assert.ok(Math.abs(score(5, 2) - score(9, 6)) < 1e-5);
  assert.ok(Math.abs(score(5, 2) - score(5, 3)) > 1e-3);
  const rotated = applyRope(q, ropeTables(7, 1, D));
  assert.ok(Math.abs(tf.norm(rotated).dataSync()[0] - tf.norm(q).dataSync()[0]) < 1e-5);
  tf.dispose([q, k, rotated]);
});

Deno.test("config: options through resolution, clear errors, llama family, image models", async () => {
  await initBackend("cpu", { quiet: true });
  const usage = (re: RegExp) => (e: unknown) =>
    e instanceof LmpipeError && e.exitCode === 2 && re.test(e.message);
  const c = resolveConfig("gpt", "tiny", { pos: "rope", kv_heads: 1 });
  assert.equal(c.pos, "rope");
  assert.throws(
    () => resolveConfig("gpt", "tiny", { pos: "rotary" }),
    usage(/'pos' must be one of learned, sinusoidal, rope, alibi, none, got "rotary"/),
  );
  assert.throws(
    () => resolveConfig("gpt", "tiny", { mlp: "relu" }),
    usage(/'mlp' must be one of gelu, swiglu, geglu/),
  );
  assert.throws(
    () => resolveConfig("gpt", "tiny", { kv_heads: 3 }),
    usage(/'kv_heads' must be 0 .* or a divisor of nHead \(2\), got 3/),
  );
  assert.throws(() => resolveConfig("gpt", "tiny", { kv_heads: "2" }), usage(/'kv_heads' must be a number/));
  assert.throws(() => resolveConfig("gpt", "tiny", { tie: "no" }), usage(/'tie' must be a boolean/));
  assert.throws(
    () => resolveConfig("gpt", "tiny", { nEmbd: 66, nHead: 6, pos: "rope" }),
    usage(/head size nEmbd\/nHead \(11\) must be even/),
  );
  assert.throws(
    () => resolveConfig("pixel-attn", "tiny", { tie: false }),
    usage(/unknown config field 'tie'/),
  );
  const l = resolveConfig("llama", "small");
  assert.deepEqual([l.norm, l.mlp, l.pos, l.bias, l.tie, l.model], [
    "rmsnorm",
    "swiglu",
    "rope",
    false,
    false,
    "llama",
  ]);
  assert.ok(FAMILIES.some((f) => f.name === "llama"));
  assert.equal(presetFor("llama", "study"), "gpt2"); // study's size names pick llama's gpt2 preset
  assert.equal(presetFor("llama", "gpt2"), "gpt2");
  // the image models' warm-up blocks take the block options: causal, and cached decoding still agrees
  for (const model of ["pixel-attn", "pixel-cumsum"]) {
    const cfg = resolveConfig(model, "tiny", {
      vocabSize: V,
      contextLength: 6,
      nEmbd: 16,
      nHead: 4,
      nWarmup: 2,
      norm: "rmsnorm",
      mlp: "swiglu",
      pos: "rope",
      kv_heads: 2,
      attn_extra: "linear",
      qkv: "separate",
    });
    const m = createModel(cfg, 3);
    randomizeWeights(m, 7);
    const names = [...m.params.keys()];
    assert.ok(names.includes("transformer.h.1.attn.c_q.weight") && !names.includes("transformer.wpe.weight"));
    const seq = tokens(1, 6, V, 2)[0];
    const full = await readData(tf.tidy(() => m.logits(tf.tensor2d([seq], [1, 6], "int32"))));
    const changed = seq.slice();
    changed[4] = (changed[4] + 5) % V;
    const other = await readData(tf.tidy(() => m.logits(tf.tensor2d([changed], [1, 6], "int32"))));
    assert.deepEqual(Array.from(other.slice(0, 4 * V)), Array.from(full.slice(0, 4 * V)), `${model} causal`);
    const state = m.startDecode(1);
    for (let t = 0; t < 6; t++) {
      const got = await readData(tf.tidy(() => m.decodeStep(state, tf.tensor1d([seq[t]], "int32"))));
      assertClose(got, full.slice(t * V, (t + 1) * V), 1e-4, `${model} cached position ${t}`);
    }
    state.dispose();
    m.dispose();
  }
});

Deno.test("checkpoints record the options; old ones without them load as GPT-2's block", async () => {
  await initBackend("cpu", { quiet: true });
  const families = Object.fromEntries(FAMILIES.map((f) => [f.name, f]));
  const idx = tf.tensor2d(tokens(1, 12, V, 1), [1, 12], "int32");
  // a variant model: config.json has every option; the loaded model is the same model
  const model = gpt(CASES["everything else"], 9);
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-variants-" });
  await saveUntrainedRun(dir, model);
  const ckpt = await loadCheckpoint(dir);
  const stored = ckpt.config.model as Record<string, unknown>;
  for (const [k, v] of Object.entries(CASES["everything else"])) {
    assert.equal(stored[k], v, `config.json ${k}`);
  }
  const loaded = modelFromCheckpoint(families, ckpt.config, ckpt.weights, dir, "eval");
  assert.deepEqual(await readData(loaded.logits(idx)), await readData(model.logits(idx)));
  loaded.dispose(), model.dispose();
  // an old checkpoint: config.json without the option fields and tie
  const old = gpt({}, 10);
  const oldDir = await Deno.makeTempDir({ prefix: "lmpipe-variants-old-" });
  await saveUntrainedRun(oldDir, old);
  const cfgPath = join(oldDir, "config.json");
  const json = JSON.parse(await Deno.readTextFile(cfgPath));
  for (const k of ["norm", "mlp", "pos", "qkv", "qkv_act", "attn_extra", "kv_heads", "tie"]) {
    delete json.model[k];
  }
  await Deno.writeTextFile(cfgPath, JSON.stringify(json));
  const oldCkpt = await loadCheckpoint(oldDir);
  const back = modelFromCheckpoint(families, oldCkpt.config, oldCkpt.weights, oldDir, "eval") as Gpt;
  assert.equal(back.config.pos, "learned");
  assert.equal(back.config.tie, true);
  assert.deepEqual(await readData(back.logits(idx)), await readData(old.logits(idx)));
  back.dispose(), old.dispose(), idx.dispose();
});

Deno.test("lmpipe train --set options, then eval and sample from the run with no model flags", async () => {
  const out = await Deno.makeTempDir({ prefix: "lmpipe-variants-run-" });
  const quiet = { signals: false, stdout: async (_b: Uint8Array) => {} };
  await train([
    "--data",
    "fixtures/shards",
    "--backend",
    "wasm",
    "--preset",
    "tiny",
    "--set",
    "contextLength=16",
    "--set",
    "pos=rope",
    "--set",
    "kv_heads=1",
    "--set",
    "mlp=swiglu",
    "--set",
    "tie=false",
    "--batch-size",
    "2",
    "--max-steps",
    "2",
    "--eval-iters",
    "1",
    "--out",
    out,
  ], quiet);
  const config = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
  assert.deepEqual(
    [config.model.pos, config.model.kv_heads, config.model.mlp, config.model.tie, config.model.norm],
    ["rope", 1, "swiglu", false, "layernorm"],
  );
  let text = "";
  const capture = { stdout: (b: Uint8Array) => Promise.resolve(void (text += new TextDecoder().decode(b))) };
  await evaluate(
    ["--ckpt", out, "--data", "fixtures/shards", "--backend", "wasm", "--max-tokens", "64"],
    capture,
  );
  const loss = JSON.parse(text.trim().split("\n").at(-1)!).loss;
  assert.ok(Number.isFinite(loss) && loss > 5 && loss < 12, `eval loss ${loss}`);
  text = "";
  await sample([
    "--ckpt",
    out,
    "--backend",
    "wasm",
    "--prompt-ids",
    "464,3290",
    "--max-new-tokens",
    "20",
    "--format",
    "tokens",
  ], capture);
  assert.equal(text.trim().split(" ").length, 20);
});
