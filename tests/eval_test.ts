// `lmpipe eval` against a direct computation: the stand-in bigram model's per-token cross-entropy is
// computed here from its logits on the host, and eval must agree for non-overlapping windows, sliding
// windows (every token scored exactly once), --max-tokens, token streams on stdin (llm.c segments,
// a -1 "until the end" count, headerless), and bits per byte from meta.json.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { saveCheckpoint } from "../lib/checkpoint.ts";
import { encodeU16, shardHeader, ShardReader } from "../lib/shard.ts";
import { EXIT, LmpipeError } from "../lib/errors.ts";
import { run as evaluate } from "../pipelines/eval/mod.ts";
import { parseTokenStream } from "../lib/token_stream.ts";
import { BIGRAM_FAMILY, BigramModel, writeToyShard } from "./bigram_model.ts";

await initBackend("cpu", { quiet: true });

const dataDir = await Deno.makeTempDir({ prefix: "lmpipe-eval-" });
await writeToyShard(join(dataDir, "toy_train_000001.bin"), 500, 64, 1);
await writeToyShard(join(dataDir, "toy_val_000000.bin"), 203, 64, 2);
await writeToyShard(join(dataDir, "toy_val_000001.bin"), 97, 64, 3);
const runDir = await Deno.makeTempDir({ prefix: "lmpipe-eval-run-" });
const config = { ...BIGRAM_FAMILY.presets.tiny };
const model = new BigramModel(config as never, 11);
await saveCheckpoint(runDir, {
  params: model.params,
  config: { model: config },
  state: {
    step: 0,
    optimizerStep: 0,
    lossScale: { scale: 1, cleanSteps: 0, skippedSteps: 0 },
    rng: { s: [1, 2, 3, 4] },
    sampler: {},
    elapsedS: 0,
    tokensSeen: 0,
  },
});

/** -log p(next | token) for every adjacent pair of `ids`, computed from the model's logits on the host. */
async function directNats(ids: Uint16Array): Promise<number[]> {
  const logits = model.logits(tf.tensor2d(Int32Array.from(ids), [1, ids.length], "int32"));
  const d = await readData(logits) as Float32Array;
  const V = 64, out: number[] = [];
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = d.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let s = 0;
    for (const v of row) s += Math.exp(v - max);
    out.push(-(row[ids[t + 1]] - max - Math.log(s)));
  }
  return out;
}

async function shardIds(name: string): Promise<Uint16Array> {
  const r = await ShardReader.open(join(dataDir, name));
  const ids = (await r.read(0, r.tokens)).slice();
  r.close();
  return ids;
}

async function runEval(args: string[], stdin?: Uint8Array): Promise<Record<string, number>> {
  let out = "";
  const env = {
    families: { bigram: BIGRAM_FAMILY },
    stdout: (b: Uint8Array) => Promise.resolve(void (out += new TextDecoder().decode(b))),
    stdin: stdin ? ReadableStream.from([stdin.subarray(0, 700), stdin.subarray(700)]) : undefined,
  };
  await evaluate(["--ckpt", runDir, "--backend", "cpu", ...args], env);
  assert.equal(out.trim().split("\n").length, 1, "one JSON line");
  return JSON.parse(out);
}

const a = await shardIds("toy_val_000000.bin"), b = await shardIds("toy_val_000001.bin");
const direct = [...await directNats(a), ...await directNats(b)];
const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;

Deno.test("eval: non-overlapping windows over the val shards match the direct computation", async () => {
  const r = await runEval(["--data", dataDir, "--batch-size", "3"]);
  assert.equal(r.tokens, 202 + 96);
  assert.ok(Math.abs(r.loss - mean(direct)) < 1e-5, `${r.loss} vs ${mean(direct)}`);
  assert.ok(Math.abs(r.perplexity - Math.exp(mean(direct))) < 1e-3);
  assert.equal(r.windows, Math.ceil(202 / 16) + Math.ceil(96 / 16));
  assert.ok(!("bits_per_byte" in r), "no byte count known");
});

Deno.test("eval: sliding windows score every token once; --max-tokens cuts exactly", async () => {
  const r = await runEval(["--data", dataDir, "--stride", "5"]);
  assert.equal(r.tokens, 298);
  assert.equal(r.stride, 5);
  assert.ok(Math.abs(r.loss - mean(direct)) < 1e-5);
  const m = await runEval(["--data", dataDir, "--max-tokens", "250"]);
  assert.equal(m.tokens, 250);
  assert.ok(Math.abs(m.loss - mean(direct.slice(0, 250))) < 1e-5);
});

Deno.test("eval: --data - reads llm.c segments, a -1 count, or raw uint16 from stdin", async () => {
  const seg = (ids: Uint16Array, count = ids.length) => {
    const h = shardHeader(0);
    new DataView(h.buffer).setInt32(8, count, true);
    const out = new Uint8Array(1024 + ids.length * 2);
    out.set(h), out.set(encodeU16(ids), 1024);
    return out;
  };
  const one = await runEval(["--data", "-"], seg(a));
  assert.equal(one.tokens, 202);
  assert.ok(Math.abs(one.loss - mean(direct.slice(0, 202))) < 1e-5);
  // two segments concatenate into one sequence (one more scored pair across the boundary)
  const both = new Uint8Array([...seg(a.subarray(0, 100)), ...seg(a.subarray(100), -1)]);
  const two = await runEval(["--data", "-"], both);
  assert.equal(two.tokens, 202);
  assert.ok(Math.abs(two.loss - one.loss) < 1e-6);
  const raw = await runEval(["--data", "-"], encodeU16(a).slice());
  assert.equal(raw.loss, one.loss);
  assert.throws(() => parseTokenStream(seg(a, 500)), /announces 500 tokens/);
});

Deno.test("eval: bits per byte from meta.json; out-of-vocabulary ids refused", async () => {
  await Deno.writeTextFile(
    join(dataDir, "meta.json"),
    JSON.stringify({
      shards: [{ file: "toy_val_000000.bin", bytes: 1000 }, { file: "toy_val_000001.bin", bytes: 500 }],
    }),
  );
  const r = await runEval(["--data", dataDir]);
  assert.ok(Math.abs(r.bits_per_byte - (mean(direct) * 298) / Math.LN2 / 1500) < 1e-6);
  const part = await runEval(["--data", dataDir, "--max-tokens", "10"]);
  assert.ok(!("bits_per_byte" in part), "a partial score has no byte count");
  await Deno.remove(join(dataDir, "meta.json"));
  const bad = Uint16Array.from([1, 2, 3, 200, 4]);
  await assert.rejects(
    runEval(["--data", "-"], encodeU16(bad).slice()),
    (e: unknown) => e instanceof LmpipeError && e.exitCode === EXIT.input && /token id 200/.test(e.message),
  );
});
