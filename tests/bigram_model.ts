// A stand-in LanguageModel for the engine's tests: token embedding, a linear head with bias, softmax.
// Small, deterministic and family-agnostic, so the engine tests depend only on the model contract.
// `poison` lets a test make the loss inf/NaN on chosen calls (an injected overflow or divergence).
import { tf } from "../lib/tensor/backend.ts";
import { embeddingLookup, linear, takeAlongLastAxis } from "../lib/tensor/fixes.ts";
import type { DecodeState, ForwardOptions, LanguageModel, ModelConfig } from "../lib/models/types.ts";
import { Rng } from "../lib/rng.ts";

export interface BigramConfig extends ModelConfig {
  nEmbd: number;
}

class BigramState implements DecodeState {
  length = 0;
  dispose(): void {}
}

export class BigramModel implements LanguageModel {
  readonly params = new Map<string, tf.Variable>();
  /** Training loss calls so far. */
  lossCalls = 0;
  /** Multiplier (e.g. Infinity, NaN) for the loss of training call number k (0-based). */
  poisonAt = new Map<number, number>();

  constructor(readonly config: BigramConfig, seed: number) {
    const rng = new Rng(seed);
    const rand = (n: number, std: number) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * std);
    const V = config.vocabSize, C = config.nEmbd;
    this.params.set("wte.weight", tf.variable(tf.tensor2d(rand(V * C, 0.5), [V, C]), true, `bigram${seed}.wte`));
    this.params.set("head.weight", tf.variable(tf.tensor2d(rand(C * V, 0.5), [C, V]), true, `bigram${seed}.head`));
    this.params.set("head.bias", tf.variable(tf.zeros([V]), true, `bigram${seed}.bias`));
  }

  decays(name: string): boolean {
    return name.endsWith(".weight");
  }

  logits(idx: tf.Tensor2D, _opts?: ForwardOptions): tf.Tensor3D {
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const h = embeddingLookup(this.params.get("wte.weight")! as tf.Tensor2D, idx.reshape([B * T]));
      const out = linear(h, this.params.get("head.weight")! as tf.Tensor2D, this.params.get("head.bias")! as tf.Tensor1D);
      return out.reshape([B, T, this.config.vocabSize]) as tf.Tensor3D;
    });
  }

  loss(idx: tf.Tensor2D, targets: tf.Tensor2D, opts?: ForwardOptions): tf.Scalar {
    const factor = opts?.training ? this.poisonAt.get(this.lossCalls++) : undefined;
    const [B, T] = idx.shape;
    const logits = this.logits(idx, opts).reshape([B * T, this.config.vocabSize]) as tf.Tensor2D;
    const logp = tf.logSoftmax(logits) as tf.Tensor2D;
    const picked = takeAlongLastAxis(logp, targets.reshape([B * T]) as tf.Tensor1D);
    const l = tf.neg(tf.mean(picked)) as tf.Scalar;
    return factor === undefined ? l : tf.mul(l, factor) as tf.Scalar;
  }

  startDecode(_batch: number): DecodeState {
    return new BigramState();
  }

  decodeStep(state: DecodeState, tokens: tf.Tensor1D): tf.Tensor2D {
    (state as BigramState).length += 1;
    return tf.tidy(() => this.logits(tokens.reshape([tokens.shape[0], 1]) as tf.Tensor2D).squeeze([1]) as tf.Tensor2D);
  }

  paramCount(): number {
    let n = 0;
    for (const p of this.params.values()) n += p.size;
    return n;
  }

  flopsPerToken(): number {
    return 6 * this.config.nEmbd * this.config.vocabSize;
  }

  dispose(): void {
    for (const p of this.params.values()) p.dispose();
  }
}
