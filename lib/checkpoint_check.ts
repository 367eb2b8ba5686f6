// Shape checks for a run folder's config.json and state.json. They are plain JSON that a person or a
// script may have edited or damaged, so every field lmpipe reads is checked for its type before use: a
// bad file is an input error (exit 3) naming the file and the field, never a crash deep in training.
import { EXIT, inputError, LmpipeError } from "./errors.ts";
import { GRAD_REDUCES } from "./dist/half_reduce.ts";

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);
const isCount = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isFiniteNumber = (v: unknown) => typeof v === "number" && Number.isFinite(v);

function badField(path: string, field: string, want: string, got: unknown): LmpipeError {
  const shown = got === undefined ? "missing" : `got ${JSON.stringify(got)?.slice(0, 60)}`;
  return inputError(
    `${path}: field '${field}' must be ${want} (${shown}); the file is damaged or was edited. ` +
      `Restore it from a backup or start a new run.`,
  );
}

// Training options stored under "training": the type each must have when present.
const TRAINING_NUMBERS = [
  "batchSize",
  "gradAccum",
  "lr",
  "minLr",
  "weightDecay",
  "gradClip",
  "scaleWindow",
  "ckptEvery",
  "evalEvery",
  "evalIters",
  "seed",
];
const TRAINING_NULLABLE_NUMBERS = ["warmup", "decaySteps", "maxSteps", "maxTimeS"];
const TRAINING_STRINGS = ["schedule", "precision", "backend"];

/** Checks config.json's shape: an object with a "model" object naming its family, and sane "training". */
export function checkConfigJson(config: unknown, path: string): asserts config is Json {
  if (!isObject(config)) throw badField(path, "(top level)", "a JSON object", config);
  const model = config.model;
  if (model !== undefined) { // absent only in engine-level runs without a model family (tests)
    if (!isObject(model)) throw badField(path, "model", "an object (the model config)", model);
    if (typeof model.model !== "string") {
      throw badField(path, "model.model", "a model family name", model.model);
    }
  }
  const t = config.training;
  if (t === undefined) return; // weights-only runs (tests, exports) have no training options
  if (!isObject(t)) throw badField(path, "training", "an object", t);
  for (const k of TRAINING_NUMBERS) {
    if (k in t && !(isFiniteNumber(t[k]) && (t[k] as number) >= 0)) {
      throw badField(path, `training.${k}`, "a number >= 0", t[k]);
    }
  }
  for (const k of TRAINING_NULLABLE_NUMBERS) {
    if (k in t && t[k] !== null && !(isFiniteNumber(t[k]) && (t[k] as number) >= 0)) {
      throw badField(path, `training.${k}`, "a number >= 0 or null", t[k]);
    }
  }
  for (const k of TRAINING_STRINGS) {
    if (k in t && typeof t[k] !== "string") throw badField(path, `training.${k}`, "a string", t[k]);
  }
  if ("data" in t && !(Array.isArray(t.data) && t.data.every((d) => typeof d === "string"))) {
    throw badField(path, "training.data", "a list of paths", t.data);
  }
  if ("gradReduce" in t && !(GRAD_REDUCES as readonly unknown[]).includes(t.gradReduce)) {
    throw badField(path, "training.gradReduce", GRAD_REDUCES.map((f) => `"${f}"`).join(", "), t.gradReduce);
  }
}

/** Checks state.json's shape: the step counters, loss scale, RNG state, time and tokens. */
export function checkStateJson(state: unknown, path: string): asserts state is Json {
  if (!isObject(state)) throw badField(path, "(top level)", "a JSON object", state);
  if (state.format !== "lmpipe-checkpoint") {
    throw badField(path, "format", '"lmpipe-checkpoint" (an lmpipe state file)', state.format);
  }
  for (const k of ["step", "optimizerStep", "tokensSeen"]) {
    if (!isCount(state[k])) throw badField(path, k, "a whole number >= 0", state[k]);
  }
  if (!(isFiniteNumber(state.elapsedS) && (state.elapsedS as number) >= 0)) {
    throw badField(path, "elapsedS", "a number of seconds >= 0", state.elapsedS);
  }
  const ls = state.lossScale;
  if (!isObject(ls)) throw badField(path, "lossScale", "an object", ls);
  if (!(isFiniteNumber(ls.scale) && (ls.scale as number) > 0)) {
    throw badField(path, "lossScale.scale", "a number > 0", ls.scale);
  }
  for (const k of ["cleanSteps", "skippedSteps"]) {
    if (!isCount(ls[k])) throw badField(path, `lossScale.${k}`, "a whole number >= 0", ls[k]);
  }
  const rng = state.rng;
  const s = isObject(rng) ? rng.s : undefined;
  if (!(Array.isArray(s) && s.length === 4 && s.every((x) => Number.isInteger(x)))) {
    throw badField(path, "rng.s", "a list of 4 integers (the RNG state)", isObject(rng) ? s : rng);
  }
  if (state.schedule !== undefined) {
    const sc = state.schedule;
    if (!(isObject(sc) && isCount(sc.warmup) && isCount(sc.decaySteps))) {
      throw badField(path, "schedule", "an object {warmup, decaySteps} of whole numbers", sc);
    }
  }
  if (state.sampler !== null && state.sampler !== undefined && !isObject(state.sampler)) {
    throw badField(path, "sampler", "an object or null", state.sampler);
  }
}

/** A stored model config checked by its family's validate: a bad one is exit 3 naming the file. */
export function validateStored<C>(family: { validate(c: C): void }, mc: C, path: string): void {
  try {
    family.validate(mc);
  } catch (err) {
    throw inputError(`${path}: bad "model" config: ${(err as Error).message}`);
  }
}

/**
 * Fails (exit 5, as a diverged run) when a checkpoint's weights hold NaN or infinity: such a model
 * scores every text as NaN and samples only junk, so eval and sample stop instead of answering.
 */
export function checkFiniteWeights(weights: Map<string, { data: Float32Array }>, dir: string): void {
  for (const [name, t] of weights) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i])) {
        throw new LmpipeError(
          `${dir}/model.safetensors: tensor '${name}' holds ${d[i]} at index ${i}: the run diverged before ` +
            `this checkpoint was saved. Use an earlier checkpoint or retrain with a lower --lr.`,
          EXIT.training,
        );
      }
    }
  }
}
