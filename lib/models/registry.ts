// Maps a model family name (config.json's "model", the --model flag) to its implementation, and
// resolves a full config from a preset plus overrides (config.ts, shared with the CLI's flags). A new family is
// added by importing it and listing it in FAMILIES; nothing else in the engine changes.
import { usageError } from "../errors.ts";
import { gptFamily, llamaFamily } from "./gpt.ts";
import { pixelAttnFamily, pixelAttnWideFamily, pixelCumsumFamily } from "./pixel.ts";
import type { LanguageModel, ModelConfig, ModelFamily } from "./types.ts";
import { resolveFamilyConfig } from "./config.ts";

export const FAMILIES: readonly ModelFamily[] = [
  gptFamily,
  llamaFamily,
  pixelCumsumFamily,
  pixelAttnFamily,
  pixelAttnWideFamily,
];

export function familyNames(): string[] {
  return FAMILIES.map((f) => f.name);
}

/** The family called `name`, or a usage error listing the known ones. */
export function getFamily(name: string): ModelFamily {
  const f = FAMILIES.find((f) => f.name === name);
  if (!f) throw usageError(`unknown model '${name}': use one of ${familyNames().join(", ")}`);
  return f;
}

/**
 * A full, validated config: family `model`'s preset `preset` with `overrides` applied (config.ts
 * resolveFamilyConfig: the rule the CLI uses too). Overrides may only name fields the preset has, with
 * a value of the same type; `model` and `preset` themselves cannot be changed.
 *
 * @example
 * const model = createModel(resolveConfig("gpt", "tiny", { vocabSize: 61, contextLength: 16 }), 1);
 */
export function resolveConfig(
  model: string,
  preset: string,
  overrides: Record<string, unknown> = {},
): ModelConfig {
  return resolveFamilyConfig(getFamily(model), preset, [{ fields: overrides }]);
}

/** Builds a model with fresh weights from a (validated) config. */
export function createModel(config: ModelConfig, seed: number): LanguageModel {
  const family = getFamily(config.model);
  family.validate(config);
  return family.create(config, seed);
}
