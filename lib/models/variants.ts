// The architecture options of the transformer blocks (docs/variants.md) as config fields, shared by the
// gpt and llama families and the image models' warm-up blocks: which norm, MLP, positions, q/k/v
// projection, extra attention term, GELU form and key/value heads. Each field's default is GPT-2's, and a config
// written before the fields existed (an old checkpoint's config.json) means exactly that. This file
// turns the fields into parameter shapes (params.ts BlockLayout), the nn.ts block's BlockVariant, the
// embedding of the first block's input and the per-call position tables, so the families only loop.
import { tf } from "../tensor/backend.ts";
import { block, type BlockVariant, embeddingLookup, type KVCache, type LayerOptions } from "../nn.ts";
import { alibiBias, ropeTables, sinusoidalTable } from "../positions.ts";
import { type BlockLayout, blockParamsOf, type ParamSpec, weightSpec } from "./params.ts";
import type { ModelConfig, Precision } from "./types.ts";

/** The choices of each string-valued option, the first being GPT-2's (the default). */
export const VARIANT_CHOICES = {
  norm: ["layernorm", "rmsnorm"],
  mlp: ["gelu", "swiglu", "geglu"],
  pos: ["learned", "sinusoidal", "rope", "alibi", "none"],
  qkv: ["fused", "separate"],
  qkv_act: ["none", "gelu"],
  attn_extra: ["none", "linear"],
  gelu: ["tanh", "exact"],
} as const;

type Choice<K extends keyof typeof VARIANT_CHOICES> = (typeof VARIANT_CHOICES)[K][number];

/** The option fields of a config (their names are what `--set` and config.json use). */
export interface VariantConfig {
  norm: Choice<"norm">;
  mlp: Choice<"mlp">;
  pos: Choice<"pos">;
  qkv: Choice<"qkv">;
  qkv_act: Choice<"qkv_act">;
  attn_extra: Choice<"attn_extra">;
  /** GELU's form in the MLP (and qkv_act, geglu): GPT-2's tanh approximation or exact erf (nanoGPT, the study). */
  gelu: Choice<"gelu">;
  /** Key/value heads, a divisor of nHead (grouped-query attention); 0 = one per query head. */
  kv_heads: number;
}

/** GPT-2's block: every option at its default. */
export const GPT2_VARIANT: VariantConfig = {
  norm: "layernorm",
  mlp: "gelu",
  pos: "learned",
  qkv: "fused",
  qkv_act: "none",
  attn_extra: "none",
  gelu: "tanh",
  kv_heads: 0,
};

/** A llama-style block: RMSNorm, SwiGLU, rotary positions (the llama presets add bias false, tie false). */
export const LLAMA_VARIANT: VariantConfig = { ...GPT2_VARIANT, norm: "rmsnorm", mlp: "swiglu", pos: "rope" };

/** The option fields of `config`, GPT-2's value for each one it lacks (configs older than the options). */
export function variantOf(config: ModelConfig): VariantConfig {
  const out = { ...GPT2_VARIANT } as Record<string, unknown>;
  for (const k of Object.keys(GPT2_VARIANT)) if (config[k] !== undefined) out[k] = config[k];
  return out as unknown as VariantConfig;
}

/**
 * What is wrong with `config`'s option fields for blocks of `nHead` heads of width `width` (missing
 * fields are fine: they take GPT-2's value); [] when nothing.
 */
export function variantErrors(config: ModelConfig, nHead: number, width: number): string[] {
  const errs: string[] = [];
  for (const [field, ok] of Object.entries(VARIANT_CHOICES)) {
    const v = config[field];
    if (v !== undefined && !(ok as readonly unknown[]).includes(v)) {
      errs.push(`'${field}' must be one of ${ok.join(", ")}, got ${JSON.stringify(v)}`);
    }
  }
  const kv = config.kv_heads;
  const divides = typeof kv === "number" && Number.isInteger(kv) &&
    (kv === 0 || (kv > 0 && nHead % kv === 0));
  if (kv !== undefined && !divides) {
    errs.push(
      `'kv_heads' must be 0 (one per query head) or a divisor of nHead (${nHead}), got ${JSON.stringify(kv)}`,
    );
  }
  const D = width / nHead;
  if (config.pos === "rope" && Number.isInteger(D) && D % 2 !== 0) {
    errs.push(`pos "rope" turns pairs of a head's dimensions: the head size nEmbd/nHead (${D}) must be even`);
  }
  if (config.pos === "sinusoidal" && width % 2 !== 0) {
    errs.push(`pos "sinusoidal" needs an even nEmbd, got ${width}`);
  }
  return errs;
}

/** nn.ts's view of the options: how a block computes. */
export function blockVariantOf(v: VariantConfig): BlockVariant {
  return { norm: v.norm, mlp: v.mlp, qkvAct: v.qkv_act, gelu: v.gelu, kvHeads: v.kv_heads || undefined };
}

/** params.ts's view of the options: which tensors a block has. */
export function blockLayoutOf(v: VariantConfig, nHead: number): BlockLayout {
  return {
    nHead,
    kvHeads: v.kv_heads || undefined,
    qkv: v.qkv,
    qkvBias: v.qkv_act === "gelu",
    mlp: v.mlp,
    attnExtra: v.attn_extra === "linear",
  };
}

/** The position embedding's parameter: transformer.wpe.weight [T, C] for pos "learned", else none. */
export function positionSpecs(v: VariantConfig, contextLength: number, C: number): ParamSpec[] {
  return v.pos === "learned" ? [weightSpec("transformer.wpe.weight", [contextLength, C])] : [];
}

/** How blocks of a model are run: the options, heads, and the parameters by name. */
export interface Trunk {
  variant: VariantConfig;
  nHead: number;
  params: Map<string, tf.Tensor>;
}

/**
 * The first block's input for tokens idx [B, T] at positions start..start+T-1: token embeddings plus
 * learned (wpe) or sinusoidal position embeddings; the token embeddings alone for rope, alibi, none.
 */
export function embed(t: Trunk, idx: tf.Tensor2D, start: number): tf.Tensor3D {
  const wte = t.params.get("transformer.wte.weight") as tf.Tensor2D;
  const [B, T] = idx.shape, C = wte.shape[1];
  const tok = embeddingLookup(wte, idx);
  if (t.variant.pos === "learned") {
    const wpe = t.params.get("transformer.wpe.weight");
    if (!wpe) throw new Error("no parameter 'transformer.wpe.weight'");
    return tf.reshape(tf.add(tok, tf.slice(wpe, [start, 0], [T, C])), [B, T, C]);
  }
  if (t.variant.pos === "sinusoidal") return tf.add(tok, sinusoidalTable(start, T, C)) as tf.Tensor3D;
  return tok as tf.Tensor3D;
}

/**
 * x [B, T, C] (positions start..start+T-1) through the blocks transformer.h.0..count-1: the position
 * tables are made once for all of them; with `caches`, block i attends to and extends caches[i].
 */
export function runBlocks(
  t: Trunk,
  x: tf.Tensor3D,
  count: number,
  opts: { start: number; precision?: Precision; caches?: KVCache[]; attentionProbs?: tf.Tensor[] },
): tf.Tensor3D {
  const T = x.shape[1], D = x.shape[2] / t.nHead;
  const layer: LayerOptions = {
    precision: opts.precision,
    attentionProbs: opts.attentionProbs,
    variant: blockVariantOf(t.variant),
  };
  if (t.variant.pos === "rope") layer.rope = ropeTables(opts.start, T, D);
  if (t.variant.pos === "alibi") layer.alibi = alibiBias(t.nHead, opts.start, T);
  for (let i = 0; i < count; i++) {
    const run = () =>
      block(x, blockParamsOf(t.params, `transformer.h.${i}`), t.nHead, { ...layer, cache: opts.caches?.[i] });
    // one scope per block: what the backward pass does not need (the tape keeps its own copies of what
    // it does) is freed after each block instead of at the end of the whole forward pass; a KV cache
    // keeps what a block adds to it, so decoding runs unscoped
    x = opts.caches ? run() : tf.tidy(run);
  }
  return x;
}
