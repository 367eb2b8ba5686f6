// Dynamic loss scaling for --precision mixed (bf16 needs none: its range is float32's). Half precision
// (emulated at autocast's places, see lib/precision.ts) cannot hold small gradients, so the loss is multiplied by S before
// the backward pass and the gradients divided by S before clipping and the update. When any gradient
// overflowed (inf/NaN) the step is skipped and S halved; after `window` clean steps in a row S doubles.
// The overflow test itself is one reduction over all gradients (optim.ts sumOfSquares) and one host read,
// done by the training loop, which hands the verdict to update().

export interface LossScaleState {
  scale: number;
  /** Clean steps since the last overflow or growth. */
  cleanSteps: number;
  /** Steps skipped so far. */
  skippedSteps: number;
}

export interface LossScalerOptions {
  /** false for fp32: S stays 1 and nothing is ever skipped by the scaler. */
  enabled: boolean;
  initScale?: number;
  /** Clean steps before S doubles (default 2000). */
  window?: number;
  /** S never grows beyond this (default 2^24). */
  maxScale?: number;
}

export const INIT_SCALE = 65536;
export const SCALE_WINDOW = 2000;
/** Below this S the gradients overflow even unscaled: the run has diverged. */
export const MIN_SCALE = 2 ** -24;

export class LossScaler {
  readonly enabled: boolean;
  readonly window: number;
  readonly maxScale: number;
  scale: number;
  cleanSteps = 0;
  skippedSteps = 0;

  constructor(opts: LossScalerOptions) {
    this.enabled = opts.enabled;
    this.window = opts.window ?? SCALE_WINDOW;
    this.maxScale = opts.maxScale ?? 2 ** 24;
    this.scale = this.enabled ? opts.initScale ?? INIT_SCALE : 1;
    if (!(this.window >= 1)) throw new RangeError(`loss scale window must be >= 1, got ${this.window}`);
  }

  /**
   * Records one step's verdict. Returns true when the step must be skipped (gradients not finite).
   * Disabled (fp32) scalers never skip: a non-finite gradient there is divergence, the caller's call.
   */
  update(finite: boolean): boolean {
    if (!this.enabled) return false;
    if (!finite) {
      this.scale /= 2;
      this.cleanSteps = 0;
      this.skippedSteps += 1;
      return true;
    }
    this.cleanSteps += 1;
    if (this.cleanSteps >= this.window) {
      this.scale = Math.min(this.maxScale, this.scale * 2);
      this.cleanSteps = 0;
    }
    return false;
  }

  /** True once S has collapsed: even unscaled gradients overflow. */
  collapsed(): boolean {
    return this.enabled && this.scale < MIN_SCALE;
  }

  state(): LossScaleState {
    return { scale: this.scale, cleanSteps: this.cleanSteps, skippedSteps: this.skippedSteps };
  }

  load(s: LossScaleState): void {
    if (!(s.scale > 0) || !Number.isInteger(s.cleanSteps) || s.cleanSteps < 0) {
      throw new RangeError(`invalid loss scale state ${JSON.stringify(s)}`);
    }
    this.skippedSteps = s.skippedSteps ?? 0;
    if (!this.enabled) return; // fp32 / bf16 resuming a mixed run: S stays 1
    this.scale = s.scale;
    this.cleanSteps = s.cleanSteps;
  }
}
