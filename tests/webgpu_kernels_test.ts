// lib/tensor/webgpu/kernels.ts: the fused webgpu kernels must compute what the op chains they replace
// compute (lib/optim.ts AdamW.step, lib/precision.ts toHalfOps), in fewer launches.
// Exactness: the AdamW shader does the chain's float32 operations in its order with the same float32
// constants, so results are bit-identical where the driver compiles each operation as written (measured
// on Mesa llvmpipe, where CI runs: required bitwise there). A hardware driver may contract a*b+c into
// one fma inside the fused shader (WGSL/SPIR-V do not forbid it), which changes the last bit of some
// values; there the check is a relative error of 1e-6 of the tensor's largest value (a few float32 ulps)
// after several steps. The binary16 kernel uses integer operations on the bits: bitwise everywhere
// (zeros compared by value where the input was a float32 subnormal, which GPUs may flush).
import assert from "node:assert/strict";
import { setWebgpuAttentionEnabled } from "../lib/tensor/kernel_choice.ts";
import { getGpuAdapter, initBackend, isSoftwareAdapter, readData, tf } from "../lib/tensor/backend.ts";
import { dispatchedBy, maxRelErr, randomArray, webgpuStatus } from "../lib/tensor/testing.ts";
import {
  adamWGroupSize,
  setFusedKernelsEnabled,
  SUM_CHUNK,
  sumSquaresTensorsPerDispatch,
  toHalfFused,
} from "../lib/tensor/webgpu/kernels.ts";
import { setLayerNormKernelsRegistered } from "../lib/tensor/ops/layer_norm/webgpu.ts";
import { setGeluKernelsRegistered } from "../lib/tensor/ops/gelu/webgpu.ts";

/** LayerNorm and GELU as op chains (false) or as their WGSL kernels (true). */
function setLayerKernelsRegistered(on: boolean): void {
  setLayerNormKernelsRegistered(on);
  setGeluKernelsRegistered(on);
}
import { AdamW, ADAMW_DEFAULTS, sumOfSquares } from "../lib/optim.ts";
import { toHalf, toHalfOps } from "../lib/precision.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { Rng } from "../lib/rng.ts";
import type { Precision } from "../lib/models/types.ts";

const gpu = await webgpuStatus();
const adapter = await getGpuAdapter();
const software = adapter !== null && isSoftwareAdapter(adapter);

/** Names of the programs dispatched on webgpu while `f` runs. */
/** Number of elements whose float32 bit patterns differ. */
function bitDiffs(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length),
    ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = 0;
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) n++;
  return n;
}

/** Fused against reference: bitwise on software adapters, relative 1e-6 elsewhere (see the header). */
async function assertSame(got: tf.Tensor, want: tf.Tensor, what: string): Promise<void> {
  const a = new Float32Array(await readData(got)), b = new Float32Array(await readData(want));
  assert.equal(a.length, b.length, `${what}: lengths`);
  const diffs = bitDiffs(a, b);
  if (software) {
    assert.equal(diffs, 0, `${what}: ${diffs} of ${a.length} values differ in their bits from the op chain`);
  } else {
    const e = maxRelErr(a, b);
    assert(e <= 1e-6, `${what}: relative error ${e} > 1e-6 (${diffs} of ${a.length} values differ in bits)`);
  }
}

const SHAPES: Record<string, number[]> = {
  "h.0.w": [33, 70], // 2310: not a multiple of the workgroup size
  "h.0.b": [70], // no weight decay
  "wte": [300, 64],
  "one": [1],
  "h.1.w": [5, 17], // more parameters than one dispatch takes (4 on llvmpipe): a second group
  "h.1.b": [17],
  "empty": [0, 3], // nothing to update, in a group with others
};

function makeParams(tag: string): Map<string, tf.Variable> {
  const out = new Map<string, tf.Variable>();
  let k = 0;
  for (const [name, shape] of Object.entries(SHAPES)) {
    const n = shape.reduce((a, b) => a * b, 1);
    out.set(name, tf.variable(tf.tensor(randomArray(n, 11 + k++), shape), true, `${tag}.${name}`));
  }
  return out;
}

if (gpu.ok) {
  Deno.test("fused AdamW equals the op chain over several steps (scale, clip, decay on and off, tiny grads)", async () => {
    await initBackend("webgpu", { quiet: true });
    const opts = { ...ADAMW_DEFAULTS, decays: (n: string) => !n.endsWith(".b") };
    const pf = makeParams("fused"), pr = makeParams("ref");
    const fused = new AdamW(pf, { ...opts, fused: true }), ref = new AdamW(pr, { ...opts, fused: false });
    // gradScale as the engine passes it (clip coefficient / loss scale), lr as a schedule would
    const plan = [[1, 6e-4], [0.37 / 1024, 6e-4], [1e-3, 3e-4], [1, 1e-2], [2.5, 0]];
    for (let s = 0; s < plan.length; s++) {
      const [gradScale, lr] = plan[s];
      const grads = new Map<string, tf.Tensor>();
      let k = 0;
      for (const [name, shape] of Object.entries(SHAPES)) {
        const n = shape.reduce((a, b) => a * b, 1);
        const mag = s === 2 ? 1e-6 : 3; // tiny gradients: v underflows toward eps territory
        grads.set(name, tf.mul(tf.tensor(randomArray(n, 100 + 10 * s + k++), shape), mag));
      }
      const before = tf.memory().numTensors;
      const names = dispatchedBy(() => fused.step(grads, lr, gradScale)).names;
      assert.equal(tf.memory().numTensors, before, "the fused update must not leak tensors");
      const group = adamWGroupSize((tf.backend() as unknown as { device: GPUDevice }).device);
      assert.deepEqual(
        names,
        Array.from({ length: Math.ceil(Object.keys(SHAPES).length / group) }, () => "LmpipeAdamWProgram"),
        `one fused dispatch per group of ${group} parameters`,
      );
      const refNames = dispatchedBy(() => ref.step(grads, lr, gradScale)).names;
      const nonEmpty = Object.values(SHAPES).filter((shape) => !shape.includes(0)).length;
      assert(!refNames.includes("LmpipeAdamWProgram") && refNames.length >= 12 * nonEmpty);
      grads.forEach((g) => g.dispose());
    }
    for (const name of Object.keys(SHAPES)) {
      await assertSame(pf.get(name)!, pr.get(name)!, `param ${name}`);
      await assertSame(fused.m.get(name)!, ref.m.get(name)!, `exp_avg ${name}`);
      await assertSame(fused.v.get(name)!, ref.v.get(name)!, `exp_avg_sq ${name}`);
    }
    assert.equal(fused.t, ref.t);
    fused.dispose(), ref.dispose();
    [...pf.values(), ...pr.values()].forEach((v) => v.dispose());
  });

  Deno.test("AdamW with a device-side control [scale, apply]: fused equals the op chain; apply 0 changes nothing", async () => {
    await initBackend("webgpu", { quiet: true });
    const opts = { ...ADAMW_DEFAULTS, decays: (n: string) => !n.endsWith(".b") };
    const pf = makeParams("cf"), pr = makeParams("cr"), ph = makeParams("ch");
    const fused = new AdamW(pf, { ...opts, fused: true }), ref = new AdamW(pr, { ...opts, fused: false });
    const host = new AdamW(ph, { ...opts, fused: true }); // the same steps with the scale as a host number
    // [scale, apply] per step; the skipped steps (apply 0) must leave params and moments bit for bit
    const plan: [number, number][] = [[0.37 / 1024, 1], [Number.NaN, 0], [1, 1], [2.5, 0], [1e-3, 1]];
    for (let s = 0; s < plan.length; s++) {
      const [scale, apply] = plan[s];
      const grads = new Map<string, tf.Tensor>();
      let k = 0;
      for (const [name, shape] of Object.entries(SHAPES)) {
        const n = shape.reduce((a, b) => a * b, 1);
        grads.set(name, tf.tensor(randomArray(n, 300 + 10 * s + k++), shape));
      }
      const before = new Map<string, Float32Array>();
      for (const [n, v] of pf) before.set(n, new Float32Array(await readData(v)));
      const control = tf.tensor1d([scale, apply]);
      const names = dispatchedBy(() => fused.step(grads, 6e-4, 1, control)).names;
      // one concat puts the step's learning-rate terms after [scale, apply] (a recorded step's input)
      assert(
        names[0] === "ConcatProgram" && names.slice(1).every((n) => n === "LmpipeAdamWProgram"),
        `fused dispatches: ${names}`,
      );
      ref.step(grads, 6e-4, 1, control);
      if (apply) host.step(grads, 6e-4, Math.fround(scale));
      else fused.undoSkippedStep(), ref.undoSkippedStep();
      control.dispose(), grads.forEach((g) => g.dispose());
      if (!apply) {
        for (const [n, v] of pf) {
          assert.equal(bitDiffs(new Float32Array(await readData(v)), before.get(n)!), 0, `${n} moved`);
        }
      }
    }
    for (const name of Object.keys(SHAPES)) {
      await assertSame(pf.get(name)!, pr.get(name)!, `param ${name} (fused vs op chain)`);
      await assertSame(fused.v.get(name)!, ref.v.get(name)!, `exp_avg_sq ${name} (fused vs op chain)`);
      await assertSame(pf.get(name)!, ph.get(name)!, `param ${name} (device scale vs host scale)`);
      await assertSame(fused.m.get(name)!, host.m.get(name)!, `exp_avg ${name} (device scale vs host scale)`);
    }
    assert.equal(fused.t, 3), assert.equal(ref.t, 3), assert.equal(host.t, 3);
    fused.dispose(), ref.dispose(), host.dispose();
    [...pf.values(), ...pr.values(), ...ph.values()].forEach((v) => v.dispose());
  });

  Deno.test("fused AdamW on a parameter too long for a 1-D dispatch grid (2-D grid path)", async () => {
    await initBackend("webgpu", { quiet: true });
    const adapterLimit = adapter!.limits.maxComputeWorkgroupsPerDimension;
    const n = adapterLimit * 64 + 129; // one workgroup of 64 per 64 elements: just past the 1-D limit
    const mk = (tag: string) =>
      new Map([["big", tf.variable(tf.tensor1d(randomArray(n, 3)), true, `big.${tag}`)]]);
    const pf = mk("f"), pr = mk("r");
    const opts = { ...ADAMW_DEFAULTS, decays: () => true };
    const fused = new AdamW(pf, { ...opts, fused: true }), ref = new AdamW(pr, { ...opts, fused: false });
    const g = new Map([["big", tf.tensor1d(randomArray(n, 4)) as tf.Tensor]]);
    fused.step(g, 1e-3, 0.5);
    ref.step(g, 1e-3, 0.5);
    await assertSame(pf.get("big")!, pr.get("big")!, "param big");
    await assertSame(fused.v.get("big")!, ref.v.get("big")!, "exp_avg_sq big");
    g.get("big")!.dispose(), fused.dispose(), ref.dispose();
    pf.get("big")!.dispose(), pr.get("big")!.dispose();
  });

  Deno.test("fused binary16 rounding equals toHalfOps bit for bit, in one dispatch", async () => {
    await initBackend("webgpu", { quiet: true });
    // every binade from 2^-30 to 2^17 with random mantissas, plus the edges of binary16
    const r = randomArray(96_000, 7);
    const xs = new Float32Array(r.length + 40);
    for (let i = 0; i < r.length; i++) xs[i] = r[i] * 2 ** ((i % 48) - 30);
    const edges = [
      0,
      -0,
      1,
      -1,
      65504,
      65519,
      65519.99,
      65520,
      -65520,
      65536,
      1e9,
      -1e9,
      Infinity,
      -Infinity,
      NaN,
      2 ** -24,
      2 ** -25,
      -(2 ** -25),
      2 ** -25 * (1 + 2 ** -20),
      3 * 2 ** -26,
      5 * 2 ** -26,
      2 ** -14,
      2 ** -14 * (1 - 2 ** -11),
      -(2 ** -14),
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      2049,
      2051,
      1e-40,
      -1e-40,
      1e-45,
    ];
    xs.set(edges, r.length);
    const x = tf.tensor1d(xs);
    let fused!: tf.Tensor;
    const names = dispatchedBy(() => fused = toHalf(x)).names;
    assert.deepEqual(names, ["LmpipeToHalfProgram"]);
    const a = new Float32Array(await readData(fused)), b = new Float32Array(await readData(toHalfOps(x)));
    let bad = 0;
    const examples: string[] = [];
    for (let i = 0; i < xs.length; i++) {
      const subnormalIn = xs[i] !== 0 && Math.abs(xs[i]) < 2 ** -126;
      const same = Object.is(a[i], b[i]) || (Number.isNaN(a[i]) && Number.isNaN(b[i])) ||
        (subnormalIn && a[i] === b[i]);
      if (!same) {
        bad++;
        if (examples.length < 6) examples.push(`${xs[i]} -> ${a[i]} (op chain ${b[i]})`);
      }
    }
    assert.equal(bad, 0, `${bad} of ${xs.length} values differ: ${examples.join("; ")}`);
    assert.equal(bitDiffs(a.subarray(0, r.length), b.subarray(0, r.length)), 0);
    x.dispose(), fused.dispose();
    tf.dispose(toHalfFused(tf.zeros([0]))); // an empty tensor is fine
  });

  Deno.test("fused sum of squares matches float64 (chunk edges, empty and huge tensors, scales, inf, NaN) in few dispatches", async () => {
    await initBackend("webgpu", { quiet: true });
    // A two-level reduction: each chunk of SUM_CHUNK elements of each tensor has its own workgroup, up to
    // sumSquaresTensorsPerDispatch tensors share a dispatch (empty tensors are skipped), then one dispatch
    // adds the partial sums. Not TF.js's summation order: compared with a float64 sum.
    const perDispatch = sumSquaresTensorsPerDispatch(
      (tf.backend() as unknown as { device: GPUDevice }).device,
    );
    const expectedDispatches = (ns: number[]) => Math.ceil(ns.filter((n) => n > 0).length / perDispatch) + 1;
    const C = SUM_CHUNK, W = 256;
    const sizes = [
      1,
      3,
      W - 1,
      W,
      W + 1,
      C - 1,
      C,
      C + 1,
      3 * C + 7,
      0,
      5000,
      40000,
      7,
      0,
      11,
      2 * C,
      1000,
      65,
    ];
    const arrays = sizes.map((n, i) => randomArray(n, i + 1).map((x) => x * (1 + i)));
    const ts = arrays.map((a) => tf.tensor1d(a));
    const float64 = (k: number, scale: number) => {
      let s = 0;
      for (const a of arrays.slice(0, k)) for (const x of a) s += (Math.fround(x * scale)) ** 2;
      return s;
    };
    for (const scale of [1, 1 / 1024, 3.7]) {
      for (const k of [1, 2, 5, 10, sizes.length]) {
        let fused!: tf.Scalar;
        const names = dispatchedBy(() => fused = sumOfSquares(ts.slice(0, k), scale)).names;
        assert.equal(
          names.length,
          expectedDispatches(sizes.slice(0, k)),
          `${k} tensors: ${names.join(", ")}`,
        );
        assert.equal(fused.shape.length, 0, "a scalar");
        const got = (await readData(fused))[0], want = float64(k, scale);
        assert(
          Math.abs(got - want) <= 2e-6 * want,
          `${k} tensors, scale ${scale}: ${got} vs float64 ${want}`,
        );
        fused.dispose();
      }
    }
    // only empty tensors: 0
    const empty = [tf.zeros([0]), tf.zeros([3, 0])];
    assert.equal((await readData(sumOfSquares(empty)))[0], 0, "empty tensors sum to 0");
    // a 19M-element tensor (gpt small's embedding): thousands of workgroups, still ~float32 exact
    const n = 19_300_000, big = new Float32Array(n);
    let want = 0;
    for (let i = 0; i < n; i++) big[i] = ((i % 1013) - 506) / 512, want += big[i] * big[i];
    const bigT = tf.tensor1d(big);
    const got = (await readData(sumOfSquares([bigT])))[0];
    assert(Math.abs(got - want) <= 1e-5 * want, `19.3M elements: ${got} vs float64 ${want}`);
    const withInf = [ts[0], tf.tensor1d([1, Infinity]), ts[1]];
    assert.equal((await readData(sumOfSquares(withInf)))[0], Infinity, "an overflow must show");
    const withNaN = [ts[0], tf.tensor1d([NaN])];
    assert(Number.isNaN((await readData(sumOfSquares(withNaN)))[0]), "a NaN must show");
    tf.dispose([...ts, ...empty, bigT, ...withInf, ...withNaN]);
  });

  // A whole step as lib/train_loop.ts takes it (loss scale, norm, clip), fused kernels on vs off. LayerNorm
  // and GELU run their op chains in both: their kernels differ from them in the last bits (tested with
  // tolerances in tests/webgpu_layers_test.ts).
  // flash attention (lib/tensor/ops/attention) is not the op chain bit for bit: off here, tested on its own
  const train = async (precision: Precision, fused: boolean, steps: number) => {
    setFusedKernelsEnabled(fused);
    setLayerKernelsRegistered(false);
    setWebgpuAttentionEnabled(false);
    try {
      const config = resolveConfig("gpt", "tiny", { vocabSize: 97, contextLength: 16, nEmbd: 32, nLayer: 1 });
      const model = createModel(config, 3);
      const opt = new AdamW(model.params, { ...ADAMW_DEFAULTS, decays: (n) => model.decays(n) });
      const vars = [...model.params.values()];
      const rng = new Rng(9);
      const losses: number[] = [];
      const S = precision === "mixed" ? 1024 : 1;
      // one fixed batch, so that the loss must fall
      const ids = Int32Array.from({ length: 2 * 16 }, () => rng.int(97));
      const tgt = Int32Array.from({ length: 2 * 16 }, () => rng.int(97));
      for (let s = 0; s < steps; s++) {
        const { value, grads } = tf.tidy(() =>
          tf.variableGrads(() => {
            const x = tf.tensor2d(ids, [2, 16], "int32"), y = tf.tensor2d(tgt, [2, 16], "int32");
            return tf.mul(model.loss(x, y, { precision, training: true }), S) as tf.Scalar;
          }, vars)
        );
        const g = vars.map((v) => grads[v.name]);
        const both = tf.tidy(() => tf.stack([sumOfSquares(g, 1 / S), value, sumOfSquares(g, 1 / S, false)]));
        const [sq, loss, sqChain] = await readData(both);
        assert(Math.abs(sq - sqChain) <= 1e-6 * sqChain, `sum of squares ${sq} vs op chain ${sqChain}`);
        losses.push(loss / S);
        // the clip factor from the op chain's sum (the fused sum differs from it in the last bits, so a
        // clip factor from it would too: checked just above and against float64 in its own test)
        opt.step(
          new Map([...model.params.keys()].map((n, i) => [n, g[i]])),
          1e-2,
          Math.min(1, 0.5 / Math.sqrt(sqChain)) / S,
        );
        tf.dispose([both, value, ...g]);
      }
      const params = new Map<string, Float32Array>();
      for (const [n, v] of model.params) params.set(n, new Float32Array(await readData(v)));
      opt.dispose(), model.dispose();
      return { losses, params };
    } finally {
      setFusedKernelsEnabled(true);
      setLayerKernelsRegistered(true);
      setWebgpuAttentionEnabled(true);
    }
  };

  for (const precision of ["fp32", "mixed"] as Precision[]) {
    Deno.test(`gpt training steps (${precision}) give the same losses and weights with fused kernels on and off`, async () => {
      await initBackend("webgpu", { quiet: true });
      const on = await train(precision, true, 3), off = await train(precision, false, 3);
      for (let i = 0; i < on.losses.length; i++) {
        const ok = software
          ? on.losses[i] === off.losses[i]
          : Math.abs(on.losses[i] - off.losses[i]) <= 1e-5 * Math.abs(off.losses[i]);
        assert(ok, `step ${i + 1}: loss ${on.losses[i]} (fused) vs ${off.losses[i]} (op chains)`);
      }
      assert(on.losses[2] < on.losses[0], `the loss should fall: ${on.losses}`);
      // On a GPU the driver may contract a * b + c into one fma inside a fused shader, so gradients
      // differ in their last bits (an H200 showed it). AdamW carries that into the weights, and where a
      // gradient is nothing but rounding noise it turns the noise into steps of up to lr in either
      // direction: the attention's key bias, whose gradient is zero in exact arithmetic (q . b_k is
      // the same for every key of a query, and the softmax ignores a constant). There only the step
      // size is checked. Under mixed, binary16 rounding at the layer boundaries turns a last-bit
      // difference into a half-precision ulp (2^-11 relative) of single values: two H200 runs measured
      // 4.9e-5 and 5.3e-4, hence 2e-3.
      const tol = precision === "mixed" ? 2e-3 : 1e-5, C = 32, lr = 1e-2;
      for (const [n, a] of on.params) {
        const b = off.params.get(n)!;
        if (software) assert.equal(bitDiffs(a, b), 0, `${n}: weights differ in bits`);
        else if (n.endsWith("attn.c_attn.bias")) {
          const key = (x: Float32Array) => x.subarray(C, 2 * C);
          const rest = (x: Float32Array) => Float32Array.from([...x.subarray(0, C), ...x.subarray(2 * C)]);
          const keyStep = Math.max(...key(a).map((v, i) => Math.abs(v - key(b)[i])));
          assert(keyStep <= 2 * lr * 3, `${n}: key bias differs by ${keyStep}, more than AdamW's steps`);
          assert(maxRelErr(rest(a), rest(b)) <= tol, `${n}: relative error ${maxRelErr(rest(a), rest(b))}`);
        } else assert(maxRelErr(a, b) <= tol, `${n}: relative error ${maxRelErr(a, b)}`);
      }
    });
  }
}

Deno.test("off webgpu, AdamW and toHalf use the op chains (no fused kernel is registered for cpu)", async () => {
  await initBackend("cpu", { quiet: true });
  assert.equal(tf.getKernel("LmpipeAdamW", "cpu"), undefined);
  const p = new Map([["w", tf.variable(tf.tensor1d([1, -2, 3]), true, "cpu.w")]]);
  const opt = new AdamW(p, { ...ADAMW_DEFAULTS, decays: () => true });
  opt.step(new Map([["w", tf.tensor1d([0.5, 0.5, -0.5]) as tf.Tensor]]), 0.1);
  // first AdamW step moves each weight by ~lr against the gradient's sign, after decay (1 - 0.1 * 0.1)
  const w = await readData(p.get("w")!);
  const want = [1 * 0.99 - 0.1, -2 * 0.99 - 0.1, 3 * 0.99 + 0.1];
  for (let i = 0; i < 3; i++) assert(Math.abs(w[i] - want[i]) < 1e-6, `w[${i}] = ${w[i]}, want ${want[i]}`);
  opt.dispose(), p.get("w")!.dispose();
});
