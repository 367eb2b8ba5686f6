// lib/tensor/webgpu/record.ts: the uniforms of every dispatch packed into one buffer per submit batch must
// be the bytes TF.js would have written (packUniforms against TF.js's makeUniforms on literal field lists,
// 1- to 6-long fields as TF.js's shapes and strides give them), and training steps must give the same
// losses and weights bit for bit with the arena on and off, also when a batch outgrows the arena (those
// dispatches take TF.js's path) and when batches are long.
import assert from "node:assert/strict";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { webgpuStatus } from "../lib/tensor/testing.ts";
import {
  packUniforms,
  setUniformArenaBytesForTests,
  setUniformArenaEnabled,
  uniformArenaStats,
} from "../lib/tensor/webgpu/record.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { makeTrainStep } from "../bench/webgpu_step.ts";

const gpu = await webgpuStatus();

const i = (...data: number[]) => ({ type: "int32", data });
const f = (...data: number[]) => ({ type: "float32", data });
const FIELD_LISTS = [
  [f(NaN), f(Infinity), i(3), i(1), i(7)],
  [f(NaN), f(Infinity), i(2, 3), i(3, 1), i(4, 5, 6), i(30, 6, 1), i(9)],
  [f(NaN), f(Infinity), i(1, 2, 3, 4, 5), i(120, 60, 20, 5, 1), i(2), f(0.5)],
  [f(NaN), f(Infinity), i(1, 2, 3, 4, 5, 6), i(720, 360, 120, 30, 6, 1), i(1, 2, 3), f(1.5), i()],
  [i(4), f(2.5), { type: "uint32", data: [4000000000] }, i(1, 2, 3, 4), i(5, 6)],
  [f(NaN), f(Infinity), i(1, 2, 3, 4, 5, 6), i(7), i(1, 2, 3, 4, 5), f(3), i(8, 9)], // after 5 or 6: 16-aligned
];

if (gpu.ok) {
  Deno.test("packUniforms gives the bytes TF.js's makeUniforms writes", async () => {
    await initBackend("webgpu", { quiet: true });
    // deno-lint-ignore no-explicit-any
    const be = tf.backend() as any;
    const written: Uint8Array[] = [];
    const write = be.queue.writeBuffer;
    be.queue.writeBuffer = (_b: GPUBuffer, _o: number, data: ArrayBuffer, off = 0, size?: number) =>
      written.push(new Uint8Array(data.slice(off, off + (size ?? data.byteLength))));
    try {
      for (const fields of FIELD_LISTS) {
        written.length = 0;
        be.makeUniforms(structuredClone(fields));
        assert.equal(written.length, 1);
        assert.deepEqual(
          new Uint8Array(packUniforms(structuredClone(fields))),
          written[0],
          JSON.stringify(fields),
        );
      }
    } finally {
      be.queue.writeBuffer = write;
      be.ensureCommandEncoderReady();
      be.submitQueue(); // returns the uniform buffers taken above to the pool
    }
  });

  const train = async (arena: boolean, batchSize: number) => {
    setUniformArenaEnabled(arena);
    setUniformArenaBytesForTests(batchSize > 15 ? 4096 : null);
    const before = tf.env().get("WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE");
    tf.env().set("WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE", batchSize);
    try {
      const config = resolveConfig("gpt", "tiny", { vocabSize: 97, contextLength: 16, nEmbd: 32, nLayer: 1 });
      const model = createModel(config, 3);
      const { step, dispose } = makeTrainStep(model, 2, "fp32");
      const losses = [await step(), await step(), await step()];
      const params = await Promise.all(
        [...model.params.values()].map(async (v) => new Float32Array(await readData(v))),
      );
      dispose(), model.dispose();
      return { losses, params };
    } finally {
      tf.env().set("WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE", before);
      setUniformArenaEnabled(true);
      setUniformArenaBytesForTests(null);
    }
  };

  Deno.test("training steps give the same losses and weights with the uniform arena on and off", async () => {
    await initBackend("webgpu", { quiet: true });
    // 15: TF.js's batch; 100: batches outgrow an arena of 4 KiB (16 slots of 256 bytes), the rest of each
    // batch takes TF.js's path
    for (const batchSize of [15, 100]) {
      const off = await train(false, batchSize);
      const s0 = { ...uniformArenaStats };
      const on = await train(true, batchSize);
      assert(uniformArenaStats.arena > s0.arena, "the arena was used");
      if (batchSize === 100) assert(uniformArenaStats.fallbacks > s0.fallbacks, "a full arena falls back");
      assert.deepEqual(on.losses, off.losses, `batch ${batchSize}: losses`);
      on.params.forEach((p, k) => assert.deepEqual(p, off.params[k], `batch ${batchSize}: parameter ${k}`));
      assert(on.losses.every(Number.isFinite), `${on.losses}`);
    }
  });
}
