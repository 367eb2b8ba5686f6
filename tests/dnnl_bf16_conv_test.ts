// oneDNN's bf16 convolutions under --precision bf16 (lib/tensor/ops/conv2d/dnnl.ts's bf16 plans): oneDNN's
// float32 -> bf16 conversion rounds as lib/precision.ts's toBf16 (ties to even, inf, NaN, overflow); the
// forward conv and both gradients on bf16 operands match a float64 reference on the same operands at the
// image models' conv shapes (3x3 stride 1 and 2, 1x1 stride 2, 'same' and explicit padding); operands that
// do not hold bf16 values take the float32 convs; and a pixel model's loss and gradients under --precision bf16 are
// the same with the bf16 convs on and off, up to float32 sums. Needs a CPU with avx512_core_bf16 or AMX for
// the bf16 plans: elsewhere those tests check that the float32 convs ran. Without libdnnl2 the tests are
// skipped with the reason, unless LMPIPE_REQUIRE_NATIVE is set (CI's run with the native libraries).
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { currentDnnl, dnnlStatus } from "../lib/native/dnnl.ts";
import { kernelFor, setDnnlBf16Convs } from "../lib/tensor/kernel_choice.ts";
import { dnnlConvStats, dnnlRoundTripBf16 } from "../lib/tensor/ops/conv2d/dnnl.ts";
import { toBf16 } from "../lib/precision.ts";
import { markBf16Values } from "../lib/tensor/bf16_values.ts";
import {
  type ConvCase,
  convGeometry,
  convName,
  convReference,
  dnnlSkipReason,
  evalInChild,
  smallPixelModel,
} from "./helpers_conv.ts";
import { assertClose, maxRelErr, randomArray } from "../lib/tensor/testing.ts";
import { refBf16 } from "./helpers_round.ts";

await initBackend("wasm", { quiet: true, threads: 1 });
const noDnnl = dnnlSkipReason(currentDnnl() ? "" : dnnlStatus(), "oneDNN bf16 conv tests");
/** Whether this CPU runs the bf16 plans (else the tests check that the float32 convs took over). */
const bf16 = currentDnnl()?.bf16 === true;

Deno.test({
  name: "oneDNN's float32 -> bf16 conversion rounds as toBf16: ties to even, inf, NaN, overflow",
  ignore: !!noDnnl,
  fn: () => {
    const v: number[] = [0, -0, NaN, -NaN, Infinity, -Infinity, 1, -1, 1 + 2 ** -8, 1 + 3 * 2 ** -8];
    v.push(1 + 2 ** -9, -(1 + 2 ** -8), 3.3895313892515355e38, 3.39e38, 3.4e38, -3.4e38, 2 ** 127 * 1.99);
    v.push(2 ** -126, -(2 ** -126), 0.1, 1 / 3, Math.PI, 65504, 1e-30, -7.5e20);
    let s = 99;
    const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let e = -126; e <= 127; e++) {
      for (let i = 0; i < 20; i++) {
        const m = 1 + rand();
        v.push((rand() < 0.5 ? -1 : 1) * m * 2 ** e);
        const q = 2 ** (e - 7); // bf16 spacing in this binade
        v.push((rand() < 0.5 ? -1 : 1) * (Math.floor(m * 2 ** e / q) + 0.5) * q); // an exact tie
      }
    }
    // float32 subnormals: the bf16 CPUs' conversion instruction (vcvtneps2bf16) flushes them to a signed
    // zero, where toBf16 keeps bf16's subnormals (oneDNN's software conversion elsewhere keeps them too)
    const tiny = new Float32Array([2 ** -130, -(2 ** -133), 1e-45, -1e-45, 2 ** -126 - 2 ** -134]);
    const flushed = dnnlRoundTripBf16(tiny);
    tiny.forEach((t, i) =>
      assert.ok(
        Object.is(flushed[i], t < 0 ? -0 : 0) || (!bf16 && Object.is(flushed[i], refBf16(t))),
        `${t} -> ${flushed[i]}`,
      )
    );
    const xs = new Float32Array(v);
    const got = dnnlRoundTripBf16(xs);
    const ours = toBf16(tf.tensor1d(xs));
    const emulated = ours.dataSync();
    ours.dispose();
    let bad = 0;
    const examples: string[] = [];
    for (let i = 0; i < xs.length; i++) {
      const want = refBf16(xs[i]);
      const same = (a: number) => Object.is(a, want) || (Number.isNaN(a) && Number.isNaN(want));
      if (!same(got[i]) || !same(emulated[i])) {
        bad++;
        if (examples.length < 8) {
          examples.push(`${xs[i]}: oneDNN ${got[i]}, toBf16 ${emulated[i]}, want ${want}`);
        }
      }
    }
    assert.equal(bad, 0, `${bad} of ${xs.length} values converted differently: ${examples.join("; ")}`);
  },
});

/** TF.js's padding attribute of a case: 'same' / 'valid', or explicit rows and columns on every side. */
function padAttr(c: ConvCase) {
  return typeof c.pad === "number" ? [[0, 0], [c.pad, c.pad], [c.pad, c.pad], [0, 0]] : c.pad;
}

/**
 * y, dx and dw of one case with the operands through toBf16 (marked as bf16 values) or not, and how many
 * oneDNN calls and bf16 calls ran. The three kernels are called directly so that dy reaches both gradients
 * as it is (through tf.grads it would arrive as a product, a new tensor without the mark).
 */
function run(
  c: ConvCase,
  x: Float32Array,
  w: Float32Array,
  dy: Float32Array,
  outShape: number[],
  mark: boolean,
) {
  const dnnl = currentDnnl()!;
  const [calls, bf16Calls] = [dnnl.calls, dnnl.bf16Calls];
  const out = tf.tidy(() => {
    const round = (t: tf.Tensor) => (mark ? toBf16(t) : t) as tf.Tensor4D;
    const xt = round(tf.tensor4d(x, [c.N, c.H, c.W, c.Ci])),
      wt = round(tf.tensor4d(w, [c.K, c.K, c.Ci, c.Co]));
    const dyt = round(tf.tensor4d(dy, outShape as [number, number, number, number]));
    const attrs = { strides: [c.s, c.s], pad: padAttr(c), dataFormat: "NHWC", dilations: [1, 1] };
    const e = tf.engine();
    const y = e.runKernel("Conv2D", { x: xt, filter: wt }, attrs) as tf.Tensor;
    const dx = e.runKernel("Conv2DBackpropInput", { dy: dyt, filter: wt }, {
      ...attrs,
      inputShape: [c.N, c.H, c.W, c.Ci],
    }) as tf.Tensor;
    const dw = e.runKernel("Conv2DBackpropFilter", { x: xt, dy: dyt }, {
      ...attrs,
      filterShape: [c.K, c.K, c.Ci, c.Co],
    }) as tf.Tensor;
    return [y, dx, dw].map((t) => t.dataSync().slice() as Float32Array);
  });
  return {
    y: out[0],
    dx: out[1],
    dw: out[2],
    calls: dnnl.calls - calls,
    bf16Calls: dnnl.bf16Calls - bf16Calls,
  };
}

// The image models' conv shapes at the tiny and small presets (vgg9: 3x3/1 'same'; resnet: 3x3/1 and /2
// padded by 1, 1x1/2 unpadded shortcuts, a 'valid' stem), with odd sizes and channel counts beside them.
const CASES: ConvCase[] = [
  { N: 2, H: 16, W: 16, Ci: 3, Co: 16, K: 3, s: 1, pad: "same" },
  { N: 2, H: 16, W: 16, Ci: 32, Co: 32, K: 3, s: 1, pad: "same" },
  { N: 1, H: 8, W: 8, Ci: 64, Co: 128, K: 3, s: 1, pad: "same" },
  { N: 2, H: 16, W: 16, Ci: 16, Co: 32, K: 3, s: 2, pad: 1 },
  { N: 2, H: 8, W: 8, Ci: 32, Co: 32, K: 3, s: 1, pad: 1 },
  { N: 2, H: 16, W: 16, Ci: 16, Co: 32, K: 1, s: 2, pad: 0 },
  { N: 2, H: 10, W: 10, Ci: 3, Co: 16, K: 3, s: 1, pad: 0 },
  { N: 3, H: 7, W: 9, Ci: 5, Co: 13, K: 3, s: 2, pad: "same" },
];

// Tolerance: both sides multiply the same bf16 operands exactly (a product of two 8-bit significands fits
// float32) and differ only in how the float32 sums are ordered and rounded: with K*K*Ci <= 1152 terms
// (forward) or B*OH*OW <= 512 (filter gradient) of random sign, float32's 6e-8 per addition stays near
// 1e-6 of the largest output. 1e-5 leaves room and is 400x below one bf16 step (2^-8): an operand
// converted wrongly, a layout mixed up or the model's float32 operand read unrounded fails it.
const TOL = 1e-5;

Deno.test({
  name: "oneDNN bf16 convs: forward and both gradients match float64 on bf16 operands at the models' shapes",
  ignore: !!noDnnl,
  fn: () => {
    let seed = 5;
    for (const c of CASES) {
      const K2Ci = c.K * c.K * c.Ci;
      const x = randomArray(c.N * c.H * c.W * c.Ci, seed += 10).map(refBf16);
      const w = randomArray(c.K * c.K * c.Ci * c.Co, seed + 1).map((v) => refBf16(v / Math.sqrt(K2Ci)));
      const g = convGeometry(c.H, c), gw = convGeometry(c.W, c);
      const dy = randomArray(c.N * g.out * gw.out * c.Co, seed + 2).map(refBf16);
      const ref = convReference(c, x, w, dy);
      const got = run(c, x, w, dy, ref.outShape, true);
      assert.equal(got.calls, 3, `${convName(c)}: oneDNN ran ${got.calls} of the 3 convs`);
      assert.equal(got.bf16Calls, bf16 ? 3 : 0, `${convName(c)}: ${got.bf16Calls} bf16 convs`);
      assertClose(got.y, ref.y, TOL, `${convName(c)}: forward vs float64`);
      assertClose(got.dx, ref.dx, TOL, `${convName(c)}: input gradient vs float64`);
      assertClose(got.dw, ref.dw, TOL, `${convName(c)}: filter gradient vs float64`);
      // rounded to bf16 as the model rounds them, outputs equal the rounded reference but for the rare value
      // that lies within a float32 sum's error of a bf16 rounding boundary
      const rounded = (a: ArrayLike<number>) => Float32Array.from(a, refBf16);
      for (
        const [what, a, b] of [["y", got.y, ref.y], ["dx", got.dx, ref.dx], ["dw", got.dw, ref.dw]] as const
      ) {
        const ra = rounded(a), rb = rounded(b);
        const differ = ra.filter((v, i) => v !== rb[i]).length;
        assert.ok(
          differ <= Math.max(2, ra.length / 100),
          `${convName(c)}: ${differ} of ${ra.length} ${what} differ`,
        );
        assert.ok(
          maxRelErr(ra, rb) <= 2 ** -7,
          `${convName(c)}: rounded ${what} more than one bf16 step apart`,
        );
      }
      // the same operands unmarked run the float32 convs (same values, so the same results up to sums)
      const plain = run(c, x, w, dy, ref.outShape, false);
      assert.ok(
        plain.calls === 3 && plain.bf16Calls === 0,
        `${convName(c)}: unmarked operands took a bf16 conv`,
      );
      assertClose(plain.y, ref.y, TOL, `${convName(c)}: float32 forward vs float64`);
    }
    if (bf16) {
      const impls = dnnlConvStats().impls.filter((i) => i.includes("/bf16"));
      assert.ok(
        impls.length >= 3 && impls.every((i) => /bf16/.test(i.split(" ")[1])),
        `expected oneDNN's bf16 kernels for the bf16 plans, got ${impls}`,
      );
    }
  },
});

Deno.test({
  name: "oneDNN bf16 convs: bf16 plans only where both operands hold bf16 values (marks, spot check, copies)",
  ignore: !!noDnnl,
  fn: () => {
    const c: ConvCase = { N: 1, H: 6, W: 6, Ci: 4, Co: 4, K: 3, s: 1, pad: "same" };
    const x = randomArray(6 * 6 * 4, 3), w = randomArray(3 * 3 * 4 * 4, 4), dy = randomArray(6 * 6 * 4, 5);
    const dnnl = currentDnnl()!;
    const before = dnnl.bf16Calls;
    tf.tidy(() => {
      const xt = toBf16(tf.tensor4d(x, [1, 6, 6, 4])) as tf.Tensor4D;
      tf.conv2d(xt, tf.tensor4d(w, [3, 3, 4, 4]), 1, "same").dataSync(); // weights unmarked
    });
    assert.equal(dnnl.bf16Calls, before, "an unmarked filter reached a bf16 conv");
    // a mark on data that is not bf16 (as after an in-place write) is caught by the spot check
    tf.tidy(() => {
      const xt = tf.tensor4d(x, [1, 6, 6, 4]), wt = toBf16(tf.tensor4d(w, [3, 3, 4, 4])) as tf.Tensor4D;
      markBf16Values(xt);
      tf.conv2d(xt, wt, 1, "same").dataSync();
    });
    assert.equal(dnnl.bf16Calls, before, "a marked float32 input reached a bf16 conv");
    // bf16 values without a mark: a slice of rounded images (as the CNN's chunks) beside marked weights
    // is checked value by value and runs in bf16; with neither operand marked nothing is checked
    tf.tidy(() => {
      const xt = tf.slice(toBf16(tf.tensor4d(x, [1, 6, 6, 4])), [0, 1, 0, 0], [1, 5, 6, 4]) as tf.Tensor4D;
      const wt = toBf16(tf.tensor4d(w, [3, 3, 4, 4])) as tf.Tensor4D;
      tf.conv2d(tf.tensor4d(xt.dataSync(), xt.shape), tf.tensor4d(wt.dataSync(), wt.shape), 1, "same")
        .dataSync();
      assert.equal(dnnl.bf16Calls, before, "unmarked operands reached a bf16 conv");
      tf.conv2d(xt, wt, 1, "same").dataSync();
      assert.equal(dnnl.bf16Calls, before + (bf16 ? 1 : 0), "a slice of bf16 values took the float32 conv");
    });
    // the unmarked path is the float32 conv on the values as they are: not rounded
    const ref = convReference(c, x, w, dy);
    assertClose(run(c, x, w, dy, ref.outShape, false).y, ref.y, TOL, "float32 conv on float32 operands");
    const old = setDnnlBf16Convs(false);
    try {
      assert.equal(kernelFor("conv2d", "wasm"), "dnnl");
      const off = run(c, x.map(refBf16), w.map(refBf16), dy.map(refBf16), ref.outShape, true);
      assert.ok(off.calls === 3 && off.bf16Calls === 0, "setDnnlBf16Convs(false) left a bf16 conv on");
    } finally {
      setDnnlBf16Convs(old);
    }
    assert.equal(kernelFor("conv2d", "wasm"), bf16 ? "dnnl-bf16" : "dnnl");
  },
});

Deno.test({
  name:
    "oneDNN bf16 convs: a pixel model's loss and gradients under --precision bf16 match with them on and off",
  ignore: !!noDnnl,
  fn: () => {
    for (const kind of ["vgg9", "resnet"] as const) {
      // vocabulary 256: GPT-2's 50,257 would make the head most of the test's time
      const { vars, lossAndGrads, dispose } = smallPixelModel(kind, 4, 256);
      const on = lossAndGrads("bf16");
      const old = setDnnlBf16Convs(false);
      let off;
      try {
        off = lossAndGrads("bf16");
      } finally {
        setDnnlBf16Convs(old);
      }
      const fp32 = lossAndGrads("fp32");
      assert.ok(
        on.calls > 0 && on.bf16Calls === (bf16 ? on.calls : 0) && off.bf16Calls === 0 && fp32.bf16Calls === 0,
        `${kind}: convs on ${on.calls} (bf16 ${on.bf16Calls}), off bf16 ${off.bf16Calls}, fp32 ${fp32.bf16Calls}`,
      );
      // on and off differ only in the order of the convs' float32 sums, which can move a value across a bf16
      // rounding boundary now and then; bf16 against fp32 differs by the rounding at every place. The first
      // must be far below the second (measured: vgg9 equal to the bit; resnet's gradients 2e-5..7e-3 apart,
      // 20-40x less than bf16 against fp32, 3e-2..3e-1; the loss equal).
      const dLoss = Math.abs(on.loss - off.loss), dLossFp32 = Math.abs(off.loss - fp32.loss);
      assert.ok(dLoss <= 1e-4 * Math.abs(off.loss), `${kind}: loss ${on.loss} (bf16 convs) vs ${off.loss}`);
      assert.ok(
        dLoss <= dLossFp32 / 10 || dLoss < 1e-6,
        `${kind}: loss moved ${dLoss} (bf16 vs fp32 ${dLossFp32})`,
      );
      vars.forEach((v, i) => {
        const e = maxRelErr(on.grads[i], off!.grads[i]), eFp32 = maxRelErr(off!.grads[i], fp32.grads[i]);
        assert.ok(
          e <= 2e-2 && e <= eFp32 / 4,
          `${kind}: gradient of ${v.name}: ${e} (bf16 vs fp32 ${eFp32})`,
        );
      });
      dispose();
    }
  },
});

/** Runs a child Deno with `env` that runs one conv on bf16 operands and prints its backend line and choice. */
async function childConv(env: Record<string, string>): Promise<string> {
  const script = "import { initBackend, tf } from './lib/tensor/backend.ts';" +
    "import { kernelFor } from './lib/tensor/kernel_choice.ts';" +
    "import { currentDnnl } from './lib/native/dnnl.ts';" +
    "import { toBf16 } from './lib/precision.ts';" +
    "const b = await initBackend('wasm', { quiet: true, threads: 1 });" +
    "const x = toBf16(tf.randomNormal([1, 6, 6, 4])), w = toBf16(tf.randomNormal([3, 3, 4, 4]));" +
    "tf.conv2d(x, w, 1, 'same').dataSync();" +
    "console.log(b.device, '|', kernelFor('conv2d'), currentDnnl().calls, currentDnnl().bf16Calls); Deno.exit(0);";
  return await evalInChild(script, env);
}

Deno.test({
  name:
    "oneDNN bf16 convs: LMPIPE_DNNL_BF16=0 and a CPU without bf16 fall back to the float32 convs, and say so",
  ignore: !!noDnnl,
  fn: async () => {
    assert.match(
      await childConv({ LMPIPE_DNNL_BF16: "0" }),
      /bf16 convs: (off \(LMPIPE_DNNL_BF16=0\)|no \(.*\)).* \| dnnl 1 0$/,
    );
    // oneDNN's own ISA cap stands in for a CPU without avx512_core_bf16
    assert.match(
      await childConv({ DNNL_MAX_CPU_ISA: "AVX512_CORE" }),
      /oneDNN .*bf16 convs: no \(no avx512_core_bf16\)\) \| dnnl 1 0$/,
    );
    if (bf16) assert.match(await childConv({}), /bf16 convs for bf16 operands\) \| dnnl-bf16 1 1$/);
  },
});
