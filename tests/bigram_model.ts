// A stand-in LanguageModel for the engine's tests: token embedding, a linear head with bias, softmax.
// Small, deterministic and family-agnostic, so the engine tests depend only on the model contract.
// `poison` lets a test make the loss inf/NaN on chosen calls (an injected overflow or divergence).
import { tf } from "../lib/tensor/backend.ts";
import { embeddingLookup, linear, takeAlongLastAxis } from "../lib/nn.ts";
import type {
  DecodeState,
  ForwardOptions,
  LanguageModel,
  ModelConfig,
  ModelFamily,
} from "../lib/models/types.ts";
import { usageError } from "../lib/errors.ts";
import { Rng } from "../lib/rng.ts";

export interface BigramConfig extends ModelConfig {
  nEmbd: number;
  /** Training loss call (0-based) whose loss becomes NaN (-1: never): an injected divergence. */
  nanAtCall: number;
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
    if (config.nanAtCall >= 0) this.poisonAt.set(config.nanAtCall, NaN);
    const rng = new Rng(seed);
    const rand = (n: number, std: number) =>
      Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * std);
    const V = config.vocabSize, C = config.nEmbd;
    this.params.set("wte.weight", tf.variable(tf.tensor2d(rand(V * C, 0.5), [V, C])));
    this.params.set("head.weight", tf.variable(tf.tensor2d(rand(C * V, 0.5), [C, V])));
    this.params.set("head.bias", tf.variable(tf.zeros([V])));
  }

  decays(name: string): boolean {
    return name.endsWith(".weight");
  }

  logits(idx: tf.Tensor2D, _opts?: ForwardOptions): tf.Tensor3D {
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const h = embeddingLookup(this.params.get("wte.weight")! as tf.Tensor2D, idx.reshape([B * T]));
      const out = linear(
        h,
        this.params.get("head.weight")! as tf.Tensor2D,
        this.params.get("head.bias")! as tf.Tensor1D,
      );
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
    return tf.tidy(() =>
      this.logits(tokens.reshape([tokens.shape[0], 1]) as tf.Tensor2D).squeeze([1]) as tf.Tensor2D
    );
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

/** The stand-in as a model family, so the pipelines can be tested end to end without the gpt family. */
export const BIGRAM_FAMILY: ModelFamily = {
  name: "bigram",
  summary: "test stand-in: embedding + linear head",
  presets: {
    tiny: { model: "bigram", vocabSize: 64, contextLength: 16, nEmbd: 8, nanAtCall: -1 },
  },
  validate(c: ModelConfig): void {
    for (const k of ["vocabSize", "contextLength", "nEmbd"]) {
      const v = c[k];
      if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
        throw usageError(`${k} must be a positive integer, got ${v}`);
      }
    }
  },
  create(c: ModelConfig, seed: number) {
    return new BigramModel(c as BigramConfig, seed);
  },
};

/** Writes an llm.c shard of a learnable token stream: mostly next = (7 t + 3) mod vocab. */
export async function writeToyShard(
  path: string,
  tokens: number,
  vocab: number,
  seed: number,
  maxId?: number,
) {
  const { shardHeader, encodeU16 } = await import("../lib/shard.ts");
  const rng = new Rng(seed);
  const ids = new Uint16Array(tokens);
  let t = rng.int(vocab);
  for (let i = 0; i < tokens; i++) {
    ids[i] = t;
    t = rng.next() < 0.8 ? (7 * t + 3) % vocab : rng.int(vocab);
  }
  if (maxId !== undefined) ids[tokens >> 1] = maxId;
  const bytes = new Uint8Array(1024 + 2 * tokens);
  bytes.set(shardHeader(tokens));
  bytes.set(encodeU16(ids), 1024);
  await Deno.writeFile(path, bytes);
}
