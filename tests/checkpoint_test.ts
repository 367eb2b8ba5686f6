// Checkpoints: the safetensors layout byte by byte (what Hugging Face's loader expects), round trips
// from host and device tensors, and atomic saves: a save that dies while writing leaves the previous
// checkpoint loadable, one that dies during the renames is finished by the next load, and files of two
// different saves are never mixed silently.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import {
  CONFIG_FILE,
  decodeSafetensors,
  encodeSafetensors,
  hasCheckpoint,
  type HostTensor,
  loadCheckpoint,
  MODEL_FILE,
  readSafetensors,
  saveCheckpoint,
  STATE_FILE,
  type TrainState,
  writeSafetensors,
} from "../lib/checkpoint.ts";
import { LmpipeError } from "../lib/errors.ts";

await initBackend("cpu", { quiet: true });

Deno.test("safetensors: header layout (LE u64 length, JSON, 8-byte aligned data) and round trip", () => {
  const tensors = new Map<string, HostTensor>([
    ["a.weight", { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, -6.5]) }],
    ["b", { shape: [1], data: Float32Array.from([Math.fround(0.1)]) }],
    ["scalar", { shape: [], data: Float32Array.from([7]) }],
  ]);
  const bytes = encodeSafetensors(tensors, { format: "pt", note: "x" });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + n) % 8, 0, "data must start 8-byte aligned");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.deepEqual(header.__metadata__, { format: "pt", note: "x" });
  assert.deepEqual(header["a.weight"], { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] });
  assert.deepEqual(header["b"], { dtype: "F32", shape: [1], data_offsets: [24, 28] });
  assert.deepEqual(header["scalar"], { dtype: "F32", shape: [], data_offsets: [28, 32] });
  assert.equal(bytes.length, 8 + n + 32);
  // raw little-endian float32 right after the header
  const dv = new DataView(bytes.buffer, 8 + n);
  assert.equal(dv.getFloat32(20, true), -6.5);
  const back = decodeSafetensors(bytes, "mem");
  assert.deepEqual(back.metadata, { format: "pt", note: "x" });
  for (const [name, t] of tensors) {
    assert.deepEqual(back.tensors.get(name)!.shape, t.shape);
    assert.deepEqual(Array.from(back.tensors.get(name)!.data), Array.from(t.data));
  }
  // corrupt files are named and rejected
  assert.throws(() => decodeSafetensors(bytes.subarray(0, 40), "cut.safetensors"), /cut.safetensors/);
});

Deno.test("safetensors: writeSafetensors streams device tensors to a file readable back", async () => {
  const dir = await Deno.makeTempDir();
  const w = tf.randomNormal([5, 7], 0, 1, "float32", 3);
  const path = join(dir, "x.safetensors");
  await writeSafetensors(path, new Map([["w", w]]), { k: "v" });
  const back = await readSafetensors(path);
  assert.deepEqual(Array.from(back.tensors.get("w")!.data), Array.from(await w.data()));
  assert.equal(back.metadata.k, "v");
  await Deno.remove(dir, { recursive: true });
});

function fakeState(step: number): TrainState {
  return {
    step,
    optimizerStep: step,
    lossScale: { scale: 65536, cleanSteps: step, skippedSteps: 0 },
    rng: { s: [1, 2, 3, step] },
    sampler: { shards: [] },
    elapsedS: step,
    tokensSeen: 100 * step,
  };
}

async function saveStep(dir: string, step: number, crashAt?: Parameters<typeof saveCheckpoint>[2]) {
  const params = new Map([["w", tf.fill([3], step)]]);
  const optimizer = new Map([["exp_avg.w", tf.fill([3], -step)], [
    "exp_avg_sq.w",
    tf.fill([3], step * step),
  ]]);
  return await saveCheckpoint(dir, {
    params,
    optimizer,
    config: { model: { model: "toy" } },
    state: fakeState(step),
  }, crashAt);
}

Deno.test("checkpoint: save/load round trip of weights, moments, config and state", async () => {
  const dir = await Deno.makeTempDir();
  assert.equal(await hasCheckpoint(dir), false);
  await saveStep(dir, 2);
  assert.equal(await hasCheckpoint(dir), true);
  const c = await loadCheckpoint(dir, { optimizer: true });
  assert.equal(c.state!.step, 2);
  assert.deepEqual(c.state!.rng, { s: [1, 2, 3, 2] });
  assert.deepEqual(Array.from(c.weights.get("w")!.data), [2, 2, 2]);
  assert.deepEqual(Array.from(c.optimizer!.get("exp_avg_sq.w")!.data), [4, 4, 4]);
  assert.deepEqual((c.config.model as { model: string }).model, "toy");
  // only the four files remain (no temp folders)
  const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  assert.deepEqual(names, ["config.json", "model.safetensors", "optimizer.safetensors", "state.json"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("checkpoint: a save that dies while writing leaves the previous checkpoint intact", async () => {
  const dir = await Deno.makeTempDir();
  await saveStep(dir, 1);
  await assert.rejects(saveStep(dir, 2, "tmp-written"), /simulated crash/);
  const c = await loadCheckpoint(dir, { optimizer: true });
  assert.equal(c.state!.step, 1);
  assert.deepEqual(Array.from(c.weights.get("w")!.data), [1, 1, 1]);
  // the next save cleans up the dead temp folder
  await saveStep(dir, 3);
  const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name);
  assert.ok(!names.some((n) => n.startsWith("ckpt.tmp-")), names.join(","));
  assert.equal((await loadCheckpoint(dir)).state!.step, 3);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("checkpoint: a save that dies during the renames is rolled forward by the next load", async () => {
  for (const crash of ["marker-removed", "model-renamed"] as const) {
    const dir = await Deno.makeTempDir();
    await saveStep(dir, 1);
    await assert.rejects(saveStep(dir, 2, crash), /simulated crash/);
    // mid-swap the folder never looks whole: the commit marker is gone
    assert.ok(!(await Deno.stat(join(dir, STATE_FILE)).then(() => true, () => false)));
    const c = await loadCheckpoint(dir, { optimizer: true });
    assert.equal(c.state!.step, 2, crash);
    assert.deepEqual(Array.from(c.weights.get("w")!.data), [2, 2, 2]);
    assert.deepEqual(Array.from(c.optimizer!.get("exp_avg.w")!.data), [-2, -2, -2]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: files from two different saves are refused, naming the folder", async () => {
  const a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
  await saveStep(a, 1);
  await saveStep(b, 2);
  await Deno.copyFile(join(b, MODEL_FILE), join(a, MODEL_FILE));
  await assert.rejects(
    loadCheckpoint(a),
    (e: unknown) => e instanceof LmpipeError && /mixes two saves/.test(e.message),
  );
  await Deno.remove(a, { recursive: true });
  await Deno.remove(b, { recursive: true });
  // not a checkpoint at all
  const empty = await Deno.makeTempDir();
  await Deno.writeTextFile(join(empty, CONFIG_FILE), "{}");
  await assert.rejects(loadCheckpoint(empty), /not a checkpoint folder/);
  await Deno.remove(empty, { recursive: true });
});
