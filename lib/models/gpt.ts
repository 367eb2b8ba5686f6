// The `gpt` model family: GPT-2 as nanoGPT builds it, the control model of the study. Token + learned
// position embeddings, pre-LayerNorm blocks (causal multi-head self-attention, 4x GELU-tanh MLP), a
// final LayerNorm and an output head tied to the token embedding; no dropout.
//
// Parameters (the safetensors tensor names; C = nEmbd, V = vocabSize, T = contextLength, i = 0..nLayer-1):
//   transformer.wte.weight              [V, C]    token embedding, also the output head (tied, stored once)
//   transformer.wpe.weight              [T, C]    position embedding
//   transformer.h.{i}.ln_1.weight       [C]       (and .bias [C] when bias)
//   transformer.h.{i}.attn.c_attn.weight [C, 3C]  q, k, v projections side by side (and .bias [3C])
//   transformer.h.{i}.attn.c_proj.weight [C, C]   (and .bias [C])
//   transformer.h.{i}.ln_2.weight       [C]       (and .bias [C])
//   transformer.h.{i}.mlp.c_fc.weight   [C, 4C]   (and .bias [4C])
//   transformer.h.{i}.mlp.c_proj.weight [4C, C]   (and .bias [C])
//   transformer.ln_f.weight             [C]       (and .bias [C])
// Names follow nanoGPT / Hugging Face GPT-2. Linear weights are stored [in, out], the layout of Hugging
// Face GPT-2's Conv1D (y = x @ W + b; nanoGPT's nn.Linear stores the transpose), which is also the
// layout the fast 2-D matMul wants. There is no lm_head.weight: the head is transformer.wte.weight.
//
// Initialisation (GPT-2 / nanoGPT): every weight normal(0, 0.02), the residual projections
// (attn.c_proj, mlp.c_proj) normal(0, 0.02 / sqrt(2 nLayer)), biases 0, LayerNorm weights 1.
// `bias` (default true, nanoGPT's GPT-2-compatible default) adds biases to the linears and LayerNorms.
import { tf } from "../tensor/backend.ts";
import { usageError } from "../errors.ts";
import { Rng } from "../rng.ts";
import { block, embeddingLookup, type KVCache, layerNorm, linear } from "../nn.ts";
import { boundary } from "../precision.ts";
import { tiedCrossEntropy } from "../loss.ts";
import { checkDecodeStep, checkLossInputs, checkTokens } from "./inputs.ts";
import type { DecodeState, ForwardOptions, LanguageModel, ModelConfig, ModelFamily } from "./types.ts";
import {
  blockParamsOf,
  blockSpecs,
  createParams,
  GPT2_VOCAB_SIZE,
  layerNormSpecs,
  type ParamSpec,
  specsSize,
  weightSpec,
} from "./params.ts";

export interface GptConfig extends ModelConfig {
  model: "gpt";
  nLayer: number;
  nHead: number;
  /** Model width C (must be a multiple of nHead). */
  nEmbd: number;
  /** Biases in the linears and LayerNorms (nanoGPT's `bias`). */
  bias: boolean;
}

/**
 * Presets. `gpt2` is the study's control (124M parameters); `small` is a single-GPU size (6 layers,
 * 6 heads, 384 wide, context 256: nanoGPT's Shakespeare-char size with the GPT-2 vocabulary); `tiny`
 * takes seconds per step on 2 CPU cores (2 layers, 2 heads, 64 wide, context 64), for tests and demos.
 */
export const GPT_PRESETS: Record<string, GptConfig> = {
  gpt2: {
    model: "gpt",
    preset: "gpt2",
    vocabSize: GPT2_VOCAB_SIZE,
    contextLength: 1024,
    nLayer: 12,
    nHead: 12,
    nEmbd: 768,
    bias: true,
  },
  small: {
    model: "gpt",
    preset: "small",
    vocabSize: GPT2_VOCAB_SIZE,
    contextLength: 256,
    nLayer: 6,
    nHead: 6,
    nEmbd: 384,
    bias: true,
  },
  tiny: {
    model: "gpt",
    preset: "tiny",
    vocabSize: GPT2_VOCAB_SIZE,
    contextLength: 64,
    nLayer: 2,
    nHead: 2,
    nEmbd: 64,
    bias: true,
  },
};

function positiveInt(config: ModelConfig, field: string): number {
  const v = config[field];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw usageError(`gpt config: '${field}' must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

export function validateGptConfig(config: ModelConfig): asserts config is GptConfig {
  if (config.model !== "gpt") {
    throw usageError(`gpt config: 'model' must be "gpt", got ${JSON.stringify(config.model)}`);
  }
  for (const f of ["vocabSize", "contextLength", "nLayer", "nHead", "nEmbd"]) positiveInt(config, f);
  if (typeof config.bias !== "boolean") {
    throw usageError(`gpt config: 'bias' must be true or false, got ${JSON.stringify(config.bias)}`);
  }
  const { nEmbd, nHead } = config as GptConfig;
  if (nEmbd % nHead !== 0) {
    throw usageError(
      `gpt config: 'nEmbd' (${nEmbd}) must be a multiple of 'nHead' (${nHead}); e.g. nEmbd ${
        nHead * Math.max(1, Math.round(nEmbd / nHead))
      }`,
    );
  }
}

/** Every parameter of a config, in a fixed order (also the safetensors order and the init order). */
export function gptParamSpecs(c: GptConfig): ParamSpec[] {
  const C = c.nEmbd, projStd = 0.02 / Math.sqrt(2 * c.nLayer);
  const specs = [
    weightSpec("transformer.wte.weight", [c.vocabSize, C]),
    weightSpec("transformer.wpe.weight", [c.contextLength, C]),
  ];
  for (let i = 0; i < c.nLayer; i++) specs.push(...blockSpecs(`transformer.h.${i}`, C, c.bias, projStd));
  specs.push(...layerNormSpecs("transformer.ln_f", C, c.bias));
  return specs;
}

/** Trainable parameters of a config (the tied head counted once): 124,475,904 for `gpt2`. */
export function gptParamCount(c: GptConfig): number {
  return specsSize(gptParamSpecs(c));
}

/**
 * Training FLOPs per token, nanoGPT's estimate_mfu (PaLM appendix B): 6 N for the weight matMuls of
 * the forward (2 N) and backward (4 N) passes, N = parameters without the position embedding (a
 * lookup, no matMul; the token embedding counts as it is the head's matMul), plus 12 L C T for the
 * attention scores and weighted sums (L layers, width C = heads x head size, context T).
 */
export function gptFlopsPerToken(c: GptConfig): number {
  const n = gptParamCount(c) - c.contextLength * c.nEmbd;
  return 6 * n + 12 * c.nLayer * c.nEmbd * c.contextLength;
}

class GptDecodeState implements DecodeState {
  length = 0;
  constructor(readonly batch: number, readonly caches: KVCache[], readonly wteT: tf.Tensor2D) {}
  dispose(): void {
    for (const c of this.caches) {
      c.k?.dispose(), c.v?.dispose();
      c.k = null, c.v = null;
    }
    this.wteT.dispose();
  }
}

export class Gpt implements LanguageModel {
  readonly config: GptConfig;
  readonly params: Map<string, tf.Variable>;

  constructor(config: ModelConfig, seed: number) {
    validateGptConfig(config);
    this.config = { ...config };
    this.params = createParams(gptParamSpecs(this.config), new Rng(seed));
  }

  private p(name: string): tf.Variable {
    const v = this.params.get(name);
    if (!v) throw new Error(`gpt: no parameter '${name}'`);
    return v;
  }

  private opt(name: string): tf.Variable | undefined {
    return this.params.get(name);
  }

  /** Hidden states after the final LayerNorm, [B, T, C]. */
  private hidden(idx: tf.Tensor2D, opts: ForwardOptions = {}, attentionProbs?: tf.Tensor[]): tf.Tensor3D {
    const [B, T] = idx.shape;
    const C = this.config.nEmbd;
    const tok = embeddingLookup(this.p("transformer.wte.weight") as tf.Tensor2D, idx);
    const pos = tf.slice(this.p("transformer.wpe.weight"), [0, 0], [T, C]);
    let x = tf.add(tok, pos) as tf.Tensor3D;
    for (let i = 0; i < this.config.nLayer; i++) {
      x = block(x, blockParamsOf(this.params, `transformer.h.${i}`), this.config.nHead, {
        precision: opts.precision,
        attentionProbs,
      });
    }
    const h = layerNorm(
      x,
      this.p("transformer.ln_f.weight") as tf.Tensor1D,
      this.opt("transformer.ln_f.bias") as tf.Tensor1D,
    );
    return boundary(tf.reshape(h, [B, T, C]), opts.precision) as tf.Tensor3D;
  }

  decays(name: string): boolean {
    return this.p(name).rank >= 2; // matrices and embeddings (nanoGPT: p.dim() >= 2)
  }

  loss(idx: tf.Tensor2D, targets: tf.Tensor2D, opts: ForwardOptions = {}): tf.Scalar {
    checkLossInputs(this.config, idx, targets);
    return tf.tidy(() => {
      const h = tf.reshape(this.hidden(idx, opts), [-1, this.config.nEmbd]) as tf.Tensor2D;
      const wte = this.p("transformer.wte.weight") as tf.Tensor2D;
      return tiedCrossEntropy(h, wte, tf.reshape(targets, [-1]) as tf.Tensor1D);
    });
  }

  logits(idx: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    checkTokens(this.config, idx, "logits");
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const h = tf.reshape(this.hidden(idx, opts), [-1, this.config.nEmbd]);
      const out = tf.matMul(h, this.p("transformer.wte.weight"), false, true);
      return tf.reshape(out, [B, T, this.config.vocabSize]) as tf.Tensor3D;
    });
  }

  /** Softmax probabilities of every attention layer for idx [1, T] (for `lmpipe viz`); caller disposes. */
  attentionMaps(idx: tf.Tensor2D): { name: string; probs: tf.Tensor }[] {
    checkTokens(this.config, idx, "attentionMaps");
    const probs: tf.Tensor[] = [];
    tf.tidy(() => {
      this.hidden(idx, {}, probs);
    });
    return probs.map((p, i) => ({ name: `block ${i}`, probs: p }));
  }

  startDecode(batch: number): DecodeState {
    const caches: KVCache[] = [];
    for (let i = 0; i < this.config.nLayer; i++) caches.push({ k: null, v: null });
    // The head as [C, V] once per decode, so each step's logits are a plain 2-D matMul.
    const wteT = tf.tidy(() => tf.transpose(this.p("transformer.wte.weight")) as tf.Tensor2D);
    return new GptDecodeState(batch, caches, wteT);
  }

  decodeStep(state: DecodeState, tokens: tf.Tensor1D): tf.Tensor2D {
    if (!(state instanceof GptDecodeState)) {
      throw new Error("gpt.decodeStep: state was not made by this model's startDecode");
    }
    const B = state.batch, C = this.config.nEmbd;
    checkDecodeStep(this.config, B, state.length, tokens);
    const old = state.caches.map((c) => [c.k, c.v]);
    const logits = tf.tidy(() => {
      const tok = embeddingLookup(this.p("transformer.wte.weight") as tf.Tensor2D, tokens);
      const pos = tf.slice(this.p("transformer.wpe.weight"), [state.length, 0], [1, C]);
      let x = tf.reshape(tf.add(tok, pos), [B, 1, C]) as tf.Tensor3D;
      for (let i = 0; i < this.config.nLayer; i++) {
        x = block(x, blockParamsOf(this.params, `transformer.h.${i}`), this.config.nHead, {
          cache: state.caches[i],
        });
      }
      const h = layerNorm(
        tf.reshape(x, [B, C]),
        this.p("transformer.ln_f.weight") as tf.Tensor1D,
        this.opt("transformer.ln_f.bias") as tf.Tensor1D,
      );
      return linear(h, state.wteT) as tf.Tensor2D;
    });
    for (const [k, v] of old) k?.dispose(), v?.dispose();
    state.length += 1;
    return logits;
  }

  paramCount(): number {
    let n = 0;
    for (const v of this.params.values()) n += v.size;
    return n; // the tied head is transformer.wte.weight, counted once
  }

  flopsPerToken(): number {
    return gptFlopsPerToken(this.config);
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
  }
}

export const gptFamily: ModelFamily = {
  name: "gpt",
  summary: "GPT-2 as nanoGPT builds it (learned positions, pre-LN blocks, tied head): the control",
  presets: GPT_PRESETS,
  validate: validateGptConfig,
  create: (config, seed) => new Gpt(config, seed),
};
