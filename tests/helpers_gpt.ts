// Shared by the gpt decoding tests (tests/gpt_decode_test.ts, tests/gpt_decode_head_test.ts): weights with a
// trained-like spread, and a tensor's place on the wasm heap.
import { tf } from "../lib/tensor/backend.ts";
import type { Gpt } from "../lib/models/gpt.ts";
import { randomArray } from "../lib/tensor/testing.ts";
import { type AnyBackend, offsetOf } from "../lib/tensor/wasm/kernels.ts";

/** Weights that make every part of the block matter (the init's 0.02 leaves attention uniform, logits flat). */
export function randomizeWeights(model: Gpt, seed: number): void {
  let k = seed;
  for (const [name, v] of model.params) {
    const r = randomArray(v.size, k++);
    const gain = v.rank === 1 && name.endsWith(".weight");
    const scale = v.rank === 2 ? 1.5 / Math.sqrt(v.shape[0]) : 0.4;
    tf.tidy(() => v.assign(tf.tensor(r.map((x) => (gain ? 1 + 0.3 * x : scale * x)), v.shape)));
  }
}

/** A tensor's byte offset in the wasm heap of the current backend. */
export const offset = (t: tf.Tensor) => offsetOf(tf.backend() as AnyBackend, t);
