// Limits and output folders a user can get wrong: non-positive budgets and counts are usage errors
// (exit 2) before any work; a `tokenize --part` into a folder holding a complete tokenization (or a
// whole run into a folder of parts) is refused, since the folder would hold documents twice; a folder
// holding only a meta.json is a tokenization like any other and is not overwritten without --force.
import { join } from "node:path";
import { EXIT } from "../lib/errors.ts";
import { run as evaluate } from "../pipelines/eval/mod.ts";
import { run as sample } from "../pipelines/sample/mod.ts";
import { run as study } from "../pipelines/study/mod.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { BIGRAM_FAMILY } from "./bigram_model.ts";
import { BIGRAM_ENV, toyData } from "./helpers_bigram_run.ts";
import { rejectsWith, saveUntrainedRun } from "./helpers_run.ts";
import { CORPUS, FIXTURE_OPTS, tmp, tok } from "./helpers_tokenize.ts";
import { BigramModel } from "./bigram_model.ts";
import { initBackend } from "../lib/tensor/backend.ts";

await initBackend("cpu", { quiet: true });
const env = BIGRAM_ENV;
const data = await toyData(2000, 500);
const run = await Deno.makeTempDir({ prefix: "lmpipe-rel-limits-run-" });
await saveUntrainedRun(run, new BigramModel({ ...BIGRAM_FAMILY.presets.tiny } as never, 1));
const TRAIN = ["--model", "bigram", "--data", data, "--backend", "cpu", "--batch-size", "2"];

Deno.test("limits: --max-time 0 (in any spelling) is a usage error", async () => {
  for (const t of ["0", "0s", "0m0s", "0.0"]) {
    const out = await Deno.makeTempDir();
    await rejectsWith(
      train([...TRAIN, "--max-time", t, "--out", out], env),
      EXIT.usage,
      /--max-time must be more than 0 seconds/,
    );
  }
  await rejectsWith(
    study(["--budget", "0s", "--data", data, "--out", await Deno.makeTempDir()]),
    EXIT.usage,
    /--budget must be more than 0 seconds/,
  );
});

Deno.test("limits: --top 0 and --max-tokens 0 are usage errors", async () => {
  await rejectsWith(
    sample(["--ckpt", run, "--top", "0", "--backend", "cpu"], env),
    EXIT.usage,
    /--top must be >= 1/,
  );
  await rejectsWith(
    evaluate(["--ckpt", run, "--data", data, "--max-tokens", "0", "--backend", "cpu"], env),
    EXIT.usage,
    /--max-tokens must be at least 1/,
  );
  await rejectsWith(tok([CORPUS, "--out", "-", "--shard-tokens", "0.2"]), EXIT.usage, /--shard-tokens/);
});

Deno.test("tokenize: --part i/N into a folder holding a complete tokenization is refused, and the reverse", async () => {
  const whole = await tmp();
  await tok([CORPUS, "--out", whole, ...FIXTURE_OPTS, "--workers", "0"]);
  for (const force of [[], ["--force"]]) {
    await rejectsWith(
      tok([CORPUS, "--out", whole, ...FIXTURE_OPTS, "--part", "1/2", "--workers", "0", ...force]),
      EXIT.output,
      /already holds a complete tokenization \(meta\.json, train_000000\.bin.*would duplicate/,
    );
  }
  const parts = await tmp();
  await tok([CORPUS, "--out", parts, ...FIXTURE_OPTS, "--part", "1/2", "--workers", "0"]);
  await tok([CORPUS, "--out", parts, ...FIXTURE_OPTS, "--part", "2/2", "--workers", "0"]); // other parts: fine
  await rejectsWith(
    tok([CORPUS, "--out", parts, ...FIXTURE_OPTS, "--workers", "0"]),
    EXIT.output,
    /already holds the parts of a tokenization \(meta_p001of002\.json/,
  );
});

Deno.test("tokenize: a folder holding only meta.json is not overwritten without --force", async () => {
  const dir = await tmp();
  await Deno.writeTextFile(join(dir, "meta.json"), "{}\n");
  await rejectsWith(
    tok([CORPUS, "--out", dir, "--workers", "0"]),
    EXIT.output,
    /already holds shards or the meta file of a tokenization \(meta\.json\); pass --force/,
  );
  await tok([CORPUS, "--out", dir, "--workers", "0", "--force"]);
});
