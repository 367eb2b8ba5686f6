// `lmpipe study` over model specs and sizes, without training: the spec grammar and its errors, run folder
// names, the check of every spec at every size before training, the runs and train commands a study makes,
// the compute-scaling summary (fits, the chart, each variant's gap to the first spec) and its report, and
// --merge of separate jobs' results with specs and sizes.
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../cli.ts";
import { EXIT } from "../lib/errors.ts";
import { predictLoss } from "../lib/scaling_fit.ts";
import { checkSpecs, parseSpecList, runFolder, specFolder } from "../pipelines/study/specs.ts";
import { type StudyOptions, studyRuns, trainArgs } from "../pipelines/study/runner.ts";
import { advantages, scalingChart, scalingEntries, trainingCompute } from "../pipelines/study/scaling.ts";
import {
  type ModelResult,
  ranked,
  renderMarkdown,
  STUDY_REPORTED,
  trend,
} from "../pipelines/study/report.ts";
import { RESULT_FILE } from "../pipelines/study/mod.ts";

Deno.test("study specs: FAMILY[:KEY=VALUE...] lists, folder names, and errors that show the fix", () => {
  const specs = parseSpecList("models", " gpt , gpt:pos=rope, gpt:qkv=separate:pos=rope,pixel-attn:nHead=4 ");
  assert.deepEqual(specs.map((s) => s.name), ["gpt", "gpt", "gpt", "pixel-attn"]);
  assert.deepEqual(specs[2].sets, ["qkv=separate", "pos=rope"]);
  assert.deepEqual(specs.map((s) => s.text), [
    "gpt",
    "gpt:pos=rope",
    "gpt:qkv=separate:pos=rope",
    "pixel-attn:nHead=4",
  ]);
  assert.deepEqual(specs.map(specFolder), [
    "gpt",
    "gpt+pos=rope",
    "gpt+pos=rope+qkv=separate",
    "pixel-attn+nHead=4",
  ]);
  // anything but letters, digits, '.', '_', '-' in a key or value is %XX: no '/', ':', spaces or quotes
  assert.equal(specFolder({ text: "", name: "gpt", sets: ["widths=[1 2]/x"] }), "gpt+widths=%5B1%202%5D%2Fx");
  const size = parseSpecList("sizes", "tiny:nLayer=4")[0];
  assert.equal(runFolder(specs[1], size), "gpt+pos=rope@tiny+nLayer=4");
  assert.equal(runFolder(specs[1], null), "gpt+pos=rope");

  const bad: [string, RegExp][] = [
    ["gpt:pos=rope,qkv=separate", /'qkv=separate' does not start with a name; .*'gpt:pos=rope:qkv=separate'/],
    ["gpt,,pixel-attn", /empty item \(position 2\)/],
    ["gpt:pos", /'pos' is not KEY=VALUE \(e\.g\. gpt:nLayer=4\)/],
    ["gpt:pos=", /'pos=' is not KEY=VALUE/],
    ["gpt:pos=rope:pos=alibi", /sets 'pos' twice/],
    ["gpt:a=1:b=2,gpt:b=2:a=1", /lists 'gpt:b=2:a=1' twice \(keys in any order are one spec\)/],
    [" , ", /--models is empty/],
  ];
  for (const [list, re] of bad) assert.throws(() => parseSpecList("models", list), re, list);
});

Deno.test("study specs: every spec at every size is checked against its family before training", async () => {
  const sizes = parseSpecList("sizes", "tiny,tiny:nEmbd=32");
  await checkSpecs(parseSpecList("models", "gpt,gpt:nHead=4,pixel-attn"), sizes);
  await assert.rejects(
    checkSpecs(parseSpecList("models", "gpt,rnn:x=1"), sizes),
    /unknown model 'rnn' in 'rnn:x=1'; choose from gpt, /,
  );
  await assert.rejects(
    checkSpecs(parseSpecList("models", "gpt:warp=9"), sizes),
    /model 'gpt:warp=9' at size 'tiny': --set warp=9: unknown config field 'warp' for model 'gpt'/,
  );
  await assert.rejects(
    checkSpecs(parseSpecList("models", "gpt"), parseSpecList("sizes", "tiny,huge")),
    /at size 'huge': .*unknown preset 'huge'/,
  );
  // through the CLI: usage errors (exit 2) before the data is even looked at
  const base = ["study", "--data", "nowhere", "--out", "nowhere", "--budget-tokens", "1k"];
  assert.equal(await main([...base, "--models", "gpt:warp=9"]), EXIT.usage);
  assert.equal(await main([...base, "--models", "gpt", "--sizes", "tiny", "--preset", "small"]), EXIT.usage);
  assert.equal(await main(["study", "--data", "d", "--out", "o", "--models", "gpt"]), EXIT.usage); // no budget
  assert.equal(await main([...base, "--only", "gpt:nLayer=1,gpt"]), EXIT.usage);
});

Deno.test("study runs: each size, each spec; train gets the family, the preset, size then spec --sets, the budget", () => {
  const o: StudyOptions = {
    data: "shards",
    budget: null,
    budgetTokens: 5000,
    out: "s",
    models: parseSpecList("models", "gpt:nHead=1,pixel-attn"),
    sizes: parseSpecList("sizes", "study:nLayer=2,tiny"),
    preset: "small",
    backend: "wasm",
    seed: 3,
    evalTokens: 0,
    force: false,
    trainExtra: ["--batch-size", "2"],
  };
  const runs = studyRuns(o);
  assert.deepEqual(runs.map((r) => r.dir), [
    "gpt+nHead=1@study+nLayer=2",
    "pixel-attn@study+nLayer=2",
    "gpt+nHead=1@tiny",
    "pixel-attn@tiny",
  ]);
  assert.deepEqual(runs.map((r) => r.label).slice(0, 2), [
    "gpt:nHead=1 @ study:nLayer=2",
    "pixel-attn @ study:nLayer=2",
  ]);
  assert.deepEqual(trainArgs(runs[0], o, "s/x", false), [
    "train",
    "--model",
    "gpt",
    "--preset",
    "study", // gpt's study preset: the study's control (gpt2 with bias=False)
    "--set",
    "nLayer=2",
    "--set",
    "nHead=1",
    "--data",
    "shards",
    "--backend",
    "wasm",
    "--seed",
    "3",
    "--max-tokens",
    "5000",
    "--out",
    "s/x",
    "--log",
    "s/x/log.jsonl",
    "--batch-size",
    "2",
  ]);
  const resumed = trainArgs(runs[0], { ...o, budget: 90 }, "s/x", true);
  assert.ok(!resumed.includes("--set"), "a resumed run keeps its checkpoint's config");
  assert.deepEqual(resumed.slice(resumed.indexOf("--max-time"), resumed.indexOf("--max-time") + 4), [
    "--max-time",
    "90s",
    "--max-tokens",
    "5000",
  ]);
  // no --sizes: the preset, and folders named by the spec alone (the study's folders as before)
  assert.deepEqual(studyRuns({ ...o, sizes: null }).map((r) => [r.dir, r.label, r.size.name]), [
    ["gpt+nHead=1", "gpt:nHead=1", "small"],
    ["pixel-attn", "pixel-attn", "small"],
  ]);
});

const LAW = { gpt: { a: 60, b: 0.12, c: 2 }, "gpt:pos=rope": { a: 50, b: 0.11, c: 2.1 } };
const FLOPS = [1e6, 4e6, 1.6e7, 6.4e7]; // FLOPs per token of the four sizes
const NOISE = [0.004, -0.006, 0.005, -0.003];

/** Finished runs of two specs at four sizes whose losses follow LAW (with a little noise). */
function syntheticResults(): ModelResult[] {
  return Object.entries(LAW).flatMap(([spec, law]) =>
    FLOPS.map((f, i) => {
      const tokens = 1e6;
      return {
        model: `${spec} @ s${i}`,
        spec,
        size: `s${i}`,
        run_dir: `${spec.replace(":", "+")}@s${i}`,
        status: "ok" as const,
        flops_per_token: f,
        params: f / 6,
        tokens,
        val_loss: predictLoss(law, f * tokens) * (1 + NOISE[i]),
      };
    })
  );
}

Deno.test("study scaling: per-spec fits from FLOPs/token x tokens, a chart with bands, the variant's gap", () => {
  assert.equal(
    trainingCompute({ model: "m", run_dir: "m", status: "ok", flops_per_token: 10, tokens: 7 }),
    70,
  );
  assert.equal(trainingCompute({ model: "m", run_dir: "m", status: "ok", params: 10, tokens: 7 }), 420);
  assert.equal(trainingCompute({ model: "m", run_dir: "m", status: "ok", params: 10 }), undefined);
  const results = syntheticResults();
  results.push({ model: "gpt @ s9", spec: "gpt", size: "s9", run_dir: "x", status: "failed", error: "oom" });
  const entries = scalingEntries(results);
  assert.deepEqual(entries.map((e) => [e.model, e.points.length]), [["gpt", 4], ["gpt:pos=rope", 4]]);
  for (const e of entries) {
    const law = LAW[e.model as keyof typeof LAW];
    assert.ok(e.fit && e.fit.stderr && e.fit.covariance, e.error);
    // the fitted law stays within a few per cent of the true one over the measured range
    for (const f of FLOPS) {
      assert.ok(Math.abs(predictLoss(e.fit, f * 1e6) / predictLoss(law, f * 1e6) - 1) < 0.02);
    }
  }
  const chart = scalingChart(entries, "t");
  assert.equal(chart.logX, true);
  assert.deepEqual(chart.series.map((s) => s.kind), [
    "points",
    "fit",
    "band",
    "band",
    "points",
    "fit",
    "band",
    "band",
  ]);
  const [adv] = advantages(entries);
  assert.equal(adv.model, "gpt:pos=rope");
  assert.equal(adv.baseline, "gpt");
  assert.deepEqual([adv.lowCompute, adv.highCompute], [1e12, 6.4e13]);
  const gap = (c: number) => predictLoss(entries[1].fit!, c) - predictLoss(entries[0].fit!, c);
  assert.ok(Math.abs(adv.atLow - gap(1e12)) < 1e-12 && Math.abs(adv.atHigh - gap(6.4e13)) < 1e-12);
  // the true laws: rope is worse by 0.317 at 1e12 FLOPs and by 0.295 at 6.4e13: a deficit that shrinks
  const trueGap = (c: number) => predictLoss(LAW["gpt:pos=rope"], c) - predictLoss(LAW.gpt, c);
  assert.ok(Math.abs(adv.atLow - trueGap(1e12)) < 0.05 && Math.abs(adv.atHigh - trueGap(6.4e13)) < 0.05);
  assert.equal(trend(adv), "deficit shrinks with compute");
  assert.equal(trend({ ...adv, atLow: -0.1, atHigh: -0.2 }), "advantage grows with compute");
  assert.equal(trend({ ...adv, atLow: -0.2, atHigh: -0.1 }), "advantage shrinks with compute");
  assert.equal(trend({ ...adv, atLow: 0.2, atHigh: 0.1 }), "deficit shrinks with compute");
  assert.equal(trend({ ...adv, atLow: 0.1, atHigh: -0.1 }), "worse at low compute, better at high");
  // a spec with too few sizes says why, and is left out of the gaps
  const two = scalingEntries(results.filter((r) => r.spec === "gpt" || r.size === "s0" || r.size === "s1"));
  assert.match(two[1].error!, /needs points at 3 or more compute values \(got 2\)/);
  assert.deepEqual(advantages(two), []);
});

Deno.test("study report: ranked per size, the fit table with errors, the points, the gaps", () => {
  const results = syntheticResults();
  const order = ranked([...results, { model: "x", run_dir: "x", status: "failed" }]);
  assert.equal(order[order.length - 1].model, "x", "failed runs last");
  for (let i = 1; i < results.length; i++) assert.ok(order[i].val_loss! >= order[i - 1].val_loss!);
  const entries = scalingEntries(results);
  const md = renderMarkdown({
    lmpipe: "0",
    created: "now",
    command: "lmpipe study ...",
    data: "d",
    preset: "small",
    budget_s: null,
    budget_tokens: 1e6,
    sizes: ["s0", "s1", "s2", "s3"],
    backend: "wasm",
    seed: 1,
    eval_max_tokens: 0,
    models: results,
    figures: {
      step_svg: "loss_step.svg",
      step_png: "loss_step.png",
      time_svg: "loss_time.svg",
      time_png: "loss_time.png",
      curves_svg: "loss_curves.svg",
      curves_png: "loss_curves.png",
      scaling_svg: "scaling.svg",
      scaling_png: "scaling.png",
    },
    scaling: entries,
    advantages: advantages(entries),
    study_reported: STUDY_REPORTED,
    notes: [],
  });
  assert.match(md, /the same number of tokens, \*\*1\.00M\*\* training tokens/);
  for (const s of ["s0", "s1", "s2", "s3"]) assert.ok(md.includes(`### Size ${s}`), s);
  assert.ok(md.includes("![loss against tokens seen and against wall-clock time](loss_curves.png)"));
  assert.ok(md.includes("![validation loss against training FLOPs](scaling.png)"));
  assert.match(
    md,
    /\| gpt \| 4 \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+e-\d+ \| ok \|/,
  );
  assert.match(
    md,
    /\| gpt:pos=rope \| gpt \| 1\.00 TFLOP \| [-+]\d\.\d{4} \| 64\.0 TFLOP \| [-+]\d\.\d{4} \| [a-z ,]+ \|/,
  );
  assert.match(md, /\| gpt:pos=rope \| s3 \| 64\.0 TFLOP \| \d+\.\d{3} \|/);
});

Deno.test("study --merge: specs and sizes from separate jobs make one report with the fits", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const study = {
      data: "d",
      budget: null,
      budgetTokens: 1e6,
      preset: "small",
      sizes: ["s0", "s1", "s2", "s3"],
      backend: "wasm",
      seed: 1,
      evalTokens: 0,
      command: "x",
    };
    const out = join(dir, "study");
    const results = syntheticResults();
    for (const [i, r] of results.entries()) {
      // half of the jobs wrote into the study folder, the other half on another node
      const folder = i % 2 ? join(out, r.run_dir) : join(dir, "node2", r.run_dir);
      await Deno.mkdir(folder, { recursive: true });
      // each job listed only its own size (one Slurm task per spec and size)
      const job = { ...study, sizes: [r.size!] };
      await Deno.writeTextFile(join(folder, RESULT_FILE), JSON.stringify({ study: job, result: r }));
    }
    assert.equal(await main(["study", "--merge", "--out", out, join(dir, "node2")]), 0);
    const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
    assert.deepEqual(report.sizes, ["s0", "s1", "s2", "s3"]);
    assert.equal(report.models.length, 8);
    assert.deepEqual(report.models.slice(0, 2).map((m: ModelResult) => m.model), [
      "gpt @ s0",
      "gpt:pos=rope @ s0",
    ]);
    assert.deepEqual(
      report.scaling.map((e: { model: string; points: unknown[] }) => [e.model, e.points.length]),
      [
        ["gpt", 4],
        ["gpt:pos=rope", 4],
      ],
    );
    assert.equal(report.advantages.length, 1);
    const md = await Deno.readTextFile(join(out, "report.md"));
    assert.ok(md.includes("## Compute scaling"));
    assert.ok((await Deno.readTextFile(join(out, "scaling.svg"))).includes(`<path class="fit"`));
    // a job under a wall-clock budget does not merge with token-budget ones
    const other = join(dir, "other", "gpt@s9");
    await Deno.mkdir(other, { recursive: true });
    await Deno.writeTextFile(
      join(other, RESULT_FILE),
      JSON.stringify({
        study: { ...study, budget: 60 },
        result: { ...results[0], model: "gpt @ s9", size: "s9" },
      }),
    );
    assert.equal(await main(["study", "--merge", "--out", out, join(dir, "other")]), EXIT.input);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
