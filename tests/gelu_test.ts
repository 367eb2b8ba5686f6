// Exact (erf) GELU against float64, on every backend the machine has; the `gelu` config field (tanh for
// configs without it, exact for the gpt2 and study presets) and its effect on a model.
import assert from "node:assert/strict";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { gelu, geluExact } from "../lib/tensor/ops/gelu/mod.ts";
import { randomArray, testBackends } from "../lib/tensor/testing.ts";
import { Gpt, GPT_PRESETS, gptParamCount, LLAMA_PRESETS } from "../lib/models/gpt.ts";
import { PIXEL_PRESETS } from "../lib/models/pixel.ts";
import { variantOf } from "../lib/models/variants.ts";
import { resolveConfig } from "../lib/models/registry.ts";

/**
 * erf in float64 by the series erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1·3···(2n+1)), whose
 * terms all have x's sign (no cancellation), summed until they stop mattering.
 */
function erf64(x: number): number {
  let term = x, sum = x;
  for (let n = 1; n < 2000 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

Deno.test("erf64: known values (erf(0.5), erf(1), erf(2), erf(-3)) to 1e-15", () => {
  const known: [number, number][] = [
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [-3, -0.9999779095030014],
  ];
  for (const [x, want] of known) assert(Math.abs(erf64(x) - want) < 1e-15, `erf64(${x}) = ${erf64(x)}`);
});

// Inputs: a grid over [-8, 8] (both tails and the bend) and random values, as float32.
const N_GRID = 1601;
const xs = new Float32Array(N_GRID + 512);
for (let i = 0; i < N_GRID; i++) xs[i] = -8 + (16 * i) / (N_GRID - 1);
xs.set(randomArray(512, 7).map((v) => 3 * v), N_GRID);
const dys = randomArray(xs.length, 8);

/** Largest error of y and dx against float64 exact GELU, in units of 2e-7 (1 + |x|) per element. */
async function exactErrors(f: (t: tf.Tensor) => tf.Tensor): Promise<{ y: number; dx: number }> {
  const x = tf.tensor1d(xs), dy = tf.tensor1d(dys);
  const [y, dx] = tf.tidy(() => [f(x), tf.grad(f)(x, dy)]);
  const yv = await readData(y), dxv = await readData(dx);
  tf.dispose([x, dy, y, dx]);
  let ey = 0, edx = 0;
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i], e = erf64(v / Math.SQRT2);
    const phi = Math.exp(-v * v / 2) / Math.sqrt(2 * Math.PI);
    const unit = 2e-7 * (1 + Math.abs(v));
    ey = Math.max(ey, Math.abs(yv[i] - 0.5 * v * (1 + e)) / unit);
    edx = Math.max(edx, Math.abs(dxv[i] - dys[i] * (0.5 * (1 + e) + v * phi)) / unit);
  }
  return { y: ey, dx: edx };
}

for (const backend of await testBackends()) {
  Deno.test(`gelu exact on ${backend}: y and dx within 2e-7 (1 + |x|) of float64 erf; tanh is not`, async () => {
    await initBackend(backend, { quiet: true });
    const exact = await exactErrors((t) => gelu(t, "exact"));
    assert(
      exact.y <= 1 && exact.dx <= 1,
      `exact GELU error (units of 2e-7 (1+|x|)): ${JSON.stringify(exact)}`,
    );
    // The op chain, which the kernels replace on wasm and webgpu, meets the same bound.
    const chain = await exactErrors(geluExact);
    assert(chain.y <= 1 && chain.dx <= 1, `exact GELU op chain error: ${JSON.stringify(chain)}`);
    // The check can fail: the tanh form (up to ~2e-4 away) is far outside it.
    const tanh = await exactErrors((t) => gelu(t, "tanh"));
    assert(tanh.y > 100 && tanh.dx > 100, `tanh GELU should miss float64 erf: ${JSON.stringify(tanh)}`);
  });

  if (backend !== "cpu") {
    Deno.test(`gelu exact on ${backend}: one lmpipe kernel each way; NaN, ±Infinity and -0 as the op chain`, async () => {
      await initBackend(backend, { quiet: true });
      const x = tf.tensor1d(xs), dy = tf.tensor1d(dys);
      const f = (t: tf.Tensor) => gelu(t, "exact");
      const { kernelNames } = await tf.profile(() => tf.tidy(() => tf.grad(f)(x, dy)));
      assert.deepEqual(
        kernelNames.filter((k) => k.startsWith("LmpipeGelu") || k === "Erf"),
        ["LmpipeGeluExact", "LmpipeGeluExactGrad"],
        `ran ${kernelNames}`,
      );
      // Special values of x (and a NaN dy): the kernels' y and dx against the op chain's, by Object.is.
      const special = [NaN, Infinity, -Infinity, -0, 0, 1e-30, -1e-30, 40, -40, 5.7, -5.7];
      const sx = tf.tensor1d(special), sdy = tf.tensor1d(special.map((_, i) => (i === 4 ? NaN : 1)));
      const run = async (g: (t: tf.Tensor) => tf.Tensor) => {
        const outs = tf.tidy(() => [g(sx), tf.grad(g)(sx, sdy)]);
        const values = await Promise.all(outs.map(async (t) => Array.from(await readData(t))));
        tf.dispose(outs);
        return values;
      };
      const [yk, dxk] = await run(f), [yc, dxc] = await run(geluExact);
      for (let i = 0; i < special.length; i++) {
        const same = (a: number, b: number) => Object.is(a, b) || Math.abs(a - b) <= 1e-6 * Math.abs(b);
        assert(same(yk[i], yc[i]), `y(${special[i]}): kernel ${yk[i]}, op chain ${yc[i]}`);
        assert(same(dxk[i], dxc[i]), `dx(${special[i]}): kernel ${dxk[i]}, op chain ${dxc[i]}`);
      }
      tf.dispose([x, dy, sx, sdy]);
    });
  }
}

Deno.test("gelu field: tanh without it (old checkpoints), exact for gpt2 and every study preset", () => {
  const { gelu: _, ...old } = GPT_PRESETS.tiny;
  assert.deepEqual(variantOf(old).gelu, "tanh");
  assert.deepEqual(GPT_PRESETS.tiny.gelu, "tanh");
  assert.deepEqual(GPT_PRESETS.small.gelu, "tanh");
  assert.deepEqual(GPT_PRESETS.gpt2.gelu, "exact");
  assert.deepEqual(GPT_PRESETS.study.gelu, "exact");
  for (const family of Object.values(PIXEL_PRESETS)) assert.deepEqual(family.study.gelu, "exact");
  assert(!("study" in LLAMA_PRESETS), "llama has no study preset");
  assert.deepEqual(resolveConfig("gpt", "tiny", { gelu: "exact" }).gelu, "exact");
  let err = "";
  try {
    resolveConfig("gpt", "tiny", { gelu: "erf" });
  } catch (e) {
    err = (e as Error).message;
  }
  assert(err.includes("'gelu' must be one of tanh, exact"), err);
});

Deno.test("gpt study preset: gpt2 with bias=False, 124,373,760 parameters (nanoGPT: 123.59M without wpe)", () => {
  const c = GPT_PRESETS.study;
  assert.deepEqual(c.bias, false);
  assert.deepEqual(gptParamCount(c), 124_373_760);
  assert.deepEqual(gptParamCount(c) - c.contextLength * c.nEmbd, 123_587_328);
});

Deno.test("gpt: the gelu field changes the model's logits (tanh vs exact, same weights)", async () => {
  await initBackend("cpu", { quiet: true });
  const base = { ...GPT_PRESETS.tiny, vocabSize: 61, contextLength: 8, nEmbd: 32 };
  const tanh = new Gpt({ ...base, gelu: "tanh" }, 3), exact = new Gpt({ ...base, gelu: "exact" }, 3);
  const idx = tf.tensor2d([[1, 5, 9, 2, 60, 7, 3, 0]], [1, 8], "int32");
  const a = tanh.logits(idx), b = exact.logits(idx);
  const da = await readData(a), db = await readData(b);
  let diff = 0;
  for (let i = 0; i < da.length; i++) diff = Math.max(diff, Math.abs(da[i] - db[i]));
  assert(diff > 1e-7 && diff < 1e-3, `logit difference ${diff}`);
  tf.dispose([idx, a, b]);
  tanh.dispose();
  exact.dispose();
});
