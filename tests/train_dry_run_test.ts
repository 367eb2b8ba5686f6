// `lmpipe train --dry-run`, run in-process on the cpu backend: the parameter counts per module equal the
// model's own parameter specs (the study's resnet image model included), the step memory is measured,
// and nothing is read from --data or written to --out; bad combinations are refused.
import assert from "node:assert/strict";
import { join } from "node:path";
import { EXIT } from "../lib/errors.ts";
import { initBackend } from "../lib/tensor/backend.ts";
import { pixelAttnFamily, pixelParamSpecs, validatePixelConfig } from "../lib/models/pixel.ts";
import { resolveFamilyConfig } from "../lib/models/config.ts";
import { specsSize } from "../lib/models/params.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { BIGRAM_FAMILY } from "./bigram_model.ts";
import { rejectsWith } from "./helpers_run.ts";

await initBackend("cpu", { quiet: true });

/** Runs `train` with a captured stdout; returns what it printed. */
async function captured(argv: string[], families = {}): Promise<string> {
  const chunks: Uint8Array[] = [];
  await train(argv, { families, signals: false, stdout: async (b) => void chunks.push(b.slice()) });
  return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
}

// small enough for seconds on 2 cores: the study's resnet structure at width 2, 8x8 images
const SETS = [
  "--set",
  "cnn=resnet",
  "--set",
  "cnnWidth=2",
  "--set",
  "vocabSize=96",
  "--set",
  "contextLength=8",
];

Deno.test("train --dry-run --json: parameters per top-level module and a measured step, nothing read or written", async () => {
  const dir = await Deno.makeTempDir();
  const out = join(dir, "run"), data = join(dir, "no-such-data");
  const text = await captured(
    ["--dry-run", "--json", "--model", "pixel-attn", "--preset", "tiny", ...SETS, "--backend", "cpu"].concat(
      ["--batch-size", "2", "--data", data, "--out", out],
    ),
    { "pixel-attn": pixelAttnFamily },
  );
  const r = JSON.parse(text);
  const config = resolveFamilyConfig(pixelAttnFamily, "tiny", [{
    fields: { cnn: "resnet", cnnWidth: 2, vocabSize: 96, contextLength: 8 },
  }]);
  validatePixelConfig(config);
  const specs = pixelParamSpecs(config);
  const sum = (prefix: string) => specsSize(specs.filter((s) => s.name.startsWith(prefix + ".")));
  assert.equal(r.dry_run, true);
  assert.equal(r.config.cnn, "resnet");
  assert.deepEqual(Object.keys(r.params.by_module), ["transformer", "map", "cnn", "ln_f", "lm_head"]);
  for (const m of Object.keys(r.params.by_module)) assert.equal(r.params.by_module[m], sum(m), m);
  assert.equal(r.params.total, specsSize(specs));
  assert.equal(r.params.by_module.lm_head, 96 * 32); // vocab x the resnet's 16 x cnnWidth features
  assert.equal(r.memory.batch_size, 2);
  assert.equal(r.memory.weights_bytes, 4 * r.params.total);
  assert.ok(r.memory.step_peak_bytes > r.memory.weights_bytes, `step peak ${r.memory.step_peak_bytes}`);
  assert.equal(await Deno.stat(out).then(() => true, () => false), false, "--out was created");
});

Deno.test("train --dry-run: a readable table without --json; no budget or data needed", async () => {
  const text = await captured(
    ["--dry-run", "--model", "bigram", "--backend", "cpu", "--batch-size", "3"],
    { bigram: BIGRAM_FAMILY },
  );
  assert.match(text, /^bigram\/tiny: [\d,]+ parameters/);
  assert.match(text, /\n {2}total +[\d,]+\n/);
  assert.match(text, /one step at 3 x \d+ tokens \(grad-accum 1, fp32\): peak [\d.]+ (KiB|MiB|GiB)/);
});

Deno.test("train --dry-run --batch-size auto: runs the search and reports the size and the limit", async () => {
  const text = await captured(
    ["--dry-run", "--json", "--model", "bigram", "--backend", "cpu", "--batch-size", "auto"].concat(
      ["--memory-limit", "64MiB"],
    ),
    { bigram: BIGRAM_FAMILY },
  );
  const r = JSON.parse(text);
  assert.equal(r.memory.memory_limit_bytes, 64 * 2 ** 20);
  assert.ok(r.memory.batch_size >= 1 && r.memory.step_peak_bytes <= 64 * 2 ** 20, JSON.stringify(r.memory));
});

Deno.test("train --dry-run refuses --resume, a bad config and --memory-limit without auto", async () => {
  const env = { bigram: BIGRAM_FAMILY };
  await rejectsWith(
    captured(["--dry-run", "--model", "bigram", "--resume"], env),
    EXIT.usage,
    /--dry-run.*--resume/,
  );
  await rejectsWith(
    captured(["--dry-run", "--model", "bigram", "--set", "noSuchField=1"], env),
    EXIT.usage,
    /unknown config field 'noSuchField'/,
  );
  await rejectsWith(
    captured(["--dry-run", "--model", "bigram", "--memory-limit", "1GiB"], env),
    EXIT.usage,
    /--memory-limit only applies to --batch-size auto/,
  );
});
