// The batch-size ramp of `lmpipe train --batch-ramp N`: small batches early (when the gradient's direction
// matters more than its noise) and the full batch once the model has seen N tokens. The micro-batch grows
// linearly with the tokens seen; --grad-accum stays fixed, so a step's batch grows by the same factor. Every
// size is a pure function of the tokens seen, which a checkpoint stores, so a resumed run continues the same
// curve. A ramp also changes how many steps fit a time budget: `stepsWithin` counts them.

/** The micro-batch size a ramp starts at: an eighth of the full size, rounded up (at least 1). */
export function rampStart(full: number): number {
  return Math.max(1, Math.ceil(full / 8));
}

/**
 * Sequences per micro-batch after `seen` training tokens, for a full micro-batch of `full` sequences and a
 * ramp over `rampTokens` tokens (0: no ramp):
 *
 *     b = b0 + floor((full - b0) * seen / rampTokens)   while seen < rampTokens,  b0 = rampStart(full)
 *     b = full                                          after
 *
 * @example rampedBatchSize(0, 16, 1000) === 2; rampedBatchSize(500, 16, 1000) === 9; rampedBatchSize(1000, 16, 1000) === 16
 */
export function rampedBatchSize(seen: number, full: number, rampTokens: number): number {
  if (!(rampTokens > 0) || seen >= rampTokens) return full;
  const b0 = rampStart(full);
  return Math.min(full, b0 + Math.floor(((full - b0) * seen) / rampTokens));
}

/** The shape of a run's steps, as far as their cost goes. */
export interface StepShape {
  /** Full sequences per micro-batch. */
  batchSize: number;
  /** Ramp length in tokens (0: none). */
  rampTokens: number;
  gradAccum: number;
  context: number;
}

/**
 * How many more steps fit in `seconds`, starting after `seen` tokens, when a step costs `secondsPerSequence`
 * for each sequence it trains on (b * gradAccum of them). Without a ramp this is seconds over a full step's
 * time; with one, the early, smaller steps are cheaper, so more of them fit.
 */
export function stepsWithin(seconds: number, secondsPerSequence: number, seen: number, s: StepShape): number {
  if (!(seconds > 0) || !(secondsPerSequence > 0)) return 0;
  let left = seconds, steps = 0;
  while (seen < s.rampTokens) {
    const b = rampedBatchSize(seen, s.batchSize, s.rampTokens);
    const cost = secondsPerSequence * b * s.gradAccum;
    if (cost > left) return steps;
    left -= cost, steps++, seen += b * s.context * s.gradAccum;
  }
  return steps + Math.floor(left / (secondsPerSequence * s.batchSize * s.gradAccum));
}

/** Steps a run at `seen` tokens takes until it has seen at least `tokens` (the last step may pass it). */
export function stepsToTokens(tokens: number, seen: number, s: StepShape): number {
  let steps = 0;
  while (seen < tokens && seen < s.rampTokens) {
    seen += rampedBatchSize(seen, s.batchSize, s.rampTokens) * s.context * s.gradAccum;
    steps++;
  }
  return seen >= tokens
    ? steps
    : steps + Math.ceil((tokens - seen) / (s.batchSize * s.context * s.gradAccum));
}
