// The one way a model config is made: a family's preset, then overrides (a --config file, --set flags,
// a test's or benchmark's fields) applied in order, each field checked against the preset (known name,
// same type), then the family's own validation. The CLI (configFromFlags), tests and benches
// (registry.ts resolveConfig) all come through resolveFamilyConfig, so a preset means the same to all.
import { inputError, usageError } from "../errors.ts";
import type { ModelConfig, ModelFamily } from "./types.ts";

/** Fields that change a preset, and where they came from (for error messages; "" for none). */
export interface ConfigOverride {
  fields: Record<string, unknown>;
  where?: string;
  /** A run's config.json names its preset: ignore a `preset` field instead of refusing a conflict. */
  ignorePreset?: boolean;
}

/**
 * A full, validated config: `family`'s preset `preset`, then each override in order. Fields must be
 * ones the preset has, with a value of the same type; `model` and `preset` cannot be changed. Errors
 * are usage errors that name the source, the field and the choices.
 *
 * @example
 * const config = resolveFamilyConfig(gptFamily, "tiny", [{ fields: { nLayer: 2 }, where: "--set nLayer=2" }]);
 */
export function resolveFamilyConfig(
  family: ModelFamily,
  preset: string,
  overrides: ConfigOverride[] = [],
  cmd?: string,
): ModelConfig {
  const lead = cmd ? `lmpipe ${cmd}: ` : "";
  const base = family.presets[preset];
  if (!base) {
    throw usageError(
      `${lead}unknown preset '${preset}' for model '${family.name}': use one of ${
        Object.keys(family.presets).join(", ")
      }`,
    );
  }
  const config: ModelConfig = structuredClone(base);
  config.preset = preset;
  for (const { fields, where, ignorePreset } of overrides) {
    const at = where ? `${where}: ` : "";
    for (const [key, value] of Object.entries(fields)) {
      if (value === undefined || (key === "preset" && ignorePreset)) continue;
      if (key === "model" || key === "preset") {
        if (value !== config[key]) {
          throw usageError(
            `${at}config field '${key}': ${JSON.stringify(value)} conflicts with ${
              JSON.stringify(config[key])
            }`,
          );
        }
        continue;
      }
      if (!(key in base)) {
        const names = Object.keys(base).filter((k) => k !== "model" && k !== "preset");
        throw usageError(
          `${at}unknown config field '${key}' for model '${family.name}': fields are ${names.join(", ")}`,
        );
      }
      const old = base[key];
      if (old !== undefined && typeof old !== typeof value) {
        throw usageError(
          `${at}config field '${key}' must be a ${typeof old} (like ${JSON.stringify(old)}), got ${
            JSON.stringify(value)
          }`,
        );
      }
      config[key] = value;
    }
  }
  try {
    family.validate(config);
  } catch (err) {
    throw usageError(`${lead}bad model config: ${(err as Error).message}`);
  }
  return config;
}

/** Parses a --set value: JSON when it parses (numbers, booleans, arrays), else the raw string. */
function parseValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/**
 * The config of `lmpipe <cmd> --model M --preset P [--config file.json] [--set key=value ...]`: the
 * file's fields (a JSON object, or a run's config.json with a "model" object), then each --set.
 */
export async function configFromFlags(
  family: ModelFamily,
  preset: string,
  configFile: string | undefined,
  sets: string[],
  cmd: string,
): Promise<ModelConfig> {
  const overrides: ConfigOverride[] = [];
  if (configFile) {
    let obj: unknown;
    try {
      obj = JSON.parse(await Deno.readTextFile(configFile));
    } catch (err) {
      throw inputError(`${configFile}: cannot read a JSON config (${(err as Error).message})`);
    }
    if (
      obj && typeof obj === "object" && "model" in obj &&
      typeof (obj as { model: unknown }).model === "object"
    ) {
      obj = (obj as { model: unknown }).model; // a run's config.json
    }
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) {
      throw inputError(`${configFile}: expected a JSON object of config fields`);
    }
    overrides.push({ fields: obj as Record<string, unknown>, where: configFile, ignorePreset: true });
  }
  for (const s of sets) {
    const eq = s.indexOf("=");
    if (eq <= 0) throw usageError(`lmpipe ${cmd}: --set expects key=value (e.g. --set nLayer=4), got '${s}'`);
    const key = s.slice(0, eq).trim();
    overrides.push({
      fields: { [key]: parseValue(s.slice(eq + 1).trim()) },
      where: `lmpipe ${cmd}: --set ${s}`,
    });
  }
  return resolveFamilyConfig(family, preset, overrides, cmd);
}
