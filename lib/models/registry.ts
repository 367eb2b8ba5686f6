// Maps a model family name (config.json's "model", the --model flag) to its implementation, and
// resolves a full config from a preset plus overrides (flags or --config file.json). A new family is
// added by importing it and listing it in FAMILIES; nothing else in the engine changes.
import { usageError } from "../errors.ts";
import { gptFamily } from "./gpt.ts";
import { pixelAttnFamily, pixelAttnWideFamily, pixelCumsumFamily } from "./pixel.ts";
import type { LanguageModel, ModelConfig, ModelFamily } from "./types.ts";

export const FAMILIES: readonly ModelFamily[] = [
  gptFamily,
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
 * A full, validated config: family `model`'s preset `preset` with `overrides` applied. Overrides may
 * only name fields the preset has, with a value of the same type (numbers for numbers, ...); `model`
 * and `preset` themselves cannot be overridden.
 */
export function resolveConfig(
  model: string,
  preset: string,
  overrides: Record<string, unknown> = {},
): ModelConfig {
  const family = getFamily(model);
  const base = family.presets[preset];
  if (!base) {
    throw usageError(
      `unknown preset '${preset}' for model '${model}': use one of ${Object.keys(family.presets).join(", ")}`,
    );
  }
  const config: ModelConfig = { ...base, preset };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (key === "model" || key === "preset") {
      if (value !== config[key]) {
        throw usageError(
          `config override '${key}': ${JSON.stringify(value)} conflicts with ${JSON.stringify(config[key])}`,
        );
      }
      continue;
    }
    if (!(key in base)) {
      const fields = Object.keys(base).filter((k) => k !== "model" && k !== "preset");
      throw usageError(`unknown config field '${key}' for model '${model}': fields are ${fields.join(", ")}`);
    }
    if (typeof value !== typeof base[key]) {
      throw usageError(
        `config field '${key}' must be a ${typeof base[key]} (like ${JSON.stringify(base[key])}), got ${
          JSON.stringify(value)
        }`,
      );
    }
    config[key] = value;
  }
  family.validate(config);
  return config;
}

/** Builds a model with fresh weights from a (validated) config. */
export function createModel(config: ModelConfig, seed: number): LanguageModel {
  const family = getFamily(config.model);
  family.validate(config);
  return family.create(config, seed);
}
