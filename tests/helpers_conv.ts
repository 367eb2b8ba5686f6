// The float64 reference convolution of the conv tests (tests/dnnl_conv_test.ts, float32 operands;
// tests/dnnl_bf16_conv_test.ts, bf16 ones; tests/webgpu_conv_test.ts; the resnet of tests/cnn_test.ts): NHWC input, HWIO filter, TF.js's 'same' / 'valid' padding or
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

/**
 * Where a conv reads and writes: NHWC input [n, h, w, ci], HWIO filter [kh, kw, ci, co], strides, the zero
 * rows above (pt) and columns left (pl) of the input, and the output's size [n, oh, ow, co].
 */
export interface ConvLayout {
  n: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  pt: number;
  pl: number;
  oh: number;
  ow: number;
}

/** A ConvCase's layout. */
export function caseLayout(c: ConvCase): ConvLayout {
  const gh = convGeometry(c.H, c), gw = convGeometry(c.W, c);
  return {
    n: c.N,
    h: c.H,
    w: c.W,
    ci: c.Ci,
    co: c.Co,
    kh: c.K,
    kw: c.K,
    sh: c.s,
    sw: c.s,
    pt: gh.before,
    pl: gw.before,
    oh: gh.out,
    ow: gw.out,
  };
}

/**
 * The float64 reference of every conv test (oneDNN, webgpu, the resnet): y = conv(x, w) and, with `dy`,
 * the input gradient and the filter gradient of sum(y * dy), by direct loops over the output pixels.
 */
export function conv64(g: ConvLayout, x: ArrayLike<number>, w: ArrayLike<number>, dy?: ArrayLike<number>) {
  const y = new Float64Array(g.n * g.oh * g.ow * g.co);
  const dx = new Float64Array(dy ? x.length : 0), dw = new Float64Array(dy ? w.length : 0);
  for (let b = 0; b < g.n; b++) {
    for (let oy = 0; oy < g.oh; oy++) {
      for (let ox = 0; ox < g.ow; ox++) {
        const o = ((b * g.oh + oy) * g.ow + ox) * g.co;
        for (let ky = 0; ky < g.kh; ky++) {
          const iy = oy * g.sh - g.pt + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (let kx = 0; kx < g.kw; kx++) {
            const ix = ox * g.sw - g.pl + kx;
            if (ix < 0 || ix >= g.w) continue;
            const xi = ((b * g.h + iy) * g.w + ix) * g.ci, wi = (ky * g.kw + kx) * g.ci * g.co;
            for (let i = 0; i < g.ci; i++) {
              const xv = x[xi + i], wr = wi + i * g.co;
              if (!dy) {
                for (let j = 0; j < g.co; j++) y[o + j] += xv * w[wr + j];
                continue;
              }
              let d = 0;
              for (let j = 0; j < g.co; j++) {
                y[o + j] += xv * w[wr + j];
                d += dy[o + j] * w[wr + j];
                dw[wr + j] += xv * dy[o + j];
              }
              dx[xi + i] += d;
            }
          }
        }
      }
    }
  }
  return { y, dx, dw, outShape: [g.n, g.oh, g.ow, g.co] as [number, number, number, number] };
}

/** Float64 forward conv, input gradient and filter gradient of sum(y * dy) of one ConvCase. */
export function convReference(c: ConvCase, x: Float32Array, w: Float32Array, dy: Float32Array) {
  return conv64(caseLayout(c), x, w, dy);
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
