// Tests for `lmpipe study`: the report (every model, the study's reported numbers, figures linked),
// flag errors before any training, and the whole study on the fixture shards with the tiny preset
// (a short budget: the test checks the wiring and the report, not the losses).
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../cli.ts";
import { decodePng } from "../lib/plot/png.ts";
import { encodeU16, shardHeader } from "../lib/shard.ts";
import { ALL_MODELS, refuseOtherEvalSpellings, RESULT_FILE } from "../pipelines/study/mod.ts";
import { failureLine, parseEval } from "../pipelines/study/runner.ts";
import { presetFor } from "../pipelines/study/specs.ts";
import { familyNames } from "../lib/models/registry.ts";
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
      peak_tensor_bytes: 300e6,
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
    /\| 1 \| \[gpt\]\(gpt\/\) \| 1\.23M \| 7\.40 MFLOP \| 40 \| 20\.5k \| 1024 \| 7\.123 \| 7\.456 \| 512\.0 MB \| 300\.0 MB \| ok \|/,
  );
  assert.match(
    md,
    /\| – \| \[pixel-cumsum\]\(pixel-cumsum\/\) .*\| failed: train exited with 3: bad shard \|/,
  );
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

Deno.test("study: one spelling of the eval option; the others name it", async () => {
  for (const flag of ["--max-tokens", "--eval-max-tokens", "--eval_tokens", "--evalTokens=5"]) {
    assert.throws(
      () => refuseOtherEvalSpellings(["--data", "d", flag, "5"]),
      /not a study option.*set with --eval-tokens N/,
    );
    assert.equal(await main(["study", "--data", "d", "--budget", "8s", "--out", "o", flag, "5"]), 2);
  }
  refuseOtherEvalSpellings(["--eval-tokens", "5"]); // the one spelling passes
  // the study trains the registry's models, except llama (gpt's variant, trained when --models names it)
  assert.deepEqual([...ALL_MODELS], familyNames().filter((m) => m !== "llama"));
});

Deno.test("study --only / --merge: one job per model, then one report from their run folders", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const study = {
      data: "d",
      budget: 60,
      preset: "tiny",
      backend: "wasm",
      seed: 1,
      evalTokens: 1024,
      command: "x",
    };
    const put = async (folder: string, model: string, val: number, over: Record<string, unknown> = {}) => {
      await Deno.mkdir(folder, { recursive: true });
      const result = { model, run_dir: model, status: "ok", val_loss: val, steps: 10 };
      await Deno.writeTextFile(
        join(folder, RESULT_FILE),
        JSON.stringify({ study: { ...study, ...over }, result }),
      );
    };
    const out = join(dir, "study"), elsewhere = join(dir, "node7", "pixel-attn");
    await put(join(out, "pixel-cumsum"), "pixel-cumsum", 7.5);
    await put(join(out, "gpt"), "gpt", 6.5);
    await put(elsewhere, "pixel-attn", 7.0);
    assert.equal(await main(["study", "--merge", "--out", out, elsewhere]), 0);
    const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
    assert.deepEqual(report.models.map((m: ModelResult) => m.model), ["gpt", "pixel-cumsum", "pixel-attn"]);
    assert.deepEqual(report.models.map((m: ModelResult) => m.run_dir), [
      "gpt",
      "pixel-cumsum",
      "../node7/pixel-attn",
    ]);
    assert.equal(report.budget_s, 60);
    assert.ok(
      (await Deno.readTextFile(join(out, "report.md"))).includes("| [pixel-attn](../node7/pixel-attn/) |"),
    );
    // a run of another setting is refused, naming both folders
    await put(join(dir, "other", "pixel-attn-wide"), "pixel-attn-wide", 7, { budget: 30 });
    assert.equal(await main(["study", "--merge", "--out", out, join(dir, "other")]), 3);
    assert.equal(await main(["study", "--merge", "--out", join(dir, "empty")]), 3);
    // --only takes one known model and not --models as well
    const base = ["study", "--data", out, "--budget", "8s", "--out", out];
    assert.equal(await main([...base, "--only", "rnn"]), 2);
    assert.equal(await main([...base, "--only", "gpt,pixel-attn"]), 2);
    assert.equal(await main([...base, "--only", "gpt", "--models", "gpt"]), 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("study: the study-size preset has each family's name", () => {
  assert.equal(presetFor("gpt", "study"), "study"); // the study's control: gpt2 with bias=False
  assert.equal(presetFor("gpt", "gpt2"), "gpt2");
  assert.equal(presetFor("pixel-attn", "gpt2"), "study");
  assert.equal(presetFor("pixel-attn", "tiny"), "tiny");
});

/** The fixture shards, or (before they exist) a small train/val pair of token shards written here. */
async function fixtureData(tmp: string): Promise<string> {
  const fixtures = new URL("../fixtures/shards", import.meta.url).pathname;
  try {
    if ((await Deno.stat(fixtures)).isDirectory) return fixtures;
  } catch { /* not there yet: make shards */ }
  const dir = join(tmp, "shards");
  await Deno.mkdir(dir);
  let x = 12345;
  for (const [name, n] of [["train_000000.bin", 40000], ["val_000000.bin", 8000]] as const) {
    const t = new Uint16Array(n);
    for (let i = 0; i < n; i++) t[i] = (x = (x * 1103515245 + 12345) % 2147483648) % 2000;
    const bytes = new Uint8Array(1024 + 2 * n);
    bytes.set(shardHeader(n)), bytes.set(encodeU16(t), 1024);
    await Deno.writeFile(join(dir, name), bytes);
  }
  return dir;
}

Deno.test({
  name: "lmpipe study --preset tiny: trains all four models for the budget and writes the report",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir();
    try {
      const data = await fixtureData(tmp);
      const out = join(tmp, "study");
      const args = [
        "study",
        "--data",
        data,
        "--preset",
        "tiny",
        "--budget",
        "2s",
        "--out",
        out,
        "--backend",
        "wasm",
        "--eval-tokens",
        "1024",
        "--",
        "--batch-size",
        "2",
        "--eval-iters",
        "1",
      ];
      assert.equal(await main(args), 0);
      const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
      assert.deepEqual(report.models.map((m: ModelResult) => m.model), ALL_MODELS);
      for (const m of report.models as ModelResult[]) {
        assert.equal(m.status, "ok", `${m.model}: ${m.error}`);
        assert.ok(
          m.steps! >= 1 && m.tokens! >= m.steps! * 2 * 64,
          `${m.model}: ${m.steps} steps, ${m.tokens} tokens`,
        );
        assert.ok(
          m.params! > 1e6 && m.flops_per_token! > m.params!,
          `${m.model}: ${m.params} params, ${m.flops_per_token} FLOPs`,
        );
        assert.ok(m.val_loss! > 5 && m.val_loss! < 12, `${m.model}: val loss ${m.val_loss}`);
        assert.ok(m.train_loss! > 5 && m.train_loss! < 12);
        assert.ok(m.tokens_per_s! > 0);
        assert.ok(m.peak_tensor_bytes! > 1e6, `${m.model}: peak tensor bytes ${m.peak_tensor_bytes}`);
        assert.equal(m.val_tokens, 1024);
        // each run is an ordinary, resumable train folder with its own step log
        for (const f of ["config.json", "model.safetensors", "state.json", "log.jsonl"]) {
          await Deno.stat(join(out, m.model, f));
        }
      }
      const md = await Deno.readTextFile(join(out, "report.md"));
      for (const m of ALL_MODELS) assert.ok(md.includes(`| [${m}](${m}/) |`), m);
      assert.ok(md.includes("3.198"));
      const svg = await Deno.readTextFile(join(out, "loss_time.svg"));
      assert.equal(svg.match(/<path class="train"/g)?.length, 4);
      assert.ok(svg.includes("budget 2.0s"));
      const png = decodePng(await Deno.readFile(join(out, "loss_step.png")));
      assert.deepEqual([png.width, png.height], [900, 520]);

      // running it again reuses the finished runs instead of training them again
      const before = await Deno.readTextFile(join(out, "gpt", "log.jsonl"));
      assert.equal(await main([...args.slice(0, args.indexOf("--")), "--models", "gpt"]), 0);
      assert.equal(await Deno.readTextFile(join(out, "gpt", "log.jsonl")), before);
      const again = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
      assert.equal(again.models[0].resumed, true);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test("study: a failed child is summed up by its error line, not its stack", () => {
  const stderr =
    "step 1 | loss 10\nlmpipe train: internal error (please report it):\nRangeError: invalid RNG state\n    at new Rng (rng.ts:32:15)\n    at main (cli.ts:88:5)\n";
  assert.equal(failureLine(stderr), "RangeError: invalid RNG state");
  assert.equal(failureLine("error: data/x: no val shard\n"), "error: data/x: no val shard");
  assert.equal(failureLine("killed\n"), "killed");
});
