// The `gpt` model family: GPT-2 as nanoGPT builds it, the control model of the study. Token + learned
// position embeddings, pre-LayerNorm blocks (causal multi-head self-attention, 4x GELU MLP), a
// final LayerNorm and an output head tied to the token embedding; no dropout. The architecture options
// of variants.ts (norm, mlp, pos, qkv, qkv_act, attn_extra, kv_heads) and `tie` change that block by
// block (docs/variants.md); the `llama` family is this model with llama-style presets (RMSNorm, SwiGLU,
// rotary positions, no biases, an untied head) at the gpt presets' sizes.
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
// The options add or replace (docs/variants.md): no wpe unless pos "learned"; attn.c_q/c_k/c_v
// [C, C], [C, kvC], [C, kvC] instead of c_attn for qkv "separate" (c_attn is [C, C + 2 kvC] with
// kv_heads); attn.c_extra.weight [C, nHead] for attn_extra "linear"; mlp.c_fc [C, 2F] and mlp.c_proj
// [F, C] for the gated MLPs (F = params.ts gluHidden); lm_head.weight [V, C] when tie is false.
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
import { emptyKVCache, type KVCache, kvCacheTensors, linear, normOf } from "../nn.ts";
import { boundary } from "../precision.ts";
import { tiedCrossEntropy } from "../loss.ts";
import { unsupported as wasmDecodeUnsupported, WasmGptDecoder } from "./gpt_decode.ts";
import { kernelFor } from "../tensor/kernel_choice.ts";
import { checkDecodeStep, checkLossInputs, checkTokens } from "./inputs.ts";
import type { DecodeState, ForwardOptions, LanguageModel, ModelConfig, ModelFamily } from "./types.ts";
import {
  blockSpecs,
  createParams,
  GPT2_VOCAB_SIZE,
  layerNormSpecs,
  type ParamSpec,
  specsSize,
  weightSpec,
} from "./params.ts";
import {
  blockLayoutOf,
  embed,
  GPT2_VARIANT,
  LLAMA_VARIANT,
  positionSpecs,
  runBlocks,
  type Trunk,
  type VariantConfig,
  variantErrors,
  variantOf,
} from "./variants.ts";

export interface GptConfig extends ModelConfig, VariantConfig {
  model: "gpt" | "llama";
  nLayer: number;
  nHead: number;
  /** Model width C (must be a multiple of nHead). */
  nEmbd: number;
  /** Biases in the linears and LayerNorms (nanoGPT's `bias`). */
  bias: boolean;
  /** The output head is the token embedding (true, GPT-2) or its own lm_head.weight (false). */
  tie: boolean;
}

/**
 * Presets. `gpt2` is GPT-2 small as nanoGPT builds it (124M parameters, exact GELU); `study` is the
 * study's control, gpt2 without its 102,144 biases (124,373,760 parameters); `small` is a single-GPU size (6 layers,
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
    tie: true,
    ...GPT2_VARIANT,
    gelu: "exact",
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
    tie: true,
    ...GPT2_VARIANT,
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
    tie: true,
    ...GPT2_VARIANT,
  },
  // The study's control: nanoGPT's train.py as the study ran it, gpt2's size with bias=False (no biases,
  // weight-only LayerNorms) and nn.GELU()'s exact erf.
  study: {
    model: "gpt",
    preset: "study",
    vocabSize: GPT2_VOCAB_SIZE,
    contextLength: 1024,
    nLayer: 12,
    nHead: 12,
    nEmbd: 768,
    bias: false,
    tie: true,
    ...GPT2_VARIANT,
    gelu: "exact",
  },
};

/**
 * The llama family's presets: gpt's sizes (gpt2, small, tiny) with llama-style blocks (RMSNorm, SwiGLU,
 * rotary positions), no biases and an untied head.
 */
export const LLAMA_PRESETS: Record<string, GptConfig> = Object.fromEntries(
  Object.entries(GPT_PRESETS).filter(([name]) => name !== "study").map((
    [name, c],
  ) => [name, { ...c, model: "llama", ...LLAMA_VARIANT, bias: false, tie: false }]),
);

function positiveInt(config: ModelConfig, field: string): number {
  const v = config[field];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw usageError(
      `${config.model} config: '${field}' must be a positive integer, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/**
 * Checks a gpt or llama config. The option fields and `tie` may be missing (a config written before
 * they existed): they then mean GPT-2's block and a tied head.
 */
export function validateGptConfig(config: ModelConfig): asserts config is GptConfig {
  if (config.model !== "gpt" && config.model !== "llama") {
    throw usageError(`gpt config: 'model' must be "gpt" or "llama", got ${JSON.stringify(config.model)}`);
  }
  const where = `${config.model} config`;
  for (const f of ["vocabSize", "contextLength", "nLayer", "nHead", "nEmbd"]) positiveInt(config, f);
  for (const f of ["bias", "tie"]) {
    const v = config[f];
    if (typeof v !== "boolean" && (f === "bias" || v !== undefined)) {
      throw usageError(`${where}: '${f}' must be true or false, got ${JSON.stringify(v)}`);
    }
  }
  const { nEmbd, nHead } = config as GptConfig;
  if (nEmbd % nHead !== 0) {
    throw usageError(
      `${where}: 'nEmbd' (${nEmbd}) must be a multiple of 'nHead' (${nHead}); e.g. nEmbd ${
        nHead * Math.max(1, Math.round(nEmbd / nHead))
      }`,
    );
  }
  const errs = variantErrors(config, nHead, nEmbd);
  if (errs.length > 0) throw usageError(`${where}: ${errs.join("; ")}`);
}

/** Every parameter of a config, in a fixed order (also the safetensors order and the init order). */
export function gptParamSpecs(c: GptConfig): ParamSpec[] {
  const C = c.nEmbd, projStd = 0.02 / Math.sqrt(2 * c.nLayer), v = variantOf(c);
  const specs = [
    weightSpec("transformer.wte.weight", [c.vocabSize, C]),
    ...positionSpecs(v, c.contextLength, C),
  ];
  const layout = blockLayoutOf(v, c.nHead);
  for (let i = 0; i < c.nLayer; i++) {
    specs.push(...blockSpecs(`transformer.h.${i}`, C, c.bias, projStd, layout));
  }
  specs.push(...layerNormSpecs("transformer.ln_f", C, c.bias));
  if (c.tie === false) specs.push(weightSpec("lm_head.weight", [c.vocabSize, C]));
  return specs;
}

/** Trainable parameters of a config (the tied head counted once): 124,475,904 for `gpt2`. */
export function gptParamCount(c: GptConfig): number {
  return specsSize(gptParamSpecs(c));
}

/**
 * Training FLOPs per token, nanoGPT's estimate_mfu (PaLM appendix B): 6 N for the weight matMuls of
 * the forward (2 N) and backward (4 N) passes, N = parameters without the position embedding (a
 * lookup, no matMul; the token embedding counts when it is the head's matMul, an untied head counts
 * instead), plus 12 L C T for the attention scores and weighted sums (L layers, width C = heads x head
 * size, context T).
 */
export function gptFlopsPerToken(c: GptConfig): number {
  const lookups = (variantOf(c).pos === "learned" ? c.contextLength : 0) +
    (c.tie === false ? c.vocabSize : 0);
  const n = gptParamCount(c) - lookups * c.nEmbd;
  return 6 * n + 12 * c.nLayer * c.nEmbd * c.contextLength;
}

class GptDecodeState implements DecodeState {
  length = 0;
  constructor(readonly batch: number, readonly caches: KVCache[], readonly headT: tf.Tensor2D) {}
  dispose(): void {
    for (const c of this.caches) {
      for (const t of kvCacheTensors(c)) t.dispose();
      Object.assign(c, emptyKVCache());
    }
    this.headT.dispose();
  }
}

export class Gpt implements LanguageModel {
  readonly config: GptConfig;
  readonly params: Map<string, tf.Variable>;
  private readonly trunk: Trunk;

  /** A model of `config` (a config without the option fields or `tie` gets GPT-2's: old checkpoints). */
  constructor(config: ModelConfig, seed: number) {
    validateGptConfig(config);
    this.config = { ...config, ...variantOf(config), tie: config.tie ?? true };
    this.params = createParams(gptParamSpecs(this.config), new Rng(seed));
    this.trunk = { variant: variantOf(this.config), nHead: this.config.nHead, params: this.params };
  }

  private p(name: string): tf.Variable {
    const v = this.params.get(name);
    if (!v) throw new Error(`${this.config.model}: no parameter '${name}'`);
    return v;
  }

  /** The output head [V, C]: the token embedding when tied, else lm_head.weight. */
  private head(): tf.Tensor2D {
    return this.p(this.config.tie ? "transformer.wte.weight" : "lm_head.weight") as tf.Tensor2D;
  }

  /** The final norm of x [..., C]. */
  private finalNorm(x: tf.Tensor): tf.Tensor {
    return normOf({ norm: this.trunk.variant.norm })(
      x,
      this.p("transformer.ln_f.weight") as tf.Tensor1D,
      this.params.get("transformer.ln_f.bias") as tf.Tensor1D | undefined,
    );
  }

  /** Hidden states after the final norm, [B, T, C]. */
  private hidden(idx: tf.Tensor2D, opts: ForwardOptions = {}, attentionProbs?: tf.Tensor[]): tf.Tensor3D {
    const [B, T] = idx.shape;
    const C = this.config.nEmbd;
    const x = runBlocks(this.trunk, embed(this.trunk, idx, 0), this.config.nLayer, {
      start: 0,
      precision: opts.precision,
      attentionProbs,
    });
    return boundary(tf.reshape(this.finalNorm(x), [B, T, C]), opts.precision) as tf.Tensor3D;
  }

  decays(name: string): boolean {
    return this.p(name).rank >= 2; // matrices and embeddings (nanoGPT: p.dim() >= 2)
  }

  loss(idx: tf.Tensor2D, targets: tf.Tensor2D, opts: ForwardOptions = {}): tf.Scalar {
    checkLossInputs(this.config, idx, targets);
    return tf.tidy(() => {
      const h = tf.reshape(this.hidden(idx, opts), [-1, this.config.nEmbd]) as tf.Tensor2D;
      return tiedCrossEntropy(h, this.head(), tf.reshape(targets, [-1]) as tf.Tensor1D, {
        precision: opts.precision,
        gradScale: opts.gradScale,
      });
    });
  }

  logits(idx: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    checkTokens(this.config, idx, "logits");
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const h = tf.reshape(this.hidden(idx, opts), [-1, this.config.nEmbd]);
      const p = opts.precision; // autocast: 16-bit operands and logits under mixed / bf16
      const out = boundary(tf.matMul(boundary(h, p), boundary(this.head(), p), false, true), p);
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

  /**
   * Starts a decode: lmpipe's wasm step (gpt_decode.ts) where the kernel-choice rule's cachedDecode row
   * picks it and it covers the config, else decodeStep's op chain with a growing key/value cache.
   */
  startDecode(batch: number): DecodeState {
    if (kernelFor("cachedDecode") === "lmpipe" && wasmDecodeUnsupported(this.config, batch) === null) {
      return new WasmGptDecoder(this.params, this.config);
    }
    const caches: KVCache[] = [];
    for (let i = 0; i < this.config.nLayer; i++) caches.push(emptyKVCache());
    // The head as [C, V] once per decode, so each step's logits are a plain 2-D matMul.
    const headT = tf.tidy(() => tf.transpose(this.head()) as tf.Tensor2D);
    return new GptDecodeState(batch, caches, headT);
  }

  decodeStep(state: DecodeState, tokens: tf.Tensor1D): tf.Tensor2D {
    if (state instanceof WasmGptDecoder) {
      checkDecodeStep(this.config, 1, state.length, tokens);
      const logits = state.stepOnHost(tokens.dataSync()[0]);
      return tf.tensor2d(logits.slice(), [1, this.config.vocabSize]);
    }
    if (!(state instanceof GptDecodeState)) {
      throw new Error(`${this.config.model}.decodeStep: state was not made by this model's startDecode`);
    }
    const B = state.batch, C = this.config.nEmbd;
    checkDecodeStep(this.config, B, state.length, tokens);
    const old = state.caches.flatMap(kvCacheTensors);
    const logits = tf.tidy(() => {
      const x0 = embed(this.trunk, tf.reshape(tokens, [B, 1]) as tf.Tensor2D, state.length);
      const x = runBlocks(this.trunk, x0, this.config.nLayer, { start: state.length, caches: state.caches });
      return linear(this.finalNorm(tf.reshape(x, [B, C])), state.headT) as tf.Tensor2D;
    });
    for (const t of old) t.dispose();
    state.length += 1;
    return logits;
  }

  paramCount(): number {
    let n = 0;
    for (const v of this.params.values()) n += v.size;
    return n; // a tied head is transformer.wte.weight, counted once
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

export const llamaFamily: ModelFamily = {
  name: "llama",
  summary: "gpt with llama-style blocks (RMSNorm, SwiGLU, rotary positions, no biases, untied head)",
  presets: LLAMA_PRESETS,
  variantOf: "gpt",
  validate: validateGptConfig,
  create: (config, seed) => new Gpt(config, seed),
};
