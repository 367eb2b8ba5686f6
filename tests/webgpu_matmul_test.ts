// lmpipe's webgpu GEMM (lib/tensor/ops/matmul/webgpu.ts) against a float64 loop: both block tiles at
// every remainder of M, N and K against the tile sizes, all four transpose combinations, K up to 50304
// (split-K), zero-sized dimensions, batch broadcasting over up to 3 outer dimensions, the epilogues
// (_FusedMatMul's bias and activations; LmpipeMatMul's GELU, scale and residual, also through the
// split-K reduction), outputs and inputs over the storage-buffer binding limit (computed in row blocks),
// the off switch, and gpt tiny's loss and gradients on webgpu against cpu with the GEMM in use.
import assert from "node:assert/strict";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import {
  matMulEpilogue,
  planMatMul,
  setMatMulPlanForTests,
  setOwnMatMulEnabled,
  type Tile,
  TILES,
} from "../lib/tensor/ops/matmul/webgpu.ts";
import { kernelFor } from "../lib/tensor/kernel_choice.ts";
import { setWebGPUBindingLimitForTests } from "../lib/tensor/webgpu/limits.ts";
import { GELU_C, GELU_K } from "../lib/tensor/kernel_names.ts";
import { Gpt } from "../lib/models/gpt.ts";
import { resolveConfig } from "../lib/models/registry.ts";
import { assertClose, dispatchedBy, randomArray, webgpuStatus } from "../lib/tensor/testing.ts";
import { compileTimer } from "../bench/webgpu_step.ts";

const gpu = await webgpuStatus();
const PROGRAM = "LmpipeMatMulProgram";

// --- float64 reference -----------------------------------------------------------------------------

interface Operand {
  data: Float32Array;
  /** stored shape: [..., rows, cols] as given to tf.matMul */
  shape: number[];
}

/**
 * op(a) . op(b) in float64 with TF.js's broadcasting of the outer dimensions, and for each output the
 * sum of |a_ik b_kj| (the scale of its rounding error).
 */
function matMulRef(a: Operand, b: Operand, tA: boolean, tB: boolean) {
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const M = tA ? ac : ar, K = tA ? ar : ac, N = tB ? br : bc;
  const ao = a.shape.slice(0, -2), bo = b.shape.slice(0, -2);
  const rank = Math.max(ao.length, bo.length);
  const pad = (d: number[]) => [...Array(rank - d.length).fill(1), ...d];
  const pa = pad(ao), pb = pad(bo);
  const out = pa.map((d, i) => Math.max(d, pb[i]));
  const batch = out.reduce((x, y) => x * y, 1);
  const c = new Float64Array(batch * M * N), mag = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    let rem = z, offA = 0, offB = 0, sa = ar * ac, sb = br * bc;
    for (let i = rank - 1; i >= 0; i--) {
      const idx = rem % out[i];
      rem = Math.floor(rem / out[i]);
      offA += (pa[i] === 1 ? 0 : idx) * sa, offB += (pb[i] === 1 ? 0 : idx) * sb;
      sa *= pa[i], sb *= pb[i];
    }
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0, g = 0;
        for (let k = 0; k < K; k++) {
          const x = a.data[offA + (tA ? k * M + m : m * K + k)];
          const y = b.data[offB + (tB ? n * K + k : k * N + n)];
          s += x * y, g += Math.abs(x * y);
        }
        c[z * M * N + m * N + n] = s, mag[z * M * N + m * N + n] = g;
      }
    }
  }
  return { c, mag, shape: [...out, M, N] };
}

/** Asserts |got - want| <= tol * (sum |a b| + 1e-30) for every output; names the first bad index. */
function assertGemmClose(
  got: ArrayLike<number>,
  want: Float64Array,
  mag: Float64Array,
  what: string,
  tol = 2e-5,
) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= tol * mag[i] + 1e-30)) {
      assert.fail(`${what}: element ${i} is ${got[i]}, want ${want[i]} (error ${err}, scale ${mag[i]})`);
    }
  }
}

let seed = 1;
function operand(shape: number[]): Operand {
  return { data: randomArray(shape.reduce((x, y) => x * y, 1), seed++), shape };
}

/** Runs tf.matMul on webgpu, checks it against float64 and that lmpipe's GEMM ran (or did not). */
async function checkMatMul(a: Operand, b: Operand, tA: boolean, tB: boolean, what: string, own = true) {
  const ta = tf.tensor(a.data, a.shape), tb = tf.tensor(b.data, b.shape);
  const { result, names } = dispatchedBy(() => tf.matMul(ta, tb, tA, tB));
  const want = matMulRef(a, b, tA, tB);
  assert.deepEqual(result.shape, want.shape, `${what}: shape`);
  assertGemmClose(await readData(result), want.c, want.mag, what);
  if (want.c.length > 0) {
    assert.equal(names.includes(PROGRAM), own, `${what}: dispatched ${names.join(", ")}`);
  }
  tf.dispose([ta, tb, result]);
}

const stored = (rows: number, cols: number, t: boolean) => (t ? [cols, rows] : [rows, cols]);
const TRANSPOSES: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

if (gpu.ok) {
  Deno.test("webgpu GEMM: both tiles at every remainder of M, N, K, all transposes, vs float64", async () => {
    await initBackend("webgpu", { quiet: true });
    assert.equal(kernelFor("matMul"), "lmpipe");
    try {
      for (const tile of [TILES.small, TILES.medium, TILES.large] as Tile[]) {
        setMatMulPlanForTests({ tile, splits: 1 });
        const ms = [1, tile.BM - 1, tile.BM + 3], ns = [tile.TN - 1, tile.BN, tile.BN + 1];
        const ks = [1, tile.BK - 1, tile.BK + 1, 3 * tile.BK];
        let i = 0;
        for (const M of ms) {
          for (const N of ns) {
            for (const K of ks) {
              // every combination of remainders meets every transpose combination in turn
              const [tA, tB] = TRANSPOSES[i++ % 4];
              await checkMatMul(
                operand(stored(M, K, tA)),
                operand(stored(K, N, tB)),
                tA,
                tB,
                `${tile.name} ${M}x${N}x${K} ${tA}/${tB}`,
              );
            }
          }
        }
        for (const [tA, tB] of TRANSPOSES) {
          await checkMatMul(
            operand(stored(70, 33, tA)),
            operand(stored(33, 130, tB)),
            tA,
            tB,
            `${tile.name} 70x130x33 ${tA}/${tB}`,
          );
        }
      }
    } finally {
      setMatMulPlanForTests(null);
    }
  });

  Deno.test("webgpu GEMM: split-K (forced and chosen), K up to 50304, the output head's shapes", async () => {
    await initBackend("webgpu", { quiet: true });
    try {
      for (const [tile, splits] of [[TILES.medium, 2], [TILES.small, 3], [TILES.large, 7]] as const) {
        setMatMulPlanForTests({ tile, splits });
        for (const [tA, tB] of TRANSPOSES) {
          await checkMatMul(
            operand(stored(33, 101, tA)),
            operand(stored(101, 17, tB)),
            tA,
            tB,
            `split ${splits} ${tA}/${tB}`,
          );
        }
      }
    } finally {
      setMatMulPlanForTests(null);
    }
    // chosen by shape: a tall-skinny weight gradient [64 x 4096]^T... and K = 50304
    const plan = planMatMul(1, 64, 48, 4096, 1e9);
    assert(plan.splits > 1, `64x48x4096 should split K (plan ${JSON.stringify(plan)})`);
    assert.equal(planMatMul(1, 1024, 1024, 1024, 1e9).splits, 1, "a square 1024 GEMM fills the GPU unsplit");
    assert.equal(planMatMul(1, 2048, 2048, 64, 1e9).tile.name, "large");
    assert.equal(planMatMul(1, 1024, 1024, 64, 1e9).tile.name, "large");
    assert.equal(planMatMul(1, 512, 512, 64, 1e9).tile.name, "medium");
    assert.equal(planMatMul(1, 256, 256, 64, 1e9).tile.name, "small");
    // the choices the H200's timings asked for (planMatMul's comment): a K of 1536 unsplit on 48
    // workgroups of 128x128; K = 50304 split 64 ways on the tile that pads the output least
    const mlp = planMatMul(1, 2048, 384, 1536, 1e9);
    assert.deepEqual([mlp.tile.name, mlp.splits], ["large", 1]);
    for (const [M, N, tile] of [[333, 384, "large"], [50, 384, "medium"], [333, 32, "small"]] as const) {
      const head = planMatMul(1, M, N, 50304, 1e9);
      assert.equal(head.tile.name, tile, `${M} x ${N} x 50304`);
      assert(
        head.splits >= 63,
        `${M} x ${N} x 50304: ${head.splits} splits (64 asked, K ranges rounded to BK)`,
      );
    }
    assert(
      planMatMul(1, 333, 384, 50304, 4 * 333 * 384).splits <= 4,
      "no more partial sums than a binding holds",
    );
    await checkMatMul(operand([4096, 64]), operand([4096, 48]), true, false, "dW = x^T dy, K = 4096");
    await checkMatMul(operand([6, 50304]), operand([50304, 5]), false, false, "K = 50304");
    await checkMatMul(
      operand([8, 50304]),
      operand([50304, 64]),
      false,
      false,
      "head input gradient dlogits . W",
    );
    await checkMatMul(operand([8, 64]), operand([50304, 64]), false, true, "head forward x . W^T, N = 50304");
  });

  Deno.test("webgpu GEMM: zero-sized dimensions", async () => {
    await initBackend("webgpu", { quiet: true });
    for (const [M, N, K] of [[0, 5, 3], [4, 0, 3], [4, 5, 0], [0, 0, 0]]) {
      const a = tf.zeros([M, K]), b = tf.ones([K, N]);
      const c = tf.matMul(a, b);
      assert.deepEqual(c.shape, [M, N]);
      const v = await readData(c);
      assert(v.every((x) => x === 0), `${M}x${N}x${K}: zeros`);
      tf.dispose([a, b, c]);
    }
    const c = tf.matMul(tf.zeros([0, 3, 4]), tf.zeros([0, 4, 2]));
    assert.deepEqual(c.shape, [0, 3, 2]);
    c.dispose();
  });

  Deno.test("webgpu GEMM: batch broadcasting over up to 3 outer dimensions; 4 go to the stock kernel", async () => {
    await initBackend("webgpu", { quiet: true });
    const cases: [number[], number[], boolean, boolean][] = [
      [[3, 5, 4], [3, 4, 6], false, false],
      [[3, 5, 4], [4, 6], false, false],
      [[7, 4], [2, 4, 6], false, false],
      [[1, 5, 4], [3, 6, 4], false, true],
      [[2, 1, 3, 4, 5], [1, 4, 1, 4, 6], true, false],
      [[2, 3, 17, 9], [2, 3, 17, 70], true, false],
    ];
    for (const [sa, sb, tA, tB] of cases) {
      await checkMatMul(operand(sa), operand(sb), tA, tB, `[${sa}] x [${sb}] ${tA}/${tB}`);
    }
    await checkMatMul(
      operand([2, 1, 1, 2, 3, 4]),
      operand([2, 1, 1, 2, 4, 5]),
      false,
      false,
      "4 outer dims",
      false,
    );
  });

  Deno.test("webgpu GEMM: _FusedMatMul's bias and activations, LmpipeMatMul's GELU, scale, residual (also split-K)", async () => {
    await initBackend("webgpu", { quiet: true });
    const M = 37, N = 70, K = 45;
    const a = operand([M, K]), b = operand([K, N]);
    const bias = randomArray(N, 77), alpha = randomArray(N, 78), res = randomArray(M * N, 79);
    const { c } = matMulRef(a, b, false, false);
    const ta = tf.tensor2d(a.data, [M, K]), tb = tf.tensor2d(b.data, [K, N]);
    const tbias = tf.tensor1d(bias), talpha = tf.tensor1d(alpha), tres = tf.tensor2d(res, [M, N]);
    const acts: Record<string, (x: number, j: number) => number> = {
      linear: (x) => x,
      relu: (x) => Math.max(x, 0),
      relu6: (x) => Math.min(Math.max(x, 0), 6),
      elu: (x) => (x < 0 ? Math.exp(x) - 1 : x),
      sigmoid: (x) => 1 / (1 + Math.exp(-x)),
      leakyrelu: (x) => (x < 0 ? 0.3 * x : x),
      prelu: (x, j) => (x < 0 ? alpha[j] * x : x),
      gelu: (x) => 0.5 * x * (1 + Math.tanh(GELU_K * (x + GELU_C * x ** 3))),
    };
    const want = (f: (x: number, j: number) => number, scale: number, withRes: boolean) =>
      Float64Array.from(c, (v, i) => f(scale * v + bias[i % N], i % N) + (withRes ? res[i] : 0));
    for (const [act, f] of Object.entries(acts)) {
      if (act === "gelu") continue;
      const { result, names } = dispatchedBy(() =>
        tf.fused.matMul({
          a: ta,
          b: tb,
          bias: tbias,
          activation: act as "relu",
          preluActivationWeights: act === "prelu" ? talpha : undefined,
          leakyreluAlpha: 0.3,
        })
      );
      assert.deepEqual(names, [PROGRAM], `${act}: one dispatch`);
      assertClose(await readData(result), want(f, 1, false), 1e-5, `fused ${act}`);
      result.dispose();
    }
    try {
      for (const splits of [1, 3]) {
        setMatMulPlanForTests({ tile: TILES.medium, splits });
        for (const act of ["gelu", "relu", "linear"] as const) {
          const { result, names } = dispatchedBy(() =>
            matMulEpilogue(ta, tb, { bias: tbias, activation: act, scale: 0.5, residual: tres })
          );
          assert.equal(names.length, splits === 1 ? 1 : 2, `${act} split ${splits}: dispatches ${names}`);
          assertClose(await readData(result), want(acts[act], 0.5, true), 1e-5, `${act} split ${splits}`);
          result.dispose();
        }
      }
    } finally {
      setMatMulPlanForTests(null);
    }
    assert.throws(
      () => matMulEpilogue(ta, tb, { residual: tbias }),
      /residual \[70\] must have the output's 2590 values/,
    );
    tf.dispose([ta, tb, tbias, talpha, tres]);
  });

  Deno.test("webgpu GEMM: operands over the binding limit are computed in row blocks; what cannot be split is a clear error", async () => {
    await initBackend("webgpu", { quiet: true });
    try {
      setWebGPUBindingLimitForTests(64 * 1024); // 16384 floats
      // output [300, 100] = 30000 floats: row blocks of the output and of A
      await checkMatMul(operand([300, 40]), operand([40, 100]), false, false, "big output");
      await checkMatMul(operand([40, 300]), operand([100, 40]), true, true, "big output, A and B transposed");
      await checkMatMul(operand([2, 130, 70]), operand([70, 130]), false, false, "big batched output");
      // A [20, 1000] = 20000 floats over the limit, small output
      await checkMatMul(operand([20, 1000]), operand([1000, 8]), false, false, "big A");
      const tres = tf.tensor2d(randomArray(300 * 100, 5), [300, 100]);
      const a = operand([300, 40]), b = operand([40, 100]);
      const got = await readData(
        matMulEpilogue(tf.tensor2d(a.data, [300, 40]), tf.tensor2d(b.data, [40, 100]), {
          residual: tres,
          scale: 2,
        }),
      );
      const ref = matMulRef(a, b, false, false);
      const res = await readData(tres);
      assertGemmClose(
        got,
        ref.c.map((v, i) => 2 * v + res[i]),
        ref.mag.map((v) => 2 * v + 1),
        "big output + residual",
      );
      // B itself over the limit cannot be split by output rows
      const big = tf.zeros([4, 8]), w = tf.zeros([8, 20000]);
      assert.throws(() => tf.matMul(big, w, false, false).dispose(), /B \[8,20000\] needs a 0\.6 MiB piece/);
      tf.dispose([big, w, tres]);
    } finally {
      setWebGPUBindingLimitForTests(null);
    }
  });

  Deno.test("webgpu GEMM: new shapes compile no new pipeline (shapes are uniforms)", async () => {
    await initBackend("webgpu", { quiet: true });
    const compiled = compileTimer();
    try {
      setMatMulPlanForTests({ tile: TILES.small, splits: 1 });
      await checkMatMul(operand([3, 4]), operand([4, 5]), false, false, "first shape");
      const after = compiled.pipelines;
      for (const [M, N, K] of [[7, 9, 11], [40, 3, 100], [1, 33, 2], [65, 65, 65]]) {
        await checkMatMul(operand([M, K]), operand([K, N]), false, false, `${M}x${N}x${K}`);
      }
      assert.equal(compiled.pipelines, after, "pipelines compiled for new shapes");
    } finally {
      setMatMulPlanForTests(null);
    }
  });

  Deno.test("webgpu GEMM: LMPIPE_WEBGPU_MATMUL off runs TF.js's stock kernel", async () => {
    await initBackend("webgpu", { quiet: true });
    setOwnMatMulEnabled(false);
    try {
      assert.equal(kernelFor("matMul"), "tfjs");
      await checkMatMul(operand([9, 5]), operand([5, 7]), false, false, "stock", false);
    } finally {
      setOwnMatMulEnabled(true);
    }
    // The variable is read when the module loads: a child process imports it from the source tree, which
    // a bundled copy of this test (bench/gpu/prepare.sh, on a GPU node without node_modules) cannot do.
    if (!import.meta.url.endsWith(".ts")) {
      console.error("LMPIPE_WEBGPU_MATMUL=0 in a child process: not checked from a bundle");
      return;
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { ownMatMulEnabled } from "${new URL(
          "../lib/tensor/ops/matmul/webgpu.ts",
          import.meta.url,
        )}"; console.log(ownMatMulEnabled())`,
      ],
      env: { LMPIPE_WEBGPU_MATMUL: "0" },
      stdout: "piped",
      stderr: "null",
    });
    assert.equal(new TextDecoder().decode((await child.output()).stdout).trim(), "false");
  });

  Deno.test("gpt tiny on webgpu with lmpipe's GEMM: loss and gradients agree with cpu", async () => {
    const config = resolveConfig("gpt", "tiny", { vocabSize: 61, contextLength: 16 });
    const run = async (backend: "cpu" | "webgpu") => {
      await initBackend(backend, { quiet: true });
      const [B, T] = [3, 16];
      const tokens = (shift: number) =>
        tf.tensor2d(Array.from({ length: B * T }, (_, i) => (7 * (i + shift) + 3) % 61), [B, T], "int32");
      const [idx, tgt] = [tokens(0), tokens(1)];
      const model = new Gpt(config, 7); // lmpipe's seeded initialisation: the same weights on every backend
      const { result, names } = dispatchedBy(() =>
        tf.variableGrads(() => model.loss(idx, tgt, { precision: "fp32" }))
      );
      const loss = (await readData(result.value))[0];
      const grads: Record<string, ArrayLike<number>> = {};
      for (const [n, v] of model.params) grads[n] = await readData(result.grads[v.name]);
      tf.dispose([idx, tgt, result.value, ...Object.values(result.grads)]);
      model.dispose();
      return { loss, grads, names };
    };
    const cpu = await run("cpu"), gpuRun = await run("webgpu");
    assert(gpuRun.names.filter((n) => n === PROGRAM).length >= 10, "the GEMM ran for the model's matMuls");
    assert(
      Math.abs(cpu.loss - gpuRun.loss) <= 1e-5 * Math.abs(cpu.loss),
      `loss ${gpuRun.loss} vs ${cpu.loss}`,
    );
    for (const n of Object.keys(cpu.grads)) {
      assertClose(gpuRun.grads[n], cpu.grads[n], 1e-4, `gradient of ${n}`);
    }
  });
}
