// What train, eval and sample share besides the engine: finding the model families, building a model
// config from a preset, --config file.json and --set overrides, putting checkpoint weights into a fresh
// model, and the I/O hooks that let tests run the pipelines in-process (stdout, stdin, families).
import { inputError, usageError } from "../../lib/errors.ts";
import type { HostTensor } from "../../lib/checkpoint.ts";
import { validateStored } from "../../lib/checkpoint_check.ts";
import type { LanguageModel, ModelConfig, ModelFamily } from "../../lib/models/types.ts";
import { tf } from "../../lib/tensor/backend.ts";

export type Families = Record<string, ModelFamily>;

/** Hooks for running a pipeline in-process (tests); the CLI uses the defaults. */
export interface PipelineEnv {
  /** Model families by name (default: lib/models/registry.ts). */
  families?: Families;
  /** Where data output goes (default: Deno.stdout). */
  stdout?: (bytes: Uint8Array) => Promise<void>;
  /** Where `-` reads from (default: Deno.stdin). */
  stdin?: ReadableStream<Uint8Array>;
  /** train: listen for SIGINT/SIGTERM (default true). */
  signals?: boolean;
}

export async function loadFamilies(env: PipelineEnv): Promise<Families> {
  if (env.families) return env.families;
  const { FAMILIES } = await import("../../lib/models/registry.ts");
  return Object.fromEntries(FAMILIES.map((f) => [f.name, f]));
}

export function stdoutWriter(env: PipelineEnv): (bytes: Uint8Array) => Promise<void> {
  if (env.stdout) return env.stdout;
  return async (bytes) => {
    let off = 0;
    while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
  };
}

export function familyOf(families: Families, name: string, cmd: string): ModelFamily {
  const f = families[name];
  if (!f) {
    throw usageError(
      `lmpipe ${cmd}: unknown model '${name}'; choose from ${Object.keys(families).join(", ")}`,
    );
  }
  return f;
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
 * A model config: the preset, then the fields of `configFile` (a JSON object, or one with a "model"
 * object as config.json has), then each `--set key=value`. Unknown fields are errors; the family
 * validates the result.
 */
export async function buildModelConfig(
  family: ModelFamily,
  preset: string,
  configFile: string | undefined,
  sets: string[],
  cmd: string,
): Promise<ModelConfig> {
  const base = family.presets[preset];
  if (!base) {
    throw usageError(
      `lmpipe ${cmd}: model '${family.name}' has no preset '${preset}'; choose from ${
        Object.keys(family.presets).join(", ")
      }`,
    );
  }
  const config: ModelConfig = structuredClone(base);
  config.preset = preset;
  const apply = (key: string, value: unknown, where: string) => {
    if (key === "model") {
      if (value !== family.name) {
        throw usageError(`${where}: model '${value}' does not match --model ${family.name}`);
      }
      return;
    }
    if (!(key in base) && key !== "preset") {
      throw usageError(
        `${where}: unknown config field '${key}' for model ${family.name}; fields: ${
          Object.keys(base).join(", ")
        }`,
      );
    }
    const old = base[key];
    if (old !== undefined && typeof old !== typeof value) {
      throw usageError(
        `${where}: field '${key}' must be a ${typeof old} (like ${JSON.stringify(old)}), got ${
          JSON.stringify(value)
        }`,
      );
    }
    config[key] = value;
  };
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
    for (const [k, v] of Object.entries(obj)) if (k !== "preset") apply(k, v, configFile);
  }
  for (const s of sets) {
    const eq = s.indexOf("=");
    if (eq <= 0) throw usageError(`lmpipe ${cmd}: --set expects key=value (e.g. --set nLayer=4), got '${s}'`);
    apply(s.slice(0, eq).trim(), parseValue(s.slice(eq + 1).trim()), `lmpipe ${cmd}: --set ${s}`);
  }
  try {
    family.validate(config);
  } catch (err) {
    throw usageError(`lmpipe ${cmd}: bad model config: ${(err as Error).message}`);
  }
  return config;
}

/** Copies checkpoint weights into `model`, checking names and shapes. */
export function loadWeights(model: LanguageModel, weights: Map<string, HostTensor>, dir: string): void {
  for (const [name, p] of model.params) {
    const w = weights.get(name);
    if (!w) {
      throw inputError(`${dir}: model.safetensors has no tensor '${name}' that ${model.config.model} needs`);
    }
    if (w.shape.join(",") !== p.shape.join(",")) {
      throw inputError(`${dir}: tensor '${name}' has shape [${w.shape}], the model expects [${p.shape}]`);
    }
    tf.tidy(() => p.assign(tf.tensor(w.data, p.shape, "float32"))); // the tidy frees the host copy's tensor
  }
  const extra = [...weights.keys()].filter((n) => !model.params.has(n));
  if (extra.length) {
    throw inputError(
      `${dir}: model.safetensors has tensors the model does not: ${extra.slice(0, 5).join(", ")}`,
    );
  }
}

/** Builds the model a checkpoint's config.json describes, with the checkpoint's weights. */
export function modelFromCheckpoint(
  families: Families,
  config: Record<string, unknown>,
  weights: Map<string, HostTensor>,
  dir: string,
  cmd: string,
): LanguageModel {
  const mc = config.model as ModelConfig | undefined;
  if (!mc || typeof mc !== "object" || typeof mc.model !== "string") {
    throw inputError(`${dir}/config.json: has no "model" object; was it written by 'lmpipe train'?`);
  }
  const family = familyOf(families, mc.model, cmd);
  validateStored(family, mc, `${dir}/config.json`);
  const model = family.create(mc, 0);
  loadWeights(model, weights, dir);
  return model;
}
