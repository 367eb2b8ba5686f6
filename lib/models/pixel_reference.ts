// The two token-to-image mappings of the study written LITERALLY, as the write-up describes them, for
// tests only: every token's own activation/value image is built first, then images are shared over time
// position by position (a running sum act[t] += act[t-1]; a per-position softmax over the earlier
// positions' value images). No masks, no matMuls, no reordering: an independent check of the efficient
// forms in pixel.ts, which must give the same images and gradients.
import { tf } from "../tensor/backend.ts";

/** pixel-cumsum literally. hn [B, T, d]; keyW [d, C*dk]; query [C, dk, H*W]. Returns [B, T, C, H*W]. */
export function literalCumsumImages(
  hn: tf.Tensor3D,
  keyW: tf.Tensor2D,
  query: tf.Tensor3D,
  mode: "sum" | "mean",
): tf.Tensor4D {
  const [B, T, d] = hn.shape;
  const [C, dk, P] = query.shape;
  // keys[b, t, c, :] = hn[b, t, :] @ keyW[:, c*dk:(c+1)*dk]
  const keys = tf.reshape(
    tf.sum(tf.mul(tf.reshape(hn, [B, T, d, 1]), tf.reshape(keyW, [1, 1, d, C * dk])), 2),
    [B, T, C, dk, 1],
  );
  // act[b, t, c, p] = keys[b, t, c, :] . query[c, :, p]   (each token's own activation image)
  const act = tf.sum(tf.mul(keys, tf.reshape(query, [1, 1, C, dk, P])), 3) as tf.Tensor4D;
  const out: tf.Tensor[] = [];
  let running: tf.Tensor | null = null;
  for (let t = 0; t < T; t++) {
    const a = tf.squeeze(tf.slice(act, [0, t, 0, 0], [B, 1, C, P]), [1]);
    running = running ? tf.add(running, a) : a; // act[t] += act[t-1]
    out.push(mode === "mean" ? tf.div(running, t + 1) : running);
  }
  return tf.stack(out, 1) as tf.Tensor4D;
}

/**
 * pixel-attn literally: value images V[b, s, c] = hn[b, s] @ valueW[c] (+ valueB[c]) for every token,
 * then for each position t and head c, softmax over s <= t of q[t, c] . k[s, c] / sqrt(dk) weights the
 * value images. hn [B, T, d]; qW, kW [d, C*dk]; valueW [C, d, H*W]; valueB [C, H*W]. Returns [B, T, C, H*W].
 */
export function literalAttnImages(
  hn: tf.Tensor3D,
  qW: tf.Tensor2D,
  kW: tf.Tensor2D,
  valueW: tf.Tensor3D,
  valueB: tf.Tensor2D | undefined,
  keyDim: number,
): tf.Tensor4D {
  const [B, T, d] = hn.shape;
  const [C, , P] = valueW.shape;
  const proj = (w: tf.Tensor2D) =>
    tf.reshape(tf.sum(tf.mul(tf.reshape(hn, [B, T, d, 1]), tf.reshape(w, [1, 1, d, C * keyDim])), 2), [
      B,
      T,
      C,
      keyDim,
    ]);
  const q = proj(qW), k = proj(kW);
  // every token's value image for every head: [B, T, C, P]
  let values = tf.sum(tf.mul(tf.reshape(hn, [B, T, 1, d, 1]), tf.reshape(valueW, [1, 1, C, d, P])), 3);
  if (valueB) values = tf.add(values, valueB);
  const out: tf.Tensor[] = [];
  for (let t = 0; t < T; t++) {
    const qt = tf.slice(q, [0, t, 0, 0], [B, 1, C, keyDim]); // [B, 1, C, dk]
    const ks = tf.slice(k, [0, 0, 0, 0], [B, t + 1, C, keyDim]); // positions 0..t only
    const scores = tf.div(tf.sum(tf.mul(qt, ks), 3), Math.sqrt(keyDim)); // [B, t+1, C]
    const w = tf.softmax(tf.transpose(scores, [0, 2, 1])); // [B, C, t+1], over s
    const vs = tf.slice(values, [0, 0, 0, 0], [B, t + 1, C, P]); // [B, t+1, C, P]
    const img = tf.sum(tf.mul(tf.reshape(tf.transpose(w, [0, 2, 1]), [B, t + 1, C, 1]), vs), 1); // [B, C, P]
    out.push(img);
  }
  return tf.stack(out, 1) as tf.Tensor4D;
}

/**
 * pixel-cumsum as the study's code (ShotNet) writes it, literally, with the choices the config offers:
 * every token's key vector per channel, keys[b, t, c] = hn[b, t] @ keyW[:, c] (+ keyB[c]); its image per
 * pixel p, a[b, t, c, p] = k · query[c, :, p] ("dot"), or imageSize · exp(z_p) / Σ_p' exp(z_p') with
 * z = k · query[c] / sqrt(dk) ("softmax"); then images shared position by position: the window of two,
 * out[t] = a[t] + a[t-1] (position 0: a[0], the causal reading of the code's unwritten position 0), or
 * the running sum (÷ (t+1) for "mean"). hn [B, T, d]; keyW [d, C*dk]; keyB [C*dk]; query [C, dk, H*W].
 * Returns [B, T, C, H*W].
 */
export function literalShotImages(
  hn: tf.Tensor3D,
  keyW: tf.Tensor2D,
  keyB: tf.Tensor1D | undefined,
  query: tf.Tensor3D,
  o: { mapping: "dot" | "softmax"; mix: "window" | "cumsum"; runningSum: "sum" | "mean"; imageSize: number },
): tf.Tensor4D {
  const [B, T, d] = hn.shape;
  const [C, dk, P] = query.shape;
  let flat = tf.sum(tf.mul(tf.reshape(hn, [B, T, d, 1]), tf.reshape(keyW, [1, 1, d, C * dk])), 2);
  if (keyB) flat = tf.add(flat, keyB);
  const keys = tf.reshape(flat, [B, T, C, dk, 1]);
  let act = tf.sum(tf.mul(keys, tf.reshape(query, [1, 1, C, dk, P])), 3) as tf.Tensor4D; // [B, T, C, P]
  if (o.mapping === "softmax") {
    const z = tf.div(act, Math.sqrt(dk));
    const e = tf.exp(tf.sub(z, tf.max(z, 3, true)));
    act = tf.mul(tf.div(e, tf.sum(e, 3, true)), o.imageSize) as tf.Tensor4D;
  }
  const own = (t: number) => tf.squeeze(tf.slice(act, [0, t, 0, 0], [B, 1, C, P]), [1]);
  const out: tf.Tensor[] = [];
  let running: tf.Tensor | null = null;
  for (let t = 0; t < T; t++) {
    if (o.mix === "window") {
      out.push(t === 0 ? own(0) : tf.add(own(t), own(t - 1))); // img[t] + img[t-1]
      continue;
    }
    running = running ? tf.add(running, own(t)) : own(t);
    out.push(o.runningSum === "mean" ? tf.div(running, t + 1) : running);
  }
  return tf.stack(out, 1) as tf.Tensor4D;
}
