// Tests for `lmpipe study`: the report (every model, the study's reported numbers, figures linked),
// flag errors before any training, and the whole study on the fixture shards with the tiny preset
// (a short budget: the test checks the wiring and the report, not the losses).
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../cli.ts";
import { decodePng } from "../lib/plot/png.ts";
import { parseEval } from "../pipelines/study/mod.ts";
import {
  type ModelResult,
  renderMarkdown,
  STUDY_REPORTED,
  type StudyReport,
} from "../pipelines/study/report.ts";

Deno.test("study report: a row per model, failed runs say why, the study's numbers are quoted", () => {
  const models: ModelResult[] = [
    {
      model: "gpt",
      run_dir: "gpt",
      status: "ok",
      params: 1_234_567,
      flops_per_token: 7.4e6,
      steps: 40,
      tokens: 20480,
      train_loss: 7.123,
      val_loss: 7.456,
      tokens_per_s: 1024,
      peak_memory_bytes: 512e6,
    },
    {
      model: "pixel-cumsum",
      run_dir: "pixel-cumsum",
      status: "failed",
      error: "train exited with 3: bad shard\nmore",
    },
  ];
  const report: StudyReport = {
    lmpipe: "0.1.0",
    created: "2026-11-23T00:00:00Z",
    command: "lmpipe study --data d --budget 8s --out o",
    data: "d",
    preset: "tiny",
    budget_s: 8,
    backend: "cpu",
    seed: 1,
    eval_max_tokens: 4096,
    models,
    figures: {
      step_svg: "loss_step.svg",
      step_png: "loss_step.png",
      time_svg: "loss_time.svg",
      time_png: "loss_time.png",
    },
    study_reported: STUDY_REPORTED,
    notes: [],
  };
  const md = renderMarkdown(report);
  assert.match(
    md,
    /\| \[gpt\]\(gpt\/\) \| 1\.23M \| 7\.40 MFLOP \| 40 \| 20\.5k \| 1024 \| 7\.123 \| 7\.456 \| 512\.0 MB \| ok \|/,
  );
  assert.match(md, /\| \[pixel-cumsum\]\(pixel-cumsum\/\) .*\| failed: train exited with 3: bad shard \|/);
  for (const v of ["3.198", "6.46", "4.73", "4.5044"]) assert.ok(md.includes(v), v);
  assert.ok(md.includes("![loss against wall-clock time](loss_time.png)"));
  assert.ok(md.includes("lmpipe study --data d --budget 8s --out o"));
});

Deno.test("study: eval output is read from its JSON line", () => {
  assert.deepEqual(parseEval(`{"loss": 7.5, "tokens": 4096, "perplexity": 1808}\n`), {
    loss: 7.5,
    tokens: 4096,
  });
  assert.deepEqual(parseEval(`not json\n`), {});
});

Deno.test("study: bad flags fail before any training, naming the fix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(await main(["study", "--budget", "8s", "--out", dir]), 2); // no --data
    assert.equal(await main(["study", "--data", dir, "--budget", "soon", "--out", dir]), 2);
    assert.equal(
      await main(["study", "--data", dir, "--budget", "8s", "--out", dir, "--models", "gpt,rnn"]),
      2,
    );
    assert.equal(
      await main(["study", "--data", join(dir, "nope"), "--budget", "8s", "--out", join(dir, "o")]),
      3,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
