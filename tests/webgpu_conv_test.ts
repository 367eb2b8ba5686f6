// lmpipe's implicit-GEMM convs on webgpu (lib/tensor/ops/conv2d/webgpu.ts): the forward conv, the input
// gradient and the filter gradient against float64 loops, on the image models' shapes (20 x 20 images,
// 8-256 channels, 3 x 3 and 1 x 1, stride 1 and 2, 'same' padding) and odd ones ('valid', explicit
// padding, non-square images and filters, 1 channel, split-K along many pixels); one dispatch per op
// (plus a split-K sum where K is long); LMPIPE_WEBGPU_CONV's switch hands every call back to TF.js;
// with binary16 operands (--precision mixed on shader-f16) each operand is rounded as it is loaded.
import assert from "node:assert/strict";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { setWebgpuConvEnabled, setWebgpuHalfOperands } from "../lib/tensor/kernel_choice.ts";
import { toHalfOps } from "../lib/precision.ts";
import { imageNormRelu } from "../lib/tensor/ops/image_norm/mod.ts";
import { imageNormRef } from "./helpers_image_norm.ts";
import { conv64, type ConvLayout } from "./helpers_conv.ts";
import { setConvTileRows } from "../lib/tensor/ops/conv2d/webgpu.ts";
import {
  assertClose,
  dispatchedBy,
  maxRelErr,
  randomArray,
  webgpuHasF16,
  webgpuStatus,
} from "../lib/tensor/testing.ts";

const gpu = await webgpuStatus();

/** A conv call: the reference's shape fields, with strides and padding as TF.js's conv2d takes them. */
interface Case extends Pick<ConvLayout, "n" | "h" | "w" | "ci" | "co" | "kh" | "kw"> {
  stride: [number, number];
  pad: "same" | "valid" | [[number, number], [number, number], [number, number], [number, number]];
}

/** Output size and top/left padding as TF.js computes them (backend_util.computeConv2DInfo). */
function geometry(c: Case) {
  const ci = tf.backend_util.computeConv2DInfo(
    [c.n, c.h, c.w, c.ci],
    [c.kh, c.kw, c.ci, c.co],
    c.stride,
    1,
    c.pad,
  );
  return { oh: ci.outHeight, ow: ci.outWidth, pt: ci.padInfo.top, pl: ci.padInfo.left };
}

/** y = conv(x, w), dx and dw for upstream dy, in float64. */
function convRef(c: Case, x: Float32Array, w: Float32Array, dy: Float32Array) {
  const { oh, ow, pt, pl } = geometry(c);
  const [sh, sw] = c.stride;
  return conv64(
    { n: c.n, h: c.h, w: c.w, ci: c.ci, co: c.co, kh: c.kh, kw: c.kw, sh, sw, pt, pl, oh, ow },
    x,
    w,
    dy,
  );
}

/** y, dx, dw on the current backend, and the programs dispatched forward and backward. */
async function convRun(c: Case, x: Float32Array, w: Float32Array, dy: Float32Array) {
  const { oh, ow } = geometry(c);
  const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]), wt = tf.tensor4d(w, [c.kh, c.kw, c.ci, c.co]);
  const dyt = tf.tensor4d(dy, [c.n, oh, ow, c.co]);
  const f = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad);
  const fwd = dispatchedBy(() => f(xt, wt));
  const bwd = dispatchedBy(() => tf.grads(f)([xt, wt], dyt));
  const out = {
    y: new Float32Array(await readData(fwd.result)),
    dx: new Float32Array(await readData(bwd.result[0])),
    dw: new Float32Array(await readData(bwd.result[1])),
    forward: fwd.names,
    backward: bwd.names,
  };
  tf.dispose([xt, wt, dyt, fwd.result, ...bwd.result]);
  return out;
}

const S: [number, number] = [1, 1], S2: [number, number] = [2, 2];
const CASES: Case[] = [
  // the image models: first conv from C image channels, then 64 -> 64 (vgg9), 64 -> 128 and 128 -> 256
  // (vgg-wide), resnet's stride-2 3 x 3 and its 1 x 1 stride-2 skip
  { n: 3, h: 20, w: 20, ci: 8, co: 64, kh: 3, kw: 3, stride: S, pad: "same" },
  { n: 2, h: 20, w: 20, ci: 64, co: 64, kh: 3, kw: 3, stride: S, pad: "same" },
  { n: 1, h: 20, w: 20, ci: 64, co: 128, kh: 3, kw: 3, stride: S, pad: "same" },
  { n: 1, h: 10, w: 10, ci: 128, co: 256, kh: 3, kw: 3, stride: S, pad: "same" },
  { n: 2, h: 20, w: 20, ci: 64, co: 128, kh: 3, kw: 3, stride: S2, pad: "same" },
  { n: 2, h: 20, w: 20, ci: 64, co: 128, kh: 1, kw: 1, stride: S2, pad: "same" },
  { n: 2, h: 5, w: 5, ci: 16, co: 32, kh: 3, kw: 3, stride: S2, pad: "same" },
  // the `small` presets' CNN (12 x 12 images, 32 channels: 32-column tiles), and 17-32 wide with a tail
  { n: 3, h: 12, w: 12, ci: 32, co: 32, kh: 3, kw: 3, stride: S, pad: "same" },
  { n: 2, h: 12, w: 12, ci: 24, co: 30, kh: 3, kw: 3, stride: S, pad: "same" },
  // odd sizes: 1 channel, 'valid', explicit padding, non-square everything, narrow outputs
  { n: 3, h: 7, w: 5, ci: 1, co: 3, kh: 3, kw: 3, stride: S, pad: "same" },
  { n: 2, h: 9, w: 6, ci: 5, co: 7, kh: 3, kw: 2, stride: [2, 1], pad: "valid" },
  { n: 1, h: 6, w: 8, ci: 3, co: 17, kh: 2, kw: 3, stride: [1, 2], pad: [[0, 0], [2, 1], [0, 2], [0, 0]] },
  { n: 2, h: 11, w: 11, ci: 65, co: 66, kh: 3, kw: 3, stride: S2, pad: "same" },
  // split-K: 40 x 20 x 20 = 16000 output pixels summed into a 3 x 3 x 8 x 16 filter gradient
  { n: 40, h: 20, w: 20, ci: 8, co: 16, kh: 3, kw: 3, stride: S, pad: "same" },
];

// Tolerance relative to each tensor's largest value (testing.ts maxRelErr): float32 sums of up to
// 16000 products (the split-K filter gradient) against float64.
const TOL = 2e-5;

const describe = (c: Case) =>
  `[${c.n},${c.h},${c.w},${c.ci}] * [${c.kh},${c.kw},${c.ci},${c.co}] stride ${c.stride} pad ${
    JSON.stringify(c.pad)
  }`;

if (gpu.ok) {
  Deno.test("webgpu convs: y, dx, dw match float64 on the models' shapes and odd ones, tiles of 64 and 128 rows; one dispatch each (+ split-K sums)", async () => {
    await initBackend("webgpu", { quiet: true });
    setWebgpuConvEnabled(true);
    let seed = 11, splitSums = 0;
    for (const [rows, c] of [64, 128].flatMap((r) => CASES.map((c) => [r, c] as const))) {
      setConvTileRows(rows as 64 | 128);
      const { oh, ow } = geometry(c);
      const x = randomArray(c.n * c.h * c.w * c.ci, seed++);
      const w = randomArray(c.kh * c.kw * c.ci * c.co, seed++);
      const dy = randomArray(c.n * oh * ow * c.co, seed++);
      const what = `${describe(c)}, ${rows}-row tiles`;
      const got = await convRun(c, x, w, dy);
      const want = convRef(c, x, w, dy);
      assertClose(got.y, want.y, TOL, `${what}: y`);
      assertClose(got.dx, want.dx, TOL, `${what}: dx`);
      assertClose(got.dw, want.dw, TOL, `${what}: dw`);
      assert.deepEqual(
        got.forward.filter((n) => n !== "LmpipeConvSplitSumProgram"),
        ["LmpipeConv2DProgram"],
        `${what}: forward dispatches`,
      );
      // tf.grads runs the forward conv again, then both gradients; a GEMM with few output tiles and a
      // long K (the filter gradient over many pixels, the input gradient of a wide layer) adds one
      // split-K sum
      const convs = got.backward.filter((n) => n.startsWith("LmpipeConv2D"));
      assert.deepEqual(
        convs,
        ["LmpipeConv2DProgram", "LmpipeConv2DBackpropInputProgram", "LmpipeConv2DBackpropFilterProgram"],
        `${what}: backward dispatches (${got.backward})`,
      );
      const sums = got.backward.filter((n) => n === "LmpipeConvSplitSumProgram").length;
      assert(sums <= 3 && got.backward.length === 3 + sums, `${what}: ${got.backward}`);
      splitSums += sums;
    }
    setConvTileRows(64);
    assert(splitSums >= 6, `the split-K path ran ${splitSums} times`);
  });

  Deno.test("webgpu convs: LMPIPE_WEBGPU_CONV's switch off runs TF.js's kernels, with the same numbers", async () => {
    await initBackend("webgpu", { quiet: true });
    const c = CASES[4];
    const { oh, ow } = geometry(c);
    const x = randomArray(c.n * c.h * c.w * c.ci, 5), w = randomArray(c.kh * c.kw * c.ci * c.co, 6);
    const dy = randomArray(c.n * oh * ow * c.co, 7);
    setWebgpuConvEnabled(false);
    let stock;
    try {
      stock = await convRun(c, x, w, dy);
    } finally {
      setWebgpuConvEnabled(true);
    }
    assert(
      ![...stock.forward, ...stock.backward].some((n) => n.startsWith("LmpipeConv")),
      `${stock.backward}`,
    );
    const want = convRef(c, x, w, dy);
    assertClose(stock.y, want.y, TOL, "stock y");
    assertClose(stock.dx, want.dx, TOL, "stock dx");
    assertClose(stock.dw, want.dw, TOL, "stock dw");
  });

  Deno.test("webgpu convs with binary16 operands (--precision mixed, shader-f16): f16 inputs, f32 sums", async () => {
    await initBackend("webgpu", { quiet: true });
    if (!webgpuHasF16()) return; // says why on stderr
    const half = async (a: Float32Array) => new Float32Array(await readData(toHalfOps(tf.tensor(a))));
    for (const c of [CASES[1], CASES[4], CASES[9]]) {
      const { oh, ow } = geometry(c);
      // values that binary16 cannot hold exactly
      const x = randomArray(c.n * c.h * c.w * c.ci, 31).map((v) => v * 1.0001);
      const w = randomArray(c.kh * c.kw * c.ci * c.co, 32).map((v) => v * 1.0001);
      const dy = randomArray(c.n * oh * ow * c.co, 33).map((v) => v * 1.0001);
      setWebgpuHalfOperands(true);
      let got;
      try {
        got = await convRun(c, x, w, dy);
      } finally {
        setWebgpuHalfOperands(false);
      }
      const want = convRef(c, await half(x), await half(w), await half(dy));
      const exact = convRef(c, x, w, dy);
      for (const n of ["y", "dx", "dw"] as const) {
        assertClose(got[n], want[n], TOL, `${describe(c)} f16: ${n} vs float64 of the rounded operands`);
        assert(!(maxRelErr(got[n], exact[n]) < TOL), `${describe(c)} f16: ${n} was not rounded`);
      }
    }
  });

  Deno.test("webgpu image norm + ReLU (the CNN's op after each conv): y, dx, dg, db match float64", async () => {
    await initBackend("webgpu", { quiet: true });
    let seed = 40;
    for (
      const [shape, relu] of [[[3, 20, 20, 64], true], [[2, 5, 5, 256], false], [[4, 3, 7, 1], true]] as const
    ) {
      const [N, , , C] = shape, n = shape[1] * shape[2] * C;
      // offsets per image, so that means and variances are far from 0 and 1
      const x = randomArray(N * n, seed++).map((v, i) => 2 * v + Math.floor(i / n) - 1);
      const g = randomArray(C, seed++).map((v) => 1 + 0.5 * v),
        b = randomArray(C, seed++).map((v) => 0.3 * v);
      const dy = randomArray(N * n, seed++);
      const xt = tf.tensor4d(x, [...shape]),
        gt = tf.tensor1d(g),
        bt = tf.tensor1d(b),
        dyt = tf.tensor4d(dy, [...shape]);
      const f = (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => imageNormRelu(a as tf.Tensor4D, gg, bb, relu);
      const fwd = dispatchedBy(() => f(xt, gt, bt));
      const bwd = dispatchedBy(() => tf.grads(f)([xt, gt, bt], dyt));
      const got = [fwd.result, ...bwd.result].map(async (t) => new Float32Array(await readData(t)));
      const [y, dx, dg, db] = await Promise.all(got);
      const { y: wy, dx: wdx, dg: wdg, db: wdb } = imageNormRef(x, g, b, dy, shape, relu);
      const what = `[${shape}] relu ${relu}`;
      assertClose(y, wy, 1e-5, `${what}: y`);
      assertClose(dx, wdx, 1e-4, `${what}: dx`);
      assertClose(dg, wdg, 1e-4, `${what}: dg`);
      assertClose(db, wdb, 1e-4, `${what}: db`);
      assert.deepEqual(fwd.names, ["LmpipeImageNormProgram"], `${what}: forward dispatches`);
      assert.equal(
        bwd.names.filter((p) => p === "LmpipeImageNormGradProgram").length,
        1,
        `${what}: ${bwd.names}`,
      );
      assert(bwd.names.length <= 6, `${what}: backward dispatches ${bwd.names}`);
      tf.dispose([xt, gt, bt, dyt, fwd.result, ...bwd.result]);
    }
  });
}
