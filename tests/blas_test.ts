// The optional native sgemm paths of the wasm backend (lib/native/blas.ts's CBLAS and lib/native/dnnl.ts's
// oneDNN sgemm, used by the wasm matMul kernel in lib/tensor/ops/matmul/wasm.ts): every transpose and batch
// layout, odd and long-inner sizes, and gradients match plain JS loops and the cpu backend, on each
// library; a disabled or bogus library falls back cleanly. Without a library on this machine its tests
// are skipped with the reason, unless LMPIPE_REQUIRE_NATIVE is set (CI's run with the native libraries),
// where that is a failure.
import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { blasStatus, currentBlas } from "../lib/native/blas.ts";
import { currentDnnl, dnnlStatus, setDnnlGemmOneThreadBelow } from "../lib/native/dnnl.ts";
import { setBlasMinWork, setDnnlMatMuls, setDnnlRowJobs } from "../lib/tensor/kernel_choice.ts";
import { dnnlSkipReason } from "./helpers_conv.ts";
import { matMulBias } from "../lib/tensor/ops/matmul/bias.ts";
import { dnnlMatMulCalls } from "../lib/tensor/ops/matmul/dnnl.ts";
import { assertClose, randomArray } from "../lib/tensor/testing.ts";

await initBackend("wasm", { quiet: true });
const noBlas = currentBlas() ? "" : blasStatus();
if (noBlas) {
  if (Deno.env.get("LMPIPE_REQUIRE_NATIVE")) {
    throw new Error(
      `BLAS tests must run here (LMPIPE_REQUIRE_NATIVE is set; .ci/run installs OpenBLAS): ${noBlas}`,
    );
  }
  console.error(`BLAS tests skipped: ${noBlas}`);
}
const noDnnlGemm = dnnlSkipReason(
  currentDnnl() ? (currentDnnl()!.gemm ? "" : "this libdnnl has no dnnl_sgemm") : dnnlStatus(),
  "oneDNN sgemm tests",
);
// Each test picks its library: oneDNN's sgemm (which kernel_choice.ts prefers) only where it says so.
setDnnlMatMuls(false);

/** A native sgemm under test: OpenBLAS (oneDNN's matMuls off) or oneDNN's. */
interface Lib {
  name: string;
  skip: string;
  dnnl: boolean;
  calls(): number;
}
const LIBS: Lib[] = [
  { name: "BLAS", skip: noBlas, dnnl: false, calls: () => currentBlas()?.calls ?? 0 },
  // oneDNN's native calls: sgemms, and matmul primitives for true batches (ops/matmul/dnnl.ts)
  {
    name: "oneDNN sgemm",
    skip: noDnnlGemm,
    dnnl: true,
    calls: () => (currentDnnl()?.gemm?.calls ?? 0) + dnnlMatMulCalls(),
  },
];

/** C = op(A) @ op(B) for row-major A, B (op = transpose when the flag is set). */
function refMatMul(
  a: Float32Array,
  b: Float32Array,
  M: number,
  K: number,
  N: number,
  tA: boolean,
  tB: boolean,
): Float32Array {
  const c = new Float32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[tA ? k * M + i : i * K + k] * b[tB ? j * K + k : k * N + j];
      c[i * N + j] = s;
    }
  }
  return c;
}

/** Runs fn with every matMul of at least `minWork` multiply-adds on `lib`; returns its sgemm calls made. */
function withMinWork<T>(lib: Lib, minWork: number, fn: () => T): { out: T; calls: number } {
  const before = lib.calls();
  const prev = setBlasMinWork(minWork), prevDnnl = setDnnlMatMuls(lib.dnnl);
  try {
    const out = fn();
    return { out, calls: lib.calls() - before };
  } finally {
    setBlasMinWork(prev);
    setDnnlMatMuls(prevDnnl);
  }
}

const TOL = 2e-5;

/** Forward and both gradients of sum(matMul(a, b) * r) on the current backend. */
function matMulGrads(
  aShape: number[],
  bShape: number[],
  tA: boolean,
  tB: boolean,
  seed: number,
): Float32Array[] {
  return tf.tidy(() => {
    const t = (s: number[], k: number) => tf.tensor(randomArray(s.reduce((x, y) => x * y, 1), seed + k), s);
    const a = t(aShape, 0), b = t(bShape, 1);
    const f = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, tA, tB);
    const y = f(a, b), r = t(y.shape, 2);
    const [da, db] = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(f(x, w), r)))([a, b]);
    return [y, da, db].map((v) => Float32Array.from(v.dataSync()));
  });
}

for (const lib of LIBS) {
  Deno.test({
    name: `${lib.name} matMul: all 4 transpose combinations at odd and long-inner sizes match a JS loop`,
    ignore: !!lib.skip,
    fn: async () => {
      await initBackend("wasm", { quiet: true });
      // one row (M = 1) or one column (N = 1) runs as sgemv: the decoding head's [1, 128] x [128, 50304] too
      const sizes = [[1, 1, 1], [1, 7, 333], [7, 1, 5], [333, 7, 1], [3, 50304, 5], [1, 50304, 2], [
        1,
        128,
        50304,
      ], [
        50,
        64,
        1,
      ], [33, 17, 65]];
      for (const [si, [M, K, N]] of sizes.entries()) {
        for (const tA of [false, true]) {
          for (const tB of [false, true]) {
            const av = randomArray(M * K, 10 + si), bv = randomArray(K * N, 20 + si);
            const { out, calls } = withMinWork(
              lib,
              1,
              () =>
                tf.tidy(() =>
                  tf.matMul(tf.tensor(av, tA ? [K, M] : [M, K]), tf.tensor(bv, tB ? [N, K] : [K, N]), tA, tB)
                    .dataSync()
                ),
            );
            const what = `[${M}x${K}] @ [${K}x${N}] tA=${tA} tB=${tB}`;
            assert.equal(calls, 1, `${what}: expected one sgemm call`);
            assertClose(out, refMatMul(av, bv, M, K, N, tA, tB), TOL, what);
          }
        }
      }
    },
  });

  Deno.test({
    name: `${lib.name} matMul: batched and broadcast layouts match a JS loop per slice`,
    ignore: !!lib.skip,
    fn: async () => {
      await initBackend("wasm", { quiet: true });
      const [M, K, N] = [5, 9, 7];
      // [a batch, b batch, folded into one sgemm]
      const layouts: [number[], number[], boolean][] = [
        [[2, 3], [], true], // batch x 2-D weight: one sgemm over all rows (when a is not transposed)
        [[4], [4], false],
        [[], [3], false], // 2-D x batch: a broadcast
        [[1], [3], false],
        [[2, 3], [2, 3], false],
      ];
      for (const [li, [ba, bb, folds]] of layouts.entries()) {
        for (const tA of [false, true]) {
          for (const tB of [false, true]) {
            const na = ba.reduce((x, y) => x * y, 1), nb = bb.reduce((x, y) => x * y, 1);
            const batch = Math.max(na, nb);
            const av = randomArray(na * M * K, 30 + li), bv = randomArray(nb * K * N, 40 + li);
            const product = () =>
              tf.tidy(() => {
                const a = tf.tensor(av, [...ba, ...(tA ? [K, M] : [M, K])]);
                const b = tf.tensor(bv, [...bb, ...(tB ? [N, K] : [K, N])]);
                return tf.matMul(a, b, tA, tB).dataSync();
              });
            withMinWork(lib, 1, product); // a shape's first call builds no primitive (ops/matmul/dnnl.ts)
            const primitiveBefore = dnnlMatMulCalls();
            const { out, calls } = withMinWork(lib, 1, product);
            const what = `a[${ba}] b[${bb}] tA=${tA} tB=${tB}`;
            const folded = folds && !tA;
            // with oneDNN, a true batch is one call of its matmul primitive (ops/matmul/dnnl.ts), no sgemm
            assert.equal(calls, folded || lib.dnnl ? 1 : batch, `${what}: native calls`);
            if (lib.dnnl) {
              const primitiveCalls = dnnlMatMulCalls() - primitiveBefore;
              assert.equal(primitiveCalls, folded ? 0 : 1, `${what}: oneDNN matmul primitive calls`);
            }
            const want = new Float32Array(batch * M * N);
            for (let i = 0; i < batch; i++) {
              const ia = na === 1 ? 0 : i, ib = nb === 1 ? 0 : i;
              const c = refMatMul(
                av.subarray(ia * M * K, (ia + 1) * M * K),
                bv.subarray(ib * K * N, (ib + 1) * K * N),
                M,
                K,
                N,
                tA,
                tB,
              );
              want.set(c, i * M * N);
            }
            assertClose(out, want, TOL, what);
          }
        }
      }
    },
  });

  Deno.test({
    name:
      `${lib.name} matMul gradients (tf.grads, broadcast weight summed) match the cpu backend and XNNPACK`,
    ignore: !!lib.skip,
    fn: async () => {
      const cases: [number[], number[], boolean, boolean][] = [
        [[33, 40], [40, 50], false, false],
        [[40, 33], [50, 40], true, true],
        [[2, 17, 40], [40, 29], false, false], // the tied head's layout: batch x 2-D weight
        [[2, 17, 40], [29, 40], false, true],
        [[3, 40, 17], [3, 29, 40], true, true],
        [[17, 40], [3, 40, 29], false, false],
      ];
      for (const [i, [as, bs, tA, tB]] of cases.entries()) {
        await initBackend("cpu", { quiet: true });
        const ref = matMulGrads(as, bs, tA, tB, 100 + 3 * i);
        await initBackend("wasm", { quiet: true });
        const blas = withMinWork(lib, 1, () => matMulGrads(as, bs, tA, tB, 100 + 3 * i));
        const xnn = withMinWork(lib, Infinity, () => matMulGrads(as, bs, tA, tB, 100 + 3 * i));
        assert.ok(blas.calls >= 3, `a[${as}] b[${bs}]: forward and both gradients should run natively`);
        assert.equal(xnn.calls, 0);
        ["forward", "da", "db"].forEach((n, k) => {
          const what = `a[${as}] b[${bs}] tA=${tA} tB=${tB} ${n}`;
          assertClose(blas.out[k], ref[k], TOL, `${lib.name} ${what}`);
          assertClose(xnn.out[k], ref[k], TOL, `XNNPACK ${what}`);
        });
      }
    },
  });
}

/** Runs fn on wasm with matMuls on oneDNN (its sgemm and matmul primitive), restoring the setting after. */
async function withDnnlMatMuls(
  fn: (dnnl: NonNullable<ReturnType<typeof currentDnnl>>) => void,
): Promise<void> {
  await initBackend("wasm", { quiet: true });
  const prevDnnl = setDnnlMatMuls(true);
  try {
    fn(currentDnnl()!);
  } finally {
    setDnnlMatMuls(prevDnnl);
  }
}

Deno.test({
  name:
    "oneDNN matmul primitive: attention-sized batches in every transpose match a JS loop, at the default threshold",
  ignore: !!noDnnlGemm,
  fn: () =>
    withDnnlMatMuls((dnnl) => {
      // [B, H] batches of [T, T] x [T, D] products, as an attention layer's scores and weighted sums
      const [B, H, T, D] = [2, 3, 48, 16];
      for (const [M, K, N] of [[T, D, T], [T, T, D]]) {
        for (const tA of [false, true]) {
          for (const tB of [false, true]) {
            const batch = B * H;
            const av = randomArray(batch * M * K, M + K), bv = randomArray(batch * K * N, N + 7);
            const product = () =>
              tf.tidy(() =>
                tf.matMul(
                  tf.tensor(av, [B, H, ...(tA ? [K, M] : [M, K])]),
                  tf.tensor(bv, [B, H, ...(tB ? [N, K] : [K, N])]),
                  tA,
                  tB,
                ).dataSync()
              );
            const what = `[${B},${H}] x [${M}x${K}] @ [${K}x${N}] tA=${tA} tB=${tB}`;
            // every call of the shape, the first included, is one primitive call and no sgemm, with the same
            // bits each time (a first call on the per-slice path gave other bits than the calls after it)
            let before = dnnlMatMulCalls(), gemms = dnnl.gemm!.calls;
            const first = product();
            assert.equal(dnnlMatMulCalls() - before, 1, `${what}: first call, primitive calls`);
            assert.equal(dnnl.gemm!.calls, gemms, `${what}: no sgemm on the first call`);
            before = dnnlMatMulCalls(), gemms = dnnl.gemm!.calls;
            const out = product();
            assert.equal(dnnlMatMulCalls() - before, 1, `${what}: one oneDNN matmul primitive call`);
            assert.equal(dnnl.gemm!.calls, gemms, `${what}: no sgemm on the second call`);
            assert.ok(
              first.every((v, i) => Object.is(v, out[i])),
              `${what}: first and second call, bit for bit`,
            );
            const want = new Float32Array(batch * M * N);
            for (let i = 0; i < batch; i++) {
              const a = av.subarray(i * M * K, (i + 1) * M * K), b = bv.subarray(i * K * N, (i + 1) * K * N);
              want.set(refMatMul(a, b, M, K, N, tA, tB), i * M * N);
            }
            assertClose(out, want, TOL, what);
          }
        }
      }
    }),
});

Deno.test({
  name: "oneDNN matmul primitive with a bias: outside a tape one call equal to the product plus the bias",
  ignore: !!noDnnlGemm,
  fn: () =>
    withDnnlMatMuls((dnnl) => {
      // on 2+ threads the bigger products would run as row jobs (tests/dnnl_row_gemm_test.ts)
      const rowJobs = setDnnlRowJobs(false);
      for (const [M, K, N] of [[64, 32, 96], [37, 130, 5], [256, 512, 128]]) {
        const xv = randomArray(M * K, M), wv = randomArray(K * N, K), bv = randomArray(N, N);
        const what = `[${M}x${K}] @ [${K}x${N}] + b`;
        const run = () =>
          tf.tidy(() => {
            const x = tf.tensor2d(xv, [M, K]), w = tf.tensor2d(wv, [K, N]), b = tf.tensor1d(bv);
            return matMulBias(x, w, b).dataSync();
          });
        run(); // a shape's first call builds no primitive: the product and the Add
        const before = dnnlMatMulCalls();
        const got = run();
        assert.equal(dnnlMatMulCalls() - before, 1, `${what}: one oneDNN call`);
        const want = refMatMul(xv, wv, M, K, N, false, false).map((v, i) => v + bv[i % N]);
        assertClose(got, want, TOL, what);
        // while a gradient is recorded the op chain runs (training's numbers and tape): a product and an Add
        const calls = dnnlMatMulCalls(), gemms = dnnl.gemm!.calls;
        const dx = tf.tidy(() =>
          tf.grad((x: tf.Tensor) =>
            tf.sum(matMulBias(x as tf.Tensor2D, tf.tensor2d(wv, [K, N]), tf.tensor1d(bv)))
          )(
            tf.tensor2d(xv, [M, K]),
          ).dataSync()
        );
        assert.equal(dnnlMatMulCalls(), calls, `${what}: no primitive under a gradient tape`);
        assert.ok(dnnl.gemm!.calls > gemms, `${what}: the op chain's sgemms ran`);
        assert.equal(dx.length, M * K);
      }
      setDnnlRowJobs(rowJobs);
    }),
});

Deno.test({
  name: "BLAS: the default threshold sends a GPT output-head shape to sgemm and keeps tiny matMuls off it",
  ignore: !!noBlas,
  fn: async () => {
    await initBackend("wasm", { quiet: true });
    const calls = () => currentBlas()!.calls;
    const c0 = calls();
    tf.tidy(() => tf.matMul(tf.ones([3, 4]), tf.ones([4, 5])).dataSync());
    assert.equal(calls(), c0, "a 3x4x5 matMul should stay on wasm's own kernel");
    const out = tf.tidy(() => tf.matMul(tf.ones([33, 128]), tf.ones([500, 128]), false, true).dataSync());
    assert.equal(calls(), c0 + 1);
    assert.ok(out.every((v) => v === 128));
  },
});

Deno.test({
  name: "oneDNN sgemm: products under the one-thread limit run on one OpenMP thread, the budget back after",
  ignore: !!noDnnlGemm,
  fn: async () => {
    await initBackend("wasm", { quiet: true });
    const dnnl = currentDnnl()!, gemm = dnnl.gemm!, budget = dnnl.ompThreads();
    const prevDnnl = setDnnlMatMuls(true), prevLimit = setDnnlGemmOneThreadBelow(1 << 22);
    dnnl.setThreads(2);
    try {
      // [32 x 128] x [128 x 128]: 2^19 multiply-adds (an attention slice's size); [256 x 128] x [128 x 128]: 2^22
      for (const [M, limit, want] of [[32, 1 << 22, 1], [256, 1 << 22, 2], [32, null, 2]] as const) {
        setDnnlGemmOneThreadBelow(limit);
        const a = randomArray(M * 128, M), b = randomArray(128 * 128, 7);
        const calls = gemm.calls;
        const got = tf.tidy(() => tf.matMul(tf.tensor2d(a, [M, 128]), tf.tensor2d(b, [128, 128])).dataSync());
        assert.equal(gemm.calls, calls + 1, "the product did not run on oneDNN's sgemm");
        assert.equal(gemm.lastThreads, want, `[${M}x128]x[128x128], limit ${limit}: OpenMP threads`);
        assert.equal(dnnl.ompThreads(), 2, "the OpenMP thread budget was not restored");
        assertClose(got, refMatMul(a, b, M, 128, 128, false, false), TOL, `[${M}x128]x[128x128]`);
      }
    } finally {
      dnnl.setThreads(budget), setDnnlGemmOneThreadBelow(prevLimit), setDnnlMatMuls(prevDnnl);
    }
  },
});

async function child(env: Record<string, string>, flags: string[]): Promise<{ device: string; err: number }> {
  const script = new URL("./helpers_blas_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, script],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `child exited ${out.code}: ${stderr}`);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim());
}

Deno.test("LMPIPE_BLAS=off, a bogus library path, and no FFI permission fall back to XNNPACK cleanly", async () => {
  const off = await child({ LMPIPE_BLAS: "off" }, ["-A"]);
  assert.match(off.device, /^WebAssembly SIMD, 1 thread, BLAS off \(LMPIPE_BLAS=off\)(, |$)/);
  assert.ok(off.err < 1e-3, `off: error ${off.err}`);

  const bogus = await child({ LMPIPE_BLAS: "/nonexistent/libnoblas.so" }, ["-A"]);
  assert.match(bogus.device, /no BLAS: LMPIPE_BLAS=\/nonexistent\/libnoblas\.so did not open/);
  assert.ok(!bogus.device.includes("\n"), "the reason should be one line");
  assert.ok(bogus.err < 1e-3, `bogus: error ${bogus.err}`);

  const noFfi = await child({ LMPIPE_BLAS: "" }, ["-A", "--deny-ffi"]);
  assert.match(noFfi.device, /no BLAS: needs --allow-ffi/);
  assert.ok(noFfi.err < 1e-3, `no ffi: error ${noFfi.err}`);
});

Deno.test({
  name: "a library without cblas_sgemm is refused with a clear reason",
  ignore: !!noBlas,
  fn: async () => {
    // libc is always there and has no cblas_sgemm.
    const r = await child({ LMPIPE_BLAS: "libc.so.6" }, ["-A"]);
    assert.match(r.device, /no BLAS: LMPIPE_BLAS=libc\.so\.6 did not open \(.*cblas_sgemm/);
    assert.ok(r.err < 1e-3);
  },
});

Deno.test("an invalid float32 matMul on wasm is a clear error on every path, not a read past b", async () => {
  await initBackend("wasm", { quiet: true });
  for (const lib of [...LIBS, null]) {
    const { calls } = withMinWork(lib ?? LIBS[0], lib ? 1 : Infinity, () => {
      assert.throws(
        () => tf.tidy(() => tf.matMul(tf.ones([3, 50]), tf.ones([50, 4]), true, false).dataSync()),
        /matMul: the inner dimensions of a \[3,50\] and b \[50,4\] differ \(3 and 50/,
      );
    });
    assert.equal(calls, 0);
  }
});
