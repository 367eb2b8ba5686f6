// lmpipe's wasm attention kernel (lib/tensor/ops/attention/wasm.ts, kernels.wat attn_fwd): against float64
// on gpt's head size and odd T and head sizes, bit for bit the same on 1 and 2 threads (with the worker
// proven to take heads), against the op chain it replaces; taken only outside gradients (training's
// gradients are the op chain's, bit for bit) and switched off by the kernel-choice rule; a gpt's
// evaluation loss with it equals the op chain's within 1e-5.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { causalAttentionFromQkv } from "../lib/tensor/ops/attention/mod.ts";
import { ATTENTION_QKV_KERNEL } from "../lib/tensor/ops/attention/wasm.ts";
import { kernelFor, setWasmAttentionEnabled } from "../lib/tensor/kernel_choice.ts";
import { randomArray } from "../lib/tensor/testing.ts";
import { setWasmKernelsEnabled } from "../lib/tensor/wasm/kernels.ts";
import { Gpt, GPT_PRESETS } from "../lib/models/gpt.ts";
import { denoChildJson } from "./helpers_run.ts";
import { randomizeWeights } from "./helpers_gpt.ts";
import { ATTENTION_SHAPES, attentionQkvRef, relErr } from "./helpers_attention_ref.ts";

await initBackend("wasm", { quiet: true });

/** `f`'s result and the names of the kernels it ran (tf.profile; synchronous on wasm). */
async function kernelsRunBy<T extends tf.TensorContainer>(
  f: () => T,
): Promise<{ result: T; names: string[] }> {
  let result: T | undefined;
  const info = await tf.profile(() => (result = f()));
  return { result: result as T, names: info.kernels.map((k) => k.name) };
}

/** Runs fn with the wasm attention kernel on or off (lmpipe's wasm kernels on), restoring the previous state. */
function withKernel<T>(on: boolean, fn: () => T): T {
  const [old, oldKernels] = [setWasmAttentionEnabled(on), setWasmKernelsEnabled(true)];
  try {
    return fn();
  } finally {
    setWasmAttentionEnabled(old), setWasmKernelsEnabled(oldKernels);
  }
}

function child(threads: string) {
  return denoChildJson(["run", "-A", "tests/helpers_wasm_attention_child.ts"], {
    LMPIPE_WASM_THREADS: threads,
  });
}

Deno.test("wasm attention: float64 on 1 and 2 threads, bit-identical between them", async () => {
  const [one, two] = [await child("1"), await child("2")];
  assert.equal(one.threads, 1, one.backend);
  assert.equal(two.threads, 2, two.backend);
  assert.ok(two.rowsOnWorkers > 0, "the worker thread never took a head");
  for (const r of [one, two]) assert.ok(r.err < 1e-6, `relative error ${r.err} against float64`);
  assert.equal(two.hash, one.hash, "outputs differ between 1 and 2 threads");
});

Deno.test("wasm attention: the kernel runs, matches float64 and the op chain on every shape", async () => {
  for (const [B, T, H, D] of ATTENTION_SHAPES) {
    const x = randomArray(B * T * 3 * H * D, 7 * B + 3 * T + D);
    const qkv = tf.tensor3d(x, [B, T, 3 * H * D]), scale = 1 / Math.sqrt(D);
    const { result: y, names } = await kernelsRunBy(() =>
      withKernel(true, () => causalAttentionFromQkv(qkv, H, scale))
    );
    assert.ok(names.includes(ATTENTION_QKV_KERNEL), `[${B}, ${T}, ${H}, ${D}]: ran ${names}`);
    const chain = withKernel(false, () => tf.tidy(() => causalAttentionFromQkv(qkv, H, scale)));
    const want = attentionQkvRef(x, B, T, H, D, scale);
    const got = y.dataSync();
    assert.deepEqual(y.shape, [B, T, H * D]);
    const errRef = relErr(got, want), errChain = relErr(got, chain.dataSync());
    assert.ok(errRef < 1e-6, `[${B}, ${T}, ${H}, ${D}]: relative error ${errRef} against float64`);
    assert.ok(errChain < 2e-6, `[${B}, ${T}, ${H}, ${D}]: relative difference ${errChain} from the op chain`);
    tf.dispose([qkv, y, chain]);
  }
});

Deno.test("wasm attention: off by the kernel-choice switch and while a gradient is recorded", async () => {
  assert.equal(withKernel(true, () => kernelFor("causalAttentionFromQkv", "wasm")), "lmpipe");
  assert.equal(withKernel(false, () => kernelFor("causalAttentionFromQkv", "wasm")), "ops");
  const qkv = tf.tensor3d(randomArray(2 * 20 * 48, 5), [2, 20, 48]);
  const dy = tf.tensor3d(randomArray(2 * 20 * 16, 6), [2, 20, 16]);
  const grad = (on: boolean) =>
    withKernel(
      on,
      () =>
        kernelsRunBy(() =>
          tf.grad((x: tf.Tensor) => tf.sum(tf.mul(causalAttentionFromQkv(x, 2, 0.3), dy)))(qkv)
        ),
    );
  const [on, off] = [await grad(true), await grad(false)];
  assert.ok(!on.names.includes(ATTENTION_QKV_KERNEL), "the forward-only kernel ran under a gradient");
  assert.deepEqual(on.result.dataSync(), off.result.dataSync(), "gradients differ from the op chain's");
  tf.dispose([qkv, dy, on.result, off.result]);
});

Deno.test("wasm attention: a gpt's evaluation loss equals the op chain's within 1e-5", async () => {
  const model = new Gpt({
    ...GPT_PRESETS.tiny,
    nLayer: 2,
    nHead: 4,
    nEmbd: 64,
    contextLength: 40,
    vocabSize: 300,
  }, 3);
  randomizeWeights(model, 11);
  const B = 3, T = 40;
  const ids = (seed: number) =>
    tf.tensor2d(
      Array.from(randomArray(B * T, seed), (v) => Math.floor(Math.abs(v) * 997) % 300),
      [B, T],
      "int32",
    );
  const [x, y] = [ids(1), ids(2)];
  const loss = (on: boolean) =>
    withKernel(on, () => kernelsRunBy(() => tf.tidy(() => model.loss(x, y, { training: false }))));
  const [fused, chain] = [await loss(true), await loss(false)];
  assert.ok(fused.names.includes(ATTENTION_QKV_KERNEL), "the kernel did not run in evaluation");
  assert.ok(!chain.names.includes(ATTENTION_QKV_KERNEL));
  const [a, b] = [fused.result.dataSync()[0], chain.result.dataSync()[0]];
  assert.ok(Math.abs(a - b) <= 1e-5 * Math.abs(b), `loss ${a} with the kernel, ${b} with the op chain`);
  tf.dispose([x, y, fused.result, chain.result]);
  model.dispose();
});
