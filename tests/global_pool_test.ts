// The CNNs' global average pool (lib/tensor/ops/global_pool/mod.ts): lmpipe's kernels and the AvgPool path on
// wasm and tf.mean against a float64 loop, value and gradient, and that the kernel choice runs the path it names.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";
import { globalAvgPool } from "../lib/tensor/ops/global_pool/mod.ts";
import { setAvgPoolEnabled } from "../lib/tensor/ops/global_pool/wasm.ts";
import { kernelFor } from "../lib/tensor/kernel_choice.ts";
import { setWasmKernelsEnabled } from "../lib/tensor/wasm/kernels.ts";

/** Per image and channel: the float64 mean over the pixels, and the gradient of sum(pool · dy). */
function reference(x: Float32Array, dy: Float32Array, [N, H, W, C]: number[]) {
  const out = new Float64Array(N * C), dx = new Float64Array(N * H * W * C);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let p = 0; p < H * W; p++) s += x[(n * H * W + p) * C + c];
      out[n * C + c] = s / (H * W);
      for (let p = 0; p < H * W; p++) dx[(n * H * W + p) * C + c] = dy[n * C + c] / (H * W);
    }
  }
  return { out, dx };
}

Deno.test("globalAvgPool: lmpipe's kernels and AvgPool (wasm) and tf.mean equal a float64 mean over the pixels, with its gradient", async () => {
  // backend, the AvgPool switch, lmpipe's wasm kernels
  const paths = [
    ["wasm", true, true],
    ["wasm", true, false],
    ["wasm", false, true],
    ["cpu", true, true],
  ] as const;
  for (const [backend, on, kernels] of paths) {
    await initBackend(backend, { quiet: true });
    const was = setAvgPoolEnabled(on), wasKernels = setWasmKernelsEnabled(kernels);
    try {
      const want = backend === "wasm" && on ? (kernels ? "lmpipe" : "avgPool") : "ops";
      assert.equal(kernelFor("globalAvgPool"), want, `${backend}, switch ${on}`);
      for (const shape of [[3, 5, 7, 6], [2, 12, 12, 32], [4, 1, 1, 3], [300, 12, 12, 37]]) {
        const [N, , , C] = shape;
        const xv = Float32Array.from(randomArray(shape.reduce((a, b) => a * b, 1), 11)),
          dyv = Float32Array.from(randomArray(N * C, 12));
        const x = tf.tensor4d(xv, shape as [number, number, number, number]), dy = tf.tensor2d(dyv, [N, C]);
        const ref = reference(xv, dyv, shape);
        const what = `${backend} ${want} [${shape}]`;
        assertClose(globalAvgPool(x).dataSync(), ref.out, 1e-6, `${what} value`);
        const dx = tf.grad((t: tf.Tensor) => globalAvgPool(t as tf.Tensor4D))(x, dy);
        assert.deepEqual(dx.shape, shape);
        assertClose(dx.dataSync(), ref.dx, 1e-7, `${what} gradient`);
        // the path named ran: lmpipe's kernels or AvgPool on wasm, Mean otherwise
        const { kernels: ran } = await tf.profile(() =>
          tf.grad((t: tf.Tensor) => globalAvgPool(t as tf.Tensor4D))(x, dy)
        );
        const names = ran.map((k) => k.name);
        const expected = {
          lmpipe: ["LmpipeImageMeans", "LmpipeBroadcastPixels"],
          avgPool: ["AvgPool"],
          ops: ["Mean"],
        }[want];
        assert.ok(expected.every((k) => names.includes(k)), `${what}: ran ${names}`);
        tf.dispose([x, dy, dx]);
      }
    } finally {
      setAvgPoolEnabled(was), setWasmKernelsEnabled(wasKernels);
    }
  }
});
