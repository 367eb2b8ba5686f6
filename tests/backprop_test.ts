// The backward pass that frees as it goes (lib/tensor/patches/backprop.ts) against TF.js's own: the same
// gradients bit for bit (a GPT and an image model with its checkpointed CNN, on cpu and wasm; gradients
// that alias one another), and a lower peak of live tensor bytes during a GPT's step.
import { deepStrictEqual as assertEquals, ok } from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { setEarlyRelease } from "../lib/tensor/patches/backprop.ts";
import { peakBytes, resetPeak } from "../lib/tensor/memory.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import type { LanguageModel } from "../lib/models/types.ts";

/** The loss's gradients of `model` on a fixed batch, as flat arrays by parameter name, and the step's peak. */
function gradients(model: LanguageModel, early: boolean): { grads: Map<string, Float32Array>; peak: number } {
  const was = setEarlyRelease(early);
  try {
    const T = model.config.contextLength, B = 2;
    const ids = new Int32Array(B * T).map((_, i) => (i * 7919 + 13) % model.config.vocabSize);
    const before = tf.memory().numTensors, bytesBefore = tf.memory().numBytes;
    resetPeak();
    const out = tf.tidy(() => {
      const x = tf.tensor2d(ids, [B, T], "int32");
      const y = tf.tensor2d(ids.map((v) => (v + 1) % model.config.vocabSize), [B, T], "int32");
      return tf.variableGrads(
        () => model.loss(x, y, { precision: "fp32", training: true }) as tf.Scalar,
        [...model.params.values()],
      );
    });
    const peak = peakBytes() - bytesBefore;
    const grads = new Map<string, Float32Array>();
    for (const [name, v] of model.params) grads.set(name, out.grads[v.name].dataSync() as Float32Array);
    tf.dispose([out.value, ...Object.values(out.grads)]);
    assertEquals(tf.memory().numTensors, before, "no tensor leaked by the backward pass");
    return { grads, peak };
  } finally {
    setEarlyRelease(was);
  }
}

function assertSameGradients(a: Map<string, Float32Array>, b: Map<string, Float32Array>, what: string): void {
  assertEquals([...a.keys()], [...b.keys()]);
  for (const [name, g] of a) {
    const h = b.get(name)!;
    for (let i = 0; i < g.length; i++) {
      if (!Object.is(g[i], h[i])) {
        throw new Error(`${what}: ${name}[${i}] = ${g[i]}, TF.js's pass gives ${h[i]}`);
      }
    }
  }
}

for (const backend of ["cpu", "wasm"] as const) {
  Deno.test(`backprop (${backend}): gpt and pixel-attn gradients equal TF.js's pass bit for bit`, async () => {
    await initBackend(backend);
    for (
      const [family, overrides] of [
        ["gpt", { vocabSize: 97, contextLength: 16 }],
        ["pixel-attn", { vocabSize: 97, contextLength: 8 }],
      ] as const
    ) {
      const model = createModel(resolveConfig(family, "tiny", overrides), 3);
      try {
        const early = gradients(model, true), full = gradients(model, false);
        assertSameGradients(early.grads, full.grads, `${family} on ${backend}`);
      } finally {
        model.dispose();
      }
    }
  });
}

Deno.test("backprop (wasm): a GPT step's peak memory is lower than with TF.js's pass", async () => {
  await initBackend("wasm");
  const model = createModel(
    resolveConfig("gpt", "tiny", { vocabSize: 97, contextLength: 128, nLayer: 4, nEmbd: 32 }),
    5,
  );
  try {
    const early = gradients(model, true), full = gradients(model, false);
    // every layer's activations and gradients at once (TF.js) against a few layers' worth
    ok(early.peak < 0.75 * full.peak, `peak ${early.peak} B with early release, ${full.peak} B without`);
  } finally {
    model.dispose();
  }
});

Deno.test("backprop: a gradient handed on unchanged to two inputs, each also summed with another part", async () => {
  await initBackend("cpu");
  // passes dy on to both inputs as the same tensor object: the slots must count it, not free it while
  // another input still holds it (TF.js's own pass frees it here when it sums a second part into one)
  const twin = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [a, b] = args as tf.Tensor[];
    return {
      value: tf.add(a, b),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => [dy as tf.Tensor, dy as tf.Tensor],
    };
  }) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;
  const wv = [0.5, -1.25, 2, 3], vv = [1, 2, -3, 0.25]; // dyadic: every value below is exact in float32
  const w = tf.variable(tf.tensor1d(wv), true, "backprop_test_w");
  const v = tf.variable(tf.tensor1d(vv), true, "backprop_test_v");
  const before = tf.memory().numTensors;
  const was = setEarlyRelease(true);
  try {
    // f = sum((w^2 + w v) (v + w))
    const { value, grads } = tf.variableGrads(
      () => tf.sum(tf.mul(twin(tf.mul(w, w), tf.mul(w, v)), twin(v, w))) as tf.Scalar,
      [w, v],
    );
    const want = (g: (w: number, v: number) => number) => wv.map((x, i) => g(x, vv[i]));
    assertEquals(Array.from(value.dataSync()), [
      want((w, v) => (w * w + w * v) * (v + w)).reduce((a, b) => a + b),
    ]);
    assertEquals(
      Array.from(grads[w.name].dataSync()),
      want((w, v) => (2 * w + v) * (v + w) + (w * w + w * v)),
    );
    assertEquals(Array.from(grads[v.name].dataSync()), want((w, v) => w * (v + w) + (w * w + w * v)));
    tf.dispose([value, ...Object.values(grads)]);
  } finally {
    setEarlyRelease(was);
  }
  assertEquals(tf.memory().numTensors, before);
  tf.dispose([w, v]);
});

Deno.test("backprop: an error in the forward or backward pass leaves no tensor behind", async () => {
  await initBackend("cpu");
  const w = tf.variable(tf.tensor1d([1, 2, 3]), true, "backprop_test_err");
  const failing = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [a] = args as tf.Tensor[];
    return {
      value: tf.mul(a, 2),
      gradFunc: () => {
        throw new Error("failed in the backward pass");
      },
    };
  }) as (a: tf.Tensor) => tf.Tensor;
  const before = tf.memory().numTensors;
  const was = setEarlyRelease(true);
  try {
    // the forward pass saves w * w's inputs and the exp's output before it fails, as an allocation would
    let threw = false;
    try {
      tf.variableGrads(() => {
        const y = tf.sum(tf.exp(tf.mul(w, w)));
        if (y) throw new Error("out of memory (simulated)");
        return y as tf.Scalar;
      }, [w]);
    } catch (err) {
      threw = (err as Error).message.includes("simulated");
    }
    ok(threw, "the forward pass's error reaches the caller");
    assertEquals(tf.memory().numTensors, before, "after an error in the forward pass");
    threw = false;
    try {
      tf.variableGrads(() => tf.sum(failing(tf.exp(tf.mul(w, w)))) as tf.Scalar, [w]);
    } catch (err) {
      threw = (err as Error).message.includes("backward");
    }
    ok(threw, "the backward pass's error reaches the caller");
    assertEquals(tf.memory().numTensors, before, "after an error in the backward pass");
  } finally {
    setEarlyRelease(was);
  }
  w.dispose();
});
