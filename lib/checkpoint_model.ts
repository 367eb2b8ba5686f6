// A model from a checkpoint: the family that config.json names, built fresh and filled with the
// weights of model.safetensors (lib/checkpoint.ts reads the files), every name and shape checked.
// Used by train --resume, eval, sample and viz.
import { inputError } from "./errors.ts";
import { validateStored } from "./checkpoint_check.ts";
import type { HostTensor } from "./checkpoint.ts";
import type { LanguageModel, ModelConfig } from "./models/types.ts";
import { type Families, familyOf } from "./pipeline_env.ts";
import { tf } from "./tensor/backend.ts";

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

/**
 * Builds the model a checkpoint's config.json describes, with the checkpoint's weights; errors name
 * the folder and the tensor.
 *
 * @example
 * const ckpt = await loadCheckpoint(dir);
 * const model = modelFromCheckpoint(await loadFamilies(env), ckpt.config, ckpt.weights, dir, "eval");
 */
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
