// Test helper: saves an untrained model as a run folder (checkpoint at step 0), so the sample, eval and
// viz tests can load a model through the same path as a real run without training one first.
import { saveCheckpoint } from "../lib/checkpoint.ts";
import type { LanguageModel } from "../lib/models/types.ts";

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
