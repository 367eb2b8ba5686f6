// Test helpers for run folders: save an untrained model as a run (checkpoint at step 0, so the sample,
// eval and viz tests load a model through the same path as a real run), read a run's step log, and
// expect a LmpipeError with a given exit code and message, and run a child deno that prints JSON.
import assert from "node:assert/strict";
import { saveCheckpoint } from "../lib/checkpoint.ts";
import { LmpipeError } from "../lib/errors.ts";
import type { LanguageModel } from "../lib/models/types.ts";
import type { StepLog } from "../lib/train_loop.ts";

export async function saveUntrainedRun(dir: string, model: LanguageModel): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await saveCheckpoint(dir, {
    params: model.params,
    config: { model: model.config },
    state: {
      step: 0,
      optimizerStep: 0,
      lossScale: { scale: 1, cleanSteps: 0, skippedSteps: 0 },
      rng: { s: [1, 2, 3, 4] },
      sampler: null,
      elapsedS: 0,
      tokensSeen: 0,
    },
  });
}

/** The JSON records of a step log (log.jsonl). */
export async function readLog(path: string): Promise<StepLog[]> {
  return (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
}

/** Expects `p` to reject with a LmpipeError of exit code `code` whose message matches `re`. */
export async function rejectsWith(p: Promise<unknown>, code: number, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof LmpipeError, String(e));
    assert.equal(e.exitCode, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

/**
 * Runs `deno <args>` in the project root (its deno.json maps the npm imports) with `env` added, fails
 * the test if it fails or outlives `timeoutMs` (instead of hanging), and returns its stdout as JSON.
 */
export async function denoChildJson(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 120_000,
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env,
    cwd: new URL("..", import.meta.url).pathname,
    signal: AbortSignal.timeout(timeoutMs),
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** --set overrides that make the real gpt and pixel-attn families test-sized (a step takes milliseconds). */
export const TINY_SHAPES: Record<string, string[]> = {
  gpt: ["nLayer=1", "nEmbd=16", "nHead=2", "contextLength=16"],
  "pixel-attn": ["nEmbd=16", "nHead=2", "contextLength=8", "channels=2", "imageSize=4", "cnnWidth=4"],
};

/** `--model M --preset tiny --set ...`: the flags of a test-sized real model (TINY_SHAPES). */
export function tinyModelFlags(model: string): string[] {
  return ["--model", model, "--preset", "tiny", ...TINY_SHAPES[model].flatMap((s) => ["--set", s])];
}
