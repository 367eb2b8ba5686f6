// The training engine: one loop for every model family. It only uses the LanguageModel contract
// (lib/models/types.ts): gradient accumulation, mixed precision through dynamic loss scaling and the
// model's {precision} forward option, global-norm clipping, the learning-rate schedule, the step/time
// budget, periodic evaluation, atomic checkpoints (periodic, at the end and on SIGINT/SIGTERM), the JSON
// step log, and a stop with exit code 5 when an fp32 loss turns NaN (the last good checkpoint is kept).
import { EXIT, LmpipeError } from "./errors.ts";
import { setWebgpuHalfOperands } from "./tensor/kernel_choice.ts";
import { fmtCount, fmtDuration, info, progress, stderrIsTTY } from "./log.ts";
import {
  AdamW,
  ADAMW_DEFAULTS,
  type AdamWOptions,
  clipCoefficient,
  type DecayParams,
  deviceStepControl,
  learningRate,
  pairwiseSum,
  type ScheduleName,
  stepControlOnDevice,
  sumOfSquares,
} from "./optim.ts";
import { LossScaler } from "./loss_scale.ts";
import { rampedBatchSize, stepsToTokens, stepsWithin } from "./batch_ramp.ts";
import { type LoadedCheckpoint, saveCheckpoint, type TrainState } from "./checkpoint.ts";
import type { Batch, WindowSampler } from "./sampler.ts";
import type { LanguageModel, Precision } from "./models/types.ts";
import type { DataParallelHooks } from "./dist/data_parallel.ts";
import { readData, tf } from "./tensor/backend.ts";
import { peakBytes, resetPeak } from "./tensor/memory.ts";
import { microBatchTag, replayAllowed, replayStats, TrainStepReplay } from "./train_replay.ts";
import { stepInputWrite } from "./tensor/webgpu/replay.ts";

export interface TrainOptions {
  /** Sequences per micro-batch (the full size, when a ramp is on). */
  batchSize: number;
  /** Grow the micro-batch over the first this many training tokens (lib/batch_ramp.ts); 0 or absent: none. */
  batchRamp?: number;
  gradAccum: number;
  lr: number;
  minLr: number;
  /** Warm-up steps; null: 2000 (nanoGPT), or a tenth of the decay steps when that is smaller. */
  warmup: number | null;
  /**
   * Step at which the schedule reaches minLr; null: --max-steps or the steps --max-tokens takes (the
   * fewer of the two), or, with only a time budget, estimated
   * from the time of the first steps (then fixed and saved, so a resumed run keeps it).
   */
  decaySteps: number | null;
  schedule: ScheduleName;
  weightDecay: number;
  /** AdamW's beta1, beta2 and epsilon; absent (runs older than the options): 0.9, 0.95, 1e-8 (nanoGPT). */
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Which parameters weight decay applies to (optim.ts DecayParams); absent: "matrices". */
  decayParams?: DecayParams;
  /** Clip the global gradient norm to this (0 = no clipping). */
  gradClip: number;
  /** Stop after this many steps (null: no step limit). */
  maxSteps: number | null;
  /** Stop at the first step that brings the tokens seen to at least this (null or absent: no limit). */
  maxTokens?: number | null;
  /** Stop once this much wall-clock time (seconds, resumed time included) has passed (null: none). */
  maxTimeS: number | null;
  precision: Precision;
  scaleWindow: number;
  initScale?: number;
  /** Save every N steps (0: only at the end and on signals). */
  ckptEvery: number;
  /** Evaluate every N steps (0: only at the end). */
  evalEvery: number;
  evalIters: number;
  seed: number;
}

/** One JSON log line (the fields plots and people read). */
export interface StepLog {
  step: number;
  loss: number | null;
  lr: number;
  grad_norm: number | null;
  loss_scale: number;
  skipped: boolean;
  tokens: number;
  tokens_per_s: number;
  ms_per_step: number;
  elapsed_s: number;
  /** Sequences per micro-batch (smaller than --batch-size during a --batch-ramp). */
  batch_size: number;
  /**
   * Peak backend memory during the step, bytes (lib/tensor/memory.ts: GPU buffers held on webgpu, heap
   * bytes of tensors on wasm, live tensor bytes elsewhere).
   */
  peak_bytes: number;
  val_loss?: number;
}

export interface TrainRun {
  model: LanguageModel;
  train: WindowSampler;
  val: WindowSampler;
  /** Run folder for checkpoints. */
  out: string;
  /** Content of config.json (model, tokenizer, training options). */
  config: Record<string, unknown>;
  /** Checkpoint to continue from (its weights must already be loaded into `model`). */
  resume?: LoadedCheckpoint;
  /** Receives every step's record (JSON log file, stdout). */
  log?: (rec: StepLog) => void;
  /** Listen for SIGINT/SIGTERM (the CLI does; tests need not). */
  handleSignals?: boolean;
  /** Test hook: asked after every step; true stops the run as a signal would (save, exit 130). */
  stopAfterStep?: (step: number) => boolean;
  /** Quiet: no human lines on stderr. */
  quiet?: boolean;
  /**
   * Data-parallel training (lib/dist/): this process is one rank; it trains on its share of each step's
   * micro-batches, and only the writer rank saves checkpoints.
   */
  dist?: DataParallelHooks;
}

export interface TrainResult {
  steps: number;
  lastLoss: number | null;
  lastValLoss: number | null;
  tokensSeen: number;
  elapsedS: number;
  losses: number[];
  /** Highest peak_bytes of the run's steps (0 when no step ran). */
  peakBytes: number;
}

/**
 * One micro-batch's forward and backward pass: the loss times `lossMul` (loss scale / micro-batches) and its
 * gradients, added on the device to `acc` (the sums so far, disposed here; null for the first micro-batch).
 * Returns the new sums, in the order of `vars`, and the scaled loss. `names` name the parameters in errors.
 */
export function addMicroBatchGradients(
  model: LanguageModel,
  vars: tf.Variable[],
  names: string[],
  x: Int32Array,
  y: Int32Array,
  batchSize: number,
  precision: Precision,
  lossMul: number,
  acc: tf.Tensor[] | null,
  inputTag?: string,
): { acc: tf.Tensor[]; loss: tf.Scalar } {
  const T = x.length / batchSize;
  const { value, grads } = tf.tidy(() => {
    const xt = tf.tensor2d(x, [batchSize, T], "int32");
    const yt = tf.tensor2d(y, [batchSize, T], "int32");
    if (inputTag !== undefined) { // webgpu: the step inputs a replayed step writes (lib/train_replay.ts)
      stepInputWrite(`${inputTag}x`, xt);
      stepInputWrite(`${inputTag}y`, yt);
    }
    return tf.variableGrads(
      () =>
        tf.mul(model.loss(xt, yt, { precision, training: true, gradScale: lossMul }), lossMul) as tf.Scalar,
      vars,
    );
  });
  const g = vars.map((v, i) => {
    const t = grads[v.name];
    if (!t) throw new LmpipeError(`model parameter '${names[i]}' received no gradient`);
    return t;
  });
  if (acc === null) return { acc: g, loss: value };
  const sums = acc.map((a, i) => tf.add(a, g[i]));
  acc.forEach((t) => t.dispose());
  g.forEach((t) => t.dispose());
  return { acc: sums, loss: value };
}

/** Mean validation loss over fixed batches (one host read). */
export async function evaluateBatches(
  model: LanguageModel,
  batches: Batch[],
  precision: Precision,
): Promise<number> {
  const values = await batchLosses(model, batches, precision);
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/** The validation loss of each batch (one host read). */
export async function batchLosses(
  model: LanguageModel,
  batches: Batch[],
  precision: Precision,
): Promise<Float32Array> {
  const parts: tf.Scalar[] = [];
  for (const b of batches) {
    parts.push(tf.tidy(() => {
      const x = tf.tensor2d(b.x, [b.batchSize, b.context], "int32");
      const y = tf.tensor2d(b.y, [b.batchSize, b.context], "int32");
      return model.loss(x, y, { precision, training: false });
    }));
  }
  const stacked = tf.stack(parts);
  const values = await readData(stacked);
  stacked.dispose();
  parts.forEach((p) => p.dispose());
  return values as Float32Array;
}

/** The AdamW settings of a run: its options, nanoGPT's values where a (stored) run lacks them. */
export function adamWOptions(
  model: LanguageModel,
  o: Pick<TrainOptions, "weightDecay" | "beta1" | "beta2" | "eps" | "decayParams">,
): AdamWOptions {
  return {
    beta1: o.beta1 ?? ADAMW_DEFAULTS.beta1,
    beta2: o.beta2 ?? ADAMW_DEFAULTS.beta2,
    eps: o.eps ?? ADAMW_DEFAULTS.eps,
    weightDecay: o.weightDecay,
    decays: o.decayParams === "all" ? () => true : (n) => model.decays(n),
  };
}

export async function trainLoop(run: TrainRun, o: TrainOptions): Promise<TrainResult> {
  const { model, train, val, dist } = run;
  const names = [...model.params.keys()];
  const vars = names.map((n) => model.params.get(n)!);
  const optimizer = new AdamW(model.params, adamWOptions(model, o));
  // webgpu: the clip factor and overflow verdict on the device (deviceStepControl), and in one process
  // recorded steps replayed (under mixed, a recording holds for one loss scale)
  const controlOnDevice = !dist && stepControlOnDevice();
  const replay = controlOnDevice && replayAllowed()
    ? new TrainStepReplay([...vars, ...optimizer.m.values(), ...optimizer.v.values()], optimizer)
    : null;
  // real f16 operands in lmpipe's webgpu kernels; bf16 has no WGSL type and stays emulated in float32
  setWebgpuHalfOperands(o.precision === "mixed");
  const scaler = new LossScaler({
    enabled: o.precision === "mixed",
    window: o.scaleWindow,
    initScale: o.initScale,
  });
  let step = 0, tokensSeen = 0, elapsedBefore = 0, lastLoss: number | null = null;
  if (run.resume?.state) {
    const s = run.resume.state;
    step = s.step;
    tokensSeen = s.tokensSeen;
    elapsedBefore = s.elapsedS;
    lastLoss = s.lastLoss ?? null;
    scaler.load(s.lossScale);
    train.load({ rng: s.rng });
    if (!run.resume.optimizer) throw new LmpipeError(`${run.resume.dir}: optimizer state was not loaded`);
    optimizer.loadState(s.optimizerStep, run.resume.optimizer);
  }
  const B = o.batchSize, T = train.context;
  const rampTokens = o.batchRamp ?? 0;
  const shape = { batchSize: B, rampTokens, gradAccum: o.gradAccum, context: T };
  const maxTokens = o.maxTokens ?? null;
  const startedAt = performance.now();
  // Data-parallel ranks go by rank 0's clock, shared every step, so time budgets end everywhere alike.
  let agreedElapsed: number | null = dist ? elapsedBefore : null;
  const elapsed = () => agreedElapsed ?? elapsedBefore + (performance.now() - startedAt) / 1000;
  const valBatches = await val.fixedBatches(o.evalIters, B);
  let lastSaved = run.resume?.state?.step ?? -1;
  // The schedule's shape, fixed once known (see TrainOptions.warmup/decaySteps).
  const stored = run.resume?.state?.schedule;
  const tokenSteps = maxTokens === null ? null : stepsToTokens(maxTokens, 0, shape);
  const budgetSteps = o.maxSteps === null || tokenSteps === null
    ? o.maxSteps ?? tokenSteps
    : Math.min(o.maxSteps, tokenSteps);
  let decaySteps: number | null = o.decaySteps ?? stored?.decaySteps ?? budgetSteps;
  let warmup: number | null = o.warmup ?? stored?.warmup ?? null;
  const autoWarmup = (d: number) => Math.min(DEFAULT_WARMUP, Math.ceil(d / 10));
  if (decaySteps !== null && warmup === null) warmup = autoWarmup(decaySteps);
  const stepTimes: number[] = [], stepSequences: number[] = [];
  const schedule = () => ({
    schedule: o.schedule,
    lr: o.lr,
    minLr: o.minLr,
    // before a time-budget run knows its length: a provisional warm-up, no decay yet
    warmup: warmup ?? DEFAULT_WARMUP,
    decaySteps: decaySteps ?? Number.MAX_SAFE_INTEGER,
  });
  let lastValLoss: number | null = null;
  const losses: number[] = [];
  let runPeak = 0;

  const state = (): TrainState => ({
    step,
    optimizerStep: optimizer.t,
    lossScale: scaler.state(),
    rng: train.rng.state(),
    sampler: { shards: train.shards.map((s) => ({ path: s.info.path, tokens: s.tokens })) },
    elapsedS: elapsed(),
    tokensSeen,
    lastLoss: lastLoss ?? undefined,
    schedule: decaySteps !== null && warmup !== null ? { warmup, decaySteps } : undefined,
  });
  const save = async () => {
    if (dist) await dist.syncReplicas(model.params); // the checkpoint is every rank's model
    if (dist && !dist.writer) return void (lastSaved = step); // rank 0 alone writes the run folder
    const optState = optimizer.stateTensors() as Map<string, tf.Tensor>;
    await saveCheckpoint(run.out, {
      params: model.params,
      optimizer: optState,
      config: run.config,
      state: state(),
    });
    lastSaved = step;
  };

  // Signals: the first asks the loop to stop after the current step and save; a second exits at once
  // (the last completed checkpoint stays intact, since saves are atomic).
  let stopSignal: string | null = null;
  const listeners: [Deno.Signal, () => void][] = [];
  if (run.handleSignals) {
    for (const sig of ["SIGINT", "SIGTERM"] as Deno.Signal[]) {
      const fn = () => {
        if (stopSignal) {
          info(`${sig} again: exiting without saving (the last checkpoint in ${run.out} is intact)`);
          Deno.exit(EXIT.interrupted);
        }
        stopSignal = sig;
        if (!run.quiet) {
          info(`${sig}: finishing step ${step + 1}, then saving a checkpoint (press again to abort)`);
        }
      };
      try {
        Deno.addSignalListener(sig, fn);
        listeners.push([sig, fn]);
      } catch { /* signal not supported on this platform */ }
    }
  }

  try {
    const done = () =>
      (o.maxSteps !== null && step >= o.maxSteps) || (o.maxTimeS !== null && elapsed() >= o.maxTimeS) ||
      (maxTokens !== null && tokensSeen >= maxTokens);
    // after step n (counted from 1): an eval, a checkpoint
    const evalDue = (n: number) => o.evalEvery > 0 && n % o.evalEvery === 0;
    const ckptDue = (n: number) => o.ckptEvery > 0 && n % o.ckptEvery === 0;
    // what a replay's recording holds for: the batch size, micro-batches and loss scale
    const replayShape = (batch: number, scale: number) => `${batch}x${o.gradAccum} at loss scale ${scale}`;
    // A replayed step issued before the previous one's values were read (see aheadOk below).
    let ahead: { lr: number; b: number; batches: Batch[]; values: Promise<Float32Array> } | null = null;
    let lastReadAt = 0;
    while (ahead !== null || !done()) {
      const t0 = performance.now();
      resetPeak();
      const issued = ahead;
      ahead = null;
      const lr = issued ? issued.lr : learningRate(step, schedule());
      const S = scaler.scale;
      const b = issued ? issued.b : rampedBatchSize(tokensSeen, B, rampTokens);
      const tokensPerStep = b * T * o.gradAccum;
      // Forward/backward over the micro-batches; gradients summed on the device.
      let acc: tf.Tensor[] | null = null;
      let lossParts: tf.Tensor[] = [];
      const owned: number[] = [];
      const batches: Batch[] = issued ? issued.batches : [];
      for (let micro = 0; micro < o.gradAccum && !issued; micro++) {
        if (dist && !dist.owns(micro)) {
          train.skip(b); // another rank's micro-batch: keep the same data position
          continue;
        }
        owned.push(micro);
        batches.push(await train.next(b));
      }
      const stepShape = replayShape(b, S);
      // One reduction over all gradients (norm and overflow check) and one host read per step. On webgpu
      // the clip factor and the overflow verdict are also computed on the device and AdamW is recorded
      // before the read (deviceStepControl): a read takes ~11 ms in Deno's WebGPU and the GPU would idle
      // while the host records AdamW after it. The host reaches the same verdict from the values it reads.
      // There, once two steps were recorded alike, a step is a replay of the GPU work (lib/train_replay.ts).
      const gradientsOf = (micro: number, tag?: string) => {
        const batch = batches[micro];
        const r = addMicroBatchGradients(
          model,
          vars,
          names,
          batch.x,
          batch.y,
          b,
          o.precision,
          S / o.gradAccum,
          acc,
          tag,
        );
        acc = r.acc;
        lossParts.push(r.loss);
      };
      let stepValues: ArrayLike<number>;
      if (replay && (issued || replay.canReplay(stepShape))) {
        const values = issued ? issued.values : replay.replay(batches, lr);
        // While the GPU runs this step and Deno's read waits out its ~11 ms, the next step is issued too,
        // when nothing must happen between the two: no eval, checkpoint or end after this step, no stop
        // asked for, the schedule fixed. A stop that comes in meanwhile (a signal, the time budget) is
        // acted on after the next step, whose work is already on the GPU.
        // this step's number once counted, which is also the next step's 0-based index for the schedule
        const n = step + 1, nextB = rampedBatchSize(tokensSeen + tokensPerStep, B, rampTokens);
        // (not under mixed: the next step's loss scale depends on this step's overflow verdict)
        const aheadOk = o.precision !== "mixed" && !evalDue(n) && !ckptDue(n) &&
          !(o.maxSteps !== null && n >= o.maxSteps) &&
          !(maxTokens !== null && tokensSeen + tokensPerStep >= maxTokens) &&
          !(o.maxTimeS !== null && (decaySteps === null || elapsed() >= o.maxTimeS)) &&
          stopSignal === null && !(run.stopAfterStep?.(n) ?? false) &&
          replay.canReplay(replayShape(nextB, S));
        if (aheadOk) {
          const nextBatches: Batch[] = [];
          for (let micro = 0; micro < o.gradAccum; micro++) nextBatches.push(await train.next(nextB));
          const nextLr = learningRate(n, schedule());
          ahead = { lr: nextLr, b: nextB, batches: nextBatches, values: replay.replay(nextBatches, nextLr) };
          replayStats.issuedAhead++;
        }
        stepValues = await values;
        acc = [];
      } else if (controlOnDevice) {
        const recordStep = () => {
          batches.forEach((_, micro) => gradientsOf(micro, replay ? microBatchTag(micro) : undefined));
          const both = tf.tidy(() => tf.stack([sumOfSquares(acc!, 1 / S), pairwiseSum(lossParts)]));
          const control = deviceStepControl(both, o.gradClip, S);
          optimizer.step(new Map(names.map((n, i) => [n, acc![i]])), lr, 1, control);
          control.dispose(), lossParts.forEach((t) => t.dispose()), acc!.forEach((t) => t.dispose());
          lossParts = [], acc = [];
          return both;
        };
        const both = replay
          ? replay.run(stepShape, recordStep, (line) => run.quiet || info(line))
          : recordStep();
        stepValues = await readData(both);
        both.dispose();
      } else {
        batches.forEach((_, micro) => gradientsOf(micro));
        if (dist) {
          acc = await dist.allreduceGradients(acc!);
          lossParts = await dist.gatherLosses(lossParts, owned, o.gradAccum);
        }
        const both = tf.tidy(() => tf.stack([sumOfSquares(acc!, 1 / S), pairwiseSum(lossParts)]));
        stepValues = await readData(both);
        both.dispose(), lossParts.forEach((t) => t.dispose());
      }
      const sqVal = stepValues[0], scaledLoss = stepValues[1];
      // a step issued during the previous one took the time between the two steps' results
      const readAt = performance.now(), sinceLastRead = readAt - lastReadAt;
      lastReadAt = readAt;
      const loss = scaledLoss / S;
      const gradNorm = Math.sqrt(sqVal);
      let finite = Number.isFinite(sqVal) && Number.isFinite(loss);
      let agreedStop = false, agreedMs: number | null = null;
      if (dist) {
        const a = await dist.agree({
          finite,
          stop: stopSignal !== null,
          elapsedS: elapsedBefore + (performance.now() - startedAt) / 1000,
          stepMs: performance.now() - t0,
        });
        finite = a.finite, agreedStop = a.stop, agreedElapsed = a.elapsedS, agreedMs = a.stepMs;
      }
      const signalled = () => dist ? agreedStop : stopSignal !== null;
      if (!finite && o.precision !== "mixed") { // fp32, bf16: no loss scale, a non-finite step is divergence
        if (controlOnDevice) optimizer.undoSkippedStep(); // the device applied nothing
        acc!.forEach((t) => t.dispose());
        run.log?.(record(step + 1, null, lr, Number.isFinite(gradNorm) ? gradNorm : null, S, true, 0, 0, b));
        throw new LmpipeError(
          `training diverged: the loss is ${loss} (gradient norm ${gradNorm}) at step ${step + 1}. ` +
            (lastSaved >= 0
              ? `The last good checkpoint (step ${lastSaved}) in ${run.out} is kept. `
              : "No checkpoint was saved before this step. ") +
            `Lower --lr, keep --grad-clip on, or lengthen --warmup.`,
          EXIT.training,
        );
      }
      const skipped = scaler.update(finite);
      if (controlOnDevice) {
        if (skipped) optimizer.undoSkippedStep(); // the device applied nothing
      } else if (!skipped) {
        const coef = clipCoefficient(gradNorm, o.gradClip);
        const gmap = new Map(names.map((n, i) => [n, acc![i]]));
        optimizer.step(gmap, lr, coef / S);
      }
      acc!.forEach((t) => t.dispose());
      if (scaler.collapsed()) {
        throw new LmpipeError(
          `training diverged: the loss scale fell to ${scaler.scale} after ${scaler.skippedSteps} skipped steps ` +
            `(gradients overflow even unscaled) at step ${
              step + 1
            }. The last good checkpoint in ${run.out} is kept. ` +
            `Lower --lr or train with --precision fp32.`,
          EXIT.training,
        );
      }
      step += 1;
      tokensSeen += tokensPerStep;
      if (finite) lastLoss = loss;
      losses.push(loss);
      const ms = agreedMs ?? (issued ? sinceLastRead : performance.now() - t0);
      if (decaySteps === null && o.maxTimeS !== null) {
        // time budget only: after a few steps (the first is slower: kernel set-up), fix the length
        stepTimes.push(ms), stepSequences.push(b * o.gradAccum);
        if (stepTimes.length === ESTIMATE_AFTER) {
          const sum = (xs: number[]) => xs.slice(1).reduce((x, y) => x + y, 0);
          const perSequence = sum(stepTimes) / sum(stepSequences) / 1000;
          decaySteps = step +
            Math.max(1, stepsWithin(o.maxTimeS - elapsed(), perSequence, tokensSeen, shape));
          if (warmup === null) warmup = Math.max(step, autoWarmup(decaySteps));
          if (!run.quiet) {
            info(
              `schedule: about ${decaySteps} steps fit --max-time; warm-up ${warmup}, decay to step ${decaySteps}`,
            );
          }
        }
      }
      const rec = record(
        step,
        finite ? loss : null,
        lr,
        finite ? gradNorm : null,
        S,
        skipped,
        ms,
        tokensPerStep,
        b,
      );
      runPeak = Math.max(runPeak, rec.peak_bytes);
      // with the next step already on the GPU (ahead), the weights are no longer this step's: evals,
      // checkpoints and stops wait for that step (it was issued only when none was due after this one)
      const inFlight = ahead !== null;
      const isLast = !inFlight && done();
      if (!inFlight && (evalDue(step) || isLast || signalled())) {
        rec.val_loss = lastValLoss = dist
          ? await dist.evaluate(model, valBatches, o.precision)
          : await evaluateBatches(model, valBatches, o.precision);
      }
      rec.elapsed_s = round(elapsed(), 3);
      run.log?.(rec);
      if (!run.quiet) report(rec, o);
      const stopRequested = !inFlight && (signalled() || (run.stopAfterStep?.(step) ?? false));
      if (!inFlight && (stopRequested || done() || ckptDue(step))) {
        await save();
      }
      if (stopRequested) {
        throw new LmpipeError(
          `interrupted${
            stopSignal ? ` by ${stopSignal}` : dist && signalled() ? " (a signal to another rank)" : ""
          } ` +
            `after step ${step}; checkpoint saved in ${run.out}${
              dist && !dist.writer ? " by rank 0" : ""
            }. ` +
            `Continue with --resume.`,
          EXIT.interrupted,
        );
      }
    }
    if (lastSaved !== step) await save(); // e.g. a resumed run that was already at its budget
  } finally {
    for (const [sig, fn] of listeners) Deno.removeSignalListener(sig, fn);
    replay?.dispose();
    optimizer.dispose();
  }
  return { steps: step, lastLoss, lastValLoss, tokensSeen, elapsedS: elapsed(), losses, peakBytes: runPeak };

  function record(
    s: number,
    loss: number | null,
    lr: number,
    gradNorm: number | null,
    scale: number,
    skipped: boolean,
    ms: number,
    tokens: number,
    batchSize: number,
  ): StepLog {
    return {
      step: s,
      loss,
      lr,
      grad_norm: gradNorm === null ? null : round(gradNorm, 6),
      loss_scale: scale,
      skipped,
      tokens: tokensSeen,
      tokens_per_s: ms > 0 ? round((tokens * 1000) / ms, 1) : 0,
      ms_per_step: round(ms, 1),
      elapsed_s: round(elapsed(), 3),
      batch_size: batchSize,
      peak_bytes: peakBytes(),
    };
  }

  function report(r: StepLog, o: TrainOptions): void {
    const total = budgetSteps !== null ? `/${budgetSteps}` : "";
    const parts = [
      `step ${r.step}${total}`,
      `loss ${r.loss === null ? "nan" : r.loss.toFixed(4)}`,
      r.val_loss !== undefined ? `val ${r.val_loss.toFixed(4)}` : "",
      `lr ${r.lr.toExponential(2)}`,
      `norm ${r.grad_norm === null ? "nan" : r.grad_norm.toFixed(3)}`,
      o.precision === "mixed" ? `scale ${r.loss_scale}${r.skipped ? " SKIPPED" : ""}` : "",
      `${fmtCount(Math.round(r.tokens_per_s))} tok/s`,
      `${Math.round(r.ms_per_step)} ms`,
      fmtDuration(r.elapsed_s),
    ].filter((s) => s);
    info(parts.join(" | "));
    if (stderrIsTTY) {
      const frac = budgetSteps !== null
        ? r.step / budgetSteps
        : o.maxTimeS !== null
        ? r.elapsed_s / o.maxTimeS
        : 0;
      const width = 30, filled = Math.round(Math.min(1, frac) * width);
      progress(
        `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${
          (frac * 100).toFixed(0)
        }% step ${r.step}${total}`,
      );
    }
  }
}

const DEFAULT_WARMUP = 2000;
/** Steps timed before a time-budget run estimates its length. */
const ESTIMATE_AFTER = 4;

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
