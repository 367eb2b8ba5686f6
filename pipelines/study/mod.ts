// `lmpipe study`: the study's question in one command, for any set of models. Trains each model spec
// (a family with config changes, e.g. gpt:pos=rope) for the same wall-clock or token budget on the same data
// and backend, one after another (or as separate jobs, --only, merged later, --merge), each as an ordinary
// `lmpipe train` run folder (so any run can be resumed or inspected on its own), evaluates each with
// `lmpipe eval` on the same validation tokens, and writes report.json, report.md and the figures. Under
// --sizes every spec trains at every size and the report fits each spec's compute scaling law.
import { join } from "node:path";
import { EXIT, inputError, LmpipeError, usageError } from "../../lib/errors.ts";
import { bool, num, parseCount, parseDuration, parseFlags, str } from "../../lib/flags.ts";
import { info, stderrIsTTY } from "../../lib/log.ts";
import { FAMILIES, familyNames } from "../../lib/models/registry.ts";
import { type Precision, PRECISIONS } from "../../lib/models/types.ts";
import type { ModelResult } from "./report.ts";
import { checkSpecs, parseSpecList } from "./specs.ts";
import { budgetWords, runModel, type StudyOptions, studyRuns } from "./runner.ts";
import { commandLine, showCurves, writeReport } from "./figures.ts";
import { mergeStudy, RESULT_FILE, writeResult } from "./merge.ts";

export { RESULT_FILE };

/** Every model the study trains by default: the registry's families (not variants of another), in its order. */
export const ALL_MODELS: readonly string[] = FAMILIES.filter((f) => !f.variantOf).map((f) => f.name);

const HELP = `lmpipe study: train models for the same budget and compare them

Usage: lmpipe study --data DIR --out DIR (--budget DUR | --budget-tokens N) [options] [-- train flags]
       lmpipe study --merge --out DIR [FOLDER...]

Trains each model spec (one after another, same data, backend, seed and budget) into DIR/<run>/, an
ordinary 'lmpipe train' run folder with its step log DIR/<run>/log.jsonl; evaluates each with
'lmpipe eval' on the same validation tokens; writes DIR/report.json, DIR/report.md (the models ranked by
validation loss, with tokens seen, tokens/s, parameters) and the figures DIR/loss_curves.{svg,png}
(loss against tokens seen and against time, side by side), DIR/loss_time.{svg,png} and
DIR/loss_step.{svg,png}. Running the same command again resumes: finished runs are reused,
interrupted ones resume from their last checkpoint.

Model specs (--models, --only): SPEC[,SPEC...], SPEC = FAMILY[:KEY=VALUE[:KEY=VALUE...]], where
FAMILY is one of ${familyNames().join(", ")},
and each KEY=VALUE is a config field of the family, passed to 'lmpipe train' as --set KEY=VALUE
(e.g. gpt:nLayer=4:nHead=4). The run folder is the spec with
'+' before each pair, keys sorted (gpt:nLayer=4 -> DIR/gpt+nLayer=4/); characters other than
letters, digits, '.', '_' and '-' are written %XX.

Options:
  --data DIR          token shards from 'lmpipe tokenize' (with a val split)      (required)
  --out DIR           study folder                                                 (required)
  --budget DUR        wall-clock training budget per run: 90s, 10m, 2h, 1h30m
  --budget-tokens N   training tokens per run, e.g. 2M (each run stops at the first step that
                      reaches N); with --budget too, whichever comes first     (one of the two required)
  --models LIST       model specs                  (default: ${ALL_MODELS.join(",")})
  --preset NAME       model preset for every model: tiny | small | study (the study's models: its
                      control for gpt, gpt2 for llama; gpt2 picks study for the image models) (default: small)
  --sizes LIST        train every spec at each size and fit L(C) = a*C^-b + c per spec (C: training
                      FLOPs = FLOPs/token x tokens seen; 3 sizes fit, 4 or more give error bars);
                      SIZE = PRESET[:KEY=VALUE...], e.g. tiny,small,small:nLayer=8; run folders
                      end in @SIZE (DIR/gpt@tiny/); the report gains the fits, the scaling
                      figure DIR/scaling.{svg,png} and each spec's gap to the first  (default: --preset)
  --backend NAME      auto | webgpu | tensorflow | wasm | cpu                        (default: auto)
  --seed N            seed for weights and data order                              (default: 1337)
  --precision P       fp32 | mixed | bf16, every train and eval (docs/precision.md)  (default: fp32)
  --eval-tokens N     validation tokens each run is evaluated on (0 = whole split) (default: 65536)
  --force             retrain runs that are already finished                       (default: off)
  --json              print report.json to stdout as well                          (default: off)
  --only SPEC         train and evaluate this one model spec (at each --sizes) as an independent
                      job (e.g. one Slurm array task per model, or per model and size with a
                      one-size --sizes): writes its run folders with their study_result.json, no
                      report; jobs for different runs may share DIR                  (default: all)
  --merge             build the report from finished run folders instead of training: every
                      DIR/<run>/study_result.json, plus those in each FOLDER given (a run folder,
                      or a study folder holding them); they must share data, budget, preset or
                      sizes, backend and seed                                        (default: off)
  -- FLAGS...         passed to every 'lmpipe train' (e.g. -- --batch-size 8 --lr-schedule onecycle)

Examples:
  lmpipe study --data fixtures/shards --preset tiny --budget 20s --out runs/study-demo
  lmpipe study --data fixtures/shards --preset tiny --budget-tokens 200k --out runs/variants \\
    --models 'gpt,gpt:nLayer=4,pixel-attn'
  lmpipe study --data fixtures/shards --budget 1m --out runs/scaling --models gpt,gpt:nHead=4 \\
    --sizes tiny,tiny:nEmbd=128,tiny:nEmbd=192:nLayer=3,small
  for m in gpt pixel-attn; do lmpipe study --data fixtures/shards --preset tiny --budget 20s \\
    --out runs/s --only $m & done; wait; lmpipe study --merge --out runs/s
`;

/** --precision, checked (undefined when not given: fp32). */
function studyPrecision(flag: string | undefined): Precision | undefined {
  if (flag === undefined) return undefined;
  if (!(PRECISIONS as readonly string[]).includes(flag)) {
    throw usageError(`lmpipe study: --precision must be ${PRECISIONS.join(", ")}, got '${flag}'`);
  }
  return flag as Precision;
}

export async function run(argv: string[]): Promise<void> {
  const dd = argv.indexOf("--");
  const own = dd >= 0 ? argv.slice(0, dd) : argv;
  const trainExtra = dd >= 0 ? argv.slice(dd + 1) : [];
  refuseOtherEvalSpellings(own);
  const p = parseFlags("study", own, {
    data: { type: "string" },
    budget: { type: "string" },
    "budget-tokens": { type: "string" },
    out: { type: "string", short: "o" },
    models: { type: "string" },
    sizes: { type: "string" },
    preset: { type: "string" },
    backend: { type: "string" },
    seed: { type: "string" },
    "eval-tokens": { type: "string" },
    precision: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
    only: { type: "string" },
    merge: { type: "boolean" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  if (bool(p, "merge")) {
    const report = await mergeStudy(str(p, "out"), p.positionals, argv);
    if (bool(p, "json")) console.log(JSON.stringify(report, null, 2));
    return;
  }
  if (p.positionals.length) {
    throw usageError(
      `lmpipe study: unexpected argument '${p.positionals[0]}' (extra train flags go after '--')`,
    );
  }
  const need = (name: string) => {
    const v = str(p, name);
    if (v === undefined) throw usageError(`lmpipe study: --${name} is required\nSee 'lmpipe study --help'.`);
    return v;
  };
  const only = str(p, "only");
  if (only !== undefined && str(p, "models") !== undefined) {
    throw usageError("lmpipe study: --only SPEC and --models LIST contradict each other; give one");
  }
  const sizesFlag = str(p, "sizes");
  if (sizesFlag !== undefined && str(p, "preset") !== undefined) {
    throw usageError("lmpipe study: --sizes lists the presets; drop --preset (or --sizes)");
  }
  const budgetFlag = str(p, "budget"), tokensFlag = str(p, "budget-tokens");
  if (budgetFlag === undefined && tokensFlag === undefined) {
    throw usageError(
      "lmpipe study: give a budget per run: --budget DUR (wall clock, e.g. 10m) and/or --budget-tokens N " +
        "(e.g. 2M)\nSee 'lmpipe study --help'.",
    );
  }
  const o: StudyOptions = {
    data: need("data"),
    budget: budgetFlag === undefined ? null : parseDuration("study", "budget", budgetFlag),
    budgetTokens: tokensFlag === undefined ? null : parseCount("study", "budget-tokens", tokensFlag),
    out: need("out"),
    models: parseSpecList(
      only !== undefined ? "only" : "models",
      only ?? str(p, "models", ALL_MODELS.join(",")),
    ),
    sizes: sizesFlag === undefined ? null : parseSpecList("sizes", sizesFlag),
    preset: str(p, "preset", "small"),
    backend: str(p, "backend", "auto"),
    seed: num(p, "study", "seed", 1337, { min: 0, integer: true }),
    evalTokens: num(p, "study", "eval-tokens", 65536, { min: 0, integer: true }),
    force: bool(p, "force"),
    precision: studyPrecision(str(p, "precision")),
    trainExtra,
  };
  if (o.budget !== null && o.budget <= 0) throw usageError("lmpipe study: --budget must be longer than 0s");
  if (o.budgetTokens !== null && o.budgetTokens < 1) {
    throw usageError("lmpipe study: --budget-tokens must be at least 1");
  }
  if (only !== undefined && o.models.length !== 1) {
    throw usageError(`lmpipe study: --only takes one model spec (got '${only}'); run one job per spec`);
  }
  await checkSpecs(o.models, o.sizes ?? [{ text: o.preset, name: o.preset, sets: [] }]);
  try {
    if (!(await Deno.stat(o.data)).isDirectory && !o.data.endsWith(".bin")) {
      throw inputError(
        `lmpipe study: --data ${o.data} is not a shard folder; make one with 'lmpipe tokenize ... --out ${o.data}'`,
      );
    }
  } catch (err) {
    if (err instanceof LmpipeError) throw err;
    throw inputError(
      `lmpipe study: --data ${o.data} does not exist; make it with 'lmpipe tokenize ... --out ${o.data}'`,
    );
  }
  await Deno.mkdir(o.out, { recursive: true }).catch((err) => {
    throw new LmpipeError(`lmpipe study: cannot create --out ${o.out} (${err.message})`, EXIT.output);
  });

  const runs = studyRuns(o);
  const settings = { ...o, sizes: o.sizes?.map((s) => s.text) ?? null };
  const command = commandLine(argv);
  const results: ModelResult[] = [];
  for (const [i, r] of runs.entries()) {
    info(`study: [${i + 1}/${runs.length}] ${r.label}, budget ${budgetWords(o)}`);
    const result = await runModel(r, o);
    results.push(result);
    await writeResult(o, result, argv);
    if (only === undefined) await writeReport(settings, results, command); // a partial report after every run
  }
  if (only !== undefined) {
    info(
      `study: ${only} ${results.every((r) => r.status === "ok") ? "done" : "failed"}; wrote ` +
        `${runs.map((r) => join(o.out, r.dir, RESULT_FILE)).join(", ")}. ` +
        `Once every job has finished: lmpipe study --merge --out ${o.out}`,
    );
    const failed = results.find((r) => r.status !== "ok");
    if (failed) throw new LmpipeError(`lmpipe study: ${failed.model} failed: ${failed.error}`, EXIT.training);
    return;
  }
  const report = await writeReport(settings, results, command);
  info(`study: wrote ${join(o.out, "report.md")} and report.json`);
  if (stderrIsTTY) await showCurves(o.out, results);
  if (bool(p, "json")) console.log(JSON.stringify(report, null, 2));
  const failed = results.filter((r) => r.status === "failed");
  if (failed.length === results.length) {
    throw new LmpipeError(
      `lmpipe study: every model failed (first: ${failed[0].model}: ${failed[0].error})`,
      EXIT.training,
    );
  }
}

/**
 * Other spellings of --eval-tokens (eval's own --max-tokens, the report's eval_max_tokens, ...): a usage
 * error that names the study's one spelling, instead of a generic "unknown flag".
 */
const EVAL_TOKENS_ALIASES = [
  "--max-tokens",
  "--eval-max-tokens",
  "--eval_max_tokens",
  "--eval_tokens",
  "--evalTokens",
];

export function refuseOtherEvalSpellings(args: string[]): void {
  for (const a of args) {
    const flag = a.split("=")[0];
    if (EVAL_TOKENS_ALIASES.includes(flag)) {
      throw usageError(
        `lmpipe study: ${flag} is not a study option; the validation tokens each model is evaluated on ` +
          `are set with --eval-tokens N (0 = the whole val split)`,
      );
    }
  }
}
