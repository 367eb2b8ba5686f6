// lib/precision.ts: toHalf and toBf16 must round exactly as IEEE binary16 and bfloat16 do (checked against
// bit-level converters written here), on every backend; the mixed-precision boundary must round gradients too;
// and a tiny GPT's loss in `mixed` must stay close to `fp32`.
import assert from "node:assert/strict";
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import { boundary, HALF_MAX, roundScaled, toBf16, toBf16Ops, toHalf, toHalfOps } from "../lib/precision.ts";
import { kernelFor } from "../lib/tensor/kernel_choice.ts";
import { testBackends } from "../lib/tensor/testing.ts";
import { halfBits, halfToFloat, refBf16, refHalf } from "./helpers_round.ts";
import { Gpt } from "../lib/models/gpt.ts";
import { resolveConfig } from "../lib/models/registry.ts";

const backends = await testBackends();

/** Edge cases plus many values spread over every binade from 2^-30 to 2^18, both signs. */
function testValues(): Float32Array {
  const v: number[] = [
    0,
    -0,
    NaN,
    Infinity,
    -Infinity,
    1,
    -1,
    HALF_MAX,
    -HALF_MAX,
    65519,
    65519.99,
    65520, // tie between 65504 and 65536 (inf): to even -> inf
    -65520,
    65536,
    1e10,
    3.4e38,
    -3.4e38,
    2 ** -14, // smallest normal
    2 ** -14 - 2 ** -25, // tie just under the smallest normal
    2 ** -24, // smallest subnormal
    2 ** -25, // tie with 0 -> 0
    -(2 ** -25), // -> -0
    3 * 2 ** -25, // tie -> 2^-23 (even)
    5 * 2 ** -25, // tie -> 2^-22 (even)
    1e-9,
    -1e-9, // flushes to -0
    1e-45, // float32 subnormal
    1 + 2 ** -11, // tie -> 1
    1 + 3 * 2 ** -11, // tie -> 1 + 2^-9
    2048 + 1, // tie -> 2048
    2048 + 3, // tie -> 2052
    0.1,
    1 / 3,
    Math.PI,
  ];
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let e = -30; e <= 18; e++) {
    for (let i = 0; i < 200; i++) {
      const m = 1 + rand();
      const x = (rand() < 0.5 ? -1 : 1) * m * 2 ** e;
      v.push(x);
      // exact ties at binary16 precision in this binade (11 significant bits + a half)
      const q = 2 ** (Math.max(e, -14) - 10);
      v.push((Math.floor(m * 2 ** e / q) + 0.5) * q);
    }
  }
  return new Float32Array(v);
}

Deno.test("the reference converter agrees with known binary16 encodings", () => {
  assert.equal(halfBits(1), 0x3c00);
  assert.equal(halfBits(-2), 0xc000);
  assert.equal(halfBits(65504), 0x7bff);
  assert.equal(halfBits(65520), 0x7c00);
  assert.equal(halfBits(2 ** -24), 0x0001);
  assert.equal(halfBits(2 ** -14), 0x0400);
  assert.equal(halfBits(1 / 3), 0x3555);
  assert.equal(halfBits(-0), 0x8000);
  assert.equal(halfToFloat(0x3555), 0.333251953125);
});

/** Edge cases plus values over every binade of float32 (subnormals too) and exact bf16 ties. */
function bf16TestValues(): Float32Array {
  const v: number[] = [0, -0, NaN, Infinity, -Infinity, 1, -1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9];
  v.push(3.3895313892515355e38, 3.39e38, 3.4e38, -3.4e38, 2 ** 100, 2 ** 127 * 1.99, 2 ** -126, 2 ** -133);
  v.push(2 ** -134, 3 * 2 ** -134, 1e-45, -1e-45, 2 ** -126 - 2 ** -134, 0.1, 1 / 3, Math.PI);
  let s = 777;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let e = -149; e <= 127; e++) {
    for (let i = 0; i < 30; i++) {
      const m = 1 + rand();
      v.push((rand() < 0.5 ? -1 : 1) * m * 2 ** e);
      const q = 2 ** (Math.max(e, -126) - 7); // bf16 spacing in this binade
      v.push((Math.floor(m * 2 ** e / q) + 0.5) * q); // an exact tie
    }
  }
  return new Float32Array(v);
}

Deno.test("the bfloat16 reference agrees with known encodings", () => {
  assert.equal(refBf16(1 + 2 ** -8), 1); // tie to even
  assert.equal(refBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6);
  assert.equal(refBf16(1 / 3), 0.333984375);
  assert.equal(refBf16(3.4e38), Infinity);
  assert.equal(refBf16(0.1), 0.10009765625);
});

/**
 * Runs `round` on `xs` on the current backend and counts the values that differ from `ref` (`same` decides,
 * to allow for what a backend may do with zeros and subnormals); fails naming a few.
 */
async function checkRounding(
  xs: Float32Array,
  round: (t: tf.Tensor) => tf.Tensor,
  ref: (x: number) => number,
  same: (x: number, got: number, want: number) => boolean,
): Promise<void> {
  const got = await tf.tidy(() => round(tf.tensor1d(xs))).data();
  let bad = 0;
  const examples: string[] = [];
  for (let i = 0; i < xs.length; i++) {
    const want = ref(xs[i]);
    if (!same(xs[i], got[i], want)) {
      bad++;
      if (examples.length < 8) examples.push(`${xs[i]} -> ${got[i]} (want ${want})`);
    }
  }
  assert.equal(bad, 0, `${bad} of ${xs.length} values rounded wrongly: ${examples.join("; ")}`);
}

for (const backend of backends) {
  Deno.test(`toBf16 matches bfloat16 rounding exactly on ${backend}`, async () => {
    await initBackend(backend, { quiet: true });
    // webgpu may flush float32 subnormals and not keep the sign of zero
    await checkRounding(
      bf16TestValues(),
      toBf16,
      refBf16,
      (x, got, want) =>
        backend === "webgpu" && (Math.abs(x) < 2 ** -126 || want === 0)
          ? Math.abs(got) <= 2 ** -126
          : Object.is(got, want),
    );
  });
  Deno.test(`toHalf matches IEEE binary16 rounding exactly on ${backend}`, async () => {
    await initBackend(backend, { quiet: true });
    // webgpu shaders may not keep the sign of zero; every other backend must
    await checkRounding(
      testValues(),
      toHalf,
      refHalf,
      (_x, got, want) => backend === "webgpu" && want === 0 ? got === 0 : Object.is(got, want),
    );
  });
}

Deno.test("wasm: toHalf and toBf16 run the one-pass kernel, and the op chains they replace round alike", async () => {
  await initBackend("wasm", { quiet: true });
  assert.equal(kernelFor("toHalf"), "lmpipe");
  assert.equal(kernelFor("toBf16"), "lmpipe");
  const exact = (_x: number, got: number, want: number) => Object.is(got, want);
  await checkRounding(testValues(), toHalfOps, refHalf, exact);
  await checkRounding(bf16TestValues(), toBf16Ops, refBf16, exact);
  // the kernel on a tensor whose values come from another kernel, with every value class mixed in
  const xs = new Float32Array([...testValues().slice(0, 4000), ...bf16TestValues().slice(0, 4000)]);
  const viaKernel = (f: (t: tf.Tensor) => tf.Tensor) => tf.tidy(() => f(tf.mul(tf.tensor1d(xs), 1))).data();
  assert.deepEqual(await viaKernel(toHalf), await viaKernel(toHalfOps));
  assert.deepEqual(await viaKernel(toBf16), await viaKernel(toBf16Ops));
});

Deno.test({
  name: "webgpu: toBf16 runs lmpipe's WGSL kernel, equal to the op chain on every normal value",
  ignore: !backends.includes("webgpu"),
  fn: async () => {
    await initBackend("webgpu", { quiet: true });
    assert.equal(kernelFor("toBf16"), "lmpipe");
    // normal values only: a GPU may flush float32 subnormals in the op chain's arithmetic
    const xs = bf16TestValues().filter((x) => !(Math.abs(x) < 2 ** -126));
    const viaKernel = await tf.tidy(() => toBf16(tf.tensor1d(xs))).data();
    const viaOps = await tf.tidy(() => toBf16Ops(tf.tensor1d(xs))).data();
    assert.deepEqual(viaKernel, viaOps);
  },
});

Deno.test("wasm: roundScaled (x * s rounded, / s) equals the op chain bit for bit at every scale", async () => {
  await initBackend("wasm", { quiet: true });
  const xs = new Float32Array([...testValues().slice(0, 3000), ...bf16TestValues().slice(0, 3000)]);
  for (const precision of ["mixed", "bf16"] as const) {
    const ops = precision === "mixed" ? toHalfOps : toBf16Ops;
    for (const s of [1, 2 ** 16, 65536 / 3, 1e-3]) {
      const got = await tf.tidy(() => roundScaled(tf.tensor1d(xs), s, precision)).data();
      const want = await tf.tidy(() => tf.div(ops(tf.mul(tf.tensor1d(xs), s)), s)).data();
      assert.deepEqual(got, want, `${precision} at scale ${s}`);
    }
  }
});

Deno.test("mixed boundary rounds the forward value and the gradient; fp32 leaves both alone", async () => {
  await initBackend("cpu", { quiet: true });
  const x = tf.tensor1d([1 + 2 ** -12, 70000, 1e-9, 0.1]);
  const c = tf.tensor1d([1 / 3, 2 + 2 ** -12, 1e5, 3 * 2 ** -25]);
  const f = (prec: "fp32" | "mixed") =>
    tf.valueAndGrad((t: tf.Tensor) => tf.sum(tf.mul(boundary(t, prec), c)));
  const mixed = f("mixed")(x);
  const gm = await readData(mixed.grad);
  assert.deepEqual(Array.from(gm), [refHalf(1 / 3), refHalf(2 + 2 ** -12), Infinity, 2 ** -23]);
  const fwd = await readData(tf.tidy(() => boundary(x, "mixed")));
  assert.deepEqual(Array.from(fwd), [1, Infinity, 0, refHalf(0.1)]);
  const plain = f("fp32")(x);
  assert.deepEqual(Array.from(await readData(plain.grad)), Array.from(await readData(c)));
  assert.equal(await readScalar(plain.value), await readScalar(tf.sum(tf.mul(x, c))));
});

Deno.test("mixed precision: tiny GPT loss and gradients stay close to fp32", async () => {
  await initBackend("cpu", { quiet: true });
  const model = new Gpt(resolveConfig("gpt", "tiny", { vocabSize: 512, contextLength: 16 }), 7);
  const ids = Array.from({ length: 2 * 17 }, (_, i) => (i * 37 + 11) % 512);
  const idx = tf.tensor2d([ids.slice(0, 16), ids.slice(17, 33)], [2, 16], "int32");
  const tgt = tf.tensor2d([ids.slice(1, 17), ids.slice(18, 34)], [2, 16], "int32");
  const run = async (precision: "fp32" | "mixed") => {
    const { value, grads } = tf.variableGrads(() => model.loss(idx, tgt, { precision }));
    const g = await readData(grads[model.params.get("transformer.h.0.mlp.c_fc.weight")!.name]);
    const loss = await readScalar(value);
    tf.dispose([value, ...Object.values(grads)]);
    return { loss, g };
  };
  const a = await run("fp32"), b = await run("mixed");
  assert.ok(Number.isFinite(b.loss));
  assert.ok(Math.abs(a.loss - b.loss) < 2e-3 * a.loss, `fp32 ${a.loss} vs mixed ${b.loss}`);
  assert.notEqual(a.loss, b.loss, "mixed must actually round something");
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.g.length; i++) dot += a.g[i] * b.g[i], na += a.g[i] ** 2, nb += b.g[i] ** 2;
  const cos = dot / Math.sqrt(na * nb);
  assert.ok(cos > 0.999, `gradient cosine similarity ${cos}`);
  model.dispose();
});
