// Gradients TF.js 4.22 gets wrong on every backend, registered over its own:
//   - Cumsum along an inner axis: a wrongly transposed result -> the reverse cumsum of dy;
//   - BatchMatMul against a broadcast weight: not summed over the broadcast batch -> summed, and a 2-D
//     weight against a batched input as one 2-D matMul over all rows (also wasm's fast path);
//   - Tile: one slice and one add per repeat (64 of each to spread a channel vector over an 8x8 image),
//     ranks up to 4 only -> one sum per repeated axis, any rank;
//   - GatherV2 along axis 0 (the token embedding, the loss's W[target] rows): wraps its segment sum in two
//     transposes whose permutation is the identity, each a full copy (the embedding's gradient: 77 MB at
//     gpt small) -> the segment sum alone, the same numbers;
//   - Mean: multiplies dy by a tensor of ones the size of x, filled in JavaScript and uploaded each call
//     (an image model's global average pool: 1024 images x 12 x 12 x 32 per step, ~19 MB, and most of a
//     webgpu step's host time) -> dy / n broadcast to x's shape on the device, the same numbers (on wasm
//     by a broadcasting Multiply with ones over the averaged axes: its Tile is ~80x slower).
import * as tf from "@tensorflow/tfjs-core";
import type { Attrs } from "../host_kernel.ts";

const { util, backend_util } = tf;

/** Sums `g` over the batch dimensions that were broadcast in an input of shape `shape`. */
function reduceToShape(g: tf.Tensor, shape: number[]): tf.Tensor {
  if (util.arraysEqual(g.shape, shape)) return g;
  const axes = backend_util.getReductionAxes(shape, g.shape);
  const summed = axes.length > 0 ? tf.sum(g, axes) : g;
  return tf.reshape(summed, shape);
}

/** Registers the gradients above over TF.js's; call once. */
export function registerGradientPatches(): void {
  // Cumsum: d(cumsum x)/dx is the cumsum of dy in the opposite direction along the same axis. TF.js
  // 4.22 also transposes the result, giving a wrong shape whenever the axis is not the last one.
  tf.registerGradient({
    kernelName: tf.Cumsum,
    inputsToSave: ["x"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], _saved: tf.Tensor[], attrs: Attrs) => {
      const { axis, exclusive, reverse } = attrs;
      return { x: () => tf.cumsum(dy as tf.Tensor, axis, exclusive, !reverse) };
    },
  });

  // BatchMatMul: TF.js 4.22 forgets to sum the gradient over broadcast batch dimensions (e.g.
  // [B,T,K] @ [K,N] gives a [B,K,N] gradient for the [K,N] weight). A 2-D weight against a batched
  // input is computed as one 2-D matMul over all rows, which is also the fast path on wasm.
  tf.registerGradient({
    kernelName: tf.BatchMatMul,
    inputsToSave: ["a", "b"],
    gradFunc: (dyIn: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: Attrs) => {
      const dy = dyIn as tf.Tensor;
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      const gradA = () => {
        let g: tf.Tensor;
        if (!transposeA && !transposeB) g = tf.matMul(dy, b, false, true);
        else if (!transposeA && transposeB) g = tf.matMul(dy, b, false, false);
        else if (transposeA && !transposeB) g = tf.matMul(b, dy, false, true);
        else g = tf.matMul(b, dy, true, true);
        return reduceToShape(g, a.shape);
      };
      const gradB = () => {
        if (b.rank === 2 && a.rank > 2 && !transposeA) {
          const K = a.shape[a.rank - 1], N = dy.shape[dy.rank - 1];
          const a2 = tf.reshape(a, [-1, K]), dy2 = tf.reshape(dy, [-1, N]);
          return transposeB ? tf.matMul(dy2, a2, true, false) : tf.matMul(a2, dy2, true, false);
        }
        let g: tf.Tensor;
        if (!transposeA && !transposeB) g = tf.matMul(a, dy, true, false);
        else if (!transposeA && transposeB) g = tf.matMul(dy, a, true, false);
        else if (transposeA && !transposeB) g = tf.matMul(a, dy, false, false);
        else g = tf.matMul(dy, a, true, true);
        return reduceToShape(g, b.shape);
      };
      return { a: gradA, b: gradB };
    },
  });

  // GatherV2 along axis 0 without batch dimensions: row indices[i] of x gets dy's i-th slice, summed over
  // repeated indices; any other axis or batchDims keeps TF.js's gradient.
  const gather = tf.getGradient(tf.GatherV2)!;
  tf.registerGradient({
    kernelName: tf.GatherV2,
    inputsToSave: ["x", "indices"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: Attrs) => {
      const [x, indices] = saved;
      const axis = util.parseAxisParam(attrs.axis as number, x.shape)[0];
      if (axis !== 0 || (attrs.batchDims as number ?? 0) !== 0) return gather.gradFunc(dy, saved, attrs);
      return {
        x: () => {
          const rows = tf.reshape(dy as tf.Tensor, [indices.size, ...x.shape.slice(1)]);
          return tf.unsortedSegmentSum(rows, tf.reshape(indices, [indices.size]), x.shape[0]);
        },
        indices: () => indices, // int32: never used, as in TF.js
      };
    },
  });

  // Mean: every element of x gets dy / n (n the number of values averaged), broadcast on the device.
  // dy / n is exactly what TF.js's (dy * 1) / n gives.
  tf.registerGradient({
    kernelName: tf.Mean,
    inputsToSave: ["x"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: Attrs) => {
      const [x] = saved;
      const axes = util.parseAxisParam(attrs.axis as number | number[], x.shape);
      const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const n = axes.reduce((p, a) => p * x.shape[a], 1);
      return {
        x: () => {
          const share = tf.div(tf.reshape(dy as tf.Tensor, kept), n);
          if (tf.getBackend() !== "wasm") return tf.broadcastTo(share, x.shape);
          // wasm's Tile (broadcastTo) takes ~100 ns a value: 25 ms for a pixel-attn tiny step's pool
          // gradient, where a broadcasting Multiply by ones over the averaged axes took 0.3
          return tf.mul(share, tf.fill(x.shape.map((d, i) => (axes.includes(i) ? d : 1)), 1));
        },
      };
    },
  });

  // Tile: along each repeated axis i, dy's r_i·s_i positions are r_i copies of x's s_i: seen as
  // [before, r_i, s_i·after] (rank 3 on every backend, whatever x's rank), summed over the middle axis.
  tf.registerGradient({
    kernelName: tf.Tile,
    inputsToSave: ["x"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: Attrs) => {
      const [x] = saved, reps = attrs.reps as number[];
      return {
        x: () => {
          let g = dy as tf.Tensor;
          const shape = g.shape.slice();
          for (let i = 0; i < shape.length; i++) {
            if (reps[i] <= 1) continue;
            const before = util.sizeFromShape(shape.slice(0, i)),
              after = util.sizeFromShape(shape.slice(i + 1));
            shape[i] = x.shape[i];
            g = tf.sum(tf.reshape(g, [before, reps[i], shape[i] * after]), 1);
          }
          return tf.reshape(g, x.shape);
        },
      };
    },
  });
}
