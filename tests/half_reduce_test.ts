// The 16-bit gradient sums of `--grad-reduce bf16|fp16` (lib/dist/half_reduce.ts, lib/dist/data_parallel.ts)
// without MPI: the rounding helpers against the bit-level references of tests/helpers_round.ts, and the
// all-to-all / sum / all-gather reduction run by 2-3 simulated ranks in this process (a fake MPI that
// meets the ranks' collectives and moves the bytes), against a float64 reference that rounds by hand.
// The MPI runs of tests/dist_mpi_test.ts check the same with Open MPI.
import assert from "node:assert/strict";
import { expand, type Half, HalfReducer, roundTo } from "../lib/dist/half_reduce.ts";
import { DataParallel } from "../lib/dist/data_parallel.ts";
import type { Mpi } from "../lib/native/mpi.ts";
import { sumOfSquares } from "../lib/optim.ts";
import { LossScaler } from "../lib/loss_scale.ts";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { refBf16, refHalf } from "./helpers_round.ts";
import { Rng } from "../lib/rng.ts";

await initBackend("cpu", { quiet: true });

const REF: Record<Half, (x: number) => number> = { bf16: refBf16, fp16: refHalf };

/** Values of every kind: random magnitudes, exact ties, subnormals, overflow, zeros, inf and NaN. */
function samples(format: Half): Float32Array {
  const rng = new Rng(7);
  const xs: number[] = [];
  for (let i = 0; i < 4000; i++) {
    xs.push((rng.next() - 0.5) * 2 ** Math.floor(rng.next() * 60 - 40));
  }
  const m = format === "bf16" ? 8 : 11; // significant bits
  for (const e of [-3, 0, 5]) {
    for (let k = 0; k < 6; k++) xs.push((1 + (2 * k + 1) * 2 ** -m) * 2 ** e); // halfway: ties to even
  }
  if (format === "fp16") xs.push(65504, 65519.99, 65520, 70000, -1e6, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1e-9);
  else xs.push(3.3895313892515355e38, 3.4e38, -3.4028234e38, 1e-39, 2 ** -133, 2 ** -134);
  xs.push(0, -0, Infinity, -Infinity, NaN);
  return Float32Array.from(xs);
}

for (const format of ["bf16", "fp16"] as Half[]) {
  Deno.test(`half reduce: ${format} rounding to nearest even and widening match the bit-level reference`, () => {
    const x = samples(format), bits = new Uint16Array(x.length + 3), back = new Float32Array(x.length);
    roundTo(format, x, bits, 3);
    expand(format, bits, back, 3);
    for (let i = 0; i < x.length; i++) {
      const want = REF[format](x[i]);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(back[i]), `${x[i]}`);
      else assert.ok(Object.is(back[i], Math.fround(want)), `${format}(${x[i]}) = ${back[i]}, want ${want}`);
    }
  });
}

/**
 * N ranks in one process: each rank's collectives wait until all N have made the same call, then the
 * bytes are moved as MPI would move them. Only what DataParallel calls is there.
 */
function fakeWorld(size: number): Mpi[] {
  type Arrival = { send: Uint8Array; finish: (all: Uint8Array[]) => void };
  const meetings = new Map<number, Arrival[]>();
  const calls = new Array(size).fill(0);
  const bytesAt = (ptr: Deno.PointerValue, n: number) =>
    new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr!, n));
  const meet = (rank: number, send: Uint8Array, finish: (all: Uint8Array[]) => void) =>
    new Promise<void>((resolve) => {
      const id = calls[rank]++;
      const list = meetings.get(id) ?? [];
      meetings.set(id, list);
      list[rank] = { send: send.slice(), finish: (all) => (finish(all), resolve()) };
      if (Object.keys(list).length === size) {
        meetings.delete(id);
        const all = list.map((a) => a.send);
        setTimeout(() => list.forEach((a) => a.finish(all)), 0); // later, as another thread would
      }
    });
  return Array.from({ length: size }, (_, rank): Mpi => ({
    path: "fake",
    abi: "openmpi",
    version: "fake MPI",
    rank,
    size,
    alltoall16: (send, recv, count, _what) =>
      meet(rank, bytesAt(send, 2 * count * size), (all) => {
        const out = bytesAt(recv, 2 * count * size);
        all.forEach((s, r) => out.set(s.subarray(2 * count * rank, 2 * count * (rank + 1)), 2 * count * r));
      }),
    allgather16: (send, recv, count, _what) =>
      meet(rank, bytesAt(send, 2 * count), (all) => {
        const out = bytesAt(recv, 2 * count * size);
        all.forEach((s, r) => out.set(s, 2 * count * r));
      }),
    allreduceF64: (buf, op, _what) =>
      meet(rank, new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), (all) => {
        const vs = all.map((b) => new Float64Array(b.buffer, b.byteOffset, buf.length));
        for (let i = 0; i < buf.length; i++) {
          buf[i] = op === "sum" ? vs.reduce((s, v) => s + v[i], 0) : Math.max(...vs.map((v) => v[i]));
        }
      }),
    allreduceF32: () => Promise.reject(new Error("fake MPI: no float32 all-reduce in a 16-bit test")),
    bcastF32: () => Promise.reject(new Error("fake MPI: no broadcast")),
    barrier: (_what) => meet(rank, new Uint8Array(0), () => {}),
    abort: () => {},
    finalize: () => {},
  }));
}

/** The ranks' 16-bit sum by hand in float64: each rank's value rounded, added in rank order with a float32
 * rounding after each addition, the total rounded. */
function reference(format: Half, inputs: Float32Array[]): Float32Array {
  const round = REF[format];
  return inputs[0].map((_, i) => {
    let s = round(inputs[0][i]);
    for (let r = 1; r < inputs.length; r++) s = Math.fround(s + round(inputs[r][i]));
    return round(s);
  });
}

function randomInputs(ranks: number, n: number, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  return Array.from({ length: ranks }, () => Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 3));
}

for (const [format, ranks] of [["bf16", 2], ["fp16", 3]] as [Half, number][]) {
  Deno.test(`half reduce: ${ranks} ranks in ${format} (all-to-all, rank-order sum, all-gather) = float64 by hand`, async () => {
    const n = 1001; // not a multiple of the rank count: the last chunk is padded
    const inputs = randomInputs(ranks, n, 3);
    const world = fakeWorld(ranks);
    const outs = inputs.map((x) => Float32Array.from(x));
    // in two pieces, as a bucket of two gradients
    const pieces = (o: Float32Array) => [o.subarray(0, 400), o.subarray(400)];
    await Promise.all(world.map(async (mpi, r) => {
      const h = new HalfReducer(mpi, format);
      h.pack(pieces(inputs[r]));
      await h.reduce("test");
      h.unpack(pieces(outs[r]));
    }));
    const want = reference(format, inputs);
    for (let r = 0; r < ranks; r++) assert.deepEqual(outs[r], want, `rank ${r}`);
    // the rounding is real: the float32 sum differs from it in most places
    const plain = inputs[0].map((_, i) => inputs.reduce((s, x) => Math.fround(s + x[i]), 0));
    assert.ok(plain.filter((v, i) => v !== want[i]).length > n / 2);
  });
}

Deno.test("half reduce: fp16 overflow after the sum (or in one rank's rounding) gives inf -> the step is skipped", async () => {
  for (const values of [[40000, 30000], [70000, 1]]) {
    const world = fakeWorld(2);
    const ranks = world.map((mpi) => {
      const dp = new DataParallel(mpi, () => Promise.reject(new Error("no evaluation")));
      dp.setGradReduce("fp16");
      return dp;
    });
    const grads = ranks.map((_, r) => [tf.tensor1d([1, 2, 3]), tf.tensor2d([[values[r], -0.5]])]);
    const summed = await Promise.all(ranks.map((dp, r) => dp.allreduceGradients(grads[r])));
    for (const g of summed) {
      assert.deepEqual(Array.from(await g[0].data()), [2, 4, 6]);
      assert.deepEqual(Array.from(await g[1].data()), [Infinity, -1]);
    }
    // what the engine does next (lib/train_loop.ts): the norm check sees inf, the ranks agree, the
    // loss scaler skips the step and halves the scale
    const sq = await Promise.all(summed.map((g) => readData(sumOfSquares(g))));
    const agreed = await Promise.all(
      ranks.map((dp, r) =>
        dp.agree({ finite: Number.isFinite(sq[r][0]), stop: false, elapsedS: 0, stepMs: 0 })
      ),
    );
    for (const a of agreed) assert.equal(a.finite, false);
    const scaler = new LossScaler({ enabled: true });
    const before = scaler.scale;
    assert.equal(scaler.update(agreed[0].finite), true);
    assert.equal(scaler.scale, before / 2);
    summed.flat().forEach((t) => t.dispose());
  }
});

for (const backend of ["cpu", "wasm"] as const) {
  Deno.test(`half reduce: DataParallel in bf16 on ${backend} gives every rank the same bits, equal to the reference`, async () => {
    await initBackend(backend, { quiet: true, threads: 1 });
    assert.equal(tf.getBackend(), backend);
    const world = fakeWorld(2);
    const ranks = world.map((mpi) => {
      const dp = new DataParallel(mpi, () => Promise.reject(new Error("no evaluation")), 4096);
      dp.setGradReduce("bf16");
      return dp;
    });
    // several buckets (4 KiB each) and one gradient reduced alone (1 MiB or more)
    const shapes = [[300], [200, 3], [7], [512, 520], [100]];
    const inputs = [0, 1].map((r) =>
      shapes.map((s, k) => randomInputs(1, s.reduce((a, b) => a * b), 10 * r + k)[0])
    );
    const summed = await Promise.all(
      ranks.map((dp, r) => dp.allreduceGradients(shapes.map((s, k) => tf.tensor(inputs[r][k].slice(), s)))),
    );
    for (let k = 0; k < shapes.length; k++) {
      const want = reference("bf16", [inputs[0][k], inputs[1][k]]);
      for (let r = 0; r < 2; r++) {
        assert.deepEqual(await summed[r][k].data(), want, `rank ${r} gradient ${k}`);
      }
    }
    assert.equal(ranks[0].stats.bytes, 2 * inputs[0].reduce((n, x) => n + x.length, 0));
    summed.flat().forEach((t) => t.dispose());
  });
}
