// How the image models turn tokens into images: the one thing pixel-cumsum and pixel-attn(-wide) do
// differently, as two small strategy objects (ImageMapping) that lib/models/pixel.ts picks by model
// name. Both are linear in what positions share, so sharing happens on small vectors where that is
// cheaper; tests/pixel_test.ts checks both against the literal forms of pixel_reference.ts. pixel-cumsum
// also has the study's code's own form (docs/pixel.md): softmax images (`mapping`, not linear, so
// positions share images instead of keys) and a window of two positions (`mix`).
import { tf } from "../tensor/backend.ts";
import { linear } from "../nn.ts";
import { causalSoftmax } from "../tensor/ops/causal_softmax/mod.ts";
import {
  causalAttention,
  causalAttentionChannelsLast,
  flashAttentionLaidOutApplies,
} from "../tensor/ops/attention/mod.ts";
import { boundary } from "../precision.ts";
import type { Precision } from "./types.ts";
import { biasSpec, type ParamSpec, weightSpec } from "./params.ts";

/** The config fields a mapping reads (every PixelConfig has them). */
export interface MappingConfig {
  model: string;
  /** Width d of the embeddings and warm-up blocks. */
  nEmbd: number;
  contextLength: number;
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
  /**
   * pixel-cumsum: how positions share images: "cumsum" (the running sum of the write-up; absent means
   * this) or "window" (a position's image plus the previous one's, the study's code; position 0 has none).
   */
  mix?: "cumsum" | "window";
  /**
   * pixel-cumsum: a token's image per channel: "dot" (key · pixel query; absent means this) or "softmax"
   * (imageSize × softmax over the channel's pixels of key · query / √dk, the study's code).
   */
  mapping?: "dot" | "softmax";
  /**
   * A bias on the token's map projection even without `bias`: map.key.bias (pixel-cumsum, which has it
   * only then) or map.value.bias (pixel-attn, which also has it with `bias`). Absent: false.
   */
  map_bias?: boolean;
}

/** Whether pixel-cumsum's keys get map.key.bias, and pixel-attn's values map.value.bias. */
export function keyBiasOf(c: MappingConfig): boolean {
  return c.map_bias === true;
}
export function valueBiasOf(c: MappingConfig): boolean {
  return c.bias || c.map_bias === true;
}

/** x [B, T, X] plus x one position earlier (zero before position 0): the study's window of two, causal. */
export function causalWindow(x: tf.Tensor3D): tf.Tensor3D {
  const [B, T, X] = x.shape;
  if (T === 1) return x;
  const prev = tf.pad(tf.slice(x, [0, 0, 0], [B, T - 1, X]), [[0, 0], [1, 0], [0, 0]]);
  return tf.add(x, prev) as tf.Tensor3D;
}

/** How pixel-cumsum shares x [B, T, X] over positions: the causal running sum (or mean), or the window. */
function shareOverTime(x: tf.Tensor3D, c: MappingConfig): tf.Tensor3D {
  return c.mix === "window" ? causalWindow(x) : causalRunningSum(x, c);
}

/**
 * Each token's softmax images, [N, P, C], from keys k [C, N, dk] and pixel queries [C, dk, P]: per
 * channel imageSize × softmax over the P pixels of k · q / √dk (the study's Shot module).
 */
function softmaxImages(k: tf.Tensor3D, query: tf.Tensor3D, imageSize: number): tf.Tensor3D {
  const dk = k.shape[2], ks = tf.unstack(k), qs = tf.unstack(query);
  const imgs = ks.map((x, c) =>
    tf.mul(
      tf.softmax(tf.mul(tf.matMul(x as tf.Tensor2D, qs[c] as tf.Tensor2D), 1 / Math.sqrt(dk))),
      imageSize,
    )
  );
  return channelsLast(imgs);
}

/**
 * Per-channel images [N, P] -> [N, P, C]. Stacked along the first axis and transposed, not stacked along the
 * last: TF.js's wasm concat copies one run of the inner axis at a time, a single float here (4.8 ms for four
 * [512, 64] images, and as long again for the gradient's unstack, against 0.3 ms this way).
 */
function channelsLast(imgs: tf.Tensor[]): tf.Tensor3D {
  return tf.transpose(tf.stack(imgs, 0), [1, 2, 0]) as tf.Tensor3D;
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
  c: Pick<MappingConfig, "runningSum" | "causalSum">,
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

/**
 * Images [N, P, C] from per-channel vectors v [C, N, K] and per-channel maps [C, K, P] (+ bias [C, P]):
 * one batched matMul [C, N, P] then one transpose, where C plain matMuls, C unstacked slices each side
 * and a stack cost ~4 C ops each way (bit-identical: each batch slice is the same 2-D product).
 */
function perChannelImages(v: tf.Tensor3D, maps: tf.Tensor3D, bias?: tf.Tensor2D): tf.Tensor3D {
  const [C, , P] = maps.shape;
  const y = tf.matMul(v, maps); // [C, N, P]
  return tf.transpose(bias ? tf.add(y, tf.reshape(bias, [C, 1, P])) : y, [1, 2, 0]) as tf.Tensor3D;
}

/**
 * Every token's value image of every channel, [N, C·P], from token vectors hn [N, d], the value maps
 * W [C, d, P] and their bias [C, P]: one 2-D matMul against W laid out as [d, C·P] (a small copy), where
 * a matMul, a slice and an add per channel and a concat took ~4 C ops each way (1.5-2x the time at tiny).
 */
function valueImages(hn: tf.Tensor2D, W: tf.Tensor3D, bias?: tf.Tensor): tf.Tensor2D {
  const [C, d, P] = W.shape;
  const y = tf.matMul(hn, tf.reshape(tf.transpose(W, [1, 0, 2]), [d, C * P]) as tf.Tensor2D);
  return (bias ? tf.add(y, tf.reshape(bias, [C * P])) : y) as tf.Tensor2D;
}

/**
 * pixel-cumsum's images, [B·T, H, W, C], from the normed hidden states hn [B, T, d] (with share =
 * false: each token's own activation image, before the running sum; for viz).
 */
export function cumsumImages(
  c: MappingConfig,
  p: Params,
  hn: tf.Tensor3D,
  precision?: Precision,
  share = true,
): tf.Tensor4D {
  const [B, T] = hn.shape;
  const C = c.channels, dk = c.keyDim, S = c.imageSize;
  const bias = keyBiasOf(c) ? req(p, "map.key.bias") as tf.Tensor1D : undefined;
  const keys = linear(hn, req(p, "map.key.weight") as tf.Tensor2D, bias, precision) as tf.Tensor3D; // [B, T, C·dk]
  // matMul operands: 16-bit under mixed / bf16 (autocast), gradients too
  const query = boundary(req(p, "map.query") as tf.Tensor3D, precision);
  if (c.mapping === "softmax") { // not linear: each token's images first, then shared
    const perChannel = tf.transpose(tf.reshape(keys, [B * T, C, dk]), [1, 0, 2]) as tf.Tensor3D;
    let imgs = boundary(softmaxImages(perChannel, query, S), precision) as tf.Tensor; // [B·T, P, C]
    if (share) {
      imgs = boundary(shareOverTime(tf.reshape(imgs, [B, T, S * S * C]) as tf.Tensor3D, c), precision);
    }
    return tf.reshape(imgs, [B * T, S, S, C]) as tf.Tensor4D;
  }
  const sums = share ? boundary(shareOverTime(keys, c), precision) : keys; // share = false: own images
  const perChannel = tf.transpose(tf.reshape(sums, [B * T, C, dk]), [1, 0, 2]) as tf.Tensor3D; // [C, B·T, dk]
  const imgs = perChannelImages(perChannel, query);
  return boundary(tf.reshape(imgs, [B * T, S, S, C]), precision) as tf.Tensor4D;
}

/** Which order pixel-attn uses for this config. */
export function attnOrderOf(c: MappingConfig): "values-first" | "attend-first" {
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
  c: MappingConfig,
  p: Params,
  hn: tf.Tensor3D,
  precision?: Precision,
  cache?: ImageAttnCache,
  probsOut?: tf.Tensor[],
): tf.Tensor4D {
  const [B, T, d] = hn.shape;
  const C = c.channels, dk = c.keyDim, S = c.imageSize, P = S * S;
  const order = attnOrderOf(c);
  const q2 = linear(hn, req(p, "map.q.weight") as tf.Tensor2D, undefined, precision); // [B, T, C·dk]
  const k2 = linear(hn, req(p, "map.k.weight") as tf.Tensor2D, undefined, precision);
  const scale = 1 / Math.sqrt(dk);
  // matMul operands: 16-bit under mixed / bf16 (autocast), gradients too
  const W = boundary(req(p, "map.value.weight") as tf.Tensor3D, precision);
  const bias = valueBiasOf(c) ? boundary(req(p, "map.value.bias") as tf.Tensor2D, precision) : undefined;
  // What the attention weights are applied to: value images [B, C, T, P], or the token vectors [B, T, d].
  let src: tf.Tensor;
  if (order === "values-first") {
    const vals = tf.reshape(valueImages(tf.reshape(hn, [B * T, d]) as tf.Tensor2D, W as tf.Tensor3D, bias), [
      B,
      T,
      C,
      P,
    ]);
    src = boundary(tf.transpose(vals, [0, 2, 1, 3]), precision); // [B, C, T, P]
    if (!cache && !probsOut && flashAttentionLaidOutApplies(dk, precision)) {
      // the flash kernels read q and k as the linears wrote them and write the images channels last
      const imgs = causalAttentionChannelsLast(q2, k2, src, C, scale, { precision }); // [B, T, P, C]
      return boundary(tf.reshape(imgs, [B * T, S, S, C]), precision) as tf.Tensor4D;
    }
  } else {
    src = hn;
  }
  const q = heads(q2, C);
  let k = heads(k2, C);
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
    const Tk = past + T;
    // A_c @ hn for all heads at once: [B, C·T, Tk] @ [B, Tk, d] -> [B, C·T, d]
    const mixed = boundary(tf.matMul(tf.reshape(probs, [B, C * T, Tk]), src as tf.Tensor3D), precision);
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

// ---------------------------------------------------------------------------------------------
// How tokens become images: the one thing the image models do differently (pixel-attn-wide is
// pixel-attn with a wider CNN). Each mapping lists its parameters, makes a window's images, makes one
// decoding step's images from what it keeps between steps, and counts its FLOPs.

/** What a mapping keeps between decoding steps (kept tensors, disposed with the decode state). */
export type MappingCache = Record<string, tf.Tensor | null>;

export interface ImageMapping {
  /** How positions share images (for viz). */
  sharing(c: MappingConfig): string;
  /** Whether it has an attention of its own (viz draws its probabilities). */
  attends: boolean;
  /** Its parameters (after map.ln). */
  specs(c: MappingConfig): ParamSpec[];
  /** Images [B·T, H, W, C] of a window, from hn [B, T, d]; attention probabilities are pushed to `probs`. */
  images(
    c: MappingConfig,
    p: Params,
    hn: tf.Tensor3D,
    precision?: Precision,
    probs?: tf.Tensor[],
  ): tf.Tensor4D;
  /** Each token's own image before sharing, [B, T, C, H, W] (for viz). */
  ownImages(c: MappingConfig, p: Params, hn: tf.Tensor3D): tf.Tensor;
  /** The images [B, H, W, C] of decoding position t from hn [B, 1, d], updating `cache`. */
  step(c: MappingConfig, p: Params, hn: tf.Tensor3D, t: number, cache: MappingCache): tf.Tensor4D;
  /** Its training FLOPs per token (3 x forward, multiply-add = 2), at full context. */
  flops(c: MappingConfig): number;
}

/** [B·T, H, W, C] -> [B, T, C, H, W] */
export function toCHW(c: MappingConfig, imgs: tf.Tensor, B: number, T: number): tf.Tensor {
  const S = c.imageSize;
  return tf.transpose(tf.reshape(imgs, [B, T, S, S, c.channels]), [0, 1, 4, 2, 3]);
}

/** pixel-cumsum: per-channel keys times per-pixel queries, shared by a running sum over positions. */
export const CUMSUM_MAPPING: ImageMapping = {
  sharing: (c) =>
    (c.mapping === "softmax" ? "softmax images, " : "") +
    (c.mix === "window" ? "window of two positions" : `running ${c.runningSum} over positions`),
  attends: false,
  specs: (c) => [
    weightSpec("map.key.weight", [c.nEmbd, c.channels * c.keyDim]),
    ...(keyBiasOf(c) ? [biasSpec("map.key.bias", [c.channels * c.keyDim])] : []),
    weightSpec("map.query", [c.channels, c.keyDim, c.imageSize * c.imageSize]),
  ],
  images: (c, p, hn, precision) => cumsumImages(c, p, hn, precision),
  ownImages: (c, p, hn) => toCHW(c, cumsumImages(c, p, hn, undefined, false), hn.shape[0], hn.shape[1]),
  step(c, p, hn, t, cache) {
    const B = hn.shape[0], S = c.imageSize, C = c.channels;
    const bias = keyBiasOf(c) ? req(p, "map.key.bias") as tf.Tensor1D : undefined;
    const k = linear(
      tf.reshape(hn, [B, c.nEmbd]),
      req(p, "map.key.weight") as tf.Tensor2D,
      bias,
    ) as tf.Tensor2D; // [B, C·dk]
    const query = req(p, "map.query") as tf.Tensor3D;
    const perChannel = (x: tf.Tensor) =>
      tf.transpose(tf.reshape(x, [B, C, c.keyDim]), [1, 0, 2]) as tf.Tensor3D;
    // What is shared: keys (dot, linear) or each token's images (softmax), as a [B, X] row per step.
    const own = c.mapping === "softmax"
      ? tf.reshape(softmaxImages(perChannel(k), query, S), [B, S * S * C])
      : k;
    let shared: tf.Tensor;
    if (c.mix === "window") {
      shared = cache.previous ? tf.add(own, cache.previous) : own;
      cache.previous = tf.keep(own);
    } else {
      const sum = cache.keySum ? tf.add(cache.keySum, own) : own;
      cache.keySum = tf.keep(sum);
      shared = c.runningSum === "mean" ? tf.div(sum, t + 1) : sum;
    }
    const imgs = c.mapping === "softmax" ? shared : perChannelImages(perChannel(shared), query);
    return tf.reshape(imgs, [B, S, S, C]) as tf.Tensor4D;
  },
  flops(c) {
    const C = c.channels, dk = c.keyDim, P = c.imageSize * c.imageSize;
    return 6 * c.nEmbd * C * dk + 6 * C * dk * P; // keys, then S_t · pixel queries
  },
};

/** pixel-attn(-wide): causal attention, one head per image channel, whose values are images. */
export const ATTENTION_MAPPING: ImageMapping = {
  sharing: () => "image attention (one head per channel)",
  attends: true,
  specs(c) {
    const d = c.nEmbd, C = c.channels, P = c.imageSize * c.imageSize;
    const specs = [
      weightSpec("map.q.weight", [d, C * c.keyDim]),
      weightSpec("map.k.weight", [d, C * c.keyDim]),
      weightSpec("map.value.weight", [C, d, P]),
    ];
    return valueBiasOf(c) ? [...specs, biasSpec("map.value.bias", [C, P])] : specs;
  },
  images: (c, p, hn, precision, probs) => attnImages(c, p, hn, precision, undefined, probs),
  ownImages(c, p, hn) {
    const [B, T] = hn.shape;
    const S = c.imageSize;
    const hn2 = tf.reshape(hn, [B * T, c.nEmbd]) as tf.Tensor2D;
    const bias = valueBiasOf(c) ? req(p, "map.value.bias") : undefined;
    const vals = valueImages(hn2, req(p, "map.value.weight") as tf.Tensor3D, bias); // [B·T, C·P]
    return tf.reshape(vals, [B, T, c.channels, S, S]);
  },
  step(c, p, hn, _t, cache) {
    const kept: ImageAttnCache = { k: (cache.k ?? null) as tf.Tensor4D | null, src: cache.src ?? null };
    const imgs = attnImages(c, p, hn, undefined, kept);
    cache.k = kept.k, cache.src = kept.src;
    return imgs;
  },
  flops(c) {
    const d = c.nEmbd, C = c.channels, dk = c.keyDim, P = c.imageSize * c.imageSize, T = c.contextLength;
    return 6 * 2 * d * C * dk + // q and k
      6 * C * T * dk + // scores q·k over the context (counted in full, as nanoGPT)
      (attnOrderOf(c) === "values-first"
        ? 6 * d * C * P + 6 * C * T * P // value images, then A @ V
        : 6 * C * T * d + 6 * d * C * P); // A @ hn, then the image maps
  },
};

/** The mapping of a config's model. */
export function mappingOf(c: MappingConfig): ImageMapping {
  return c.model === "pixel-cumsum" ? CUMSUM_MAPPING : ATTENTION_MAPPING;
}
