// Causal self-attention on wasm straight from gpt's fused projection, registered as LmpipeAttentionQkv:
// one job (kernels.wat attn_fwd) over the B H heads on all of lmpipe's wasm threads reads q, k and v out of
// qkv [B, T, 3C] where they lie and writes y [B, T, C], where the op chain runs a split, 4 transposes, a
// scale, 2 batched matMuls and a causal softmax per layer, most of them on one thread. Forward only: it
// has no gradient, so mod.ts takes it only while no gradient is recorded (evaluation, sampling without
// a cache); training keeps the op chain, whose saved probabilities make its backward pass cheap.
import * as tf from "@tensorflow/tfjs-core";
import { registerKernels } from "../../host_kernel.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { floatBits, KIND } from "../../wasm/kernel_calls.ts";

export const ATTENTION_QKV_KERNEL = "LmpipeAttentionQkv";

/** Floats of attn_fwd's scratch per head: k^T [D, T8], four rows of scores [4, T8], four rows of q [D, 4]. */
function scratchPerHead(T: number, D: number): number {
  const T8 = Math.ceil(T / 8) * 8;
  return (D + 4) * T8 + 4 * D;
}

function attentionQkvKernel(
  { inputs, backend, attrs }: { inputs: { qkv: TensorInfo }; backend: AnyBackend; attrs: unknown },
): TensorInfo {
  const { qkv } = inputs;
  const { nHead, scale } = attrs as { nHead: number; scale: number };
  requireFloat32(ATTENTION_QKV_KERNEL, "qkv", qkv);
  const [B, T, C3] = qkv.shape, C = C3 / 3, D = C / nHead;
  if (qkv.shape.length !== 3 || !Number.isInteger(D) || D < 1) {
    throw new Error(
      `${ATTENTION_QKV_KERNEL} (lib/tensor/ops/attention/wasm.ts): expected qkv [B, T, 3 C] with C a multiple ` +
        `of the ${nHead} heads; got [${qkv.shape}]`,
    );
  }
  const y = backend.makeOutput([B, T, C], "float32") as TensorInfo;
  if (B * T * C === 0) return y;
  const heads = B * nHead;
  const scratch = backend.makeOutput([heads * scratchPerHead(T, D)], "float32") as TensorInfo;
  const base = offsetOf(backend, qkv);
  const args = [
    KIND.attnFwd,
    base,
    base + 4 * C,
    base + 8 * C,
    offsetOf(backend, y),
    offsetOf(backend, scratch),
    T,
    nHead,
    D,
    T * C3, // q, k, v: batch, head, row strides in floats
    D,
    C3,
    T * C, // y
    D,
    C,
    floatBits(scale),
  ];
  // one head per piece where a head is worth sharing out (its multiply-adds: about T^2 D)
  runRows(backend, args, heads, Math.max(1, T * T * D));
  backend.disposeData(scratch.dataId);
  return y;
}

/**
 * softmax(scale q k^T, causal) v of nHead heads read out of qkv [B, T, 3C] (q, k, v column blocks, heads
 * consecutive within each): y [B, T, C], head h in columns h D..(h + 1) D. No gradient (see above).
 */
export function attentionFromQkvWasm(qkv: tf.Tensor, nHead: number, scale: number): tf.Tensor {
  return tf.engine().runKernel(ATTENTION_QKV_KERNEL, { qkv }, { nHead, scale }) as tf.Tensor;
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[ATTENTION_QKV_KERNEL, attentionQkvKernel]]);
