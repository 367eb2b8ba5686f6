// causalAttention (lib/tensor/ops/attention/mod.ts) and its flash kernels on webgpu
// (lib/tensor/ops/attention/webgpu.ts): output and gradients of q, k, v against float64 on gpt's head
// sizes (16-64), pixel-attn's value images (Dv 400) and odd ones, with and without a KV-cache past;
// causality (changing key/value j never changes the outputs of queries before j); the op chain on cpu
// agrees with float64 too; the kernels' peak memory over a forward + backward grows linearly in T while
// the op chain's grows with T^2; one dispatch forward and four backward. The laid-out entry points
// (causalAttentionFromQkv from gpt's fused qkv, causalAttentionChannelsLast for pixel-attn's images) against
// float64 and bit for bit against the split/transpose chains they replace, and causalSelfAttention taking
// the first with no data movement around the kernels.
import assert from "node:assert/strict";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import {
  causalAttention,
  causalAttentionByOps,
  causalAttentionChannelsLast,
  causalAttentionFromQkv,
  setFlashLayoutsEnabled,
} from "../lib/tensor/ops/attention/mod.ts";
import { setWebgpuAttentionEnabled, setWebgpuHalfOperands } from "../lib/tensor/kernel_choice.ts";
import { boundary, toHalfOps } from "../lib/precision.ts";
import { causalSelfAttention } from "../lib/nn.ts";
import { assertClose, dispatchedBy, randomArray, webgpuHasF16, webgpuStatus } from "../lib/tensor/testing.ts";

const gpu = await webgpuStatus();

interface Case {
  bh: number;
  t: number;
  past: number;
  d: number;
  dv: number;
}

/** out and dq, dk, dv for upstream dout, in float64 (q [bh, t, d], k [bh, past + t, d], v [.., dv]). */
function attentionRef(
  c: Case,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dout: Float32Array,
  scale: number,
) {
  const tk = c.past + c.t;
  const out = new Float64Array(c.bh * c.t * c.dv);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dvv = new Float64Array(v.length);
  for (let h = 0; h < c.bh; h++) {
    for (let i = 0; i < c.t; i++) {
      const seen = c.past + i + 1, qo = (h * c.t + i) * c.d, oo = (h * c.t + i) * c.dv;
      const s = new Float64Array(seen);
      let mx = -Infinity;
      for (let j = 0; j < seen; j++) {
        let acc = 0;
        for (let d = 0; d < c.d; d++) acc += q[qo + d] * k[(h * tk + j) * c.d + d];
        s[j] = acc * scale, mx = Math.max(mx, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < seen; j++) sum += s[j] = Math.exp(s[j] - mx);
      const dp = new Float64Array(seen);
      let delta = 0;
      for (let j = 0; j < seen; j++) {
        const p = s[j] /= sum, vo = (h * tk + j) * c.dv;
        for (let e = 0; e < c.dv; e++) {
          out[oo + e] += p * v[vo + e];
          dp[j] += dout[oo + e] * v[vo + e];
          dvv[vo + e] += p * dout[oo + e];
        }
        delta += p * dp[j];
      }
      for (let j = 0; j < seen; j++) {
        const ds = s[j] * (dp[j] - delta) * scale, ko = (h * tk + j) * c.d;
        for (let d = 0; d < c.d; d++) {
          dq[qo + d] += ds * k[ko + d];
          dk[ko + d] += ds * q[qo + d];
        }
      }
    }
  }
  return { out, dq, dk, dv: dvv };
}

/** out, dq, dk, dv through `attn` on the current backend, and the programs dispatched. */
async function attentionRun(
  attn: typeof causalAttention,
  c: Case,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dout: Float32Array,
  scale: number,
) {
  const tk = c.past + c.t;
  // a leading [2, bh / 2] (or [1, bh]) pair, as the models' [B, H, T, D]
  const lead = c.bh % 2 === 0 ? [2, c.bh / 2] : [1, c.bh];
  const qt = tf.tensor(q, [...lead, c.t, c.d]), kt = tf.tensor(k, [...lead, tk, c.d]);
  const vt = tf.tensor(v, [...lead, tk, c.dv]), dt = tf.tensor(dout, [...lead, c.t, c.dv]);
  const f = (a: tf.Tensor, b: tf.Tensor, cc: tf.Tensor) => attn(a, b, cc, scale);
  const fwd = dispatchedBy(() => f(qt, kt, vt));
  const bwd = dispatchedBy(() => tf.grads(f)([qt, kt, vt], dt));
  const out = {
    out: new Float32Array(await readData(fwd.result)),
    dq: new Float32Array(await readData(bwd.result[0])),
    dk: new Float32Array(await readData(bwd.result[1])),
    dv: new Float32Array(await readData(bwd.result[2])),
    forward: fwd.names,
    backward: bwd.names,
  };
  tf.dispose([qt, kt, vt, dt, fwd.result, ...bwd.result]);
  return out;
}

const CASES: Case[] = [
  { bh: 4, t: 64, past: 0, d: 16, dv: 16 }, // gpt tiny-like heads
  { bh: 2, t: 40, past: 0, d: 64, dv: 64 }, // gpt small's head size
  { bh: 3, t: 33, past: 0, d: 32, dv: 32 },
  { bh: 2, t: 20, past: 0, d: 8, dv: 400 }, // pixel-attn: value images of 20 x 20 per head
  { bh: 2, t: 5, past: 11, d: 16, dv: 16 }, // a KV-cache step of 5 new positions
  { bh: 2, t: 1, past: 37, d: 64, dv: 400 }, // decoding one position
  { bh: 1, t: 17, past: 0, d: 1, dv: 3 },
  { bh: 2, t: 31, past: 2, d: 63, dv: 65 },
  { bh: 1, t: 49, past: 0, d: 48, dv: 400 }, // 4 tiles of 16 rows, the last of 1; D not a multiple of 16
  { bh: 1, t: 16, past: 16, d: 64, dv: 64 }, // exactly one tile of queries after one tile of past keys
];
/** The programs of a tf.grads call on the flash path: the forward pass again, then the four of the backward. */
const FLASH_BACKWARD = [
  "LmpipeFlashAttentionProgram",
  "LmpipeFlashAttentionDeltaProgram",
  "LmpipeFlashAttentionDqProgram",
  "LmpipeFlashAttentionDkProgram",
  "LmpipeFlashAttentionDvProgram",
];
const describe = (c: Case) => `bh ${c.bh}, T ${c.t}, past ${c.past}, D ${c.d}, Dv ${c.dv}`;

function inputs(c: Case, seed: number) {
  const tk = c.past + c.t;
  return {
    // scores of a few units, so that the softmax is far from uniform
    q: randomArray(c.bh * c.t * c.d, seed).map((x) => 3 * x),
    k: randomArray(c.bh * tk * c.d, seed + 1).map((x) => 3 * x),
    v: randomArray(c.bh * tk * c.dv, seed + 2),
    dout: randomArray(c.bh * c.t * c.dv, seed + 3),
    scale: 1 / Math.sqrt(c.d),
  };
}

// relative to each tensor's largest value (testing.ts maxRelErr): float32 sums over up to 400 columns
// and 48 keys, exp and log in float32
const TOL = 2e-5;

Deno.test("causalAttention's op chain on cpu: output and gradients match float64; shapes are checked", async () => {
  await initBackend("cpu", { quiet: true });
  for (const c of [CASES[0], CASES[3], CASES[4]]) {
    const x = inputs(c, 3);
    const got = await attentionRun(causalAttentionByOps, c, x.q, x.k, x.v, x.dout, x.scale);
    const want = attentionRef(c, x.q, x.k, x.v, x.dout, x.scale);
    for (const n of ["out", "dq", "dk", "dv"] as const) {
      assertClose(got[n], want[n], TOL, `${describe(c)}: ${n}`);
    }
  }
  assert.throws(
    () => causalAttention(tf.zeros([1, 2, 4, 8]), tf.zeros([1, 2, 3, 8]), tf.zeros([1, 2, 3, 8]), 1),
    /causalAttention.*k \[..., past \+ T, D\]/,
  );
});

if (gpu.ok) {
  Deno.test("webgpu flash attention: output and gradients match float64; 1 dispatch forward, 4 backward", async () => {
    await initBackend("webgpu", { quiet: true });
    setWebgpuAttentionEnabled(true);
    let seed = 20;
    for (const c of CASES) {
      const x = inputs(c, seed += 4);
      const got = await attentionRun(causalAttention, c, x.q, x.k, x.v, x.dout, x.scale);
      const want = attentionRef(c, x.q, x.k, x.v, x.dout, x.scale);
      for (const n of ["out", "dq", "dk", "dv"] as const) {
        assertClose(got[n], want[n], TOL, `${describe(c)}: ${n}`);
      }
      assert.deepEqual(got.forward, ["LmpipeFlashAttentionProgram"], `${describe(c)}: forward`);
      assert.deepEqual(
        got.backward.filter((n) => n.startsWith("LmpipeFlash")),
        FLASH_BACKWARD,
        `${describe(c)}: backward`,
      );
    }
  });

  Deno.test("webgpu flash attention under mixed: binary16 q * scale, k, v; float32 scores and probabilities", async () => {
    const c: Case = { bh: 4, t: 24, past: 0, d: 16, dv: 40 };
    const x = inputs(c, 61);
    // k and v arrive as binary16 values (the models' boundaries); the rule: only q * scale is rounded more
    const [k, v] = await Promise.all(
      [x.k, x.v].map(async (a) => new Float32Array(await readData(toHalfOps(tf.tensor(a))))),
    );
    const run = async (backend: "cpu" | "webgpu") => {
      await initBackend(backend, { quiet: true });
      const attn = backend === "webgpu"
        ? (q: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, scale: number) =>
          causalAttention(q, kk, vv, scale, { precision: "mixed" })
        : (q: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, scale: number) =>
          causalAttentionByOps(boundary(tf.mul(q, scale), "mixed"), kk, vv, 1);
      return await attentionRun(attn, c, x.q, k, v, x.dout, x.scale);
    };
    const want = await run("cpu"), got = await run("webgpu");
    assert.deepEqual(got.forward.filter((n) => n.startsWith("LmpipeFlash")), ["LmpipeFlashAttentionProgram"]);
    for (const n of ["out", "dk", "dv"] as const) assertClose(got[n], want[n], TOL, `mixed ${n}`);
    // dq is rounded to binary16 on its way back through the boundary: a float32 difference can flip one
    assertClose(got.dq, want.dq, 1e-3, "mixed dq");
  });

  Deno.test("webgpu flash attention with binary16 operands (shader-f16): the emulation's numbers, bit for bit", async () => {
    await initBackend("webgpu", { quiet: true });
    if (!webgpuHasF16()) return; // says why on stderr
    const c: Case = { bh: 2, t: 20, past: 3, d: 32, dv: 70 };
    const x = inputs(c, 71);
    const half = async (a: Float32Array) => new Float32Array(await readData(toHalfOps(tf.tensor(a))));
    const [k, v, dout] = await Promise.all([x.k, x.v, x.dout].map(half));
    const attn = (q: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, scale: number) =>
      causalAttention(q, kk, vv, scale, { precision: "mixed" });
    const emulated = await attentionRun(attn, c, x.q, k, v, dout, x.scale);
    setWebgpuHalfOperands(true);
    try {
      // operands that are binary16 values already (as the models' boundaries make them): f16 tiles lose
      // nothing and f16 x f16 products are exact in f32, so the numbers are the emulation's exactly
      const real = await attentionRun(attn, c, x.q, k, v, dout, x.scale);
      // a dOut that is not: the kernels round it as they load it
      const unrounded = await attentionRun(attn, c, x.q, k, v, x.dout, x.scale);
      for (const n of ["out", "dq", "dk", "dv"] as const) {
        assert.deepEqual(real[n], emulated[n], `f16 ${n}`);
        if (n !== "out") assert.deepEqual(unrounded[n], emulated[n], `f16 ${n} from an unrounded dOut`);
      }
    } finally {
      setWebgpuHalfOperands(false);
    }
    const plain = await attentionRun(attn, c, x.q, k, v, x.dout, x.scale);
    assert.notDeepEqual(plain.dv, emulated.dv, "without f16 operands an unrounded dOut is used as it is");
  });

  Deno.test("webgpu flash attention is causal: changing key and value j never changes outputs before j", async () => {
    await initBackend("webgpu", { quiet: true });
    const c: Case = { bh: 2, t: 40, past: 3, d: 16, dv: 24 }, tk = c.past + c.t;
    const x = inputs(c, 99);
    const run = async (k: Float32Array, v: Float32Array) => {
      const qt = tf.tensor(x.q, [c.bh, c.t, c.d]), kt = tf.tensor(k, [c.bh, tk, c.d]);
      const vt = tf.tensor(v, [c.bh, tk, c.dv]);
      const o = causalAttention(qt, kt, vt, x.scale);
      const r = new Float32Array(await readData(o));
      tf.dispose([qt, kt, vt, o]);
      return r;
    };
    const base = await run(x.k, x.v);
    for (const j of [3, 4, 17, 18, 42]) { // key j is position j: query i (position past + i) sees it iff past + i >= j
      const k = x.k.slice(), v = x.v.slice();
      for (let h = 0; h < c.bh; h++) {
        for (let d = 0; d < c.d; d++) k[(h * tk + j) * c.d + d] += 5;
        for (let e = 0; e < c.dv; e++) v[(h * tk + j) * c.dv + e] -= 7;
      }
      const got = await run(k, v);
      for (let h = 0; h < c.bh; h++) {
        for (let i = 0; i < c.t; i++) {
          const row = (a: Float32Array) =>
            Array.from(a.subarray((h * c.t + i) * c.dv, (h * c.t + i + 1) * c.dv));
          if (c.past + i < j) {
            assert.deepEqual(row(got), row(base), `key ${j} changed query ${i} (head ${h})`);
          } else assert.notDeepEqual(row(got), row(base), `key ${j} did not change query ${i} (head ${h})`);
        }
      }
    }
  });

  Deno.test("webgpu flash attention: peak memory of forward + backward is O(T), the op chain's O(T^2)", async () => {
    await initBackend("webgpu", { quiet: true });
    const peak = async (t: number, fused: boolean) => {
      setWebgpuAttentionEnabled(fused);
      try {
        const c: Case = { bh: 8, t, past: 0, d: 16, dv: 16 }, x = inputs(c, 5);
        const qt = tf.tensor(x.q, [c.bh, t, c.d]), kt = tf.tensor(x.k, [c.bh, t, c.d]);
        const vt = tf.tensor(x.v, [c.bh, t, c.dv]), dt = tf.tensor(x.dout, [c.bh, t, c.dv]);
        const before = tf.memory().numBytes;
        const info = await tf.profile(() => {
          const g = tf.grads((a: tf.Tensor, b: tf.Tensor, e: tf.Tensor) => causalAttention(a, b, e, x.scale))(
            [qt, kt, vt],
            dt,
          );
          tf.dispose(g);
        });
        tf.dispose([qt, kt, vt, dt]);
        return info.peakBytes - before; // the most held at once above the inputs, after any kernel
      } finally {
        setWebgpuAttentionEnabled(true);
      }
    };
    const f128 = await peak(128, true), f256 = await peak(256, true);
    const o128 = await peak(128, false), o256 = await peak(256, false);
    assert(f256 / f128 < 2.2, `flash: peak bytes ${f128} at T 128, ${f256} at T 256`);
    assert(o256 / o128 > 3, `op chain: peak bytes ${o128} at T 128, ${o256} at T 256`);
    assert(f256 * 4 < o256, `flash ${f256} vs op chain ${o256} bytes at T 256`);
  });
}

// causalAttentionFromQkv: attention straight from a fused projection qkv [B, T, 3C] to y [B, T, C].
interface QkvCase {
  b: number;
  t: number;
  h: number;
  d: number;
}
const QKV_CASES: QkvCase[] = [
  { b: 2, t: 19, h: 3, d: 16 },
  { b: 3, t: 33, h: 2, d: 64 }, // gpt small's head size, 3 tiles of queries, the last of 1 row
  { b: 2, t: 7, h: 4, d: 24 }, // D not a multiple of 16
];
const describeQkv = (c: QkvCase) => `B ${c.b}, T ${c.t}, H ${c.h}, D ${c.d}`;

/** y [B, T, C] and dqkv [B, T, 3C] in float64 through attentionRef on the heads of qkv (dy [B, T, C]). */
function qkvRef(c: QkvCase, qkv: Float32Array, dy: Float32Array) {
  const C = c.h * c.d, bh = c.b * c.h;
  // element (head b h + hh, row t, column e) of block `blk` of a [B, T, width] tensor
  const at = (width: number, blk: number, i: number, t: number, e: number) =>
    (Math.floor(i / c.h) * c.t + t) * width + blk * C + (i % c.h) * c.d + e;
  const gather = (src: Float32Array, width: number, blk: number) => {
    const out = new Float32Array(bh * c.t * c.d);
    for (let i = 0; i < bh; i++) {
      for (let t = 0; t < c.t; t++) {
        for (let e = 0; e < c.d; e++) out[(i * c.t + t) * c.d + e] = src[at(width, blk, i, t, e)];
      }
    }
    return out;
  };
  const scatter = (dst: Float64Array, src: Float64Array, width: number, blk: number) => {
    for (let i = 0; i < bh; i++) {
      for (let t = 0; t < c.t; t++) {
        for (let e = 0; e < c.d; e++) dst[at(width, blk, i, t, e)] = src[(i * c.t + t) * c.d + e];
      }
    }
  };
  const scale = 1 / Math.sqrt(c.d);
  const r = attentionRef(
    { bh, t: c.t, past: 0, d: c.d, dv: c.d },
    gather(qkv, 3 * C, 0),
    gather(qkv, 3 * C, 1),
    gather(qkv, 3 * C, 2),
    gather(dy, C, 0),
    scale,
  );
  const y = new Float64Array(c.b * c.t * C), dqkv = new Float64Array(qkv.length);
  scatter(y, r.out, C, 0);
  [r.dq, r.dk, r.dv].forEach((g, blk) => scatter(dqkv, g, 3 * C, blk));
  return { y, dqkv, scale };
}

/** y and dqkv of `attn` on the current backend, and the programs the forward and backward pass ran. */
async function qkvRun(
  c: QkvCase,
  qkv: Float32Array,
  dy: Float32Array,
  attn: (qkv: tf.Tensor) => tf.Tensor,
) {
  const C = c.h * c.d;
  const x = tf.tensor(qkv, [c.b, c.t, 3 * C]), dyt = tf.tensor(dy, [c.b, c.t, C]);
  const fwd = dispatchedBy(() => attn(x));
  const bwd = dispatchedBy(() => tf.grad(attn)(x, dyt));
  const got = {
    y: new Float32Array(await readData(fwd.result)),
    dqkv: new Float32Array(await readData(bwd.result)),
    forward: fwd.names,
    backward: bwd.names,
  };
  tf.dispose([x, dyt, fwd.result, bwd.result]);
  return got;
}

const qkvInputs = (c: QkvCase, seed: number) => ({
  qkv: randomArray(c.b * c.t * 3 * c.h * c.d, seed).map((v) => 3 * v),
  dy: randomArray(c.b * c.t * c.h * c.d, seed + 1),
});

/** Today's chain without causalAttentionFromQkv: split, heads to [B, H, T, D], causalAttention, merge. */
function qkvBySplit(c: QkvCase, precision?: "mixed") {
  return (qkv: tf.Tensor) => {
    const heads = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [c.b, c.t, c.h, c.d]), [0, 2, 1, 3]);
    const [q, k, v] = tf.split(qkv, 3, 2).map(heads);
    const y = causalAttention(q, k, v, 1 / Math.sqrt(c.d), { precision });
    return tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [c.b, c.t, c.h * c.d]);
  };
}

Deno.test("causalAttentionFromQkv on cpu (the op chain): y and dqkv match float64; bad shapes are named", async () => {
  await initBackend("cpu", { quiet: true });
  const c = QKV_CASES[0], x = qkvInputs(c, 7), want = qkvRef(c, x.qkv, x.dy);
  const got = await qkvRun(c, x.qkv, x.dy, (t) => causalAttentionFromQkv(t, c.h, want.scale));
  assertClose(got.y, want.y, TOL, `${describeQkv(c)}: y`);
  assertClose(got.dqkv, want.dqkv, TOL, `${describeQkv(c)}: dqkv`);
  assert.throws(
    () => causalAttentionFromQkv(tf.zeros([1, 4, 10]), 2, 1),
    /causalAttentionFromQkv.*\[1,4,10\]/,
  );
});

if (gpu.ok) {
  Deno.test("webgpu causalAttentionFromQkv: y and dqkv match float64; 1 dispatch forward, 4 backward, no split or transposes", async () => {
    await initBackend("webgpu", { quiet: true });
    setWebgpuAttentionEnabled(true);
    let seed = 200;
    for (const c of QKV_CASES) {
      const x = qkvInputs(c, seed += 2), want = qkvRef(c, x.qkv, x.dy);
      const got = await qkvRun(c, x.qkv, x.dy, (t) => causalAttentionFromQkv(t, c.h, want.scale));
      assertClose(got.y, want.y, TOL, `${describeQkv(c)}: y`);
      assertClose(got.dqkv, want.dqkv, TOL, `${describeQkv(c)}: dqkv`);
      assert.deepEqual(got.forward, ["LmpipeFlashAttentionProgram"], `${describeQkv(c)}: forward`);
      assert.deepEqual(
        got.backward,
        FLASH_BACKWARD,
        `${describeQkv(c)}: backward`,
      );
    }
  });

  Deno.test("webgpu causalAttentionFromQkv: the numbers of split + [B, H, T, D] heads, bit for bit, fp32 and mixed (f16 operands too)", async () => {
    await initBackend("webgpu", { quiet: true });
    // D 24: 1 / sqrt(D) is no power of two, so mixed's rounding of q * scale matters
    const c: QkvCase = { b: 2, t: 21, h: 2, d: 24 }, scale = 1 / Math.sqrt(c.d);
    const x = qkvInputs(c, 300);
    // under mixed, qkv and dy arrive as binary16 values (the boundaries of the linear before and after)
    const half = async (a: Float32Array) => new Float32Array(await readData(toHalfOps(tf.tensor(a))));
    const [qkv16, dy16] = await Promise.all([half(x.qkv), half(x.dy)]);
    const runs: [string, Float32Array, Float32Array, "mixed" | undefined][] = [
      ["fp32", x.qkv, x.dy, undefined],
      ["mixed", qkv16, dy16, "mixed"],
    ];
    for (const halfOperands of webgpuHasF16() ? [false, true] : [false]) {
      setWebgpuHalfOperands(halfOperands);
      try {
        for (const [name, qkv, dy, precision] of runs) {
          const what = `${name}${halfOperands ? ", f16 operands" : ""}`;
          const want = await qkvRun(c, qkv, dy, qkvBySplit(c, precision));
          const got = await qkvRun(c, qkv, dy, (t) => causalAttentionFromQkv(t, c.h, scale, { precision }));
          assert.deepEqual(got.y, want.y, `${what}: y`);
          assert.deepEqual(got.dqkv, want.dqkv, `${what}: dqkv`);
          assert(
            got.forward.length === 1 && want.forward.length > 5,
            `${what}: ${got.forward} vs ${want.forward}`,
          );
        }
      } finally {
        setWebgpuHalfOperands(false);
      }
    }
  });
}

// causalAttentionChannelsLast: pixel-attn's value images, q and k [B, T, H D] in, y [B, T, Dv, H] out.
interface ImgCase {
  b: number;
  t: number;
  h: number;
  d: number;
  dv: number;
}
const IMG_CASES: ImgCase[] = [
  { b: 2, t: 19, h: 3, d: 8, dv: 100 }, // value images wider than one 64-column group
  { b: 1, t: 33, h: 2, d: 64, dv: 25 },
];
const describeImg = (c: ImgCase) => `B ${c.b}, T ${c.t}, H ${c.h}, D ${c.d}, Dv ${c.dv}`;

/** y [B, T, Dv, H] and dq, dk [B, T, H D], dv [B, H, T, Dv] in float64 through attentionRef. */
function imgRef(c: ImgCase, q: Float32Array, k: Float32Array, v: Float32Array, dy: Float32Array) {
  const bh = c.b * c.h, HD = c.h * c.d;
  const qkAt = (i: number, t: number, e: number) =>
    (Math.floor(i / c.h) * c.t + t) * HD + (i % c.h) * c.d + e;
  const yAt = (i: number, t: number, e: number) =>
    ((Math.floor(i / c.h) * c.t + t) * c.dv + e) * c.h + i % c.h;
  const perHead = (width: number, at: typeof qkAt) => ({
    gather: (src: Float32Array) => {
      const out = new Float32Array(bh * c.t * width);
      for (let i = 0; i < bh; i++) {
        for (let t = 0; t < c.t; t++) {
          for (let e = 0; e < width; e++) out[(i * c.t + t) * width + e] = src[at(i, t, e)];
        }
      }
      return out;
    },
    scatter: (src: Float64Array) => {
      const out = new Float64Array(src.length);
      for (let i = 0; i < bh; i++) {
        for (let t = 0; t < c.t; t++) {
          for (let e = 0; e < width; e++) out[at(i, t, e)] = src[(i * c.t + t) * width + e];
        }
      }
      return out;
    },
  });
  const qk = perHead(c.d, qkAt), img = perHead(c.dv, yAt), scale = 1 / Math.sqrt(c.d);
  const r = attentionRef(
    { bh, t: c.t, past: 0, d: c.d, dv: c.dv },
    qk.gather(q),
    qk.gather(k),
    v,
    img.gather(dy),
    scale,
  );
  return { y: img.scatter(r.out), dq: qk.scatter(r.dq), dk: qk.scatter(r.dk), dv: r.dv, scale };
}

async function imgRun(
  c: ImgCase,
  x: { q: Float32Array; k: Float32Array; v: Float32Array; dy: Float32Array },
  precision?: "mixed",
) {
  const HD = c.h * c.d, scale = 1 / Math.sqrt(c.d);
  const qt = tf.tensor(x.q, [c.b, c.t, HD]), kt = tf.tensor(x.k, [c.b, c.t, HD]);
  const vt = tf.tensor(x.v, [c.b, c.h, c.t, c.dv]), dyt = tf.tensor(x.dy, [c.b, c.t, c.dv, c.h]);
  const f = (a: tf.Tensor, b: tf.Tensor, e: tf.Tensor) =>
    causalAttentionChannelsLast(a, b, e, c.h, scale, { precision });
  const fwd = dispatchedBy(() => f(qt, kt, vt));
  const bwd = dispatchedBy(() => tf.grads(f)([qt, kt, vt], dyt));
  const read = async (t: tf.Tensor) => new Float32Array(await readData(t));
  const got = {
    y: await read(fwd.result),
    dq: await read(bwd.result[0]),
    dk: await read(bwd.result[1]),
    dv: await read(bwd.result[2]),
    forward: fwd.names,
  };
  tf.dispose([qt, kt, vt, dyt, fwd.result, ...bwd.result]);
  return got;
}

const imgInputs = (c: ImgCase, seed: number) => ({
  q: randomArray(c.b * c.t * c.h * c.d, seed).map((v) => 3 * v),
  k: randomArray(c.b * c.t * c.h * c.d, seed + 1).map((v) => 3 * v),
  v: randomArray(c.b * c.h * c.t * c.dv, seed + 2),
  dy: randomArray(c.b * c.t * c.dv * c.h, seed + 3),
});

Deno.test("causalAttentionChannelsLast: y, dq, dk, dv match float64 on cpu and webgpu (flash: 1 dispatch, bit for bit the transposing chain)", async () => {
  for (const backend of gpu.ok ? ["cpu", "webgpu"] as const : ["cpu"] as const) {
    await initBackend(backend, { quiet: true });
    let seed = 400;
    for (const c of IMG_CASES) {
      const x = imgInputs(c, seed += 4), want = imgRef(c, x.q, x.k, x.v, x.dy);
      const got = await imgRun(c, x);
      for (const n of ["y", "dq", "dk", "dv"] as const) {
        assertClose(got[n], want[n], TOL, `${backend} ${describeImg(c)}: ${n}`);
      }
      if (backend !== "webgpu") continue;
      assert.deepEqual(got.forward, ["LmpipeFlashAttentionProgram"], `${describeImg(c)}: forward`);
      // the same kernels on [B, H, T, D] heads with transposes
      for (const precision of [undefined, "mixed"] as const) {
        const laidOut = await imgRun(c, x, precision);
        const before = setFlashLayoutsEnabled(false);
        try {
          const chain = await imgRun(c, x, precision);
          assert(chain.forward.length > 1, `${describeImg(c)}: the chain ran ${chain.forward}`);
          for (const n of ["y", "dq", "dk", "dv"] as const) {
            assert.deepEqual(laidOut[n], chain[n], `${precision ?? "fp32"} ${describeImg(c)}: ${n}`);
          }
        } finally {
          setFlashLayoutsEnabled(before);
        }
      }
    }
  }
});

if (gpu.ok) {
  Deno.test("webgpu causalSelfAttention: the fused projection goes straight to the kernels (no split, transposes or concat), cpu's numbers", async () => {
    const B = 2, T = 11, C = 48, H = 3;
    const run = async (backend: "cpu" | "webgpu", probs: boolean) => {
      await initBackend(backend, { quiet: true });
      const x = tf.tensor(randomArray(B * T * C, 501), [B, T, C]) as tf.Tensor3D;
      const w = tf.tensor(randomArray(C * 3 * C, 502).map((v) => 0.5 * v), [C, 3 * C]) as tf.Tensor2D;
      const pw = tf.tensor(randomArray(C * C, 503), [C, C]) as tf.Tensor2D;
      const kept: tf.Tensor[] = [];
      const f = (xx: tf.Tensor, ww: tf.Tensor) =>
        causalSelfAttention(xx as tf.Tensor3D, { cAttnW: ww as tf.Tensor2D, cProjW: pw }, H, {
          attentionProbs: probs ? kept : undefined,
        });
      const fwd = dispatchedBy(() => f(x, w));
      const bwd = dispatchedBy(() => tf.grads(f)([x, w]));
      const got = {
        y: new Float32Array(await readData(fwd.result)),
        dw: new Float32Array(await readData(bwd.result[1])),
        names: [...fwd.names, ...bwd.names],
      };
      tf.dispose([x, w, pw, fwd.result, ...bwd.result, ...kept]);
      return got;
    };
    const want = await run("cpu", false), got = await run("webgpu", false), chain = await run("webgpu", true);
    assertClose(got.y, want.y, 1e-5, "y");
    assertClose(got.dw, want.dw, 1e-4, "dW of the fused projection");
    const layoutOps = (n: string[]) => n.filter((p) => /^(Slice|Transpose|Concat)/.test(p));
    assert.deepEqual(layoutOps(got.names), [], "the flash path moves no data around the kernels");
    // asking for the probabilities keeps today's split, head transposes and op chain
    assert(layoutOps(chain.names).length >= 8, `${chain.names}`);
    assert(!chain.names.includes("LmpipeFlashAttentionProgram"), `${chain.names}`);
  });
}
