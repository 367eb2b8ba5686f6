// When lib/train_loop.ts replays a recorded training step on webgpu instead of running it through TF.js
// (lib/tensor/webgpu/replay.ts says how a replay stays exact). The first steps run as usual (they compile
// pipelines and create the tensors models cache); then two consecutive steps are recorded and compared,
// and when they are the same computation every later step with the same batch shape is a replay of the
// second: its token ids and AdamW's learning-rate terms written in, its gradient norm and loss read out.
// A step that cannot be a replay (the batch size changed during a --batch-ramp, a checkpoint was loaded)
// runs as usual, and the recording starts over when the shape is new (under --precision mixed the loss scale
// is part of the shape). Turned off by LMPIPE_WEBGPU_REPLAY=0.
import { tf } from "./tensor/backend.ts";
import { captureStep, type StepCapture } from "./tensor/webgpu/replay.ts";
import { type AdamW, ADAMW_STEP_TERMS } from "./optim.ts";
import { switchOn } from "./tensor/env_switch.ts";

/** Steps run as usual before the first recording (pipelines compiled, cached tensors made). */
const STEPS_BEFORE_RECORDING = 1;

/** The step-input tags of micro-batch `micro`'s token ids (addMicroBatchGradients writes them). */
export function microBatchTag(micro: number): string {
  return `micro${micro}.`;
}

/** Whether LMPIPE_WEBGPU_REPLAY allows replays (default on). */
export function replayAllowed(): boolean {
  return switchOn("LMPIPE_WEBGPU_REPLAY");
}

/**
 * Replayed steps, refusals, host ms spent issuing replays, and steps issued before the previous one's read
 * (lib/train_loop.ts), in this process: tests and benches read them.
 */
export const replayStats = { replayed: 0, refusals: [] as string[], hostMs: 0, issuedAhead: 0 };

export class TrainStepReplay {
  private stepsRun = 0;
  private earlier: { capture: StepCapture; shape: string } | null = null;
  private plan: { capture: StepCapture; shape: string } | null = null;
  /** Why steps are not replayed (null while they may be). */
  refusal: string | null = null;
  private announced = false;

  /** `state`: every variable carried from step to step (parameters, then the optimizer's moments). */
  constructor(private readonly state: tf.Variable[], private readonly optimizer: AdamW) {}

  /** Whether a step of this `shape` (batch size, micro-batches) can be a replay of the recorded one. */
  canReplay(shape: string): boolean {
    return this.plan !== null && this.plan.shape === shape && this.plan.capture.matches(this.state);
  }

  /**
   * Replays the recorded step on micro-batches `batches` (token ids x, targets y) at learning rate `lr`:
   * the GPU work is issued before this returns; the promise resolves to what the recorded step's result
   * held, [sum of squared gradients, loss]. The next step may be issued before it resolves (one ahead).
   */
  replay(batches: { x: Int32Array; y: Int32Array }[], lr: number): Promise<Float32Array> {
    const inputs = new Map<string, Uint8Array>();
    batches.forEach((b, micro) => {
      inputs.set(`${microBatchTag(micro)}x`, new Uint8Array(b.x.buffer, b.x.byteOffset, b.x.byteLength));
      inputs.set(`${microBatchTag(micro)}y`, new Uint8Array(b.y.buffer, b.y.byteOffset, b.y.byteLength));
    });
    this.optimizer.t += 1;
    const terms = this.optimizer.stepTerms(lr, this.optimizer.t);
    inputs.set(ADAMW_STEP_TERMS, new Uint8Array(terms.buffer));
    const c = this.plan!.capture;
    const t0 = performance.now();
    c.replay(inputs, this.state);
    replayStats.hostMs += performance.now() - t0;
    replayStats.replayed++;
    return c.readResult();
  }

  /**
   * Runs `step` (one whole training step through TF.js, returning its [sum of squares, loss] tensor),
   * recording it when it is time to; `shape` as for canReplay. `info` hears why steps are not replayed.
   */
  run(shape: string, step: () => tf.Tensor, info: (line: string) => void): tf.Tensor {
    if (this.refusal !== null || this.stepsRun++ < STEPS_BEFORE_RECORDING) return step();
    this.plan?.capture.dispose();
    this.plan = null;
    const { capture, result } = captureStep(this.state, step);
    const earlier = this.earlier;
    if (earlier === null || earlier.shape !== shape) {
      capture.dispose(); // its operations stay, for the comparison with the next step
      earlier?.capture.dispose();
      this.earlier = { capture, shape };
      return result;
    }
    this.earlier = null;
    const why = capture.compare(earlier.capture);
    if (why !== null) {
      capture.dispose();
      this.refusal = why;
      replayStats.refusals.push(why);
      info(`webgpu: training steps are not replayed (${why}); every step runs through TF.js`);
      return result;
    }
    capture.carryState();
    this.plan = { capture, shape };
    if (!this.announced) {
      this.announced = true;
      info("webgpu: the training step is recorded; the next steps replay it (LMPIPE_WEBGPU_REPLAY=0: off)");
    }
    return result;
  }

  dispose(): void {
    this.plan?.capture.dispose();
    this.earlier?.capture.dispose();
    this.plan = this.earlier = null;
  }
}
