// The vocabulary softmax (lib/tensor/softmax_rows.ts): the wasm SIMD kernel (wasm_softmax.wat, run by
// wasm_softmax.ts on several threads) matches a float64 loop on every row-length remainder and on NaN
// and -Infinity, gives bit-identical results on 1 and 2 threads, and leaves the loss and its gradients
// where TF.js's op chain puts them; the committed kernel bytes are those of the committed .wat.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { setWasmSoftmaxEnabled, softmaxRows, softmaxRowsByOps } from "../lib/tensor/softmax_rows.ts";
import { tiedCrossEntropy } from "../lib/loss.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";
import { generate, KERNELS } from "../scripts/build_wasm.ts";

async function child(threads: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tests/helpers_softmax_child.ts"],
    env: { LMPIPE_WASM_THREADS: threads },
    cwd: new URL("..", import.meta.url).pathname,
    signal: AbortSignal.timeout(120_000), // a child that never exits fails the test instead of hanging it
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("wasm softmax kernel: matches float64 on 1 and 2 threads, bit-identical between them", async () => {
  const [one, two] = [await child("1"), await child("2")];
  assert.equal(one.threads, 1, one.backend);
  assert.equal(two.threads, 2, two.backend);
  assert.equal(one.rowsOnWorkers, 0);
  assert.ok(two.rowsOnWorkers > 0, "the worker thread never took a row");
  for (const r of [one, two]) {
    assert.equal(r.mErr, 0, "row maxima are exact");
    assert.ok(r.eErr < 1e-6, `exp relative error ${r.eErr}`);
    assert.ok(r.sErr < 1e-6, `row sum relative error ${r.sErr}`);
    assert.deepEqual(r.specialS.map((v: string) => v === "NaN"), [true, false, false]);
    const want = [Math.exp(-5), 0, 1, Math.exp(-4)]; // row [0, -Infinity, 5, 1]: exp(-Infinity) is 0
    assertClose(r.specialE, want, 1e-6, "the row with -Infinity");
    assert.equal(r.specialE[1], 0);
  }
  assert.equal(two.hash, one.hash, "outputs differ between 1 and 2 threads");
});

Deno.test("softmaxRows on cpu is the op chain; on wasm the kernel agrees with it", async () => {
  const x = randomArray(7 * 301, 3).map((v) => v * 30);
  for (const backend of ["cpu", "wasm"] as const) {
    await initBackend(backend, { quiet: true });
    const xb = tf.tensor2d(x, [7, 301]);
    const got = softmaxRows(xb), want = softmaxRowsByOps(xb);
    assert.deepEqual(got.e.shape, [7, 301]);
    assert.deepEqual(got.s.shape, [7, 1]);
    assertClose(got.e.dataSync(), want.e.dataSync(), 1e-6, `${backend} e`);
    assertClose(got.m.dataSync(), want.m.dataSync(), 0, `${backend} m`);
    assertClose(got.s.dataSync(), want.s.dataSync(), 1e-6, `${backend} s`);
  }
});

Deno.test("tiedCrossEntropy: same loss and gradients with the wasm kernel as with the op chain", async () => {
  await initBackend("wasm", { quiet: true });
  const [N, C, V] = [40, 16, 1003];
  const h = tf.tensor2d(randomArray(N * C, 11), [N, C]);
  const w = tf.tensor2d(randomArray(V * C, 12).map((v) => v * 2), [V, C]);
  const t = tf.tensor1d(Array.from({ length: N }, (_, i) => (i * 389) % V), "int32");
  const f = (kernel: boolean) => {
    const old = setWasmSoftmaxEnabled(kernel);
    try {
      const g = tf.grads((a, b) =>
        tiedCrossEntropy(a as tf.Tensor2D, b as tf.Tensor2D, t, { chunkRows: 16 })
      );
      const loss = tiedCrossEntropy(h, w, t, { chunkRows: 16 }).dataSync()[0];
      return { loss, grads: g([h, w]).map((x) => x.dataSync()) };
    } finally {
      setWasmSoftmaxEnabled(old);
    }
  };
  const [withKernel, withOps] = [f(true), f(false)];
  assert.ok(
    Math.abs(withKernel.loss - withOps.loss) < 1e-5 * withOps.loss,
    `${withKernel.loss} vs ${withOps.loss}`,
  );
  assertClose(withKernel.grads[0], withOps.grads[0], 1e-5, "dL/dh");
  assertClose(withKernel.grads[1], withOps.grads[1], 1e-5, "dL/dW");
});

Deno.test("the committed kernel bytes are built from the committed .wat (scripts/build_wasm.ts)", async () => {
  for (const k of KERNELS) {
    const committed = await Deno.readTextFile(new URL(`../${k.out}`, import.meta.url));
    assert.equal(
      committed,
      await generate(k.wat),
      `${k.out} is stale: run deno run -A scripts/build_wasm.ts`,
    );
  }
});
