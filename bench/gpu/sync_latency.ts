// What one host read from the GPU costs in Deno's WebGPU, apart from the GPU's work: a training step
// that reads its loss (or its gradient norm) pays it once per read. Measures, N times each, with the GPU
// idle: mapAsync of a 4-byte buffer, onSubmittedWorkDone with nothing pending, and TF.js's read of a
// scalar after one tiny op; then mapAsync right after a dispatch of known length, to show whether the
// read waits on the work or on a fixed timer. One JSON line per measurement (median, min, max ms).
//
//   deno run -A bench/gpu/sync_latency.ts [--reps 20]
import { num, parseFlags } from "../../lib/flags.ts";
import { initBackend, readData, tf } from "../../lib/tensor/backend.ts";

const cmd = "bench/gpu/sync_latency";
const p = parseFlags(cmd, Deno.args, { reps: { type: "string" } });
const reps = num(p, cmd, "reps", 20, { min: 1, integer: true });
const info = await initBackend("webgpu", { quiet: true });
// deno-lint-ignore no-explicit-any
const device = (tf.backend() as any).device as GPUDevice;

async function timed(name: string, fn: () => Promise<unknown>): Promise<void> {
  await fn(); // warm
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  console.log(JSON.stringify({
    bench: "sync_latency",
    what: name,
    median_ms: +ms[ms.length >> 1].toFixed(3),
    min_ms: +ms[0].toFixed(3),
    max_ms: +ms.at(-1)!.toFixed(3),
    reps,
    device: info.device,
  }));
}

const staging = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
await timed("mapAsync, 4 bytes, GPU idle", async () => {
  await staging.mapAsync(GPUMapMode.READ);
  staging.unmap();
});
await timed("onSubmittedWorkDone, nothing pending", () => device.queue.onSubmittedWorkDone());
// 4,096 values: TF.js computes tensors under 128 values on the CPU, which would read nothing from the GPU.
const x = tf.ones([4096]);
await timed("TF.js read of 4,096 values after one add on the GPU", async () => {
  const y = tf.add(x, 1);
  await readData(y);
  y.dispose();
});
// A matMul of about a millisecond on an H200 (2 x 2048^3 FLOP at ~15 TFLOP/s; 256 on a software
// adapter, where 2048 takes seconds), then a read.
const n = info.device.includes("[software]") ? 256 : 2048;
const a = tf.randomUniform([n, n]), b = tf.randomUniform([n, n]);
await timed(`one ${n}^3 matMul alone (submit + onSubmittedWorkDone)`, async () => {
  tf.matMul(a, b).dispose();
  // deno-lint-ignore no-explicit-any
  const be = tf.backend() as any;
  be.ensureCommandEncoderReady(), be.endComputePassEncoder(), be.submitQueue();
  await device.queue.onSubmittedWorkDone();
});
await timed(`one ${n}^3 matMul, then TF.js read of one value of it`, async () => {
  const c = tf.matMul(a, b), s = tf.slice(c, [0, 0], [1, 1]);
  await readData(s);
  tf.dispose([c, s]);
});
tf.dispose([x, a, b]);
staging.destroy();
