// The per-position CNNs of the image models (vgg9, vgg-wide, resnet): every token position's image is
// read on its own, so nothing here may mix positions. That rules out BatchNorm (the study's code took
// its statistics over all B·T images of a batch, which leaks later positions into earlier ones);
// instead each conv is followed by an "image norm": a LayerNorm over one image's own H, W and C
// (GroupNorm with one group) with a learned per-channel scale and shift. The CNN can run in chunks of
// images with gradient checkpointing (cnnCheckpointed): the backward pass recomputes one chunk at a
// time, so peak memory grows with the chunk, not with B·T. Where the caller can afford to keep every
// conv's output (one tensor per conv, the largest share of the work), the backward pass replays those
// instead of running the convs forward again, and recomputes only the norms, ReLUs and pooling; where it
// can afford the norms' outputs too, it replays those as well.
import { tf } from "../tensor/backend.ts";
import { type ParamSpec, specsSize } from "./params.ts";
import {
  imageNormRelu,
  imageNormReluKeeping,
  imageNormReluReplayed,
  type KeptImageNorm,
} from "../tensor/ops/image_norm/mod.ts";
import { globalAvgPool } from "../tensor/ops/global_pool/mod.ts";
import { gradientsRecorded } from "../tensor/tape_state.ts";

export type CnnKind = "vgg9" | "vgg-wide" | "resnet";
export const CNN_KINDS: readonly CnnKind[] = ["vgg9", "vgg-wide", "resnet"];
export type CnnNorm = "image" | "none";

export interface CnnConfig {
  kind: CnnKind;
  /** Input channels (the image channels C of the mapping). */
  inChannels: number;
  /** Image height and width. */
  height: number;
  width: number;
  /** Base width (64 in the study); the other widths scale with it. */
  baseWidth: number;
  /**
   * vgg9: number of convs; resnet: residual blocks per stage; vgg-wide: unused. 0 = the study's
   * (defaultCnnDepth: 9 convs, 4 blocks per stage).
   */
  depth: number;
  /** Explicit output widths of every conv (vgg9 / vgg-wide only); overrides baseWidth and depth. */
  widths?: number[];
  norm: CnnNorm;
}

/** One conv of a plain VGG stack: its output width (input = previous width). */
interface ConvLayer {
  prefix: string;
  inC: number;
  outC: number;
  stride: number;
  kernel: number;
}

/**
 * A residual block: conv3x3(stride) -> norm -> relu -> conv3x3 -> norm, plus the skip (a 1x1 conv of the
 * same stride -> norm where the width changes), then relu.
 */
interface ResBlock {
  prefix: string;
  inC: number;
  outC: number;
  stride: number;
}

/** The study's depth of a CNN kind: vgg9 9 convs, resnet 4 blocks per stage (Resnet3); vgg-wide fixed. */
export function defaultCnnDepth(kind: CnnKind): number {
  return kind === "resnet" ? 4 : 9;
}

/** cfg.depth, or the kind's default when it is 0. */
function depthOf(cfg: CnnConfig): number {
  return cfg.depth === 0 ? defaultCnnDepth(cfg.kind) : cfg.depth;
}

/** Output widths of the convs of a VGG-style CNN. */
export function vggWidths(cfg: CnnConfig): number[] {
  if (cfg.widths && cfg.widths.length > 0) return cfg.widths.slice();
  const w = cfg.baseWidth;
  if (cfg.kind === "vgg9") return Array(depthOf(cfg)).fill(w);
  if (cfg.kind === "vgg-wide") {
    // conv C->64; 3 convs 64->64 and one 64->128; 3 convs 128->128; 3 convs 128->128, the last to 256
    return [w, w, w, w, 2 * w, 2 * w, 2 * w, 2 * w, 2 * w, 2 * w, 4 * w];
  }
  throw new Error(`vggWidths: '${cfg.kind}' is not a VGG-style CNN`);
}

/**
 * Residual stages of the resnet: widths 64, 128, 512, 1024 (times baseWidth/64). As the study's Resnet3
 * (model_resnet.py): stage s has `depth` (4) blocks; the last block of each stage widens to the next
 * width with stride 2 (64 -> 128 -> 512 -> 1024), so a 20x20 image goes 18 (the unpadded stem) -> 9 -> 5
 * -> 3.
 */
function resnetPlan(cfg: CnnConfig): ResBlock[] {
  const w = cfg.baseWidth;
  const stages = [w, 2 * w, 8 * w, 16 * w];
  const blocks: ResBlock[] = [];
  const depth = depthOf(cfg);
  for (let s = 0; s < 3; s++) {
    for (let b = 0; b < depth; b++) {
      const last = b === depth - 1;
      blocks.push({
        prefix: `cnn.s${s}.b${b}`,
        inC: stages[s],
        outC: last ? stages[s + 1] : stages[s],
        stride: last ? 2 : 1,
      });
    }
  }
  return blocks;
}

/** The number of features the CNN hands to the head (after global average pooling). */
export function cnnOutWidth(cfg: CnnConfig): number {
  if (cfg.kind === "resnet") return 16 * cfg.baseWidth;
  const ws = vggWidths(cfg);
  return ws[ws.length - 1];
}

function vggLayers(cfg: CnnConfig): ConvLayer[] {
  let inC = cfg.inChannels;
  return vggWidths(cfg).map((outC, i) => {
    const l = { prefix: `cnn.${i}`, inC, outC, stride: 1, kernel: 3 };
    inC = outC;
    return l;
  });
}

/**
 * A conv's parameters: its weight, its bias (always without a norm, with one only when `bias`), then its
 * norm's scale and shift.
 */
function convSpecs(
  l: ConvLayer,
  norm: CnnNorm,
  out: ParamSpec[],
  normName = "norm",
  convName = "w",
  bias = false,
): void {
  const fanIn = l.kernel * l.kernel * l.inC;
  out.push({
    name: `${l.prefix}.${convName}`,
    shape: [l.kernel, l.kernel, l.inC, l.outC],
    init: { kind: "normal", std: Math.sqrt(2 / fanIn) }, // He init for ReLU nets
    decay: true,
  });
  if (bias || norm !== "image") {
    // without a norm every conv keeps its bias; the resnet's stem has one in any case (as the study's)
    out.push({
      name: `${l.prefix}.${convName}.bias`,
      shape: [l.outC],
      init: { kind: "zeros" },
      decay: false,
    });
  }
  if (norm === "image") {
    out.push({ name: `${l.prefix}.${normName}.g`, shape: [l.outC], init: { kind: "ones" }, decay: false });
    out.push({ name: `${l.prefix}.${normName}.b`, shape: [l.outC], init: { kind: "zeros" }, decay: false });
  }
}

/** Every parameter of the CNN, by name, in a stable order. */
export function cnnParamSpecs(cfg: CnnConfig): ParamSpec[] {
  const out: ParamSpec[] = [];
  if (cfg.kind !== "resnet") {
    for (const l of vggLayers(cfg)) convSpecs(l, cfg.norm, out);
    return out;
  }
  // the study's stem: Conv2d(C, 64, 3) with its default bias, then the norm
  convSpecs(
    { prefix: "cnn.stem", inC: cfg.inChannels, outC: cfg.baseWidth, stride: 1, kernel: 3 },
    cfg.norm,
    out,
    "norm",
    "w",
    true,
  );
  for (const b of resnetPlan(cfg)) {
    convSpecs(
      { prefix: b.prefix, inC: b.inC, outC: b.outC, stride: b.stride, kernel: 3 },
      cfg.norm,
      out,
      "norm1",
      "conv1",
    );
    convSpecs(
      { prefix: b.prefix, inC: b.outC, outC: b.outC, stride: 1, kernel: 3 },
      cfg.norm,
      out,
      "norm2",
      "conv2",
    );
    if (b.inC !== b.outC || b.stride !== 1) {
      convSpecs(
        { prefix: b.prefix, inC: b.inC, outC: b.outC, stride: b.stride, kernel: 1 },
        cfg.norm,
        out,
        "skipnorm",
        "skip",
      );
    }
  }
  return out;
}

type Params = Map<string, tf.Tensor> | Record<string, tf.Tensor>;

function get(p: Params, name: string): tf.Tensor {
  const t = p instanceof Map ? p.get(name) : p[name];
  if (!t) throw new Error(`cnn: missing parameter '${name}'`);
  return t;
}

/** Padding of a conv: TF.js's 'same' / 'valid', or a number of zero rows and columns on every side. */
type Pad = "same" | "valid" | number;

/** How the CNN computes a conv: tf.conv2d, or cnnCheckpointed's recording and replaying stand-ins. */
type ConvFn = (x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: Pad) => tf.Tensor4D;
const plainConv: ConvFn = (x, w, stride, pad) => tf.conv2d(x, w, stride, pad);

/** How the CNN computes an image norm (+ ReLU): imageNormRelu, or cnnCheckpointed's stand-ins. */
type NormFn = (x: tf.Tensor4D, g: tf.Tensor, b: tf.Tensor, relu: boolean) => tf.Tensor4D;

/** What every conv of one pass shares: the parameters, the norm, the precision boundary, the conv. */
interface Pass {
  p: Params;
  norm: CnnNorm;
  boundary: Boundary;
  conv: ConvFn;
  normFn: NormFn;
}

/**
 * conv (+ bias when there is no norm, or when `bias`), its output through `boundary` (a 16-bit place under
 * mixed precision, as autocast's conv output), (+ norm), then ReLU when `relu` (fused with the norm on
 * webgpu).
 */
function convNorm(
  pass: Pass,
  x: tf.Tensor4D,
  prefix: string,
  stride: number,
  pad: Pad,
  convName = "w",
  normName = "norm",
  relu = false,
  bias = false,
): tf.Tensor4D {
  const { p, norm } = pass;
  let y = pass.conv(x, get(p, `${prefix}.${convName}`) as tf.Tensor4D, stride, pad);
  if (bias || norm !== "image") y = tf.add(y, get(p, `${prefix}.${convName}.bias`));
  y = pass.boundary(y) as tf.Tensor4D;
  if (norm === "image") {
    return pass.normFn(y, get(p, `${prefix}.${normName}.g`), get(p, `${prefix}.${normName}.b`), relu);
  }
  return relu ? tf.relu(y) : y;
}

/** A hook applied at every layer boundary (mixed precision rounds activations to fp16 here). */
export type Boundary = (t: tf.Tensor) => tf.Tensor;
const identity: Boundary = (t) => t;

/**
 * The CNN on images [N, H, W, C] (NHWC): convs, global average pooling, returns features [N, F].
 * Each image is processed independently of every other (per-image norm only).
 */
export function cnnForward(
  cfg: CnnConfig,
  p: Params,
  images: tf.Tensor4D,
  boundary: Boundary = identity,
  conv: ConvFn = plainConv,
  normFn: NormFn = imageNormRelu,
): tf.Tensor2D {
  const pass: Pass = { p, norm: cfg.norm, boundary, conv, normFn };
  let x = images;
  if (cfg.kind !== "resnet") {
    for (const l of vggLayers(cfg)) {
      x = boundary(convNorm(pass, x, l.prefix, 1, "same", "w", "norm", true)) as tf.Tensor4D;
    }
  } else {
    // The study's Resnet3: an unpadded stem with a bias and no ReLU after its norm; then 3x3 convs
    // padded by 1 on every side (PyTorch's padding=1: a stride-2 conv of an even-sized image starts
    // at row -1, where TF.js's 'same' would start at row 0) and unpadded 1x1 skips.
    x = boundary(convNorm(pass, x, "cnn.stem", 1, "valid", "w", "norm", false, true)) as tf.Tensor4D;
    for (const b of resnetPlan(cfg)) {
      const h = boundary(convNorm(pass, x, b.prefix, b.stride, 1, "conv1", "norm1", true));
      const h2 = convNorm(pass, h as tf.Tensor4D, b.prefix, 1, 1, "conv2", "norm2");
      const skip = b.inC !== b.outC || b.stride !== 1
        ? convNorm(pass, x, b.prefix, b.stride, 0, "skip", "skipnorm")
        : x;
      x = boundary(tf.relu(tf.add(skip, h2))) as tf.Tensor4D;
    }
  }
  return globalAvgPool(x);
}

/**
 * A conv whose value is `y`, an output the same conv gave on the same operands before, and whose gradient
 * is Conv2D's own (the registered one: oneDNN's or TF.js's kernels): the forward work is not done again.
 */
function replayedConv(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: Pad, y: tf.Tensor4D): tf.Tensor4D {
  const grad = tf.getGradient(tf.Conv2D);
  if (!grad) throw new Error("cnn.ts replayedConv: TF.js has no gradient registered for Conv2D");
  const attrs = { strides: stride, pad, dataFormat: "NHWC", dilations: 1 } as unknown as tf.NamedAttrMap;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xx, ww, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([xx, ww]);
    return {
      value: tf.reshape(y, y.shape), // a view of y's data, no copy
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const g = grad.gradFunc(dy as tf.Tensor, saved, attrs);
        return [g.x(), g.filter()];
      },
    };
  }) as (x: tf.Tensor, w: tf.Tensor) => tf.Tensor;
  return f(x, w) as tf.Tensor4D;
}

/** Conv-output floats per image (every conv of the CNN: what cnnCheckpointed keeps when told to). */
export function cnnConvOutputFloatsPerImage(cfg: CnnConfig): number {
  return convGeometries(cfg).reduce((n, c) => n + c.pixels * c.outC, 0);
}

/** Memory for the chunks' parameter gradients waiting to be summed (cnnCheckpointed). */
const GRAD_SUM_BYTES = 64 * 2 ** 20;

/**
 * cnnForward in chunks of `chunk` images with gradient checkpointing: the forward pass keeps only the
 * pooled features; the backward pass recomputes each chunk's activations, takes its gradients and
 * frees them before the next chunk. Gradients flow to `images` and to every tensor in `p` (variables
 * included: pass the model's variables). Costs one extra CNN forward per training step, or, with
 * `keepConvOutputs`, only the norms, ReLUs and pooling of one: the forward pass then keeps every conv's
 * output (cnnConvOutputFloatsPerImage floats per image, until the chunk's gradient is taken) and the
 * backward pass replays them in place of the convs. With `keepNormOutputs` too, and where lmpipe's fused
 * norm kernels run, it keeps every norm's output and per-image stats as well (as many floats again, and
 * 2 per image and norm) and replays the norms too: the pooling, the boundaries and the residual adds are
 * all that run forward twice. Kept only while gradients are being recorded.
 */
export function cnnCheckpointed(
  cfg: CnnConfig,
  p: Map<string, tf.Tensor>,
  images: tf.Tensor4D,
  chunk: number,
  boundary: Boundary = identity,
  keepConvOutputs = false,
  keepNormOutputs = false,
): tf.Tensor2D {
  const N = images.shape[0];
  if (chunk <= 0 || chunk >= N) return cnnForward(cfg, p, images, boundary);
  const names = [...p.keys()];
  const run = (imgs: tf.Tensor4D, ws: tf.Tensor[], conv: ConvFn = plainConv, normFn?: NormFn) => {
    const m = new Map(names.map((n, i) => [n, ws[i]] as [string, tf.Tensor]));
    return cnnForward(cfg, m, imgs, boundary, conv, normFn);
  };
  const starts: number[] = [];
  for (let s = 0; s < N; s += chunk) starts.push(s);
  const sliceRows = (t: tf.Tensor, s: number) => tf.slice(t, [s], [Math.min(chunk, N - s)]);
  // deno-lint-ignore no-explicit-any
  const engine = tf.engine() as any;
  // without a tape there is no backward pass to replay the outputs in (evaluation)
  const keep = keepConvOutputs && gradientsRecorded();
  const keepNorms = keep && keepNormOutputs && cfg.norm === "image";

  const f = tf.customGrad((...args: unknown[]) => {
    const ins = args.slice(0, -1) as tf.Tensor[];
    const save = args[args.length - 1] as (ts: tf.Tensor[]) => void;
    const [imgs, ...ws] = ins;
    // every conv output of every chunk, in the order the convs ran (kept past the chunk's tidy), and
    // with keepNorms every norm's output and stats, in the order the norms ran
    const outs: tf.Tensor4D[] = [];
    const norms: KeptImageNorm[] = [];
    const record: ConvFn = (x, w, stride, pad) => {
      const y = tf.keep(plainConv(x, w, stride, pad));
      outs.push(y);
      return y;
    };
    const recordNorm: NormFn = (x, g, b, relu) => imageNormReluKeeping(x, g, b, relu, (k) => norms.push(k));
    // one tidy per chunk: only the chunk's pooled features (and the kept outputs) outlive it
    const parts = starts.map((s) =>
      tf.tidy(() =>
        run(
          sliceRows(imgs, s) as tf.Tensor4D,
          ws,
          keep ? record : plainConv,
          keepNorms ? recordNorm : undefined,
        )
      )
    );
    const value = tf.concat(parts, 0);
    tf.dispose(parts);
    const perChunk = outs.length / starts.length, normsPerChunk = norms.length / starts.length;
    if (!Number.isInteger(normsPerChunk)) {
      throw new Error(`cnn.ts cnnCheckpointed: ${norms.length} norms kept over ${starts.length} chunks`);
    }
    const normTensors = norms.flatMap((k) => [k.y, k.stats]);
    save([...ins, ...outs, ...normTensors]); // the engine keeps its own references (views) to what it saves
    tf.dispose([...outs, ...normTensors]);
    const gradFunc = (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [si, ...sw] = saved.slice(0, ins.length);
      const kept = saved.slice(ins.length, ins.length + outs.length) as tf.Tensor4D[];
      const keptNorms = saved.slice(ins.length + outs.length);
      const dyT = dy as tf.Tensor;
      const gImgs: tf.Tensor[] = [];
      // the chunks' parameter gradients, summed with one AddN per parameter every `most` chunks (at the
      // end when they all fit GRAD_SUM_BYTES) instead of one Add per parameter and chunk
      const pending: tf.Tensor[][] = [];
      const paramBytes = 4 * sw.reduce((n, t) => n + t.size, 0);
      const most = Math.max(2, Math.floor(GRAD_SUM_BYTES / Math.max(1, paramBytes)));
      const sumPending = () => {
        const sums = sw.map((_, i) => tf.addN(pending.map((g) => g[i])));
        tf.dispose(pending.flat());
        pending.splice(0, pending.length, sums);
      };
      // tf.grads inside a gradient function: TF.js clears the engine's active tape when a
      // top-level gradient computation ends, which would break the outer backward pass that is
      // still running; keep the outer tape and put it back after each inner computation.
      starts.forEach((s, c) => {
        const mine = kept.slice(c * perChunk, (c + 1) * perChunk);
        const myNorms = keptNorms.slice(2 * c * normsPerChunk, 2 * (c + 1) * normsPerChunk);
        let next = 0, nextNorm = 0;
        const replay: ConvFn = (x, w, stride, pad) => replayedConv(x, w, stride, pad, mine[next++]);
        const replayNorm: NormFn = (x, g, b, relu) => {
          const i = 2 * nextNorm++;
          return imageNormReluReplayed(x, g, b, relu, {
            y: myNorms[i] as tf.Tensor4D,
            stats: myNorms[i + 1],
          });
        };
        const outer = engine.state.activeTape;
        const g = tf.grads((x: tf.Tensor, ...w: tf.Tensor[]) =>
          run(
            x as tf.Tensor4D,
            w,
            mine.length > 0 ? replay : plainConv,
            myNorms.length > 0 ? replayNorm : undefined,
          )
        )(
          [sliceRows(si, s), ...sw],
          sliceRows(dyT, s),
        );
        engine.state.activeTape = outer;
        // this chunk's outputs are read no more (disposing twice is harmless)
        tf.dispose([...mine, ...myNorms]);
        gImgs.push(g[0]);
        pending.push(g.slice(1));
        if (pending.length >= most) sumPending();
      });
      if (pending.length > 1) sumPending();
      return [tf.concat(gImgs, 0), ...pending[0]];
    };
    return { value, gradFunc };
  });
  return f(images, ...names.map((n) => p.get(n)!)) as tf.Tensor2D;
}

/** Every conv of the CNN for one image: output pixels, input and output channels, kernel size. */
function convGeometries(cfg: CnnConfig): { pixels: number; inC: number; outC: number; k: number }[] {
  let h = cfg.height, w = cfg.width;
  if (cfg.kind !== "resnet") {
    return vggLayers(cfg).map((l) => ({ pixels: h * w, inC: l.inC, outC: l.outC, k: 3 }));
  }
  h -= 2, w -= 2; // the unpadded stem
  const out = [{ pixels: h * w, inC: cfg.inChannels, outC: cfg.baseWidth, k: 3 }];
  for (const b of resnetPlan(cfg)) {
    // padding 1: floor((h + 2 - 3) / stride) + 1 rows
    h = Math.floor((h - 1) / b.stride) + 1, w = Math.floor((w - 1) / b.stride) + 1;
    out.push({ pixels: h * w, inC: b.inC, outC: b.outC, k: 3 }, {
      pixels: h * w,
      inC: b.outC,
      outC: b.outC,
      k: 3,
    });
    if (b.inC !== b.outC || b.stride !== 1) out.push({ pixels: h * w, inC: b.inC, outC: b.outC, k: 1 });
  }
  return out;
}

/** Forward FLOPs of the CNN for one image (multiply-add = 2 FLOPs; norms and ReLU not counted). */
export function cnnFlopsPerImage(cfg: CnnConfig): number {
  return convGeometries(cfg).reduce((n, c) => n + 2 * c.pixels * c.k * c.k * c.inC * c.outC, 0);
}

/** Number of CNN parameters. */
export function cnnParamCount(cfg: CnnConfig): number {
  return specsSize(cnnParamSpecs(cfg));
}

/** Validation messages for a CNN config (empty when fine). */
export function cnnConfigErrors(cfg: CnnConfig): string[] {
  const errs: string[] = [];
  if (!CNN_KINDS.includes(cfg.kind)) {
    errs.push(`cnn must be one of ${CNN_KINDS.join(", ")} (got '${cfg.kind}')`);
  }
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  if (!posInt(cfg.baseWidth)) errs.push(`cnnWidth must be a positive integer (got ${cfg.baseWidth})`);
  if (!Number.isInteger(cfg.depth) || cfg.depth < 0) {
    errs.push(
      `cnnDepth must be 0 (the study's: vgg9 9 convs, resnet 4 blocks per stage) or a positive integer (got ${cfg.depth})`,
    );
  }
  if (cfg.kind === "resnet" && (cfg.height < 3 || cfg.width < 3)) {
    errs.push(
      `cnn 'resnet' needs images of at least 3x3 (its stem is an unpadded 3x3 conv; got ${cfg.height}x${cfg.width})`,
    );
  }
  if (cfg.widths !== undefined) {
    if (cfg.kind === "resnet") errs.push("cnnWidths applies to vgg9 and vgg-wide only");
    else if (!Array.isArray(cfg.widths) || cfg.widths.length === 0 || !cfg.widths.every(posInt)) {
      errs.push(
        `cnnWidths must be a non-empty list of positive integers (got ${JSON.stringify(cfg.widths)})`,
      );
    }
  }
  if (cfg.norm !== "image" && cfg.norm !== "none") {
    errs.push(`cnnNorm must be 'image' or 'none' (got '${cfg.norm}')`);
  }
  return errs;
}
