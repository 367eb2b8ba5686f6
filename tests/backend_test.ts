// Backend selection (lib/tensor/backend.ts): switching in one process, the auto rule, the message for
// a missing tfjs-node, host reads that work on webgpu, and one small GPT-like training step that must
// give the same loss and gradients on cpu, wasm and webgpu.
import assert from "node:assert/strict";
import {
  initBackend,
  isSoftwareAdapter,
  readData,
  readScalar,
  TENSORFLOW_INSTALL_HELP,
  tf,
} from "../lib/tensor/backend.ts";
import { embeddingLookup, linear, takeAlongLastAxis } from "../lib/nn.ts";
import { LmpipeError } from "../lib/errors.ts";
import { assertClose, randomArray, testBackends, webgpuStatus } from "../lib/tensor/testing.ts";
import { denoChildJson } from "./helpers_run.ts";

const backends = await testBackends();
const gpu = await webgpuStatus();

Deno.test("initBackend switches between backends in one process", async () => {
  for (const name of ["cpu", "wasm", "cpu", "wasm"] as const) {
    const info = await initBackend(name, { quiet: true });
    assert.equal(info.name, name);
    assert.equal(tf.getBackend(), name);
    assert.ok(info.device.length > 0);
    const x = tf.tensor2d([[1, 2], [3, 4]]);
    assert.equal(await readScalar(tf.sum(tf.matMul(x, x))), 54);
  }
  const w = await initBackend("wasm", { quiet: true });
  assert.ok(w.threads === 1 || w.threads === 2);
});

// wasm's thread count is fixed per process, so the threaded build is checked in a child process.
Deno.test("wasm with 2 threads (LMPIPE_WASM_THREADS=2) starts, computes the same numbers, and exits", async () => {
  const script = `
    import { initBackend, readData, tf } from ${
    JSON.stringify(new URL("../lib/tensor/backend.ts", import.meta.url).href)
  };
    const info = await initBackend("wasm", { quiet: true });
    const a = tf.tensor2d(Array.from({ length: 64 * 48 }, (_, i) => Math.sin(i)), [64, 48]);
    const y = tf.matMul(a, a, false, true);
    const g = tf.grad((x) => tf.sum(tf.square(tf.conv2d(x, tf.ones([3, 3, 1, 4]), 1, "same"))))(tf.reshape(a, [2, 32, 48, 1]));
    console.log(JSON.stringify({ threads: info.threads, y: Array.from(await readData(y)), g: Array.from(await readData(g)) }));
  `;
  const run = (threads: string) =>
    denoChildJson(["eval", "--ext=ts", script], { LMPIPE_WASM_THREADS: threads }, 60_000);
  const [one, two] = [await run("1"), await run("2")];
  assert.equal(one.threads, 1);
  assert.equal(two.threads, 2);
  assertClose(two.y, one.y, 1e-6, "matMul, 2 threads vs 1");
  assertClose(two.g, one.g, 1e-6, "conv2d gradient, 2 threads vs 1");
});

Deno.test({
  name: "webgpu: initBackend twice reuses the adapter; readScalar/readData work without dataSync",
  ignore: !gpu.ok,
  fn: async () => {
    const a = await initBackend("webgpu", { quiet: true });
    await initBackend("cpu", { quiet: true });
    const b = await initBackend("webgpu", { quiet: true });
    assert.equal(a.device, b.device);
    assert.equal(tf.getBackend(), "webgpu");
    const x = tf.tensor1d([1.5, 2.5, -1]);
    assert.equal(await readScalar(tf.sum(x)), 3);
    assert.deepEqual(Array.from(await readData(tf.mul(x, 2))), [3, 5, -2]);
    assert.deepEqual(Array.from(await readData(tf.tensor1d([7, 8], "int32"))), [7, 8]);
    // GPU-resident data cannot be read synchronously under Deno: a clear error, not a canvas crash.
    const onGpu = tf.matMul(tf.ones([16, 16]), tf.ones([16, 16]));
    assert.throws(() => onGpu.dataSync(), /cannot read tensors synchronously.*await t\.data\(\)/);
    assert.equal((await readData(onGpu))[0], 16);
  },
});

Deno.test("--backend tensorflow without tfjs-node says how to install it and what CUDA it needs", async () => {
  await assert.rejects(() => initBackend("tensorflow", { quiet: true }), (e: unknown) => {
    assert.ok(e instanceof LmpipeError);
    assert.equal(e.exitCode, 2); // a usage error: the user asked for what is not installed, not a bug
    assert.match(e.message, /--backend tensorflow: not installed/);
    for (
      const s of [
        "npm:@tensorflow/tfjs-node-gpu@4.22.0",
        "deno install --allow-scripts=npm:@tensorflow/tfjs-node-gpu",
        "npm i @tensorflow/tfjs-node-gpu@4.22.0",
        "CUDA 11.2",
        "cuDNN 8.1",
        "libtensorflow 2.9.1",
      ]
    ) assert.ok(e.message.includes(s), `message lacks '${s}'`);
    return true;
  });
  assert.ok(TENSORFLOW_INSTALL_HELP.includes("--backend webgpu"));
});

Deno.test("unknown backend names are usage errors", async () => {
  await assert.rejects(
    () => initBackend("cuda" as "cpu", { quiet: true }),
    (e: unknown) =>
      e instanceof LmpipeError && e.exitCode === 2 && /auto, webgpu, tensorflow, wasm, cpu/.test(e.message),
  );
});

Deno.test("auto never picks a software GPU and falls back to wasm without tfjs-node", async () => {
  const info = await initBackend("auto", { quiet: true });
  assert.equal(info.name, "wasm"); // this machine: no hardware GPU, no tfjs-node
  const fake = (info: Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean }) =>
    ({
      info: { vendor: "", architecture: "", device: "", description: "", ...info },
    }) as unknown as GPUAdapter;
  assert.equal(isSoftwareAdapter(fake({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" })), true);
  assert.equal(isSoftwareAdapter(fake({ description: "SwiftShader Device" })), true);
  assert.equal(isSoftwareAdapter(fake({ vendor: "65541", description: "" })), true); // Mesa, no description
  assert.equal(isSoftwareAdapter(fake({ vendor: "nvidia", isFallbackAdapter: true })), true);
  assert.equal(
    isSoftwareAdapter(fake({ vendor: "nvidia", architecture: "hopper", description: "NVIDIA H100" })),
    false,
  );
});

// A miniature GPT step: token + position embeddings, a linear layer, LayerNorm, the output head tied
// to the token embedding, cross-entropy; loss and every gradient compared with cpu, for two SGD steps.
Deno.test("a GPT-like training step gives the same loss and gradients on every backend", async () => {
  const [V, C, T, B] = [97, 16, 8, 3];
  const ids = Array.from({ length: B * T }, (_, i) => (i * 37 + 5) % V);
  const tgt = Array.from({ length: B * T }, (_, i) => (i * 11 + 3) % V);
  const init = { wte: randomArray(V * C, 1), wpe: randomArray(T * C, 2), w: randomArray(C * C, 3) };

  async function run(name: "cpu" | "wasm" | "webgpu") {
    await initBackend(name, { quiet: true });
    const p = {
      wte: tf.variable(tf.mul(tf.tensor2d(init.wte, [V, C]), 0.5)),
      wpe: tf.variable(tf.mul(tf.tensor2d(init.wpe, [T, C]), 0.5)),
      w: tf.variable(tf.tensor2d(init.w, [C, C])),
      b: tf.variable(tf.zeros([C])),
      g: tf.variable(tf.ones([C])),
    };
    const idx = tf.tensor2d(ids, [B, T], "int32"), targets = tf.tensor1d(tgt, "int32");
    const lossFn = () =>
      tf.tidy(() => {
        const x = tf.add(embeddingLookup(p.wte as tf.Variable<tf.Rank.R2>, idx), p.wpe); // [B,T,C]
        const h = tf.add(
          x,
          tf.tanh(linear(x, p.w as tf.Variable<tf.Rank.R2>, p.b as tf.Variable<tf.Rank.R1>)),
        );
        const { mean, variance } = tf.moments(h, -1, true);
        const n = tf.mul(tf.div(tf.sub(h, mean), tf.sqrt(tf.add(variance, 1e-5))), p.g);
        const logits = tf.matMul(tf.reshape(n, [B * T, C]), p.wte, false, true) as tf.Tensor2D; // tied head
        const lse = tf.logSumExp(logits, -1);
        return tf.mean(tf.sub(lse, takeAlongLastAxis(logits, targets))) as tf.Scalar;
      });
    const losses: number[] = [], grads: Record<string, Float32Array>[] = [];
    for (let step = 0; step < 2; step++) {
      const { value, grads: g } = tf.variableGrads(lossFn);
      losses.push(await readScalar(value));
      const got: Record<string, Float32Array> = {};
      for (const [k, v] of Object.entries(p)) got[k] = Float32Array.from(await g[v.name].data());
      grads.push(got);
      for (const v of Object.values(p)) v.assign(tf.sub(v, tf.mul(g[v.name], 0.5)));
      tf.dispose([value, ...Object.values(g)]);
    }
    tf.dispose([idx, targets, ...Object.values(p)]);
    return { losses, grads };
  }

  const ref = await run("cpu");
  assert.ok(ref.losses[1] < ref.losses[0], `cpu: loss should fall (${ref.losses})`);
  for (const b of backends.filter((b) => b !== "cpu")) {
    const got = await run(b);
    const tol = b === "webgpu" ? 1e-3 : 1e-4;
    got.losses.forEach((l, i) => assertClose([l], [ref.losses[i]], tol, `${b} loss at step ${i}`));
    got.grads.forEach((g, i) => {
      for (const k of Object.keys(g)) assertClose(g[k], ref.grads[i][k], tol, `${b} grad ${k} at step ${i}`);
    });
  }
});

Deno.test("code that uses tf without initBackend gets wasm with the fixes, never webgpu", async () => {
  const script = `
    import { tf } from ${JSON.stringify(new URL("../lib/tensor/backend.ts", import.meta.url).href)};
    await tf.ready();
    const g = tf.grad((x) => tf.sum(tf.cumsum(x, 1)))(tf.ones([2, 3, 2])); // TF.js's own gradient throws
    console.log(JSON.stringify({ backend: tf.getBackend(), g: Array.from(await g.data()) }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const { backend, g } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(backend, "wasm");
  assert.deepEqual(g, [3, 3, 2, 2, 1, 1, 3, 3, 2, 2, 1, 1]);
});
