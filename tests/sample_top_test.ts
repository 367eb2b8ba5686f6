// Tests for `lmpipe sample --top N`: the N most likely next tokens with their probabilities, checked
// against a softmax of the model's own logits for the prompt; the line format `p:0.33, town`; jsonl.
import assert from "node:assert/strict";
import { join } from "node:path";
import { saveUntrainedRun } from "./helpers_run.ts";
import { gptFamily } from "../lib/models/gpt.ts";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { decode, encodeOrdinary, VOCAB_SIZE } from "../lib/tokenizer.ts";
import { run as sample } from "../pipelines/sample/mod.ts";
import { fmtProb, topLine, topTokens } from "../pipelines/sample/top.ts";

await initBackend("cpu", { quiet: true });

Deno.test("topTokens: most likely first, probabilities from a softmax over the allowed vocabulary", () => {
  const logits = Float32Array.from([1, 3, 2, 0, 10]); // id 4 is padding beyond the allowed vocabulary
  const top = topTokens(logits, 2, 4);
  const z = Math.exp(1) + Math.exp(3) + Math.exp(2) + Math.exp(0);
  assert.deepEqual(top.map((t) => t.id), [1, 2]);
  assert.ok(Math.abs(top[0].p - Math.exp(3) / z) < 1e-7);
  assert.equal(topLine({ id: 0, p: 0.3333 }, " town"), "p:0.33, town");
  assert.equal(topLine({ id: 0, p: 0.004567 }, "\n"), "p:0.0046,\\n");
  assert.equal(fmtProb(1), "1.00");
});

Deno.test("lmpipe sample --top 5: the model's five most likely next tokens with their probabilities", async () => {
  const dir = await Deno.makeTempDir();
  const model = gptFamily.create({ ...gptFamily.presets.tiny }, 11);
  try {
    const run = join(dir, "run");
    await saveUntrainedRun(run, model);
    const prompt = "Once upon a time there was a";
    const chunks: Uint8Array[] = [];
    const stdout = (b: Uint8Array) => (chunks.push(b.slice()), Promise.resolve());
    await sample(["--ckpt", run, "--prompt", prompt, "--top", "5", "--backend", "cpu"], { stdout });
    const lines = new TextDecoder().decode(concat(chunks)).trimEnd().split("\n");
    assert.equal(lines.length, 5);
    for (const l of lines) assert.match(l, /^p:\d\.\d+(e-\d+)?,/);

    // expected: softmax of the model's logits at the prompt's last position
    const ids = Array.from(encodeOrdinary(prompt));
    const logits = tf.tidy(() => {
      const all = model.logits(tf.tensor2d([ids], [1, ids.length], "int32"));
      return tf.slice(all, [0, ids.length - 1, 0], [1, 1, all.shape[2]]).reshape([-1]);
    });
    const row = await readData(logits) as Float32Array;
    logits.dispose();
    const want = topTokens(row, 5, VOCAB_SIZE);
    assert.deepEqual(lines, want.map((t) => topLine(t, decode([t.id]))));
    for (let i = 1; i < want.length; i++) assert.ok(want[i].p <= want[i - 1].p);

    chunks.length = 0;
    await sample(["--ckpt", run, "--prompt", prompt, "--top", "3", "--format", "jsonl", "--backend", "cpu"], {
      stdout,
    });
    const rec = JSON.parse(new TextDecoder().decode(concat(chunks)));
    assert.deepEqual(rec.top.map((t: { token: number }) => t.token), want.slice(0, 3).map((t) => t.id));
    assert.ok(Math.abs(rec.top[0].p - want[0].p) < 1e-9);
  } finally {
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) out.set(c, off), off += c.length;
  return out;
}
