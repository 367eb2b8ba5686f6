// The image models' per-image norm + channel affine + ReLU on wasm (lib/tensor/ops/image_norm/wasm.ts):
// the fused kernels' y and all three gradients against float64 on odd shapes (any H, W, C, one image or
// several, ReLU on and off), the kernel choice with its switch, and a pixel model's loss and gradients
// equal with the kernels on and off (the LayerNorm path before them).
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";
import { imageNormRelu } from "../lib/tensor/ops/image_norm/mod.ts";
import { setWasmImageNormEnabled } from "../lib/tensor/ops/image_norm/wasm.ts";
import { kernelFor } from "../lib/tensor/kernel_choice.ts";
import { IMAGE_NORM_GRAD_KERNEL, IMAGE_NORM_KERNEL, LAYER_NORM_KERNEL } from "../lib/tensor/kernel_names.ts";
import { setWasmKernelsEnabled } from "../lib/tensor/wasm/kernels.ts";
import { tinyConfig } from "./helpers_pixel.ts";
import { createModel } from "../lib/models/registry.ts";
import { imageNormRef } from "./helpers_image_norm.ts";

/** Runs fn with the fused kernels switched on or off, restoring the old state. */
async function withFused<T>(on: boolean, fn: () => T | Promise<T>): Promise<T> {
  const old = setWasmImageNormEnabled(on);
  try {
    return await fn();
  } finally {
    setWasmImageNormEnabled(old);
  }
}

Deno.test("wasm image norm kernels: y, dx, dg, db match float64 (odd H, W, C; ReLU on and off)", async () => {
  await initBackend("wasm", { quiet: true });
  assert.equal(kernelFor("imageNorm"), "lmpipe");
  let seed = 60;
  const cases = [
    [[3, 5, 7, 3], true],
    [[3, 5, 7, 3], false],
    [[2, 5, 5, 7], true],
    [[4, 3, 7, 1], false],
    [[1, 1, 1, 5], true], // one pixel: the scalar tail alone
    [[5, 9, 9, 12], true],
    [[2, 20, 20, 64], false], // the image models' shape
  ] as const;
  for (const [shape, relu] of cases) {
    const [N, H, W, C] = shape, n = H * W * C;
    // offsets per image, so that means and variances are far from 0 and 1
    const x = randomArray(N * n, seed++).map((v, i) => 2 * v + Math.floor(i / n) - 1);
    const g = randomArray(C, seed++).map((v) => 1 + 0.5 * v), b = randomArray(C, seed++).map((v) => 0.3 * v);
    const dy = randomArray(N * n, seed++);
    const [xt, gt, bt, dyt] = [
      tf.tensor4d(x, [...shape]),
      tf.tensor1d(g),
      tf.tensor1d(b),
      tf.tensor4d(dy, [...shape]),
    ];
    const f = (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => imageNormRelu(a as tf.Tensor4D, gg, bb, relu);
    let outs: tf.Tensor[] = [];
    const prof = await tf.profile(() => {
      outs = [f(xt, gt, bt), ...tf.grads(f)([xt, gt, bt], dyt)];
    });
    const what = `[${shape}] relu ${relu}`;
    for (const k of [IMAGE_NORM_KERNEL, IMAGE_NORM_GRAD_KERNEL]) {
      assert.ok(prof.kernelNames.includes(k), `${what}: ${k} did not run (${prof.kernelNames})`);
    }
    assert.ok(!prof.kernelNames.includes(LAYER_NORM_KERNEL), `${what}: ${prof.kernelNames}`);
    const [y, dx, dg, db] = outs.map((t) => t.dataSync());
    const want = imageNormRef(x, g, b, dy, shape, relu);
    assertClose(y, want.y, 1e-5, `${what}: y`);
    assertClose(dx, want.dx, 1e-4, `${what}: dx`);
    assertClose(dg, want.dg, 1e-4, `${what}: dg`);
    assertClose(db, want.db, 1e-4, `${what}: db`);
    tf.dispose([xt, gt, bt, dyt, ...outs]);
  }
});

Deno.test("wasm image norm: switched off, the LayerNorm path runs; all kernels off, the op chain", async () => {
  await initBackend("wasm", { quiet: true });
  await withFused(false, () => assert.equal(kernelFor("imageNorm"), "layerNorm"));
  const old = setWasmKernelsEnabled(false);
  try {
    assert.equal(kernelFor("imageNorm"), "ops");
  } finally {
    setWasmKernelsEnabled(old);
  }
});

Deno.test("pixel models on wasm: loss and gradients equal with the fused image norm on and off", async () => {
  await initBackend("wasm", { quiet: true });
  for (const model of ["pixel-cumsum", "pixel-attn"] as const) {
    const c = tinyConfig(model, { imageSize: 6, cnnDepth: 3 });
    const m = createModel(c, 5);
    const ids = (seed: number) =>
      tf.tensor2d(
        Int32Array.from(randomArray(16, seed), (v) => Math.floor((v + 1) * 30) % 61),
        [2, 8],
        "int32",
      );
    const [x, y] = [ids(1), ids(2)];
    const vars = [...m.params.values()];
    // the loss and every gradient as arrays, and the kernels that ran
    const run = (on: boolean) =>
      withFused(on, async () => {
        let loss = 0, grads: Float32Array[] = [];
        const prof = await tf.profile(() => {
          const r = tf.variableGrads(() => m.loss(x, y), vars);
          loss = r.value.dataSync()[0];
          grads = vars.map((v) => r.grads[v.name].dataSync() as Float32Array);
          tf.dispose([r.value, ...Object.values(r.grads)]);
        });
        return { loss, grads, kernels: prof.kernelNames };
      });
    const on = await run(true), off = await run(false);
    assert.ok(on.kernels.includes(IMAGE_NORM_GRAD_KERNEL), `${model}: the fused kernel did not run`);
    // (the model's own LayerNorms run the LayerNorm kernel either way)
    assert.ok(!off.kernels.includes(IMAGE_NORM_KERNEL), `${model}: the fused kernel ran while off`);
    assertClose([on.loss], [off.loss], 1e-5, `${model}: loss`);
    on.grads.forEach((gr, i) => assertClose(gr, off.grads[i], 1e-4, `${model}: gradient of ${vars[i].name}`));
    tf.dispose([x, y]);
    m.dispose();
  }
});
