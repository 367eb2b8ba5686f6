// The study's three image models: `pixel-cumsum`, `pixel-attn` and `pixel-attn-wide`. Each maps every
// token position to an image of C channels and H×W pixels, shares images causally over time, reads each
// position's image with a CNN on its own (lib/models/cnn.ts), pools, normalises and predicts the next
// token with an untied linear head. Strictly causal in training and eval (no statistic ever crosses
// positions), and efficient by algebra: both mappings are linear in what is shared, so sharing happens
// on small vectors where that is cheaper (tests/pixel_test.ts checks them against the literal forms of
// lib/models/pixel_reference.ts, outputs and gradients).
//
// Shapes (B batch, T positions, d = nEmbd, C = channels, P = H·W pixels, dk = keyDim, F = CNN features):
//   x = wte[idx] + wpe[:T]                                   [B, T, d]
//   3 warm-up blocks (nn.ts `block`, the same block as gpt)   [B, T, d]
//   hn = LayerNorm_map(x)                                     [B, T, d]
//   pixel-cumsum: k = hn @ map.key.weight                     [B, T, C·dk]  one key per channel
//                 S_t = Σ_{s<=t} k_s   (÷ (t+1) if runningSum = "mean")
//                 img_t[c, p] = S_t[c] · map.query[c, :, p]  [B·T, P, C]   (pixel queries [C, dk, P])
//     The study's act[t] += act[t-1] over the images k_t[c]·q[c, p] is the same, by linearity.
//   pixel-attn:   q, k = hn @ map.q.weight, hn @ map.k.weight [B, C, T, dk] (one head per channel)
//                 A_c = softmax(q_c k_cᵀ / √dk + causal mask)  [B, C, T, T]
//                 img_t[c] = Σ_s A_c[t, s] (hn_s @ map.value.weight[c] + map.value.bias[c])
//     computed either values first (V_c = hn @ W_c, then A_c @ V_c: the literal order, T²·P per head)
//     or attend first (A_c @ hn, then @ W_c: T²·d per head), whichever is cheaper (attnOrder "auto":
//     values first when P <= d). Equal by linearity, also with the bias since each row of A sums to 1.
//   CNN on [B·T, H, W, C] -> GAP -> features                  [B·T, F]
//   LayerNorm_f, logits = features @ lm_head.weightᵀ          [B·T, V]   (lm_head.weight [V, F])
//
// Parameter names (safetensors): transformer.wte.weight [V, d], transformer.wpe.weight [T, d],
// transformer.h.{i}.* (exactly as gpt.ts, i < nWarmup), map.ln.weight [d] (+ .bias), map.key.weight
// [d, C·dk] and map.query [C, dk, P] (cumsum), map.q.weight / map.k.weight [d, C·dk], map.value.weight
// [C, d, P] (+ map.value.bias [C, P] when bias) (attn), cnn.* (cnn.ts), ln_f.weight [F] (+ .bias),
// lm_head.weight [V, F].
import { tf } from "../tensor/backend.ts";
import { embeddingLookup, linear } from "../tensor/fixes.ts";
import { usageError } from "../errors.ts";
import { Rng } from "../rng.ts";
import { block, type BlockParams, type KVCache, layerNorm, normalInit } from "../nn.ts";
import { causalSoftmax } from "../tensor/causal_softmax.ts";
import { causalAttention } from "../tensor/ops/attention/mod.ts";
import { boundary } from "../precision.ts";
import { tiedCrossEntropy } from "../loss.ts";
import type {
  DecodeState,
  ForwardOptions,
  LanguageModel,
  ModelConfig,
  ModelFamily,
  Precision,
} from "./types.ts";
import {
  CNN_KINDS,
  cnnCheckpointed,
  type CnnConfig,
  cnnConfigErrors,
  cnnFlopsPerImage,
  type CnnKind,
  type CnnNorm,
  cnnOutWidth,
  cnnParamSpecs,
} from "./cnn.ts";

export type PixelFamilyName = "pixel-cumsum" | "pixel-attn" | "pixel-attn-wide";

export interface PixelConfig extends ModelConfig {
  model: PixelFamilyName;
  /** Width d of the embeddings and warm-up blocks. */
  nEmbd: number;
  /** Heads of the warm-up blocks. */
  nHead: number;
  /** Number of warm-up GPT blocks (3 in the study). */
  nWarmup: number;
  /** Biases in the warm-up blocks' linears and LayerNorms, the map LayerNorm and ln_f, and the value map. */
  bias: boolean;
  /** Image channels C (one attention head per channel in pixel-attn). */
  channels: number;
  /** Image height = width (20 in the study's code). */
  imageSize: number;
  /** Key/query size dk per channel. */
  keyDim: number;
  /** pixel-cumsum: "sum" (the study: act[t] += act[t-1]) or "mean" (the running sum ÷ (t+1)). */
  runningSum: "sum" | "mean";
  /** pixel-cumsum: how the causal sum over time is computed ("cumsum" or a lower-triangular "matmul"). */
  causalSum: "cumsum" | "matmul";
  /** pixel-attn: "auto" (cheaper order), "values-first" or "attend-first"; all exact. */
  attnOrder: "auto" | "values-first" | "attend-first";
  cnn: CnnKind;
  cnnWidth: number;
  cnnDepth: number;
  /** Explicit conv widths for vgg9/vgg-wide ([] = derived from cnnWidth and cnnDepth). */
  cnnWidths: number[];
  cnnNorm: CnnNorm;
  /** Images per CNN chunk (gradient checkpointing); 0 = automatic (about 128 MiB of activations, 1 GiB on webgpu). */
  cnnChunk: number;
}

const GPT2_VOCAB = 50304;

function presetsFor(model: PixelFamilyName): Record<string, PixelConfig> {
  const cnn: CnnKind = model === "pixel-attn-wide" ? "vgg-wide" : "vgg9";
  const common = {
    model,
    vocabSize: GPT2_VOCAB,
    runningSum: "sum" as const,
    causalSum: "cumsum" as const,
    attnOrder: "auto" as const,
    cnn,
    cnnDepth: 9,
    cnnWidths: [] as number[],
    cnnNorm: "image" as const,
    cnnChunk: 0,
    nWarmup: 3,
    bias: false,
  };
  return {
    // The study's code: 512-wide warm-up blocks with 8 heads, no bias, 8 channels of 20x20, context 1024.
    study: {
      ...common,
      preset: "study",
      contextLength: 1024,
      nEmbd: 512,
      nHead: 8,
      channels: 8,
      imageSize: 20,
      keyDim: 64,
      cnnWidth: 64,
    },
    // A single-GPU size.
    small: {
      ...common,
      preset: "small",
      contextLength: 256,
      nEmbd: 256,
      nHead: 4,
      channels: 8,
      imageSize: 12,
      keyDim: 32,
      cnnWidth: 32,
    },
    // Seconds per step on 2 CPU cores, for tests and demos.
    tiny: {
      ...common,
      preset: "tiny",
      contextLength: 64,
      nEmbd: 64,
      nHead: 2,
      channels: 4,
      imageSize: 8,
      keyDim: 16,
      cnnWidth: 16,
    },
  };
}

export const PIXEL_PRESETS: Record<PixelFamilyName, Record<string, PixelConfig>> = {
  "pixel-cumsum": presetsFor("pixel-cumsum"),
  "pixel-attn": presetsFor("pixel-attn"),
  "pixel-attn-wide": presetsFor("pixel-attn-wide"),
};

export function cnnConfigOf(c: PixelConfig): CnnConfig {
  return {
    kind: c.cnn,
    inChannels: c.channels,
    height: c.imageSize,
    width: c.imageSize,
    baseWidth: c.cnnWidth,
    depth: c.cnnDepth,
    widths: c.cnnWidths.length > 0 ? c.cnnWidths : undefined,
    norm: c.cnnNorm,
  };
}

export function validatePixelConfig(config: ModelConfig): asserts config is PixelConfig {
  const where = `${config.model} config`;
  if (!(config.model in PIXEL_PRESETS)) {
    throw usageError(`${where}: 'model' must be one of ${Object.keys(PIXEL_PRESETS).join(", ")}`);
  }
  for (
    const f of [
      "vocabSize",
      "contextLength",
      "nEmbd",
      "nHead",
      "nWarmup",
      "channels",
      "imageSize",
      "keyDim",
      "cnnWidth",
      "cnnDepth",
    ]
  ) {
    const v = config[f];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
      throw usageError(`${where}: '${f}' must be a positive integer, got ${JSON.stringify(v)}`);
    }
  }
  const c = config as PixelConfig;
  if (!Number.isInteger(c.cnnChunk) || c.cnnChunk < 0) {
    throw usageError(
      `${where}: 'cnnChunk' must be 0 (automatic) or a positive number of images, got ${
        JSON.stringify(c.cnnChunk)
      }`,
    );
  }
  if (typeof c.bias !== "boolean") throw usageError(`${where}: 'bias' must be true or false`);
  if (c.nEmbd % c.nHead !== 0) {
    throw usageError(`${where}: 'nEmbd' (${c.nEmbd}) must be a multiple of 'nHead' (${c.nHead})`);
  }
  const choice = (f: string, ok: readonly string[]) => {
    if (!ok.includes(config[f] as string)) {
      throw usageError(`${where}: '${f}' must be one of ${ok.join(", ")}, got ${JSON.stringify(config[f])}`);
    }
  };
  choice("runningSum", ["sum", "mean"]);
  choice("causalSum", ["cumsum", "matmul"]);
  choice("attnOrder", ["auto", "values-first", "attend-first"]);
  choice("cnn", CNN_KINDS);
  if (!Array.isArray(c.cnnWidths)) {
    throw usageError(`${where}: 'cnnWidths' must be a list of widths ([] = derived)`);
  }
  const errs = cnnConfigErrors(cnnConfigOf(c));
  if (errs.length > 0) throw usageError(`${where}: ${errs.join("; ")}`);
}

/** Every parameter: name, shape, init, weight decay. */
interface Spec {
  name: string;
  shape: number[];
  init: { kind: "normal"; std: number } | { kind: "zeros" } | { kind: "ones" };
  decay: boolean;
}

export function pixelParamSpecs(c: PixelConfig): Spec[] {
  const d = c.nEmbd, C = c.channels, P = c.imageSize * c.imageSize, dk = c.keyDim;
  const out: Spec[] = [];
  const w = (name: string, shape: number[], std = 0.02) =>
    out.push({ name, shape, init: { kind: "normal", std }, decay: true });
  const ln = (name: string, n: number) => {
    out.push({ name: `${name}.weight`, shape: [n], init: { kind: "ones" }, decay: false });
    if (c.bias) out.push({ name: `${name}.bias`, shape: [n], init: { kind: "zeros" }, decay: false });
  };
  const lin = (name: string, i: number, o: number, std = 0.02) => {
    w(`${name}.weight`, [i, o], std);
    if (c.bias) out.push({ name: `${name}.bias`, shape: [o], init: { kind: "zeros" }, decay: false });
  };
  w("transformer.wte.weight", [c.vocabSize, d]);
  w("transformer.wpe.weight", [c.contextLength, d]);
  const projStd = 0.02 / Math.sqrt(2 * c.nWarmup); // GPT-2's residual-projection scaling
  for (let i = 0; i < c.nWarmup; i++) {
    const h = `transformer.h.${i}`;
    ln(`${h}.ln_1`, d);
    lin(`${h}.attn.c_attn`, d, 3 * d);
    lin(`${h}.attn.c_proj`, d, d, projStd);
    ln(`${h}.ln_2`, d);
    lin(`${h}.mlp.c_fc`, d, 4 * d);
    lin(`${h}.mlp.c_proj`, 4 * d, d, projStd);
  }
  ln("map.ln", d);
  if (c.model === "pixel-cumsum") {
    w("map.key.weight", [d, C * dk]);
    w("map.query", [C, dk, P]);
  } else {
    w("map.q.weight", [d, C * dk]);
    w("map.k.weight", [d, C * dk]);
    w("map.value.weight", [C, d, P]);
    if (c.bias) out.push({ name: "map.value.bias", shape: [C, P], init: { kind: "zeros" }, decay: false });
  }
  for (const s of cnnParamSpecs(cnnConfigOf(c))) out.push(s);
  const F = cnnOutWidth(cnnConfigOf(c));
  ln("ln_f", F);
  w("lm_head.weight", [c.vocabSize, F]);
  return out;
}

/** The parameters the mapping reads (a subset of the model's, by name). */
export type Params = Map<string, tf.Tensor>;

function req(p: Params, name: string): tf.Tensor {
  const t = p.get(name);
  if (!t) throw new Error(`pixel: missing parameter '${name}'`);
  return t;
}

/** The causal running sum over axis 1 of k [B, T, X] (÷ (t+1) for "mean"). */
export function causalRunningSum(
  k: tf.Tensor3D,
  c: Pick<PixelConfig, "runningSum" | "causalSum">,
): tf.Tensor3D {
  const [B, T, X] = k.shape;
  let s: tf.Tensor;
  if (c.causalSum === "cumsum") s = tf.cumsum(k, 1);
  else {
    // lower-triangular ones [T, T] @ k, as one plain 2-D matMul over [T, B·X]
    const tril = tf.linalg.bandPart(tf.ones([T, T]), -1, 0) as tf.Tensor2D;
    const k2 = tf.reshape(tf.transpose(k, [1, 0, 2]), [T, B * X]) as tf.Tensor2D;
    s = tf.transpose(tf.reshape(tf.matMul(tril, k2), [T, B, X]), [1, 0, 2]);
  }
  if (c.runningSum === "mean") {
    const inv = tf.tensor3d(Float32Array.from({ length: T }, (_, t) => 1 / (t + 1)), [1, T, 1]);
    s = tf.mul(s, inv);
  }
  return s as tf.Tensor3D;
}

/** Images [N, P, C] from per-channel vectors v [C, N, K] and per-channel maps [C, K, P], stacked NHWC-wise. */
function perChannelImages(v: tf.Tensor3D, maps: tf.Tensor3D, bias?: tf.Tensor2D): tf.Tensor3D {
  const vs = tf.unstack(v), ms = tf.unstack(maps);
  const bs = bias ? tf.unstack(bias) : [];
  const imgs = vs.map((x, c) => {
    const y = tf.matMul(x as tf.Tensor2D, ms[c] as tf.Tensor2D); // plain 2-D matMul: the fast path
    return bias ? tf.add(y, bs[c]) : y;
  });
  return tf.stack(imgs, 2) as tf.Tensor3D;
}

/**
 * pixel-cumsum's images, [B·T, H, W, C], from the normed hidden states hn [B, T, d] (with share =
 * false: each token's own activation image, before the running sum; for viz).
 */
export function cumsumImages(
  c: PixelConfig,
  p: Params,
  hn: tf.Tensor3D,
  precision?: Precision,
  share = true,
): tf.Tensor4D {
  const [B, T] = hn.shape;
  const C = c.channels, dk = c.keyDim, S = c.imageSize;
  const keys = boundary(linear(hn, req(p, "map.key.weight") as tf.Tensor2D), precision) as tf.Tensor3D; // [B, T, C·dk]
  const sums = share ? boundary(causalRunningSum(keys, c), precision) : keys; // share = false: own images
  const perChannel = tf.transpose(tf.reshape(sums, [B * T, C, dk]), [1, 0, 2]) as tf.Tensor3D; // [C, B·T, dk]
  const imgs = perChannelImages(perChannel, req(p, "map.query") as tf.Tensor3D);
  return boundary(tf.reshape(imgs, [B * T, S, S, C]), precision) as tf.Tensor4D;
}

/** Which order pixel-attn uses for this config. */
export function attnOrderOf(c: PixelConfig): "values-first" | "attend-first" {
  if (c.attnOrder !== "auto") return c.attnOrder;
  return c.imageSize * c.imageSize <= c.nEmbd ? "values-first" : "attend-first";
}

/** [B, T, C·dk] -> [B, C, T, dk] */
function heads(x: tf.Tensor, C: number): tf.Tensor4D {
  const [B, T, X] = x.shape;
  return tf.transpose(tf.reshape(x, [B, T, C, X / C]), [0, 2, 1, 3]) as tf.Tensor4D;
}

/**
 * pixel-attn's images [B·T, H, W, C] for the new positions hn [B, T, d]. With `cache`, the T new
 * positions also attend to the cached ones (keys, and hn or value images, by order) and are appended.
 */
export function attnImages(
  c: PixelConfig,
  p: Params,
  hn: tf.Tensor3D,
  precision?: Precision,
  cache?: ImageAttnCache,
  probsOut?: tf.Tensor[],
): tf.Tensor4D {
  const [B, T, d] = hn.shape;
  const C = c.channels, dk = c.keyDim, S = c.imageSize, P = S * S;
  const order = attnOrderOf(c);
  const q = heads(linear(hn, req(p, "map.q.weight") as tf.Tensor2D), C), scale = 1 / Math.sqrt(dk);
  let k = boundary(heads(linear(hn, req(p, "map.k.weight") as tf.Tensor2D), C), precision);
  const W = req(p, "map.value.weight") as tf.Tensor3D;
  const bias = p.get("map.value.bias") as tf.Tensor2D | undefined;
  // What the attention weights are applied to: value images [B, C, T, P], or the token vectors [B, T, d].
  let src: tf.Tensor;
  if (order === "values-first") {
    const hn2 = tf.reshape(hn, [B * T, d]);
    const vs = tf.unstack(W).map((w, ci) => {
      const y = tf.matMul(hn2, w as tf.Tensor2D);
      return tf.reshape(bias ? tf.add(y, tf.slice(bias, [ci, 0], [1, P])) : y, [B, 1, T, P]);
    });
    src = boundary(tf.concat(vs, 1), precision); // [B, C, T, P]
  } else {
    src = hn;
  }
  let past = 0;
  if (cache) {
    if (cache.k && cache.src) {
      past = cache.k.shape[2];
      k = tf.concat([cache.k, k], 2);
      src = tf.concat([cache.src, src], order === "values-first" ? 2 : 1);
    }
    cache.k = tf.keep(k), cache.src = tf.keep(src);
  }
  let imgs: tf.Tensor;
  if (order === "values-first") {
    // softmax(q k^T / sqrt(dk), causal) @ value images: flash kernels on webgpu (lib/tensor/ops/attention)
    const out = causalAttention(q, k, src, scale, { precision, probsOut }); // [B, C, T, P]
    imgs = tf.transpose(out, [0, 2, 3, 1]); // [B, T, P, C]
  } else {
    const qs = boundary(tf.mul(q, scale), precision);
    const scores = boundary(tf.matMul(qs, k, false, true), precision); // [B, C, T, past + T]
    const probs = boundary(causalSoftmax(scores, past), precision) as tf.Tensor4D;
    if (probsOut) probsOut.push(tf.keep(probs));
    // A_c @ hn for all heads at once: [B, C·T, Tk] @ [B, Tk, d] -> [B, C·T, d]
    const mixed = boundary(
      tf.matMul(tf.reshape(probs, [B, C * T, past + T]), src as tf.Tensor3D),
      precision,
    );
    const perChannel = tf.reshape(tf.transpose(tf.reshape(mixed, [B, C, T, d]), [1, 0, 2, 3]), [C, B * T, d]);
    imgs = perChannelImages(perChannel as tf.Tensor3D, W, bias); // [B·T, P, C]
  }
  return boundary(tf.reshape(imgs, [B * T, S, S, C]), precision) as tf.Tensor4D;
}

/** pixel-attn's decoding cache: keys [B, C, t, dk] and the attended source (value images or hn). */
export interface ImageAttnCache {
  k: tf.Tensor4D | null;
  src: tf.Tensor | null;
}

/**
 * CNN activation floats alive per image while a chunk's gradient is taken: about 10 tensors of each
 * conv's output size (conv, norm intermediates, ReLU, and their gradients), measured on wasm.
 */
function activationFloatsPerImage(c: PixelConfig): number {
  const cfg = cnnConfigOf(c);
  const P = c.imageSize * c.imageSize;
  const convs = cnnParamSpecs(cfg).filter((s) => s.shape.length === 4);
  // an upper bound for resnet, whose strided stages work on smaller images
  return 10 * P * convs.reduce((n, s) => n + s.shape[3], 0);
}

/**
 * Activation budget of one CNN chunk: small on the CPU backends (wasm has a 4 GiB heap in all, and
 * measured step times hardly change: small preset, 4 x 256 tokens, 32-image chunks cost 11% more time
 * than 269-image chunks and 390 MiB less memory); larger on a GPU, where bigger kernels pay.
 */
function autoChunkBytes(): number {
  return tf.getBackend() === "webgpu" ? 1024 * 2 ** 20 : 128 * 2 ** 20;
}

/** Images per CNN chunk for N images (0 = no chunking). */
export function cnnChunkFor(c: PixelConfig, N: number): number {
  if (c.cnnChunk > 0) return c.cnnChunk >= N ? 0 : c.cnnChunk;
  const chunk = Math.max(1, Math.floor(autoChunkBytes() / (4 * activationFloatsPerImage(c))));
  return chunk >= N ? 0 : chunk;
}

class PixelDecodeState implements DecodeState {
  length = 0;
  /** pixel-cumsum: the running key sum [B, C·dk]. */
  keySum: tf.Tensor2D | null = null;
  imageCache: ImageAttnCache = { k: null, src: null };
  constructor(readonly batch: number, readonly caches: KVCache[], readonly headT: tf.Tensor2D) {}
  dispose(): void {
    for (const c of this.caches) {
      c.k?.dispose(), c.v?.dispose();
      c.k = null, c.v = null;
    }
    this.keySum?.dispose(), this.imageCache.k?.dispose(), this.imageCache.src?.dispose();
    this.keySum = null, this.imageCache = { k: null, src: null };
    this.headT.dispose();
  }
}

export class PixelModel implements LanguageModel {
  readonly config: PixelConfig;
  readonly params = new Map<string, tf.Variable>();
  private readonly decayed = new Set<string>();
  private readonly cnnCfg: CnnConfig;
  private readonly cnnNames: string[];

  constructor(config: ModelConfig, seed: number) {
    validatePixelConfig(config);
    this.config = { ...config, cnnWidths: [...config.cnnWidths] };
    this.cnnCfg = cnnConfigOf(this.config);
    const rng = new Rng(seed);
    for (const s of pixelParamSpecs(this.config)) {
      const init = s.init.kind === "normal"
        ? normalInit(rng, s.shape, s.init.std)
        : s.init.kind === "ones"
        ? tf.ones(s.shape)
        : tf.zeros(s.shape);
      this.params.set(s.name, tf.variable(init, true));
      init.dispose();
      if (s.decay) this.decayed.add(s.name);
    }
    this.cnnNames = cnnParamSpecs(this.cnnCfg).map((s) => s.name);
  }

  private p(name: string): tf.Variable {
    const v = this.params.get(name);
    if (!v) throw new Error(`${this.config.model}: no parameter '${name}'`);
    return v;
  }

  /** The warm-up block's parameters, by gpt.ts's names. */
  private blockParams(i: number): BlockParams {
    const h = `transformer.h.${i}`;
    const o = (n: string) => this.params.get(n) as tf.Tensor1D | undefined;
    return {
      ln1W: this.p(`${h}.ln_1.weight`) as tf.Tensor1D,
      ln1B: o(`${h}.ln_1.bias`),
      attn: {
        cAttnW: this.p(`${h}.attn.c_attn.weight`) as tf.Tensor2D,
        cAttnB: o(`${h}.attn.c_attn.bias`),
        cProjW: this.p(`${h}.attn.c_proj.weight`) as tf.Tensor2D,
        cProjB: o(`${h}.attn.c_proj.bias`),
      },
      ln2W: this.p(`${h}.ln_2.weight`) as tf.Tensor1D,
      ln2B: o(`${h}.ln_2.bias`),
      mlp: {
        cFcW: this.p(`${h}.mlp.c_fc.weight`) as tf.Tensor2D,
        cFcB: o(`${h}.mlp.c_fc.bias`),
        cProjW: this.p(`${h}.mlp.c_proj.weight`) as tf.Tensor2D,
        cProjB: o(`${h}.mlp.c_proj.bias`),
      },
    };
  }

  private checkIdx(idx: tf.Tensor, what: string): void {
    if (idx.rank !== 2 || idx.dtype !== "int32") {
      throw new Error(
        `${this.config.model}.${what}: expected int32 [B, T] tokens, got ${idx.dtype} [${idx.shape}]`,
      );
    }
    if ((idx.shape[1] ?? 0) > this.config.contextLength) {
      throw usageError(
        `${this.config.model}.${what}: ${
          idx.shape[1]
        } positions exceed the context length ${this.config.contextLength}`,
      );
    }
  }

  /** Embeddings + warm-up blocks + map LayerNorm for positions start..start+T-1: hn [B, T, d]. */
  private front(
    idx: tf.Tensor2D,
    precision?: Precision,
    start = 0,
    caches?: KVCache[],
    probs?: tf.Tensor[],
  ): tf.Tensor3D {
    const [B, T] = idx.shape;
    const d = this.config.nEmbd;
    const tok = embeddingLookup(this.p("transformer.wte.weight") as tf.Tensor2D, idx);
    const pos = tf.slice(this.p("transformer.wpe.weight"), [start, 0], [T, d]);
    let x = tf.reshape(tf.add(tok, pos), [B, T, d]) as tf.Tensor3D;
    for (let i = 0; i < this.config.nWarmup; i++) {
      x = block(x, this.blockParams(i), this.config.nHead, {
        precision,
        cache: caches?.[i],
        attentionProbs: probs,
      });
    }
    const hn = layerNorm(
      x,
      this.p("map.ln.weight") as tf.Tensor1D,
      this.params.get("map.ln.bias") as tf.Tensor1D | undefined,
    );
    return boundary(hn, precision) as tf.Tensor3D;
  }

  /** Images [B·T, H, W, C] of a whole window (no cache). */
  private images(hn: tf.Tensor3D, precision?: Precision, probs?: tf.Tensor[]): tf.Tensor4D {
    return this.config.model === "pixel-cumsum"
      ? cumsumImages(this.config, this.params, hn, precision)
      : attnImages(this.config, this.params, hn, precision, undefined, probs);
  }

  /** CNN + GAP + ln_f: normed features [N, F]. */
  private features(imgs: tf.Tensor4D, precision?: Precision): tf.Tensor2D {
    const cnnParams = new Map(this.cnnNames.map((n) => [n, this.p(n) as tf.Tensor]));
    const chunk = cnnChunkFor(this.config, imgs.shape[0]);
    const bnd = (t: tf.Tensor) => boundary(t, precision);
    const pooled = cnnCheckpointed(this.cnnCfg, cnnParams, imgs, chunk, bnd);
    const h = layerNorm(
      pooled,
      this.p("ln_f.weight") as tf.Tensor1D,
      this.params.get("ln_f.bias") as tf.Tensor1D | undefined,
    );
    return boundary(h, precision) as tf.Tensor2D;
  }

  decays(name: string): boolean {
    this.p(name);
    return this.decayed.has(name);
  }

  loss(idx: tf.Tensor2D, targets: tf.Tensor2D, opts: ForwardOptions = {}): tf.Scalar {
    this.checkIdx(idx, "loss");
    if (targets.dtype !== "int32" || targets.shape.join() !== idx.shape.join()) {
      throw new Error(
        `${this.config.model}.loss: targets must be int32 [${idx.shape}], got ${targets.dtype} [${targets.shape}]`,
      );
    }
    return tf.tidy(() => {
      const h = this.features(this.images(this.front(idx, opts.precision), opts.precision), opts.precision);
      return tiedCrossEntropy(
        h,
        this.p("lm_head.weight") as tf.Tensor2D,
        tf.reshape(targets, [-1]) as tf.Tensor1D,
      );
    });
  }

  logits(idx: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    this.checkIdx(idx, "logits");
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const h = this.features(this.images(this.front(idx, opts.precision), opts.precision), opts.precision);
      const out = tf.matMul(h, this.p("lm_head.weight"), false, true);
      return tf.reshape(out, [B, T, this.config.vocabSize]) as tf.Tensor3D;
    });
  }

  /** Attention probabilities of the warm-up blocks and (pixel-attn) the image attention, for viz. */
  attentionMaps(idx: tf.Tensor2D): { name: string; probs: tf.Tensor }[] {
    this.checkIdx(idx, "attentionMaps");
    const probs: tf.Tensor[] = [];
    tf.tidy(() => {
      const hn = this.front(idx, undefined, 0, undefined, probs);
      if (this.config.model !== "pixel-cumsum") {
        attnImages(this.config, this.params, hn, undefined, undefined, probs);
      }
    });
    return probs.map((p, i) => ({ name: i < this.config.nWarmup ? `block ${i}` : "image attn", probs: p }));
  }

  /**
   * Per-position images for viz, both [1, T, C, H, W]: `before` is each token's own image (its
   * activation image k_t·q, or its value images), `after` the image the CNN reads.
   */
  activationImages(idx: tf.Tensor2D): { before: tf.Tensor; after: tf.Tensor; sharing: string } {
    this.checkIdx(idx, "activationImages");
    const c = this.config, S = c.imageSize;
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const hn = this.front(idx);
      const toCHW = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [B, T, S, S, c.channels]), [0, 1, 4, 2, 3]);
      const after = toCHW(this.images(hn));
      let before: tf.Tensor;
      if (c.model === "pixel-cumsum") {
        before = toCHW(cumsumImages(c, this.params, hn, undefined, false));
      } else {
        const W = this.p("map.value.weight") as tf.Tensor3D;
        const hn2 = tf.reshape(hn, [B * T, c.nEmbd]);
        const bias = this.params.get("map.value.bias");
        const vs = tf.unstack(W).map((w, ci) => {
          const y = tf.matMul(hn2, w as tf.Tensor2D);
          return bias ? tf.add(y, tf.slice(bias, [ci, 0], [1, S * S])) : y;
        });
        before = tf.reshape(tf.stack(vs, 1), [B, T, c.channels, S, S]);
      }
      const sharing = c.model === "pixel-cumsum"
        ? `running ${c.runningSum} over positions`
        : "image attention (one head per channel)";
      return { before, after, sharing } as unknown as tf.TensorContainer;
    }) as unknown as { before: tf.Tensor; after: tf.Tensor; sharing: string };
  }

  startDecode(batch: number): DecodeState {
    const caches: KVCache[] = [];
    for (let i = 0; i < this.config.nWarmup; i++) caches.push({ k: null, v: null });
    const headT = tf.tidy(() => tf.transpose(this.p("lm_head.weight")) as tf.Tensor2D);
    return new PixelDecodeState(batch, caches, headT);
  }

  decodeStep(state: DecodeState, tokens: tf.Tensor1D): tf.Tensor2D {
    if (!(state instanceof PixelDecodeState)) {
      throw new Error(`${this.config.model}.decodeStep: state was not made by this model's startDecode`);
    }
    const c = this.config, B = state.batch;
    if (tokens.rank !== 1 || tokens.shape[0] !== B || tokens.dtype !== "int32") {
      throw new Error(
        `${c.model}.decodeStep: expected int32 [${B}] tokens, got ${tokens.dtype} [${tokens.shape}]`,
      );
    }
    if (state.length >= c.contextLength) {
      throw usageError(
        `${c.model}.decodeStep: the context (${c.contextLength} positions) is full; start a new decode with the last positions`,
      );
    }
    const old: (tf.Tensor | null)[] = [
      ...state.caches.flatMap((k) => [k.k, k.v]),
      state.keySum,
      state.imageCache.k,
      state.imageCache.src,
    ];
    const t = state.length;
    const logits = tf.tidy(() => {
      const hn = this.front(tf.reshape(tokens, [B, 1]) as tf.Tensor2D, undefined, t, state.caches);
      let imgs: tf.Tensor4D;
      const S = c.imageSize;
      if (c.model === "pixel-cumsum") {
        const k = linear(
          tf.reshape(hn, [B, c.nEmbd]),
          this.p("map.key.weight") as tf.Tensor2D,
        ) as tf.Tensor2D; // [B, C·dk]
        const sum = state.keySum ? tf.add(state.keySum, k) : k;
        state.keySum = tf.keep(sum) as tf.Tensor2D;
        const s = c.runningSum === "mean" ? tf.div(sum, t + 1) : sum;
        const perChannel = tf.transpose(tf.reshape(s, [B, c.channels, c.keyDim]), [1, 0, 2]) as tf.Tensor3D;
        imgs = tf.reshape(perChannelImages(perChannel, this.p("map.query") as tf.Tensor3D), [
          B,
          S,
          S,
          c.channels,
        ]) as tf.Tensor4D;
      } else {
        imgs = attnImages(c, this.params, hn, undefined, state.imageCache);
      }
      const h = this.features(imgs);
      return linear(h, state.headT) as tf.Tensor2D;
    });
    for (const o of old) o?.dispose();
    state.length += 1;
    return logits;
  }

  paramCount(): number {
    let n = 0;
    for (const v of this.params.values()) n += v.size;
    return n;
  }

  /**
   * Training FLOPs per token (forward + backward = 3 × forward; multiply-add = 2): the weight matMuls of
   * the warm-up blocks and the head (6 per parameter, as gpt), the warm-up attention (12 L d T), the
   * mapping, and the CNN on this position's image (3 × its forward). At full context; gradient
   * checkpointing adds one more CNN forward per step (not counted).
   */
  flopsPerToken(): number {
    const c = this.config;
    const d = c.nEmbd, C = c.channels, dk = c.keyDim, P = c.imageSize * c.imageSize, T = c.contextLength;
    const blockParams = c.nWarmup * 12 * d * d;
    const F = cnnOutWidth(this.cnnCfg);
    let flops = 6 * blockParams + 12 * c.nWarmup * d * T + 6 * c.vocabSize * F;
    if (c.model === "pixel-cumsum") {
      flops += 6 * d * C * dk + 6 * C * dk * P; // keys, then S_t · pixel queries
    } else {
      flops += 6 * 2 * d * C * dk; // q and k
      flops += 6 * C * T * dk; // scores q·k over the context (counted in full, as nanoGPT)
      flops += attnOrderOf(c) === "values-first"
        ? 6 * d * C * P + 6 * C * T * P // value images, then A @ V
        : 6 * C * T * d + 6 * d * C * P; // A @ hn, then the image maps
    }
    flops += 3 * cnnFlopsPerImage(this.cnnCfg);
    return flops;
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
  }
}

function family(name: PixelFamilyName, summary: string): ModelFamily {
  return {
    name,
    summary,
    presets: PIXEL_PRESETS[name],
    validate: validatePixelConfig,
    create: (config, seed) => new PixelModel(config, seed),
  };
}

export const pixelCumsumFamily = family(
  "pixel-cumsum",
  "idea 1: per-pixel queries x per-channel keys, running sum over positions, CNN vgg9 (the study's image model)",
);
export const pixelAttnFamily = family(
  "pixel-attn",
  "idea 2: causal attention with one head per image channel whose values are images, CNN vgg9",
);
export const pixelAttnWideFamily = family(
  "pixel-attn-wide",
  "idea 2 with the wide CNN (vgg-wide, 256 features)",
);
