// The oneDNN convolutions of the wasm backend (lib/native/dnnl.ts, lib/tensor/ops/conv2d/dnnl.ts): the
// forward conv, its input gradient and its filter gradient against a float64 reference at every conv
// shape the image models use (vgg9 and vgg-wide at the tiny, small and study presets, resnet at tiny and
// small), at odd sizes, batch 1 and many, stride 2 and 'valid' padding, and against the path without oneDNN
// (XNNPACK forward, lib/tensor/ops/conv2d/wasm.ts's im2col/col2im gradients);
// a pixel model's loss and gradients equal with oneDNN on and off; a dilated conv falls back; the off
// switch and a bogus library give a clear reason. Without libdnnl2 the tests are skipped with the
// reason, unless LMPIPE_REQUIRE_NATIVE is set (CI's run with the native libraries), where that fails.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { currentDnnl, dnnlStatus } from "../lib/native/dnnl.ts";
import { setDnnlConvs } from "../lib/tensor/kernel_choice.ts";
import { dnnlConvStats } from "../lib/tensor/ops/conv2d/dnnl.ts";
import { type CnnConfig, cnnForward, type CnnKind, cnnParamSpecs } from "../lib/models/cnn.ts";
import { cnnConfigOf, type PixelConfig } from "../lib/models/pixel.ts";
import { resolveConfig } from "../lib/models/registry.ts";
import {
  type ConvCase,
  convGeometry,
  convName,
  convReference,
  dnnlSkipReason,
  evalInChild,
  smallPixelModel,
} from "./helpers_conv.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";

await initBackend("wasm", { quiet: true });
const noDnnl = dnnlSkipReason(currentDnnl() ? "" : dnnlStatus(), "oneDNN conv tests");

/** y, dx and dw of one case on the current path (oneDNN or not), and how many oneDNN calls ran. */
function run(c: ConvCase, x: Float32Array, w: Float32Array, dy: Float32Array, outShape: number[]) {
  const before = currentDnnl()?.calls ?? 0;
  const out = tf.tidy(() => {
    const xt = tf.tensor4d(x, [c.N, c.H, c.W, c.Ci]), wt = tf.tensor4d(w, [c.K, c.K, c.Ci, c.Co]);
    const dyt = tf.tensor4d(dy, outShape as [number, number, number, number]);
    const y = tf.conv2d(xt, wt, c.s, c.pad);
    const dx = tf.conv2dTranspose(dyt, wt, [c.N, c.H, c.W, c.Ci], c.s, c.pad); // Conv2DBackpropInput
    const [, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, c.pad), dyt))
    )([xt, wt]);
    return [y, dx, dw].map((t) => t.dataSync().slice() as Float32Array);
  });
  return { y: out[0], dx: out[1], dw: out[2], calls: (currentDnnl()?.calls ?? 0) - before };
}

/** Checks oneDNN against the float64 reference and (unless told not to) against today's path on one case. */
function check(c: ConvCase, seed: number, vsToday = true): void {
  const x = randomArray(c.N * c.H * c.W * c.Ci, seed);
  const w = randomArray(c.K * c.K * c.Ci * c.Co, seed + 1).map((v) => v / Math.sqrt(c.K * c.K * c.Ci));
  const ref0 = convGeometry(c.H, c), ref1 = convGeometry(c.W, c);
  const dy = randomArray(c.N * ref0.out * ref1.out * c.Co, seed + 2);
  const ref = convReference(c, x, w, dy);
  const on = run(c, x, w, dy, ref.outShape);
  // conv2d twice (forward and inside grads), the input gradient, the filter gradient
  assert.ok(
    on.calls >= 4,
    `${convName(c)}: oneDNN ran ${on.calls} times, expected forward and both gradients`,
  );
  const tol = 1e-5;
  assertClose(on.y, ref.y, tol, `${convName(c)}: forward vs float64`);
  assertClose(on.dx, ref.dx, tol, `${convName(c)}: input gradient vs float64`);
  assertClose(on.dw, ref.dw, tol, `${convName(c)}: filter gradient vs float64`);
  if (!vsToday) return;
  setDnnlConvs(false);
  try {
    const off = run(c, x, w, dy, ref.outShape);
    assert.equal(off.calls, 0, `${convName(c)}: oneDNN ran with oneDNN convs off`);
    assertClose(on.y, off.y, tol, `${convName(c)}: forward vs today's path`);
    assertClose(on.dx, off.dx, tol, `${convName(c)}: input gradient vs today's path`);
    assertClose(on.dw, off.dw, tol, `${convName(c)}: filter gradient vs today's path`);
  } finally {
    setDnnlConvs(true);
  }
}

/** Runs a forward pass of a CNN on one image (oneDNN builds a primitive for each of its convs). */
function forwardOnce(cfg: CnnConfig): void {
  const params = new Map(
    cnnParamSpecs(cfg).map((s) => [s.name, tf.randomNormal(s.shape, 0, 0.1)] as [string, tf.Tensor]),
  );
  tf.tidy(() => cnnForward(cfg, params, tf.randomNormal([1, cfg.height, cfg.width, cfg.inChannels])));
  tf.dispose([...params.values()]);
}

/** The distinct forward convs oneDNN has built primitives for so far, as cases of one image. */
function convsSeen(): ConvCase[] {
  const cases = new Map<string, ConvCase>();
  for (const key of dnnlConvStats().shapes) {
    if (!key.startsWith("forward:")) continue;
    const [_n, H, W, Ci, Co, K, _kw, s, pt, pb] = key.slice("forward:".length).split(",").map(Number);
    if (pt + pb === 0 && K > 1) continue; // a 'valid' conv of another test
    const c: ConvCase = { N: 1, H, W, Ci, Co, K, s, pad: "same" };
    cases.set(convName(c), c);
  }
  return [...cases.values()];
}

Deno.test({
  name: "oneDNN conv: forward and both gradients match float64 at every conv shape of the image models",
  ignore: !!noDnnl,
  fn: () => {
    for (const preset of ["tiny", "small", "study"]) {
      for (const kind of ["vgg9", "vgg-wide", "resnet"] as CnnKind[]) {
        // The study's resnet (512 and 1024 channels) cannot take a step on CPU (the wasm heap's 4 GiB);
        // its float64 reference alone takes minutes here. Its convs are the small presets' kinds, wider.
        if (kind === "resnet" && preset === "study") continue;
        const model = kind === "vgg-wide" ? "pixel-attn-wide" : "pixel-attn";
        const base = cnnConfigOf(resolveConfig(model, preset) as PixelConfig);
        forwardOnce({ ...base, kind, depth: kind === "resnet" ? 1 : 9 });
      }
    }
    const seen = new Set<string>();
    let seed = 1;
    for (const c of convsSeen()) {
      seen.add(convName(c));
      // batch 1 and several images; the widest convs (the study's resnet) with one image and against
      // float64 only: today's path takes minutes on them
      const big = c.Ci * c.Co * c.K * c.K > 1e6;
      for (const N of big ? [1] : [1, 3]) check({ ...c, N }, seed += 10, !big);
    }
    const strides = [...seen].filter((k) => k.includes("/2")).length;
    assert.ok(
      seen.size >= 10 && strides >= 2,
      `expected the models' stride-1 and stride-2 convs, got ${[...seen]}`,
    );
  },
});

Deno.test({
  name: "oneDNN conv: odd sizes, batch 1 and many, stride 2, 'valid' padding, 1x1 shortcuts",
  ignore: !!noDnnl,
  fn: () => {
    const cases: ConvCase[] = [
      { N: 1, H: 5, W: 7, Ci: 3, Co: 5, K: 3, s: 1, pad: "same" },
      { N: 9, H: 7, W: 5, Ci: 5, Co: 3, K: 3, s: 2, pad: "same" },
      { N: 2, H: 8, W: 8, Ci: 6, Co: 10, K: 3, s: 2, pad: "same" },
      { N: 3, H: 9, W: 11, Ci: 7, Co: 13, K: 1, s: 2, pad: "same" },
      { N: 4, H: 6, W: 7, Ci: 16, Co: 8, K: 3, s: 1, pad: "valid" },
      { N: 2, H: 9, W: 9, Ci: 4, Co: 4, K: 3, s: 2, pad: "valid" },
      { N: 16, H: 4, W: 4, Ci: 17, Co: 33, K: 3, s: 1, pad: "same" },
      { N: 1, H: 1, W: 1, Ci: 8, Co: 4, K: 3, s: 1, pad: "same" },
    ];
    cases.forEach((c, i) => check(c, 1000 + 10 * i));
  },
});

Deno.test({
  name: "oneDNN conv: a pixel model's loss and gradients are the same with oneDNN on and off",
  ignore: !!noDnnl,
  fn: () => {
    for (const kind of ["vgg9", "resnet"] as const) {
      const { vars, lossAndGrads, dispose } = smallPixelModel(kind, 8, 50257);
      const on = lossAndGrads();
      setDnnlConvs(false);
      let off;
      try {
        off = lossAndGrads();
      } finally {
        setDnnlConvs(true);
      }
      assert.ok(on.calls > 0 && off.calls === 0, `${kind}: oneDNN calls on ${on.calls}, off ${off.calls}`);
      assert.ok(Math.abs(on.loss - off.loss) < 1e-5, `${kind}: loss ${on.loss} (oneDNN) vs ${off.loss}`);
      vars.forEach((v, i) => assertClose(on.grads[i], off!.grads[i], 1e-4, `${kind}: gradient of ${v.name}`));
      dispose();
    }
  },
});

Deno.test({
  name: "oneDNN conv: a dilated conv goes to today's path and stays correct",
  ignore: !!noDnnl,
  fn: () => {
    const x = tf.tensor4d(randomArray(2 * 9 * 9 * 3, 7), [2, 9, 9, 3]);
    const w = tf.tensor4d(randomArray(3 * 3 * 3 * 4, 8), [3, 3, 3, 4]);
    const before = currentDnnl()!.calls;
    const y = tf.conv2d(x, w, 1, "valid", "NHWC", 2);
    assert.equal(currentDnnl()!.calls, before, "a dilated conv should not reach oneDNN");
    setDnnlConvs(false);
    let ref: tf.Tensor;
    try {
      ref = tf.conv2d(x, w, 1, "valid", "NHWC", 2);
    } finally {
      setDnnlConvs(true);
    }
    assertClose(y.dataSync(), ref.dataSync(), 0, "dilated conv");
    tf.dispose([x, w, y, ref]);
  },
});

/** Runs a child Deno that starts wasm with `env` and prints the backend description. */
async function childDevice(env: Record<string, string>): Promise<string> {
  const script = "import { initBackend } from './lib/tensor/backend.ts';" +
    "console.log((await initBackend('wasm', { quiet: true, threads: 1 })).device);";
  return await evalInChild(script, env);
}

Deno.test("LMPIPE_DNNL=off and a bogus library path leave the convolutions on today's path with the reason", async () => {
  assert.match(await childDevice({ LMPIPE_DNNL: "off" }), /, oneDNN off \(LMPIPE_DNNL=off\)$/);
  const bogus = await childDevice({ LMPIPE_DNNL: "/nonexistent/libdnnl.so.2" });
  assert.match(bogus, /no oneDNN: LMPIPE_DNNL=\/nonexistent\/libdnnl\.so\.2: .*cannot open/);
  const wrong = await childDevice({ LMPIPE_DNNL: "libc.so.6" });
  assert.match(wrong, /no oneDNN: LMPIPE_DNNL=libc\.so\.6: .*(symbol|dnnl_)/);
});
