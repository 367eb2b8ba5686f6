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
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";

await initBackend("wasm", { quiet: true });
const noDnnl = currentDnnl() ? "" : dnnlStatus();
if (noDnnl) {
  if (Deno.env.get("LMPIPE_REQUIRE_NATIVE")) {
    throw new Error(
      `oneDNN tests must run here (LMPIPE_REQUIRE_NATIVE is set; .ci/run installs libdnnl2): ${noDnnl}`,
    );
  }
  console.error(`oneDNN conv tests skipped: ${noDnnl}`);
}

/** One conv call: NHWC input [N, H, W, Ci], HWIO filter [K, K, Ci, Co], stride, TF.js padding. */
interface Case {
  N: number;
  H: number;
  W: number;
  Ci: number;
  Co: number;
  K: number;
  s: number;
  pad: "same" | "valid";
}

const name = (c: Case) => `N${c.N} ${c.H}x${c.W}x${c.Ci} -> ${c.Co}, ${c.K}x${c.K}/${c.s} ${c.pad}`;

/** TF's padding: output size and the top/left pad ('same' puts the odd pixel at the bottom/right). */
function geometry(
  inSize: number,
  k: number,
  s: number,
  pad: "same" | "valid",
): { out: number; before: number } {
  if (pad === "valid") return { out: Math.floor((inSize - k) / s) + 1, before: 0 };
  const out = Math.ceil(inSize / s);
  return { out, before: Math.floor(Math.max((out - 1) * s + k - inSize, 0) / 2) };
}

/** Float64 forward conv, input gradient and filter gradient of sum(y * dy), by direct loops. */
function reference(c: Case, x: Float32Array, w: Float32Array, dy: Float32Array) {
  const gh = geometry(c.H, c.K, c.s, c.pad), gw = geometry(c.W, c.K, c.s, c.pad);
  const OH = gh.out, OW = gw.out;
  const y = new Float64Array(c.N * OH * OW * c.Co);
  const dx = new Float64Array(x.length), dw = new Float64Array(w.length);
  for (let n = 0; n < c.N; n++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const yo = ((n * OH + oh) * OW + ow) * c.Co;
        for (let kh = 0; kh < c.K; kh++) {
          const h = oh * c.s + kh - gh.before;
          if (h < 0 || h >= c.H) continue;
          for (let kw = 0; kw < c.K; kw++) {
            const ww = ow * c.s + kw - gw.before;
            if (ww < 0 || ww >= c.W) continue;
            const xo = ((n * c.H + h) * c.W + ww) * c.Ci;
            for (let ci = 0; ci < c.Ci; ci++) {
              const wo = ((kh * c.K + kw) * c.Ci + ci) * c.Co;
              const xv = x[xo + ci];
              let g = 0;
              for (let co = 0; co < c.Co; co++) {
                y[yo + co] += xv * w[wo + co];
                g += dy[yo + co] * w[wo + co];
                dw[wo + co] += xv * dy[yo + co];
              }
              dx[xo + ci] += g;
            }
          }
        }
      }
    }
  }
  return { y, dx, dw, outShape: [c.N, OH, OW, c.Co] };
}

/** y, dx and dw of one case on the current path (oneDNN or not), and how many oneDNN calls ran. */
function run(c: Case, x: Float32Array, w: Float32Array, dy: Float32Array, outShape: number[]) {
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
function check(c: Case, seed: number, vsToday = true): void {
  const x = randomArray(c.N * c.H * c.W * c.Ci, seed);
  const w = randomArray(c.K * c.K * c.Ci * c.Co, seed + 1).map((v) => v / Math.sqrt(c.K * c.K * c.Ci));
  const ref0 = geometry(c.H, c.K, c.s, c.pad), ref1 = geometry(c.W, c.K, c.s, c.pad);
  const dy = randomArray(c.N * ref0.out * ref1.out * c.Co, seed + 2);
  const ref = reference(c, x, w, dy);
  const on = run(c, x, w, dy, ref.outShape);
  // conv2d twice (forward and inside grads), the input gradient, the filter gradient
  assert.ok(on.calls >= 4, `${name(c)}: oneDNN ran ${on.calls} times, expected forward and both gradients`);
  const tol = 1e-5;
  assertClose(on.y, ref.y, tol, `${name(c)}: forward vs float64`);
  assertClose(on.dx, ref.dx, tol, `${name(c)}: input gradient vs float64`);
  assertClose(on.dw, ref.dw, tol, `${name(c)}: filter gradient vs float64`);
  if (!vsToday) return;
  setDnnlConvs(false);
  try {
    const off = run(c, x, w, dy, ref.outShape);
    assert.equal(off.calls, 0, `${name(c)}: oneDNN ran with oneDNN convs off`);
    assertClose(on.y, off.y, tol, `${name(c)}: forward vs today's path`);
    assertClose(on.dx, off.dx, tol, `${name(c)}: input gradient vs today's path`);
    assertClose(on.dw, off.dw, tol, `${name(c)}: filter gradient vs today's path`);
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
function convsSeen(): Case[] {
  const cases = new Map<string, Case>();
  for (const key of dnnlConvStats().shapes) {
    if (!key.startsWith("forward:")) continue;
    const [_n, H, W, Ci, Co, K, _kw, s, pt, pb] = key.slice("forward:".length).split(",").map(Number);
    if (pt + pb === 0 && K > 1) continue; // a 'valid' conv of another test
    const c: Case = { N: 1, H, W, Ci, Co, K, s, pad: "same" };
    cases.set(name(c), c);
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
      seen.add(name(c));
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
    const cases: Case[] = [
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
      const c = resolveConfig("pixel-attn", "tiny", {
        contextLength: 8,
        cnn: kind,
        cnnDepth: kind === "resnet" ? 1 : 3,
      });
      const m = createModel(c, 5);
      const ids = Int32Array.from({ length: 2 * 8 }, (_, i) => (i * 7919) % 50257);
      const x = tf.tensor2d(ids, [2, 8], "int32"),
        y = tf.tensor2d(ids.map((v) => (v + 1) % 50257), [2, 8], "int32");
      const vars = [...m.params.values()];
      const lossAndGrads = () => {
        const before = currentDnnl()!.calls;
        const { value, grads } = tf.variableGrads(() => m.loss(x, y), vars);
        const out = {
          loss: value.dataSync()[0],
          grads: vars.map((v) => grads[v.name].dataSync().slice()),
          calls: currentDnnl()!.calls - before,
        };
        tf.dispose([value, ...Object.values(grads)]);
        return out;
      };
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
      tf.dispose([x, y]);
      m.dispose();
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
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("LMPIPE_DNNL=off and a bogus library path leave the convolutions on today's path with the reason", async () => {
  assert.match(await childDevice({ LMPIPE_DNNL: "off" }), /, oneDNN off \(LMPIPE_DNNL=off\)$/);
  const bogus = await childDevice({ LMPIPE_DNNL: "/nonexistent/libdnnl.so.2" });
  assert.match(bogus, /no oneDNN: LMPIPE_DNNL=\/nonexistent\/libdnnl\.so\.2: .*cannot open/);
  const wrong = await childDevice({ LMPIPE_DNNL: "libc.so.6" });
  assert.match(wrong, /no oneDNN: LMPIPE_DNNL=libc\.so\.6: .*(symbol|dnnl_)/);
});
