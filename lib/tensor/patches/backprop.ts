// TF.js 4.22's backward pass (engine.gradients) keeps every tensor it touches until it ends: the forward
// pass's saved activations, every intermediate gradient and every partial sum of a gradient. A training
// step's peak memory is then the whole forward pass plus the whole backward pass at once: at the study's
// GPT (12 layers x 768, context 1024) that does not fit wasm's 4 GiB heap even at batch 1.
//
// This replaces engine.gradients with the same computation, in the same order and with the same kernels
// (so the same numbers, bit for bit), that lets go of what no later step can read:
//   - a node's saved tensors once its gradient has been computed (no other node reads them: each node
//     saves its own clones);
//   - the gradient of a node's outputs once the node has been walked (only the node that produced a
//     tensor reads that tensor's gradient);
//   - the two parts of a gradient once they are summed.
// A gradient tensor may sit in several places at once (a gradient function may hand dy on unchanged, as
// an identity does), so each is counted and disposed when its last place lets go. Left alone: the
// gradients returned for `xs`, the caller's `dy`, and everything when gradients are being recorded for a
// higher-order gradient (TF.js's own method runs then). LMPIPE_EARLY_RELEASE=0 restores TF.js's method.
import * as tf from "@tensorflow/tfjs-core";
import { switchOn } from "../env_switch.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  saved: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
}

/**
 * The nodes of `tape` that lie on a path from one of `xs` to `y`, in tape order, each with only the
 * inputs that depend on `xs` (the ones that get a gradient). The same selection TF.js's own pass makes.
 */
export function nodesFromXsToY(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const dependsOnX = new Set<number>(xs.map((x) => x.id));
  const fromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((t) => dependsOnX.has(t.id))) {
      fromX.add(node.id);
      for (const o of node.outputs) dependsOnX.add(o.id);
    }
  }
  const leadsToY = new Set<number>([y.id]);
  const toY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => leadsToY.has(o.id))) {
      toY.add(node.id);
      for (const t of Object.values(node.inputs)) leadsToY.add(t.id);
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!fromX.has(node.id) || !toY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const [name, t] of Object.entries(node.inputs)) if (dependsOnX.has(t.id)) inputs[name] = t;
    out.push({ ...node, inputs });
  }
  return out;
}

/**
 * Gradients by tensor id, where one tensor object may stand in several places: a tensor is disposed when
 * the last place holding it lets go, unless it is protected (the caller's dy, the returned gradients).
 */
class GradientSlots {
  private readonly byId = new Map<number, tf.Tensor>();
  private readonly places = new Map<tf.Tensor, number>();
  readonly protectedTensors = new Set<tf.Tensor>();

  get(id: number): tf.Tensor | undefined {
    return this.byId.get(id);
  }

  holds(t: tf.Tensor): boolean {
    return (this.places.get(t) ?? 0) > 0;
  }

  set(id: number, t: tf.Tensor): void {
    this.release(id);
    this.byId.set(id, t);
    this.places.set(t, (this.places.get(t) ?? 0) + 1);
  }

  /** Forgets tensor `id`'s gradient, disposing it if nothing else holds it. */
  release(id: number): void {
    const t = this.byId.get(id);
    if (!t) return;
    this.byId.delete(id);
    const n = (this.places.get(t) ?? 1) - 1;
    if (n > 0) this.places.set(t, n);
    else {
      this.places.delete(t);
      this.disposeIfFree(t);
    }
  }

  /** Disposes `t` unless a place or the caller still needs it. */
  disposeIfFree(t: tf.Tensor): void {
    if (!this.holds(t) && !this.protectedTensors.has(t)) t.dispose();
  }
}

/** Walks `nodes` backwards from y's gradient, releasing as described at the top of this file. */
function backpropagate(nodes: TapeNode[], slots: GradientSlots, keepIds: Set<number>, tidy: Any): void {
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (!node.gradient) {
      throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
    }
    const dys = node.outputs.map((o) => slots.get(o.id) ?? null);
    const names = Object.keys(node.inputs);
    // one scope for the gradient function and its closures: what they compute on the way (TF.js's
    // Softmax gradient forms dy * y before its closure runs) is freed with it, the gradients kept
    const dxs: tf.Tensor[] = tidy(() => {
      const inputGradients = node.gradient!(dys);
      return names.map((name) => {
        if (!(name in inputGradients)) {
          throw new Error(
            `Cannot backprop through input ${name}. Available gradients found: ${
              Object.keys(inputGradients)
            }.`,
          );
        }
        return inputGradients[name]();
      });
    });
    names.forEach((name, j) => {
      const x = node.inputs[name], dx = dxs[j];
      if (dx.dtype !== "float32") {
        throw new Error(
          `Error in gradient for op ${node.kernelName}. The gradient of input ${name} must have 'float32' ` +
            `dtype, but has '${dx.dtype}'`,
        );
      }
      if (!tf.util.arraysEqual(dx.shape, x.shape)) {
        throw new Error(
          `Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has shape ` +
            `'${dx.shape}', which does not match the shape of the input '${x.shape}'`,
        );
      }
      const current = slots.get(x.id);
      if (!current) slots.set(x.id, dx);
      else {
        slots.set(x.id, tf.add(current, dx));
        slots.disposeIfFree(dx);
      }
    });
    // nothing later reads this node's outputs' gradients or its saved tensors
    for (const o of node.outputs) if (!keepIds.has(o.id)) slots.release(o.id);
    for (const t of node.saved) if (!slots.holds(t)) t.dispose();
  }
}

let original: Any = null;
let releasing: Any = null;

/** Replaces the engine's gradients() with the releasing one above (idempotent). */
export function installEarlyReleaseBackprop(): void {
  if (original) return;
  const engine = tf.engine() as Any;
  original = engine.gradients;
  releasing = function (
    this: Any,
    f: () => tf.Tensor,
    xs: tf.Tensor[],
    dy?: tf.Tensor,
    allowNoGradients = false,
  ) {
    // recording a higher-order gradient: the tape must keep everything, as TF.js's method does
    if (this.state.gradientDepth > 0) return original.call(this, f, xs, dy, allowNoGradients);
    if (xs.length === 0) throw new Error("gradients() received an empty list of xs.");
    if (dy != null && dy.dtype !== "float32") {
      throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
    }
    // The tape's saved tensors are kept out of every scope, so whatever ends this call (an out-of-memory
    // error in a --batch-size auto trial, say) must dispose them, or the next attempt starts with a heap
    // full of the last one's activations (TF.js's own method leaves them).
    const dropTape = () => {
      for (const node of (this.state.activeTape ?? []) as TapeNode[]) for (const t of node.saved) t.dispose();
      this.state.activeTape = null;
    };
    let y: tf.Tensor;
    try {
      y = this.scopedRun(() => this.startTape(), () => this.endTape(), () => this.tidy("forward", f));
    } catch (err) {
      dropTape();
      throw err;
    }
    try {
      if (!(y instanceof tf.Tensor)) throw new Error("The result y returned by f() must be a tensor.");
      const nodes = nodesFromXsToY(this.state.activeTape, xs, y);
      if (!allowNoGradients && nodes.length === 0 && xs.length > 0) {
        throw new Error(
          "Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses " +
            "all operations that lead from x to y.",
        );
      }
      return this.tidy("backward", () => {
        const slots = new GradientSlots();
        const seed = dy ?? tf.ones(y.shape);
        if (dy) slots.protectedTensors.add(dy);
        slots.set(y.id, seed);
        const keepIds = new Set(xs.map((x) => x.id));
        backpropagate(nodes, slots, keepIds, (fn: () => tf.Tensor) => this.tidy(fn));
        return { value: y, grads: xs.map((x) => slots.get(x.id)) };
      });
    } catch (err) {
      y.dispose();
      throw err;
    } finally {
      dropTape();
    }
  };
  setEarlyRelease(switchOn("LMPIPE_EARLY_RELEASE"));
}

/** Whether the releasing backward pass is the engine's now (the image models size their CNN chunks by it). */
export function earlyReleaseOn(): boolean {
  return original !== null && (tf.engine() as Any).gradients === releasing;
}

/** Turns the releasing backward pass on or off (tests compare both); returns whether it was on. */
export function setEarlyRelease(on: boolean): boolean {
  installEarlyReleaseBackprop();
  const engine = tf.engine() as Any;
  const was = engine.gradients === releasing;
  engine.gradients = on ? releasing : original;
  return was;
}
