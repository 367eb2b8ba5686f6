// `lmpipe sample`: the same seed gives the same text, cached (key/value) and uncached generation give
// the same logits and tokens on the tiny GPT, prompts longer than the context are cropped from the left
// with a warning (through the real CLI), and the sampling rules (greedy, top-k, top-p) hold.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend } from "../lib/tensor/backend.ts";
import { saveCheckpoint } from "../lib/checkpoint.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { Rng } from "../lib/rng.ts";
import { run as sample } from "../pipelines/sample/mod.ts";
import { cachedStepper, chooseToken, uncachedStepper } from "../pipelines/sample/generate.ts";
import { kthLargest } from "../lib/top_k.ts";
import { maxRelErr } from "../lib/tensor/testing.ts";
import { BIGRAM_FAMILY, BigramModel } from "./bigram_model.ts";

await initBackend("cpu", { quiet: true });
const state = {
  step: 0,
  optimizerStep: 0,
  lossScale: { scale: 1, cleanSteps: 0, skippedSteps: 0 },
  rng: { s: [1, 2, 3, 4] as [number, number, number, number] },
  sampler: {},
  elapsedS: 0,
  tokensSeen: 0,
};

const bigramRun = await Deno.makeTempDir({ prefix: "lmpipe-sample-bigram-" });
{
  const config = { ...BIGRAM_FAMILY.presets.tiny };
  const m = new BigramModel(config as never, 5);
  await saveCheckpoint(bigramRun, { params: m.params, config: { model: config }, state });
  m.dispose();
}
const gptConfig = resolveConfig("gpt", "tiny", { contextLength: 24 });
const gptRun = await Deno.makeTempDir({ prefix: "lmpipe-sample-gpt-" });
const gpt = createModel(gptConfig, 3);
await saveCheckpoint(gptRun, { params: gpt.params, config: { model: gptConfig }, state });

async function runSample(args: string[], families?: Record<string, typeof BIGRAM_FAMILY>): Promise<string> {
  let out = "";
  await sample(["--backend", "cpu", ...args], {
    families,
    stdout: (b) => Promise.resolve(void (out += new TextDecoder().decode(b))),
  });
  return out;
}

Deno.test("sample: a seed fixes the text; another seed changes it; formats", async () => {
  const fam = { bigram: BIGRAM_FAMILY };
  const args = [
    "--ckpt",
    bigramRun,
    "--prompt-ids",
    "1,2",
    "--max-new-tokens",
    "30",
    "--temperature",
    "1",
    "--top-k",
    "0",
  ];
  const a = await runSample([...args, "--seed", "1"], fam);
  assert.equal(await runSample([...args, "--seed", "1"], fam), a);
  assert.notEqual(await runSample([...args, "--seed", "2"], fam), a);
  assert.ok(a.startsWith('"#'), "text format starts with the prompt (ids 1, 2)");
  const toks = await runSample([...args, "--seed", "1", "--format", "tokens", "--num-samples", "2"], fam);
  const lines = toks.trim().split("\n");
  assert.equal(lines.length, 2);
  assert.equal(lines[0].split(" ").length, 30);
  assert.ok(lines[0].split(" ").every((t) => Number(t) < 64));
  const j = JSON.parse(await runSample([...args, "--seed", "1", "--format", "jsonl"], fam));
  assert.equal(j.tokens.length, 30);
  assert.equal('"#' + j.text, a.slice(0, -1));
});

Deno.test("sample: cached and uncached generation give the same logits and tokens (tiny GPT)", async () => {
  const prompt = [464, 3290, 318, 257];
  const cached = cachedStepper(gpt), plain = uncachedStepper(gpt);
  const seq = [...prompt];
  const rng = new Rng(9);
  for (let i = 0; i < 16; i++) { // crosses nothing: 20 tokens within the context of 24
    const lc = await cached.next(seq), lu = await plain.next(seq);
    assert.ok(maxRelErr(lc, lu) < 1e-4, `step ${i}: rel err ${maxRelErr(lc, lu)}`);
    seq.push(chooseToken(lu, { temperature: 1, topK: 50, topP: 0.95, allowedVocab: 50257 }, rng));
  }
  cached.dispose();
  const args = [
    "--ckpt",
    gptRun,
    "--prompt",
    "The cat",
    "--max-new-tokens",
    "12",
    "--seed",
    "4",
    "--format",
    "tokens",
  ];
  assert.equal(await runSample(args), await runSample([...args, "--no-cache"]));
});

Deno.test("sample: a prompt longer than the context is cropped from the left with a warning (CLI)", async () => {
  const prompt =
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " +
    "seventeen eighteen nineteen twenty twenty-one ".repeat(2);
  const p = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      join(import.meta.dirname!, "..", "cli.ts"),
      "sample",
      "--ckpt",
      gptRun,
      "--backend",
      "cpu",
      "--prompt",
      prompt,
      "--max-new-tokens",
      "3",
      "--format",
      "jsonl",
    ],
    stdout: "piped",
    stderr: "piped",
  });
  const r = await p.output();
  const err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, err);
  assert.match(
    err,
    /warning: the prompt has \d+ tokens, more than the model's context \(24\); using its last 24 tokens/,
  );
  const j = JSON.parse(new TextDecoder().decode(r.stdout));
  assert.equal(j.prompt_tokens, 24);
  assert.equal(j.tokens.length, 3);
});

Deno.test("sampling rules: greedy, top-k and top-p restrict the draw; padded ids never drawn", () => {
  const logits = Float32Array.from([1, 5, 3, 4, 2, 9]); // id 5 lies beyond the allowed vocabulary
  const rng = new Rng(1);
  const o = { temperature: 0, topK: 0, topP: 1, allowedVocab: 5 };
  assert.equal(chooseToken(logits, o, rng), 1);
  const seen = new Set<number>();
  for (let i = 0; i < 300; i++) seen.add(chooseToken(logits, { ...o, temperature: 1, topK: 2 }, rng));
  assert.deepEqual([...seen].sort(), [1, 3]);
  seen.clear();
  // probabilities ∝ e^5, e^4, e^3, ...: the top two hold ~0.90 of the mass, so p=0.85 keeps two
  for (let i = 0; i < 300; i++) seen.add(chooseToken(logits, { ...o, temperature: 1, topP: 0.85 }, rng));
  assert.deepEqual([...seen].sort(), [1, 3]);
  seen.clear();
  for (let i = 0; i < 2000; i++) seen.add(chooseToken(logits, { ...o, temperature: 1 }, rng));
  assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4]);
});

Deno.test("top-k threshold: the heap selection equals the k-th of a sorted copy (ties, k = 1 .. V)", () => {
  const rng = new Rng(9);
  for (const [n, levels] of [[50257, 0], [1000, 7], [37, 3], [5, 0]]) {
    // levels > 0: only a few distinct values, so the k-th largest sits inside a run of ties
    const v = Float32Array.from(
      { length: n },
      () => levels ? Math.floor(rng.next() * levels) : rng.next() * 20 - 10,
    );
    const sorted = v.slice().sort();
    for (const k of [1, 2, 3, 5, 40, 200, n - 1, n]) {
      if (k < 1 || k > n) continue;
      assert.equal(kthLargest(v, n, k), sorted[n - k], `n ${n}, k ${k}`);
    }
  }
  // only the first n values count
  assert.equal(kthLargest(Float32Array.from([1, 2, 3, 100]), 3, 1), 3);
});
