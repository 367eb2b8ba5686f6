// Damaged run folders: config.json or state.json holding null, wrong-typed values or missing fields
// are input errors (exit 3) naming the file and the field, for eval (weights only) and for resuming.
import { join } from "node:path";
import { initBackend } from "../lib/tensor/backend.ts";
import { loadCheckpoint, saveCheckpoint } from "../lib/checkpoint.ts";
import { EXIT } from "../lib/errors.ts";
import { run as evaluate } from "../pipelines/eval/mod.ts";
import { BIGRAM_FAMILY, BigramModel, writeToyShard } from "./bigram_model.ts";
import { rejectsWith } from "./helpers_run.ts";

await initBackend("cpu", { quiet: true });

const dataDir = await Deno.makeTempDir({ prefix: "lmpipe-rel-ckpt-data-" });
await writeToyShard(join(dataDir, "toy_val_000000.bin"), 200, 64, 2);
const config = { ...BIGRAM_FAMILY.presets.tiny };

/** A fresh run folder with a good checkpoint, then `edit` applied to its parsed `file`. */
async function damagedRun(file: "config.json" | "state.json", edit: (j: any) => unknown): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-rel-ckpt-" });
  await saveCheckpoint(dir, {
    params: new BigramModel(config as never, 1).params,
    config: { model: config, training: { lr: 1e-3, data: [dataDir], maxSteps: 3 } },
    state: {
      step: 3,
      optimizerStep: 3,
      lossScale: { scale: 1, cleanSteps: 0, skippedSteps: 0 },
      rng: { s: [1, 2, 3, 4] },
      sampler: null,
      elapsedS: 1,
      tokensSeen: 100,
    },
  });
  const path = join(dir, file);
  const json = JSON.parse(await Deno.readTextFile(path));
  await Deno.writeTextFile(path, JSON.stringify(edit(json)));
  return dir;
}

const evalOf = (dir: string) =>
  evaluate(["--ckpt", dir, "--data", dataDir, "--backend", "cpu"], {
    families: { bigram: BIGRAM_FAMILY },
    stdout: () => Promise.resolve(),
  } as never);

const CONFIG_CASES: [string, (j: any) => unknown, RegExp][] = [
  ["null", () => null, /config\.json: field '\(top level\)' must be a JSON object/],
  ["an array", () => [], /config\.json: field '\(top level\)' must be a JSON object/],
  ["model: null", (j) => ({ ...j, model: null }), /config\.json: field 'model' must be an object/],
  ["model.model: 7", (j) => ({ ...j, model: { ...j.model, model: 7 } }), /field 'model\.model'/],
  [
    'model.nEmbd: "8"',
    (j) => ({ ...j, model: { ...j.model, nEmbd: "8" } }),
    /config\.json: bad "model" config: nEmbd must be a positive integer/,
  ],
  ["training: 5", (j) => ({ ...j, training: 5 }), /config\.json: field 'training' must be an object/],
  ['training.lr: "x"', (j) => ({ ...j, training: { lr: "x" } }), /field 'training\.lr' must be a number/],
  ["training.data: 3", (j) => ({ ...j, training: { data: 3 } }), /field 'training\.data' must be a list/],
  [
    'training.gradReduce: "bf17"',
    (j) => ({ ...j, training: { gradReduce: "bf17" } }),
    /field 'training\.gradReduce' must be "f32", "bf16", "fp16".*got "bf17"/,
  ],
];
for (const [label, edit, re] of CONFIG_CASES) {
  Deno.test(`checkpoint: config.json with ${label} is exit 3 naming the file and field`, async () => {
    const dir = await damagedRun("config.json", edit);
    await rejectsWith(evalOf(dir), EXIT.input, re);
    await Deno.remove(dir, { recursive: true });
  });
}

const STATE_CASES: [string, (j: any) => unknown, RegExp][] = [
  ["null", () => null, /state\.json: field '\(top level\)' must be a JSON object/],
  [
    "no step",
    ({ step: _, ...rest }) => rest,
    /state\.json: field 'step' must be a whole number >= 0 \(missing\)/,
  ],
  ['step "3"', (j) => ({ ...j, step: "3" }), /state\.json: field 'step'.*got "3"/],
  ["no rng", ({ rng: _, ...rest }) => rest, /state\.json: field 'rng\.s' must be a list of 4 integers/],
  ["rng.s of 3", (j) => ({ ...j, rng: { s: [1, 2, 3] } }), /field 'rng\.s'/],
  ["lossScale.scale 0", (j) => ({ ...j, lossScale: { ...j.lossScale, scale: 0 } }), /'lossScale\.scale'/],
  ["elapsedS null", (j) => ({ ...j, elapsedS: null }), /field 'elapsedS'/],
  ["schedule []", (j) => ({ ...j, schedule: [] }), /field 'schedule'/],
];
for (const [label, edit, re] of STATE_CASES) {
  Deno.test(`checkpoint: state.json with ${label} is exit 3 naming the file and field`, async () => {
    const dir = await damagedRun("state.json", edit);
    await rejectsWith(loadCheckpoint(dir, { optimizer: true }), EXIT.input, re);
    await rejectsWith(evalOf(dir), EXIT.input, re);
    await Deno.remove(dir, { recursive: true });
  });
}

Deno.test("checkpoint: an undamaged run folder still loads", async () => {
  const dir = await damagedRun("state.json", (j) => j);
  const ck = await loadCheckpoint(dir);
  if (ck.state?.step !== 3) throw new Error("step not restored");
  await evalOf(dir);
  await Deno.remove(dir, { recursive: true });
});
