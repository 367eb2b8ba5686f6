// What `--preset study` means for training, beyond the model: the optimiser and schedule the study's code
// ran for each model. Its final train.py built the image models' optimiser as torch.optim.AdamW(
// model.parameters()), PyTorch's defaults (betas 0.9/0.999, eps 1e-8, weight decay 0.01 on every
// parameter), while its control GPT kept nanoGPT's (betas 0.9/0.95, decay 0.1 on 2-D weights only); both
// used nanoGPT's schedule: lr 6e-4 after 2,000 warm-up steps, cosine to 6e-5 at step 600,000 (over the
// study's runs, effectively constant), clip 1.0. The train pipeline takes these as a new run's defaults
// (explicit flags still win) and config.json records the result. Other presets bring nothing.
import type { TrainOptions } from "./train_loop.ts";

/** The training options a new run of `model`'s `preset` defaults to (empty: lmpipe's own defaults). */
export function presetTraining(model: string, preset: string | undefined): Partial<TrainOptions> {
  if (preset !== "study") return {};
  const schedule: Partial<TrainOptions> = {
    lr: 6e-4,
    minLr: 6e-5,
    warmup: 2000,
    decaySteps: 600_000,
    schedule: "cosine",
    gradClip: 1.0,
    beta1: 0.9,
    eps: 1e-8,
  };
  if (model === "gpt") return { ...schedule, beta2: 0.95, weightDecay: 0.1, decayParams: "matrices" };
  if (model.startsWith("pixel-")) return { ...schedule, beta2: 0.999, weightDecay: 0.01, decayParams: "all" };
  return {};
}
