// How every model family describes its parameters: one ParamSpec per tensor (its checkpoint name, shape,
// initialisation and whether AdamW decays it), listed once in a fixed order, and turned into variables
// by createParams with a seeded generator, so a seed gives the same weights on every backend. The
// transformer block that gpt and the image models share is listed here once (blockSpecs) and read back
// by the same names (blockParamsOf).
import { tf } from "../tensor/backend.ts";
import { type BlockParams, normalInit } from "../nn.ts";
import type { Rng } from "../rng.ts";

/** GPT-2's 50257 BPE tokens padded to a multiple of 64, as nanoGPT does: every preset's vocabSize. */
export const GPT2_VOCAB_SIZE = 50304;

/** How to initialise a parameter: normal(0, std), zeros or ones. */
export type InitSpec = { kind: "normal"; std: number } | { kind: "zeros" } | { kind: "ones" };

export interface ParamSpec {
  /** The safetensors name (never renamed: checkpoints are read by it). */
  name: string;
  shape: number[];
  init: InitSpec;
  /** AdamW weight decay: matrices, embeddings and conv kernels yes; norm scales/shifts and biases no. */
  decay: boolean;
}

/** A weight (matrix, embedding, image map) drawn from normal(0, std), decayed. */
export function weightSpec(name: string, shape: number[], std = 0.02): ParamSpec {
  return { name, shape, init: { kind: "normal", std }, decay: true };
}

/** A zero bias, not decayed. */
export function biasSpec(name: string, shape: number[]): ParamSpec {
  return { name, shape, init: { kind: "zeros" }, decay: false };
}

/** `<name>.weight` [n] (ones) and, with `bias`, `<name>.bias` [n] (zeros): a LayerNorm. */
export function layerNormSpecs(name: string, n: number, bias: boolean): ParamSpec[] {
  const w: ParamSpec = { name: `${name}.weight`, shape: [n], init: { kind: "ones" }, decay: false };
  return bias ? [w, biasSpec(`${name}.bias`, [n])] : [w];
}

/** `<name>.weight` [i, o] (stored [in, out]) and, with `bias`, `<name>.bias` [o]: a linear layer. */
export function linearSpecs(name: string, i: number, o: number, bias: boolean, std = 0.02): ParamSpec[] {
  const w = weightSpec(`${name}.weight`, [i, o], std);
  return bias ? [w, biasSpec(`${name}.bias`, [o])] : [w];
}

/** The shapes of a block variant (docs/variants.md); `{}` is GPT-2's block. */
export interface BlockLayout {
  /** Query heads (needed for kvHeads and attnExtra). */
  nHead?: number;
  /** Key/value heads (grouped-query attention); default nHead. */
  kvHeads?: number;
  /** "fused" (default): one c_attn [C, C + 2 kvC]; "separate": c_q [C, C], c_k and c_v [C, kvC]. */
  qkv?: "fused" | "separate";
  /** A bias on the q, k, v projections even without `bias` (qkv_act=gelu's "GELU + bias"). */
  qkvBias?: boolean;
  /** "gelu" (default): c_fc [C, 4C], c_proj [4C, C]; "swiglu"/"geglu": c_fc [C, 2F], c_proj [F, C]. */
  mlp?: "gelu" | "swiglu" | "geglu";
  /** attn_extra=linear: attn.c_extra.weight [C, nHead]. */
  attnExtra?: boolean;
}

/**
 * The hidden width F of a gated MLP of width C: 2/3 of the 4C of GPT-2's MLP (so the three matrices
 * hold about as many parameters as GPT-2's two, Shazeer 2020's rule), rounded up to a multiple of 8.
 */
export function gluHidden(C: number): number {
  return Math.ceil((8 * C) / 3 / 8) * 8;
}

/**
 * The parameters of one pre-norm transformer block of width C under `prefix` (nanoGPT's names:
 * ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj; attn.c_q, c_k, c_v, c_extra for the
 * variants of `layout`), with GPT-2's initialisation: the residual projections get `projStd`
 * (0.02 / sqrt(2 * layers)).
 *
 * @example
 * const specs = blockSpecs("transformer.h.0", 64, true, 0.02 / Math.sqrt(2 * 2));
 */
export function blockSpecs(
  prefix: string,
  C: number,
  bias: boolean,
  projStd: number,
  layout: BlockLayout = {},
): ParamSpec[] {
  const nHead = layout.nHead ?? 1;
  const kvC = layout.kvHeads ? (C / nHead) * layout.kvHeads : C;
  const qkvBias = bias || layout.qkvBias === true;
  const qkv = layout.qkv === "separate"
    ? [
      ...linearSpecs(`${prefix}.attn.c_q`, C, C, qkvBias),
      ...linearSpecs(`${prefix}.attn.c_k`, C, kvC, qkvBias),
      ...linearSpecs(`${prefix}.attn.c_v`, C, kvC, qkvBias),
    ]
    : linearSpecs(`${prefix}.attn.c_attn`, C, C + 2 * kvC, qkvBias);
  const extra = layout.attnExtra ? [weightSpec(`${prefix}.attn.c_extra.weight`, [C, nHead])] : [];
  const gated = layout.mlp === "swiglu" || layout.mlp === "geglu";
  const F = gated ? gluHidden(C) : 4 * C;
  return [
    ...layerNormSpecs(`${prefix}.ln_1`, C, bias),
    ...qkv,
    ...extra,
    ...linearSpecs(`${prefix}.attn.c_proj`, C, C, bias, projStd),
    ...layerNormSpecs(`${prefix}.ln_2`, C, bias),
    ...linearSpecs(`${prefix}.mlp.c_fc`, C, gated ? 2 * F : F, bias),
    ...linearSpecs(`${prefix}.mlp.c_proj`, F, C, bias, projStd),
  ];
}

/** The tensors of the block under `prefix` (blockSpecs' names, any layout), for nn.ts `block`. */
export function blockParamsOf(params: Map<string, tf.Tensor>, prefix: string): BlockParams {
  const need = (n: string) => {
    const v = params.get(`${prefix}.${n}`);
    if (!v) throw new Error(`no parameter '${prefix}.${n}'`);
    return v;
  };
  const opt = (n: string) => params.get(`${prefix}.${n}`) as tf.Tensor1D | undefined;
  const fused = params.has(`${prefix}.attn.c_attn.weight`);
  const w = (n: string) => (fused ? undefined : need(n)) as tf.Tensor2D | undefined;
  return {
    ln1W: need("ln_1.weight") as tf.Tensor1D,
    ln1B: opt("ln_1.bias"),
    attn: {
      cAttnW: fused ? need("attn.c_attn.weight") as tf.Tensor2D : undefined,
      cAttnB: opt("attn.c_attn.bias"),
      cQW: w("attn.c_q.weight"),
      cQB: opt("attn.c_q.bias"),
      cKW: w("attn.c_k.weight"),
      cKB: opt("attn.c_k.bias"),
      cVW: w("attn.c_v.weight"),
      cVB: opt("attn.c_v.bias"),
      extraW: params.get(`${prefix}.attn.c_extra.weight`) as tf.Tensor2D | undefined,
      cProjW: need("attn.c_proj.weight") as tf.Tensor2D,
      cProjB: opt("attn.c_proj.bias"),
    },
    ln2W: need("ln_2.weight") as tf.Tensor1D,
    ln2B: opt("ln_2.bias"),
    mlp: {
      cFcW: need("mlp.c_fc.weight") as tf.Tensor2D,
      cFcB: opt("mlp.c_fc.bias"),
      cProjW: need("mlp.c_proj.weight") as tf.Tensor2D,
      cProjB: opt("mlp.c_proj.bias"),
    },
  };
}

/** Trainable variables for `specs`, in order, the normal ones drawn from `rng` one after another. */
export function createParams(specs: ParamSpec[], rng: Rng): Map<string, tf.Variable> {
  const params = new Map<string, tf.Variable>();
  for (const s of specs) {
    const init = s.init.kind === "normal"
      ? normalInit(rng, s.shape, s.init.std)
      : s.init.kind === "ones"
      ? tf.ones(s.shape)
      : tf.zeros(s.shape);
    params.set(s.name, tf.variable(init, true));
    init.dispose();
  }
  return params;
}

/** Elements in `specs` (the parameter count). */
export function specsSize(specs: ParamSpec[]): number {
  return specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}
