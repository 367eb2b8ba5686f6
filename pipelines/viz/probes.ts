// The optional hooks a model offers for `lmpipe viz`: read-only views of what its forward pass computes.
// They are additive (the training engine never calls them) and structural: a model supports a picture
// by having the method, and viz checks for it before use.
import type { tf } from "../../lib/tensor/backend.ts";
import type { LanguageModel } from "../../lib/models/types.ts";

/** One attention layer's softmax probabilities for a batch of one sequence. */
export interface AttentionMap {
  /** Display name, e.g. "block 0" or "image attn". */
  name: string;
  /** [1, heads, T, T]: query positions in rows, key positions in columns; zero above the diagonal. */
  probs: tf.Tensor;
}

export interface AttentionProbe {
  /** Attention probabilities of every attention layer, in forward order, for idx [1, T] (eval mode). */
  attentionMaps(idx: tf.Tensor2D): AttentionMap[];
}

export interface ImageProbe {
  /**
   * The per-position activation images of an image model for idx [1, T] (eval mode): `before` is each
   * token's own image, `after` the image its CNN reads once the causal sharing (running sum or image
   * attention) has mixed in earlier positions; both [1, T, C, H, W].
   */
  activationImages(idx: tf.Tensor2D): { before: tf.Tensor; after: tf.Tensor; sharing: string };
}

export function hasAttentionProbe(m: LanguageModel): m is LanguageModel & AttentionProbe {
  return typeof (m as Partial<AttentionProbe>).attentionMaps === "function";
}

export function hasImageProbe(m: LanguageModel): m is LanguageModel & ImageProbe {
  return typeof (m as Partial<ImageProbe>).activationImages === "function";
}
