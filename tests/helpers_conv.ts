// The float64 reference convolution of the oneDNN conv tests (tests/dnnl_conv_test.ts, float32 operands;
// tests/dnnl_bf16_conv_test.ts, bf16 ones): NHWC input, HWIO filter, TF.js's 'same' / 'valid' padding or
// explicit rows on every side (the resnet's), forward and both gradients by direct loops. Also what both
// share besides: the rule for a missing libdnnl (skip with the reason, or fail under LMPIPE_REQUIRE_NATIVE,
// CI's native run), a child Deno for the switches, and a small pixel model's loss and gradients.
import { tf } from "../lib/tensor/backend.ts";
import { currentDnnl } from "../lib/native/dnnl.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import type { Precision } from "../lib/models/types.ts";

/** One conv call: NHWC input [N, H, W, Ci], HWIO filter [K, K, Ci, Co], stride, padding. */
export interface ConvCase {
  N: number;
  H: number;
  W: number;
  Ci: number;
  Co: number;
  K: number;
  s: number;
  /** TF.js's 'same' / 'valid', or this many zero rows and columns on every side. */
  pad: "same" | "valid" | number;
}

/** A case as a test label. */
export const convName = (c: ConvCase) =>
  `N${c.N} ${c.H}x${c.W}x${c.Ci} -> ${c.Co}, ${c.K}x${c.K}/${c.s} ${
    typeof c.pad === "number" ? `pad ${c.pad}` : c.pad
  }`;

/** Output size and the top/left padding of one axis (TF's 'same' puts the odd pixel at the bottom/right). */
export function convGeometry(inSize: number, c: ConvCase): { out: number; before: number } {
  const p = c.pad === "valid" ? 0 : c.pad;
  if (p !== "same") return { out: Math.floor((inSize + 2 * p - c.K) / c.s) + 1, before: p };
  const out = Math.ceil(inSize / c.s);
  return { out, before: Math.floor(Math.max((out - 1) * c.s + c.K - inSize, 0) / 2) };
}

/** Float64 forward conv, input gradient and filter gradient of sum(y * dy), by direct loops. */
export function convReference(c: ConvCase, x: Float32Array, w: Float32Array, dy: Float32Array) {
  const gh = convGeometry(c.H, c), gw = convGeometry(c.W, c);
  const OH = gh.out, OW = gw.out;
  const y = new Float64Array(c.N * OH * OW * c.Co);
  const dx = new Float64Array(x.length), dw = new Float64Array(w.length);
  for (let n = 0; n < c.N; n++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const yo = ((n * OH + oh) * OW + ow) * c.Co;
        for (let kh = 0; kh < c.K; kh++) {
          const h = oh * c.s + kh - gh.before;
          if (h < 0 || h >= c.H) continue;
          for (let kw = 0; kw < c.K; kw++) {
            const ww = ow * c.s + kw - gw.before;
            if (ww < 0 || ww >= c.W) continue;
            const xo = ((n * c.H + h) * c.W + ww) * c.Ci;
            for (let ci = 0; ci < c.Ci; ci++) {
              const wo = ((kh * c.K + kw) * c.Ci + ci) * c.Co;
              const xv = x[xo + ci];
              let g = 0;
              for (let co = 0; co < c.Co; co++) {
                y[yo + co] += xv * w[wo + co];
                g += dy[yo + co] * w[wo + co];
                dw[wo + co] += xv * dy[yo + co];
              }
              dx[xo + ci] += g;
            }
          }
        }
      }
    }
  }
  return { y, dx, dw, outShape: [c.N, OH, OW, c.Co] as [number, number, number, number] };
}

/**
 * For a test file that needs oneDNN: returns `reason` (the tests are then ignored, and the reason printed),
 * or throws when LMPIPE_REQUIRE_NATIVE is set, where a missing library must fail the run.
 */
export function dnnlSkipReason(reason: string, what: string): string {
  if (!reason) return "";
  if (Deno.env.get("LMPIPE_REQUIRE_NATIVE")) {
    throw new Error(
      `oneDNN tests must run here (LMPIPE_REQUIRE_NATIVE is set; .ci/run installs libdnnl2): ${reason}`,
    );
  }
  console.error(`${what} skipped: ${reason}`);
  return reason;
}

/** Runs `script` in a child `deno eval` in the repository root with `env` added; returns its stdout, trimmed. */
export async function evalInChild(script: string, env: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code !== 0) {
    throw new Error(`child deno exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/**
 * A pixel-attn model at `tiny` with a vgg9 of 3 convs or a resnet of one block per stage, a batch of 2
 * sequences of `context` tokens, and its loss and gradients (with the oneDNN calls they made) at a precision.
 */
export function smallPixelModel(kind: "vgg9" | "resnet", context: number, vocabSize: number) {
  const m = createModel(
    resolveConfig("pixel-attn", "tiny", {
      contextLength: context,
      vocabSize,
      cnn: kind,
      cnnDepth: kind === "resnet" ? 1 : 3,
    }),
    5,
  );
  const ids = Int32Array.from({ length: 2 * context }, (_, i) => (i * 7919) % vocabSize);
  const x = tf.tensor2d(ids, [2, context], "int32"),
    y = tf.tensor2d(ids.map((v) => (v + 1) % vocabSize), [2, context], "int32");
  const vars = [...m.params.values()];
  return {
    vars,
    lossAndGrads(precision?: Precision) {
      const dnnl = currentDnnl();
      const [calls, bf16Calls] = [dnnl?.calls ?? 0, dnnl?.bf16Calls ?? 0];
      const { value, grads } = tf.variableGrads(
        () => m.loss(x, y, precision ? { precision, training: true } : undefined),
        vars,
      );
      const out = {
        loss: value.dataSync()[0],
        grads: vars.map((v) => grads[v.name].dataSync().slice()),
        calls: (dnnl?.calls ?? 0) - calls,
        bf16Calls: (dnnl?.bf16Calls ?? 0) - bf16Calls,
      };
      tf.dispose([value, ...Object.values(grads)]);
      return out;
    },
    dispose() {
      tf.dispose([x, y]);
      m.dispose();
    },
  };
}
