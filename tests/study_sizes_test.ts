// `lmpipe study --sizes` end to end on the fixture shards: one model spec (with a config change of its own)
// at four small widths, each trained for the same few hundred tokens and evaluated, and the report's
// compute-scaling fit with its error band. Tiny models and budgets keep it under a minute; the losses
// (still near ln 50257) fall with width because wider logits move faster at a high learning rate.
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../cli.ts";
import { decodePng } from "../lib/plot/png.ts";
import type { ModelResult } from "../pipelines/study/report.ts";

const SHAPE = "nHead=1:nLayer=1:contextLength=16";
const SIZES = [8, 16, 32, 64].map((w) => `tiny:nEmbd=${w}:${SHAPE}`);

Deno.test({
  name: "lmpipe study --sizes: four widths for 256 tokens each, a fitted L(C) = a*C^-b + c in the report",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "lmpipe-study-sizes-" });
    try {
      const args = [
        "study",
        "--data",
        "fixtures/shards",
        "--out",
        out,
        "--backend",
        "wasm",
        "--models",
        "gpt:bias=false",
        "--sizes",
        SIZES.join(","),
        "--budget-tokens",
        "256",
        "--eval-tokens",
        "512",
        "--",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--eval-iters",
        "1",
      ];
      assert.equal(await main(args), 0);
      const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
      assert.deepEqual(report.sizes, SIZES);
      const models = report.models as ModelResult[];
      assert.deepEqual(
        models.map((m) => m.run_dir),
        [8, 16, 32, 64].map((w) => `gpt+bias=false@tiny+contextLength=16+nEmbd=${w}+nHead=1+nLayer=1`),
      );
      for (const m of models) {
        assert.equal(m.status, "ok", `${m.model}: ${m.error}`);
        assert.equal(m.tokens, 256, "8 steps of 2 x 16 tokens");
        assert.equal(m.compute_flops, m.flops_per_token! * 256);
        const config = JSON.parse(await Deno.readTextFile(join(out, m.run_dir, "config.json")));
        assert.equal(config.model.bias, false, "the spec's change reached train");
        assert.equal(config.model.nEmbd, Number(/nEmbd=(\d+)/.exec(m.size!)![1]), "and the size's");
      }
      const [entry] = report.scaling;
      assert.equal(entry.model, "gpt:bias=false");
      assert.equal(entry.points.length, 4);
      assert.ok(entry.fit, `no fit: ${entry.error}`);
      assert.ok(entry.fit.b > 0 && entry.fit.c >= 0 && entry.fit.stderr && entry.fit.covariance);
      const md = await Deno.readTextFile(join(out, "report.md"));
      assert.ok(md.includes("## Compute scaling"));
      assert.match(
        md,
        /\| gpt:bias=false \| 4 \| [\d.e+]+ ± [\d.e+]+ \| [\d.e+-]+ ± [\d.e+]+ \| [\d.e+-]+ ± [\d.e+]+ \| .* \| ok \|/,
      );
      const svg = await Deno.readTextFile(join(out, "scaling.svg"));
      assert.equal(svg.match(/<path class="fit"/g)?.length, 1);
      assert.equal(svg.match(/<path class="band"/g)?.length, 2);
      assert.equal(svg.match(/<circle /g)?.length, 4);
      const curves = decodePng(await Deno.readFile(join(out, "loss_curves.png")));
      assert.deepEqual([curves.width, curves.height], [1520, 520]);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
