// The contract between models and the training engine. Every model family (gpt, pixel-*) implements
// LanguageModel; the engine (optimiser, loss scaling, checkpoints, train/eval/sample pipelines) only
// ever talks to this interface, so new models plug in without changing the engine.
import type { tf } from "../tensor/backend.ts";

export type Precision = "fp32" | "mixed" | "bf16";
/** The --precision values (docs/precision.md): float32; binary16 autocast with loss scaling; bfloat16 autocast. */
export const PRECISIONS: readonly Precision[] = ["fp32", "mixed", "bf16"];

/** A model's full configuration: what config.json stores and what `--config file.json` overrides. */
export interface ModelConfig {
  /** Family name: "gpt" | "pixel-cumsum" | "pixel-attn" | "pixel-attn-wide". */
  model: string;
  /** Preset it was derived from (informational). */
  preset?: string;
  /** Padded vocabulary (50304 for GPT-2 BPE). */
  vocabSize: number;
  /** Context length in tokens. */
  contextLength: number;
  /** Family-specific fields (layers, width, heads, image size, cnn, ...). */
  [key: string]: unknown;
}

export interface ForwardOptions {
  precision?: Precision;
  /** true while training (families with train/eval differences must stay causal in both). */
  training?: boolean;
  /**
   * What the caller multiplies the loss by before its backward pass (loss scale / micro-batches; default 1).
   * Under mixed / bf16 the loss forms the logits' 16-bit gradient in the forward pass, rounded at this
   * scale as autocast's backward pass would see it.
   */
  gradScale?: number;
}

/**
 * What a sampler reads of a step's logits when it draws from the top k (lib/top_k.ts topKIds over ids
 * below n): a step given this may return -Infinity for any id that cannot be among those top k (ties
 * included) and must return every other logit exactly as without it (lib/models/gpt_decode_head.ts).
 */
export interface TopKNeed {
  k: number;
  n: number;
}

/** Incremental decoding state (e.g. a key/value cache); owned by the model, opaque to the engine. */
export interface DecodeState {
  /** Number of positions already consumed. */
  readonly length: number;
  /**
   * Present where the model decodes this state on the host side of the engine (gpt on wasm:
   * lib/models/gpt_decode.ts): feeds one token of a batch-1 decode and returns the next logits
   * [vocabSize] without a tensor, as a view valid until the next step. decodeStep works on it too.
   */
  stepOnHost?(token: number, need?: TopKNeed): Float32Array;
  /** With stepOnHost: the last logits' block maxima (lib/top_k.ts), a view valid until the next step. */
  blockMaxima?(): Float32Array;
  /**
   * Where present: starts over at position 0, keeping what the state built from the weights (they must
   * not have changed since), instead of dispose() and a new startDecode.
   */
  reset?(): void;
  dispose(): void;
}

export interface LanguageModel {
  readonly config: ModelConfig;
  /** Trainable weights by stable, documented name (these are the safetensors tensor names). */
  readonly params: Map<string, tf.Variable>;
  /** Whether AdamW weight decay applies to this parameter (matrices and embeddings yes; biases, norms no). */
  decays(name: string): boolean;
  /**
   * Mean next-token cross-entropy (nats) of `targets` given `idx`, both int32 [B, T]. Call inside
   * tf.variableGrads / tf.tidy; must not materialise full [B*T, vocab] logits when that is large.
   */
  loss(idx: tf.Tensor2D, targets: tf.Tensor2D, opts?: ForwardOptions): tf.Scalar;
  /** Logits [B, T, vocabSize] for every position (eval of short windows, tests). */
  logits(idx: tf.Tensor2D, opts?: ForwardOptions): tf.Tensor3D;
  /** Starts incremental decoding for `batch` sequences. */
  startDecode(batch: number): DecodeState;
  /** Feeds the next token of each sequence ([B] int32) and returns logits [B, vocabSize] for the next one. */
  decodeStep(state: DecodeState, tokens: tf.Tensor1D): tf.Tensor2D;
  /** Number of trainable parameters. */
  paramCount(): number;
  /** Estimated training FLOPs per token (forward + backward), for reports. */
  flopsPerToken(): number;
  dispose(): void;
}

/** A model family: its presets and a constructor. Registered in lib/models/registry.ts. */
export interface ModelFamily {
  name: string;
  /** One-line description for --help. */
  summary: string;
  /** Named presets, each a full config for this family. */
  presets: Record<string, ModelConfig>;
  /** Validates a config (throws a usage LmpipeError naming the bad field). */
  validate(config: ModelConfig): void;
  /** The family this one is a preset set of (llama: gpt); such families are not in the study by default. */
  variantOf?: string;
  /** Builds a model with freshly initialised weights from a seed. */
  create(config: ModelConfig, seed: number): LanguageModel;
}
