// The study's three image models: `pixel-cumsum`, `pixel-attn` and `pixel-attn-wide`. Each maps every
// token position to an image of C channels and H×W pixels, shares images causally over time, reads each
// position's image with a CNN on its own (lib/models/cnn.ts), pools, normalises and predicts the next
// token with an untied linear head. The three differ only in how tokens become images, a strategy object
// of lib/models/pixel_mapping.ts (pixel-attn-wide is pixel-attn with a wider CNN). Strictly causal in training and eval (no statistic ever crosses
// positions), and efficient by algebra: both mappings are linear in what is shared, so sharing happens
// on small vectors where that is cheaper (tests/pixel_test.ts checks them against the literal forms of
// lib/models/pixel_reference.ts, outputs and gradients).
//
// Shapes (B batch, T positions, d = nEmbd, C = channels, P = H·W pixels, dk = keyDim, F = CNN features):
//   x = wte[idx] + wpe[:T]                                   [B, T, d]
//   3 warm-up blocks (nn.ts `block`, the same block as gpt)   [B, T, d]
//     with gpt's architecture options (variants.ts: norm, mlp, pos, qkv, qkv_act, attn_extra,
//     kv_heads; pos also replaces wpe), all at GPT-2's values by default
//   hn = LayerNorm_map(x)  (hn = x with map_norm false)       [B, T, d]
//   pixel-cumsum: k = hn @ map.key.weight                     [B, T, C·dk]  one key per channel
//                 S_t = Σ_{s<=t} k_s   (÷ (t+1) if runningSum = "mean")
//                 img_t[c, p] = S_t[c] · map.query[c, :, p]  [B·T, P, C]   (pixel queries [C, dk, P])
//     The study's act[t] += act[t-1] over the images k_t[c]·q[c, p] is the same, by linearity.
//     The study's code (--preset study): k with map.key.bias, img_t = own_t + own_{t-1} (mix "window";
//     own_{-1} = 0), own_t[c] = S·softmax_p(k_t[c]·q[c, p] / √dk) (mapping "softmax": images shared).
//   pixel-attn:   q, k = hn @ map.q.weight, hn @ map.k.weight [B, C, T, dk] (one head per channel)
//                 A_c = softmax(q_c k_cᵀ / √dk + causal mask)  [B, C, T, T]
//                 img_t[c] = Σ_s A_c[t, s] (hn_s @ map.value.weight[c] + map.value.bias[c])
//     computed either values first (V_c = hn @ W_c, then A_c @ V_c: the literal order, T²·P per head)
//     or attend first (A_c @ hn, then @ W_c: T²·d per head), whichever is cheaper (attnOrder "auto":
//     values first when P <= d). Equal by linearity, also with the bias since each row of A sums to 1.
//   CNN on [B·T, H, W, C] -> GAP -> features                  [B·T, F]
//   LayerNorm_f (unless final_norm false), logits = features @ lm_head.weightᵀ (+ lm_head.bias)
//                                                             [B·T, V]   (lm_head.weight [V, F])
//
// Parameter names (safetensors): transformer.wte.weight [V, d], transformer.wpe.weight [T, d],
// transformer.h.{i}.* (exactly as gpt.ts, i < nWarmup), map.ln.weight [d] (+ .bias) (unless map_norm
// false), map.key.weight [d, C·dk] (+ map.key.bias [C·dk] when map_bias) and map.query [C, dk, P]
// (cumsum), map.q.weight / map.k.weight [d, C·dk], map.value.weight [C, d, P] (+ map.value.bias [C, P]
// when bias or map_bias) (attn), cnn.* (cnn.ts), ln_f.weight [F] (+ .bias) (unless final_norm false),
// lm_head.weight [V, F] (+ lm_head.bias [V] when head_bias).
import { tf } from "../tensor/backend.ts";
import { usageError } from "../errors.ts";
import { Rng } from "../rng.ts";
import { emptyKVCache, type KVCache, kvCacheTensors, layerNorm, linear } from "../nn.ts";
import { boundary } from "../precision.ts";
import { earlyReleaseOn } from "../tensor/patches/backprop.ts";
import { kernelFor } from "../tensor/kernel_choice.ts";
import { switchOn } from "../tensor/env_switch.ts";
import { tiedCrossEntropy } from "../loss.ts";
import { checkDecodeStep, checkLossInputs, checkTokens } from "./inputs.ts";
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
  cnnConvOutputFloatsPerImage,
  cnnFlopsPerImage,
  type CnnKind,
  type CnnNorm,
  cnnOutWidth,
  cnnParamSpecs,
} from "./cnn.ts";
import {
  biasSpec,
  blockSpecs,
  createParams,
  GPT2_VOCAB_SIZE,
  layerNormSpecs,
  type ParamSpec,
  weightSpec,
} from "./params.ts";
import {
  blockLayoutOf,
  embed,
  GPT2_VARIANT,
  positionSpecs,
  runBlocks,
  type Trunk,
  type VariantConfig,
  variantErrors,
  variantOf,
} from "./variants.ts";
import {
  type ImageMapping,
  type MappingCache,
  type MappingConfig,
  mappingOf,
  toCHW,
} from "./pixel_mapping.ts";

export type PixelFamilyName = "pixel-cumsum" | "pixel-attn" | "pixel-attn-wide";

/** The config of the image models: the mapping's fields (pixel_mapping.ts MappingConfig) and these. */
export interface PixelConfig extends ModelConfig, MappingConfig, VariantConfig {
  model: PixelFamilyName;
  /** Heads of the warm-up blocks. */
  nHead: number;
  /** Number of warm-up GPT blocks (3 in the study). */
  nWarmup: number;
  cnn: CnnKind;
  cnnWidth: number;
  /** vgg9: convs; resnet: blocks per stage; 0 = the study's (9 convs, 4 blocks per stage as Resnet3). */
  cnnDepth: number;
  /** Explicit conv widths for vgg9/vgg-wide ([] = derived from cnnWidth and cnnDepth). */
  cnnWidths: number[];
  cnnNorm: CnnNorm;
  /** Images per CNN chunk (gradient checkpointing); 0 = automatic (about 128 MiB of activations, 1 GiB on webgpu). */
  cnnChunk: number;
  /** A LayerNorm (map.ln) on the warm-up blocks' output before the mapping; absent: true. */
  map_norm?: boolean;
  /** A LayerNorm (ln_f) on the CNN's pooled features before the head; absent: true. */
  final_norm?: boolean;
  /** A bias (lm_head.bias [V]) on the output head; absent: false. */
  head_bias?: boolean;
}

/**
 * The study's code where lmpipe's presets differ (docs/pixel.md, "`--preset study` against the study's
 * code"): no map or final LayerNorm, a head with bias, a bias on the map projection; for idea 1 (ShotNet)
 * 128-d pixel vectors, softmax images and the window of two positions.
 */
function studyCode(model: PixelFamilyName): Partial<PixelConfig> {
  const common = { map_norm: false, final_norm: false, head_bias: true, map_bias: true };
  if (model !== "pixel-cumsum") return common;
  return { ...common, keyDim: 128, mapping: "softmax", mix: "window" };
}

function presetsFor(model: PixelFamilyName): Record<string, PixelConfig> {
  const cnn: CnnKind = model === "pixel-attn-wide" ? "vgg-wide" : "vgg9";
  const common = {
    model,
    vocabSize: GPT2_VOCAB_SIZE,
    runningSum: "sum" as const,
    causalSum: "cumsum" as const,
    attnOrder: "auto" as const,
    cnn,
    cnnDepth: 0,
    cnnWidths: [] as number[],
    cnnNorm: "image" as const,
    cnnChunk: 0,
    nWarmup: 3,
    bias: false,
    ...GPT2_VARIANT,
    map_norm: true,
    final_norm: true,
    head_bias: false,
    map_bias: false,
    ...(model === "pixel-cumsum" ? { mix: "cumsum" as const, mapping: "dot" as const } : {}),
  };
  return {
    // The study's code: 512-wide warm-up blocks with 8 heads, no bias, 8 channels of 20x20, context 1024.
    study: {
      ...common,
      preset: "study",
      gelu: "exact" as const,
      contextLength: 1024,
      nEmbd: 512,
      nHead: 8,
      channels: 8,
      imageSize: 20,
      keyDim: 64,
      cnnWidth: 64,
      ...studyCode(model),
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
  for (const f of ["map_norm", "final_norm", "head_bias", "map_bias"]) {
    if (config[f] !== undefined && typeof config[f] !== "boolean") {
      throw usageError(`${where}: '${f}' must be true or false, got ${JSON.stringify(config[f])}`);
    }
  }
  for (const [f, ok] of [["mix", ["cumsum", "window"]], ["mapping", ["dot", "softmax"]]] as const) {
    if (config[f] === undefined) continue;
    if (c.model !== "pixel-cumsum") throw usageError(`${where}: '${f}' is a pixel-cumsum field`);
    choice(f, ok);
  }
  if (c.mix === "window" && c.runningSum === "mean") {
    throw usageError(`${where}: runningSum "mean" is for mix "cumsum"; the window of two sums its positions`);
  }
  choice("cnn", CNN_KINDS);
  if (!Array.isArray(c.cnnWidths)) {
    throw usageError(`${where}: 'cnnWidths' must be a list of widths ([] = derived)`);
  }
  const errs = [...variantErrors(c, c.nHead, c.nEmbd), ...cnnConfigErrors(cnnConfigOf(c))];
  if (errs.length > 0) throw usageError(`${where}: ${errs.join("; ")}`);
}

/** Every parameter, in a fixed order (also the safetensors order and the init order). */
export function pixelParamSpecs(c: PixelConfig): ParamSpec[] {
  const d = c.nEmbd;
  const projStd = 0.02 / Math.sqrt(2 * c.nWarmup); // GPT-2's residual-projection scaling
  const v = variantOf(c);
  const specs = [
    weightSpec("transformer.wte.weight", [c.vocabSize, d]),
    ...positionSpecs(v, c.contextLength, d),
  ];
  specs.push(...warmupSpecs(c, projStd));
  specs.push(
    ...(c.map_norm !== false ? layerNormSpecs("map.ln", d, c.bias) : []),
    ...mappingOf(c).specs(c),
    ...cnnParamSpecs(cnnConfigOf(c)),
  );
  const F = cnnOutWidth(cnnConfigOf(c));
  if (c.final_norm !== false) specs.push(...layerNormSpecs("ln_f", F, c.bias));
  specs.push(weightSpec("lm_head.weight", [c.vocabSize, F]));
  if (c.head_bias === true) specs.push(biasSpec("lm_head.bias", [c.vocabSize]));
  return specs;
}

/** The warm-up blocks' parameters (GPT-2's residual-projection scaling `projStd`). */
function warmupSpecs(c: PixelConfig, projStd: number): ParamSpec[] {
  const layout = blockLayoutOf(variantOf(c), c.nHead), specs: ParamSpec[] = [];
  for (let i = 0; i < c.nWarmup; i++) {
    specs.push(...blockSpecs(`transformer.h.${i}`, c.nEmbd, c.bias, projStd, layout));
  }
  return specs;
}

/**
 * Tensors of each conv's output size alive per image while a chunk's gradient is taken, measured (peak tensor
 * memory against the chunk: tests/pixel_test.ts; bench/pixel.ts at the small preset): on wasm 2.1-2.6 with
 * lmpipe's fused image norm and its backward pass that frees saved tensors as it goes
 * (lib/tensor/patches/backprop.ts), 3.6-6.6 with either switched off; on cpu, where the norm is an op
 * chain, 16-24. webgpu keeps the older figure of 10.
 */
function tensorsPerConvOutput(): number {
  const backend = tf.getBackend();
  if (backend === "cpu") return 25;
  if (backend === "wasm" && earlyReleaseOn() && kernelFor("imageNorm") === "lmpipe") return 3;
  return 10;
}

/** CNN activation floats alive per image while a chunk's gradient is taken. */
function activationFloatsPerImage(c: PixelConfig): number {
  const cfg = cnnConfigOf(c);
  const P = c.imageSize * c.imageSize;
  const convs = cnnParamSpecs(cfg).filter((s) => s.shape.length === 4);
  // an upper bound for resnet, whose strided stages work on smaller images
  return tensorsPerConvOutput() * P * convs.reduce((n, s) => n + s.shape[3], 0);
}

/**
 * Activation budget of one CNN chunk: small on the CPU backends (wasm has a 4 GiB heap in all, and
 * measured step times hardly change above a few hundred images: bench/RESULTS.md, "CNN chunks"); larger
 * on a GPU, where bigger kernels pay.
 */
function autoChunkBytes(): number {
  return tf.getBackend() === "webgpu" ? 1024 * 2 ** 20 : 128 * 2 ** 20;
}

/**
 * Images per CNN chunk for N images (0 = no chunking): with `cnnChunk` 0, the fewest chunks within the
 * activation budget, all of about the same size (no small last chunk).
 */
export function cnnChunkFor(c: PixelConfig, N: number): number {
  if (c.cnnChunk > 0) return c.cnnChunk >= N ? 0 : c.cnnChunk;
  const most = Math.max(1, Math.floor(autoChunkBytes() / (4 * activationFloatsPerImage(c))));
  if (most >= N) return 0;
  return Math.ceil(N / Math.ceil(N / most));
}

let keepConvs = switchOn("LMPIPE_CNN_KEEP_CONVS");

/**
 * Turns keeping the CNN's conv (and norm) outputs for the backward pass on or off for this process (off:
 * every chunk's convs and norms run forward again there, as before); returns the old state. For tests and
 * benchmarks; LMPIPE_CNN_KEEP_CONVS=0 too.
 */
export function setKeepConvOutputs(on: boolean): boolean {
  const old = keepConvs;
  keepConvs = on;
  return old;
}

/**
 * Memory the chunked CNN may spend on keeping its conv outputs, and then its norm outputs, from the forward
 * to the backward pass: 800 MiB. At the `small` presets (2,048 images of 12x12 at batch 8) the conv outputs
 * are 340 MB for vgg9 and 755 MB for vgg-wide, and the norm outputs as much again (vgg9 keeps both, 680
 * MB; vgg-wide its convs'); at `study` sizes (vgg9 at batch 1: 944 MB) the outputs outgrow it and the convs
 * run forward again, so the study presets' measured peaks (README) stand.
 */
const KEEP_CONV_BYTES = 800 * 2 ** 20;

/**
 * Whether a chunked CNN pass over N images keeps every conv's output for the backward pass, which then
 * skips the convs' second forward (lib/models/cnn.ts cnnCheckpointed): when they fit KEEP_CONV_BYTES.
 */
export function cnnKeepsConvOutputs(c: PixelConfig, N: number): boolean {
  return keepConvs && 4 * N * cnnConvOutputFloatsPerImage(cnnConfigOf(c)) <= KEEP_CONV_BYTES;
}

/**
 * Whether it keeps every norm's output (+ ReLU) as well, which then skips the norms' second forward too:
 * when the conv outputs and as many floats again (each conv has its norm) fit KEEP_CONV_BYTES.
 */
export function cnnKeepsNormOutputs(c: PixelConfig, N: number): boolean {
  return keepConvs && 8 * N * cnnConvOutputFloatsPerImage(cnnConfigOf(c)) <= KEEP_CONV_BYTES;
}

class PixelDecodeState implements DecodeState {
  length = 0;
  /** What the mapping keeps between steps (mappingOf(config).step). */
  mapping: MappingCache = {};
  constructor(readonly batch: number, readonly caches: KVCache[], readonly headT: tf.Tensor2D) {}
  dispose(): void {
    for (const c of this.caches) {
      for (const t of kvCacheTensors(c)) t.dispose();
      Object.assign(c, emptyKVCache());
    }
    for (const t of Object.values(this.mapping)) t?.dispose();
    this.mapping = {};
    this.headT.dispose();
  }
}

export class PixelModel implements LanguageModel {
  readonly config: PixelConfig;
  readonly params: Map<string, tf.Variable>;
  private readonly decayed = new Set<string>();
  private readonly mapping: ImageMapping;
  private readonly cnnCfg: CnnConfig;
  private readonly cnnNames: string[];
  private readonly trunk: Trunk;

  /** A model of `config` (a config without the option fields gets GPT-2's blocks: old checkpoints). */
  constructor(config: ModelConfig, seed: number) {
    validatePixelConfig(config);
    this.config = { ...config, ...variantOf(config), cnnWidths: [...config.cnnWidths] };
    this.mapping = mappingOf(this.config);
    this.cnnCfg = cnnConfigOf(this.config);
    const specs = pixelParamSpecs(this.config);
    this.params = createParams(specs, new Rng(seed));
    for (const s of specs) if (s.decay) this.decayed.add(s.name);
    this.cnnNames = cnnParamSpecs(this.cnnCfg).map((s) => s.name);
    this.trunk = { variant: variantOf(this.config), nHead: this.config.nHead, params: this.params };
  }

  private p(name: string): tf.Variable {
    const v = this.params.get(name);
    if (!v) throw new Error(`${this.config.model}: no parameter '${name}'`);
    return v;
  }

  /** Embeddings + warm-up blocks + map LayerNorm for positions start..start+T-1: hn [B, T, d]. */
  private front(
    idx: tf.Tensor2D,
    precision?: Precision,
    start = 0,
    caches?: KVCache[],
    probs?: tf.Tensor[],
  ): tf.Tensor3D {
    const x = runBlocks(this.trunk, embed(this.trunk, idx, start), this.config.nWarmup, {
      start,
      precision,
      caches,
      attentionProbs: probs,
    });
    if (this.config.map_norm === false) return x;
    const hn = layerNorm(
      x,
      this.p("map.ln.weight") as tf.Tensor1D,
      this.params.get("map.ln.bias") as tf.Tensor1D | undefined,
    );
    return boundary(hn, precision) as tf.Tensor3D;
  }

  /** Images [B·T, H, W, C] of a whole window (no cache). */
  private images(hn: tf.Tensor3D, precision?: Precision, probs?: tf.Tensor[]): tf.Tensor4D {
    return this.mapping.images(this.config, this.params, hn, precision, probs);
  }

  /** CNN + GAP + ln_f: normed features [N, F]. */
  private features(imgs: tf.Tensor4D, precision?: Precision): tf.Tensor2D {
    // autocast: conv weights and biases enter the convs as 16-bit values (gradients too); norm scales stay
    const convParam = (n: string, v: tf.Tensor) => v.rank === 4 || n.endsWith(".bias");
    const cnnParams = new Map(
      this.cnnNames.map((n) => [n, convParam(n, this.p(n)) ? boundary(this.p(n), precision) : this.p(n)]),
    );
    const chunk = cnnChunkFor(this.config, imgs.shape[0]);
    const bnd = (t: tf.Tensor) => boundary(t, precision);
    const N = imgs.shape[0];
    const keep = cnnKeepsConvOutputs(this.config, N), keepNorms = cnnKeepsNormOutputs(this.config, N);
    const pooled = cnnCheckpointed(this.cnnCfg, cnnParams, imgs, chunk, bnd, keep, keepNorms);
    if (this.config.final_norm === false) return pooled as tf.Tensor2D;
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
    checkLossInputs(this.config, idx, targets);
    return tf.tidy(() => {
      const h = this.features(this.images(this.front(idx, opts.precision), opts.precision), opts.precision);
      const w = this.p("lm_head.weight") as tf.Tensor2D, b = this.params.get("lm_head.bias");
      // a head bias as one more feature: [h, 1] · [W, b] (the loss never forms the logits whole)
      const [hb, wb] = b
        ? [tf.concat([h, tf.ones([h.shape[0], 1])], 1), tf.concat([w, tf.reshape(b, [-1, 1])], 1)]
        : [h, w];
      return tiedCrossEntropy(
        hb as tf.Tensor2D,
        wb as tf.Tensor2D,
        tf.reshape(targets, [-1]) as tf.Tensor1D,
        { precision: opts.precision, gradScale: opts.gradScale },
      );
    });
  }

  logits(idx: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    checkTokens(this.config, idx, "logits");
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const h = this.features(this.images(this.front(idx, opts.precision), opts.precision), opts.precision);
      const p = opts.precision; // autocast: 16-bit operands and logits under mixed / bf16
      const b = this.params.get("lm_head.bias");
      const hw = tf.matMul(boundary(h, p), boundary(this.p("lm_head.weight"), p), false, true);
      const out = boundary(b ? tf.add(hw, boundary(b, p)) : hw, p);
      return tf.reshape(out, [B, T, this.config.vocabSize]) as tf.Tensor3D;
    });
  }

  /** Attention probabilities of the warm-up blocks and (pixel-attn) the image attention, for viz. */
  attentionMaps(idx: tf.Tensor2D): { name: string; probs: tf.Tensor }[] {
    checkTokens(this.config, idx, "attentionMaps");
    const probs: tf.Tensor[] = [];
    tf.tidy(() => {
      const hn = this.front(idx, undefined, 0, undefined, probs);
      if (this.mapping.attends) this.mapping.images(this.config, this.params, hn, undefined, probs);
    });
    return probs.map((p, i) => ({ name: i < this.config.nWarmup ? `block ${i}` : "image attn", probs: p }));
  }

  /**
   * Per-position images for viz, both [1, T, C, H, W]: `before` is each token's own image (its
   * activation image k_t·q, or its value images), `after` the image the CNN reads.
   */
  activationImages(idx: tf.Tensor2D): { before: tf.Tensor; after: tf.Tensor; sharing: string } {
    checkTokens(this.config, idx, "activationImages");
    return tf.tidy(() => {
      const [B, T] = idx.shape;
      const hn = this.front(idx);
      const after = toCHW(this.config, this.images(hn), B, T);
      const before = this.mapping.ownImages(this.config, this.params, hn);
      const sharing = this.mapping.sharing(this.config);
      return { before, after, sharing } as unknown as tf.TensorContainer;
    }) as unknown as { before: tf.Tensor; after: tf.Tensor; sharing: string };
  }

  startDecode(batch: number): DecodeState {
    const caches: KVCache[] = [];
    for (let i = 0; i < this.config.nWarmup; i++) caches.push(emptyKVCache());
    const headT = tf.tidy(() => tf.transpose(this.p("lm_head.weight")) as tf.Tensor2D);
    return new PixelDecodeState(batch, caches, headT);
  }

  decodeStep(state: DecodeState, tokens: tf.Tensor1D): tf.Tensor2D {
    if (!(state instanceof PixelDecodeState)) {
      throw new Error(`${this.config.model}.decodeStep: state was not made by this model's startDecode`);
    }
    const c = this.config, B = state.batch;
    checkDecodeStep(this.config, B, state.length, tokens);
    const old: (tf.Tensor | null)[] = [
      ...state.caches.flatMap(kvCacheTensors),
      ...Object.values(state.mapping),
    ];
    const t = state.length;
    const logits = tf.tidy(() => {
      const hn = this.front(tf.reshape(tokens, [B, 1]) as tf.Tensor2D, undefined, t, state.caches);
      const imgs = this.mapping.step(c, this.params, hn, t, state.mapping);
      const h = this.features(imgs);
      return linear(
        h,
        state.headT,
        this.params.get("lm_head.bias") as tf.Tensor1D | undefined,
      ) as tf.Tensor2D;
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
   * the warm-up blocks (their matrices: 12 d² each for GPT-2's block) and the head (6 per parameter, as gpt), the warm-up attention (12 L d T), the
   * mapping, and the CNN on this position's image (3 × its forward). At full context; gradient
   * checkpointing adds one more CNN forward per step (not counted).
   */
  flopsPerToken(): number {
    const c = this.config;
    const d = c.nEmbd, T = c.contextLength;
    const blockParams = warmupSpecs(c, 0).filter((s) => s.shape.length === 2)
      .reduce((n, s) => n + s.shape[0] * s.shape[1], 0);
    const F = cnnOutWidth(this.cnnCfg);
    let flops = 6 * blockParams + 12 * c.nWarmup * d * T + 6 * c.vocabSize * F;
    flops += this.mapping.flops(c);
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
