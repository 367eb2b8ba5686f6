// Test helper for comparing a model's loss and gradients across backends: the same model, built on each
// backend from the same seed and weights, and the same batch, with cpu as the reference and tolerances
// for fp32 and for --precision mixed.
import { initBackend, readData, readScalar, tf } from "../lib/tensor/backend.ts";
import { assertClose, type TestBackend } from "../lib/tensor/testing.ts";
import type { LanguageModel, Precision } from "../lib/models/types.ts";

export interface LossAndGrads {
  loss: number;
  grads: Map<string, ArrayLike<number>>;
}

/**
 * The loss and every parameter's gradient on `backend` of the model `build` makes there, for windows of
 * `rows` (token rows of T + 1: inputs are the first T, targets the last T).
 */
export async function lossAndGrads(
  backend: TestBackend,
  precision: Precision,
  build: () => LanguageModel,
  rows: number[][],
): Promise<LossAndGrads> {
  await initBackend(backend, { quiet: true });
  const T = rows[0].length - 1;
  const idx = tf.tensor2d(rows.map((r) => r.slice(0, T)), [rows.length, T], "int32");
  const tgt = tf.tensor2d(rows.map((r) => r.slice(1)), [rows.length, T], "int32");
  const model = build();
  const { value, grads } = tf.variableGrads(() => model.loss(idx, tgt, { precision }));
  const out = { loss: await readScalar(value), grads: new Map<string, ArrayLike<number>>() };
  for (const [n, v] of model.params) out.grads.set(n, await readData(grads[v.name]));
  tf.dispose([value, ...Object.values(grads), idx, tgt]);
  model.dispose();
  return out;
}

/**
 * Asserts `got` matches cpu's `want`: loss to 1e-5 (fp32) or 1e-4 (mixed), gradients to 1e-4 or 4e-3
 * (mixed: a float32 difference can flip an fp16 rounding, a relative step of 2^-11; with autocast's
 * rounding of weights and matMul outputs too, a few flips add up: 2.9e-3 measured on a small norm weight's
 * gradient of the rope + grouped-kv + swiglu block on webgpu).
 */
export function assertAgrees(
  got: LossAndGrads,
  want: LossAndGrads,
  precision: Precision,
  what: string,
): void {
  assertClose([got.loss], [want.loss], precision === "fp32" ? 1e-5 : 1e-4, `${what} loss`);
  const tol = precision === "fp32" ? 1e-4 : 4e-3;
  for (const [n, g] of want.grads) assertClose(got.grads.get(n)!, g, tol, `${what} ${n}`);
}
