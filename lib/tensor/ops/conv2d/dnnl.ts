// Conv2D, its input gradient and its filter gradient on oneDNN (lib/native/dnnl.ts) for the wasm
// backend: the image models' CNNs (lib/models/cnn.ts: 3x3 stride 1 and 2, 1x1 stride 2 shortcuts,
// 'same' padding, NHWC) spend most of a step in convolutions, where oneDNN's JIT kernels ran 5-15x
// faster per op than TF.js's wasm path (issue 17). oneDNN works straight on the wasm heap: each
// primitive's memories wrap heap base + byte offset (re-pointed with dnnl_memory_set_data_handle on every
// call, as the heap may have grown and moved), activations stay NHWC as TF.js stores them, and the
// weights go through a reorder into the layout oneDNN picks ('any'), which keeps it on its direct JIT
// kernels (HWIO as it is makes it fall back to im2col + sgemm). Primitives are built once per shape
// (2-6 ms each) and cached. Whatever oneDNN cannot do (another data format, dilation, a shape it
// refuses) goes to the kernel registered before (ops/conv2d/wasm.ts's paths); kernel_choice.ts decides per call.
// The models add their conv bias (only without a norm) with tf.add, whose gradient is a plain sum, so
// no bias is handed to oneDNN.
import * as tf from "@tensorflow/tfjs-core";
import {
  CONV_DESC_BYTES,
  currentDnnl,
  DIMS_BYTES,
  DNNL,
  type Dnnl,
  EXEC_ARG_BYTES,
  MEMORY_DESC_BYTES,
  outPointer,
} from "../../../native/dnnl.ts";
import { kernelFor } from "../../kernel_choice.ts";
import { type ConvGeometry, flatConvGeometry, nhwcConvInfo } from "./mod.ts";

type TensorInfo = tf.TensorInfo;
// deno-lint-ignore no-explicit-any
type AnyBackend = any;
// deno-lint-ignore no-explicit-any
type KernelArgs = { inputs: any; backend: AnyBackend; attrs?: any };
type KernelFn = (args: KernelArgs) => TensorInfo | TensorInfo[];

/** One conv's geometry (dilation 1: oneDNN is not asked for dilated convs). */
export type ConvShape = ConvGeometry;

/**
 * The geometry of a Conv2D-family call, or null when oneDNN is not used for it: not NHWC, dilated,
 * empty, or padding that does not give TF.js's output size under oneDNN's rule.
 */
export function convShape(
  xShape: readonly number[],
  filterShape: readonly number[],
  attrs: KernelArgs["attrs"],
): ConvShape | null {
  const dilations = attrs.dilations ?? 1;
  const d = typeof dilations === "number" ? [dilations, dilations] : dilations;
  if (d[0] !== 1 || d[1] !== 1) return null;
  const ci = nhwcConvInfo(xShape, filterShape, attrs);
  if (!ci) return null;
  const s: ConvShape = flatConvGeometry(ci);
  if (s.B * s.H * s.W * s.Ci * s.Co * s.OH * s.OW === 0) return null;
  // oneDNN's output size: (in - k + pad_l + pad_r) / stride + 1, rounded down
  const fits = Math.floor((s.H - s.KH + s.pt + s.pb) / s.sh) + 1 === s.OH &&
    Math.floor((s.W - s.KW + s.pl + s.pr) / s.sw) + 1 === s.OW;
  return fits ? s : null;
}

/** DNNL_MEMORY_ALLOCATE: oneDNN allocates the buffer (made lazily: pointers need FFI permission). */
const allocate = () => Deno.UnsafePointer.create(0xffffffffffffffffn);

/** A memory descriptor of `dims` (oneDNN's logical order: N C H W for data, O I H W for weights). */
function memoryDesc(dnnl: Dnnl, dims: number[], tag: number): Uint8Array {
  const md = new Uint8Array(MEMORY_DESC_BYTES);
  dnnl.check(
    dnnl.sym.dnnl_memory_desc_init_by_tag(
      md,
      dims.length,
      BigInt64Array.from(dims.map(BigInt)),
      DNNL.f32,
      tag,
    ),
    "memory_desc_init_by_tag",
  );
  return md;
}

function dims2(a: number, b: number): BigInt64Array {
  const d = new BigInt64Array(DIMS_BYTES / 8);
  d[0] = BigInt(a), d[1] = BigInt(b);
  return d;
}

/** A primitive with its argument list (memories fixed; their data pointers change per call). */
interface Step {
  prim: Deno.PointerValue;
  args: Uint8Array;
  n: number;
}

/** Which tensor each heap-backed memory of a plan wraps. */
type Slot = "x" | "w" | "y";

/** The primitives of one conv direction at one shape: [weight reorder], conv, [gradient reorder]. */
interface Plan {
  steps: Step[];
  /** Memories that wrap tensors on the wasm heap, re-pointed every call. */
  heap: [Slot, Deno.PointerValue][];
  impl: string;
}

type Direction = "forward" | "backwardData" | "backwardWeights";

const plans = new Map<string, Plan | null>();
const forwardHints = new Map<string, Deno.PointerValue>();

function createMemory(
  dnnl: Dnnl,
  md: Deno.PointerValue | Uint8Array,
  handle: Deno.PointerValue,
): Deno.PointerValue {
  const out = new BigUint64Array(1);
  const mdPtr = md instanceof Uint8Array ? Deno.UnsafePointer.of(md) : md;
  dnnl.check(dnnl.sym.dnnl_memory_create(out, mdPtr, dnnl.engine, handle), "memory_create");
  return outPointer(out);
}

function createPrimitive(dnnl: Dnnl, pd: Deno.PointerValue): Deno.PointerValue {
  const out = new BigUint64Array(1);
  dnnl.check(dnnl.sym.dnnl_primitive_create(out, pd), "primitive_create");
  return outPointer(out);
}

function step(prim: Deno.PointerValue, args: [number, Deno.PointerValue][]): Step {
  const buf = new Uint8Array(EXEC_ARG_BYTES * args.length);
  const v = new DataView(buf.buffer);
  args.forEach(([arg, mem], i) => {
    v.setInt32(i * EXEC_ARG_BYTES, arg, true);
    v.setBigUint64(i * EXEC_ARG_BYTES + 8, BigInt(Deno.UnsafePointer.value(mem)), true);
  });
  return { prim, args: buf, n: args.length };
}

/** A reorder primitive from memory `from` (descriptor fromMd) to `to` (descriptor toMd). */
function reorder(
  dnnl: Dnnl,
  fromMd: Deno.PointerValue,
  from: Deno.PointerValue,
  toMd: Deno.PointerValue,
  to: Deno.PointerValue,
): Step {
  const out = new BigUint64Array(1);
  dnnl.check(
    dnnl.sym.dnnl_reorder_primitive_desc_create(out, fromMd, dnnl.engine, toMd, dnnl.engine, null),
    "reorder_primitive_desc_create",
  );
  const pd = outPointer(out);
  const prim = createPrimitive(dnnl, pd);
  dnnl.sym.dnnl_primitive_desc_destroy(pd);
  return step(prim, [[DNNL.argFrom, from], [DNNL.argTo, to]]);
}

function primitiveDesc(
  dnnl: Dnnl,
  desc: Uint8Array,
  hint: Deno.PointerValue,
  what: string,
): Deno.PointerValue {
  const out = new BigUint64Array(1);
  dnnl.check(dnnl.sym.dnnl_primitive_desc_create(out, desc, null, dnnl.engine, hint), what);
  return outPointer(out);
}

function implName(dnnl: Dnnl, pd: Deno.PointerValue): string {
  const out = new BigUint64Array(1);
  if (dnnl.sym.dnnl_primitive_desc_query(pd, DNNL.queryImplInfoStr, 0, out) !== DNNL.success) return "?";
  const p = outPointer(out);
  return p ? new Deno.UnsafePointerView(p).getCString() : "?";
}

function shapeKey(s: ConvShape): string {
  return [s.B, s.H, s.W, s.Ci, s.Co, s.KH, s.KW, s.sh, s.sw, s.pt, s.pb, s.pl, s.pr].join(",");
}

/** The descriptors every direction shares: data NHWC, user weights HWIO, chosen weights 'any'. */
function descs(dnnl: Dnnl, s: ConvShape) {
  return {
    x: memoryDesc(dnnl, [s.B, s.Ci, s.H, s.W], DNNL.nhwc),
    y: memoryDesc(dnnl, [s.B, s.Co, s.OH, s.OW], DNNL.nhwc),
    wUser: memoryDesc(dnnl, [s.Co, s.Ci, s.KH, s.KW], DNNL.hwio),
    wAny: memoryDesc(dnnl, [s.Co, s.Ci, s.KH, s.KW], DNNL.tagAny),
    strides: dims2(s.sh, s.sw),
    padL: dims2(s.pt, s.pl),
    padR: dims2(s.pb, s.pr),
  };
}

/** The forward primitive descriptor of a shape, the hint the backward ones need (kept for the process). */
function forwardPd(dnnl: Dnnl, s: ConvShape): Deno.PointerValue {
  const key = shapeKey(s);
  let pd = forwardHints.get(key);
  if (!pd) {
    const d = descs(dnnl, s);
    const cd = new Uint8Array(CONV_DESC_BYTES);
    dnnl.check(
      dnnl.sym.dnnl_convolution_forward_desc_init(
        cd,
        DNNL.forwardTraining,
        DNNL.convolutionDirect,
        d.x,
        d.wAny,
        null,
        d.y,
        d.strides,
        d.padL,
        d.padR,
      ),
      "convolution_forward_desc_init",
    );
    pd = primitiveDesc(dnnl, cd, null, "convolution forward primitive_desc_create");
    forwardHints.set(key, pd);
  }
  return pd;
}

function buildPlan(dnnl: Dnnl, dir: Direction, s: ConvShape): Plan {
  const d = descs(dnnl, s);
  const fwd = forwardPd(dnnl, s);
  const wUserPtr = Deno.UnsafePointer.of(d.wUser);
  const same = (a: Deno.PointerValue) => dnnl.sym.dnnl_memory_desc_equal(a, wUserPtr) === 1;
  const x = createMemory(dnnl, d.x, null);
  const y = createMemory(dnnl, d.y, null);
  const wUser = createMemory(dnnl, d.wUser, null);
  const heap: [Slot, Deno.PointerValue][] = [["x", x], ["y", y], ["w", wUser]];
  /** The weights in the layout primitive `pd` chose: a reorder step from HWIO unless it chose HWIO. */
  const weightsFor = (pd: Deno.PointerValue, steps: Step[]) => {
    const wMd = dnnl.sym.dnnl_primitive_desc_query_md(pd, DNNL.queryWeightsMd, 0);
    if (same(wMd)) return wUser;
    const w = createMemory(dnnl, wMd, allocate());
    steps.push(reorder(dnnl, wUserPtr, wUser, wMd, w));
    return w;
  };
  if (dir === "forward") {
    const steps: Step[] = [];
    const w = weightsFor(fwd, steps);
    steps.push(step(createPrimitive(dnnl, fwd), [[DNNL.argSrc, x], [DNNL.argWeights, w], [DNNL.argDst, y]]));
    return { steps, heap, impl: implName(dnnl, fwd) };
  }
  const cd = new Uint8Array(CONV_DESC_BYTES);
  if (dir === "backwardData") {
    dnnl.check(
      dnnl.sym.dnnl_convolution_backward_data_desc_init(
        cd,
        DNNL.convolutionDirect,
        d.x,
        d.wAny,
        d.y,
        d.strides,
        d.padL,
        d.padR,
      ),
      "convolution_backward_data_desc_init",
    );
    const pd = primitiveDesc(dnnl, cd, fwd, "convolution backward-data primitive_desc_create");
    const steps: Step[] = [];
    const w = weightsFor(pd, steps);
    steps.push(
      step(createPrimitive(dnnl, pd), [[DNNL.argDiffDst, y], [DNNL.argWeights, w], [DNNL.argDiffSrc, x]]),
    );
    const impl = implName(dnnl, pd);
    dnnl.sym.dnnl_primitive_desc_destroy(pd);
    return { steps, heap, impl };
  }
  dnnl.check(
    dnnl.sym.dnnl_convolution_backward_weights_desc_init(
      cd,
      DNNL.convolutionDirect,
      d.x,
      d.wAny,
      null,
      d.y,
      d.strides,
      d.padL,
      d.padR,
    ),
    "convolution_backward_weights_desc_init",
  );
  const pd = primitiveDesc(dnnl, cd, fwd, "convolution backward-weights primitive_desc_create");
  const dwMd = dnnl.sym.dnnl_primitive_desc_query_md(pd, DNNL.queryDiffWeightsMd, 0);
  let dw = wUser;
  const chosen = !same(dwMd);
  if (chosen) dw = createMemory(dnnl, dwMd, allocate());
  const steps = [
    step(createPrimitive(dnnl, pd), [[DNNL.argSrc, x], [DNNL.argDiffDst, y], [DNNL.argDiffWeights, dw]]),
  ];
  if (chosen) steps.push(reorder(dnnl, dwMd, dw, wUserPtr, wUser));
  const impl = implName(dnnl, pd);
  dnnl.sym.dnnl_primitive_desc_destroy(pd);
  return { steps, heap, impl };
}

/** The cached plan of a direction and shape; null (cached too) when oneDNN refused to build it. */
function planFor(dnnl: Dnnl, dir: Direction, s: ConvShape): Plan | null {
  const key = `${dir}:${shapeKey(s)}`;
  if (plans.has(key)) return plans.get(key)!;
  let plan: Plan | null = null;
  try {
    plan = buildPlan(dnnl, dir, s);
  } catch (err) {
    lastRefusal = `${key}: ${(err as Error).message}`;
  }
  plans.set(key, plan);
  return plan;
}

let lastRefusal = "";

/** Runs `plan` with its memories pointing at the tensors' bytes in the wasm heap. */
function execute(dnnl: Dnnl, backend: AnyBackend, plan: Plan, tensors: Record<Slot, TensorInfo>): void {
  const base = Deno.UnsafePointer.of(new Uint8Array(backend.wasm.HEAPU8.buffer as ArrayBufferLike));
  if (base === null) throw new Error("ops/conv2d/dnnl.ts: could not take a pointer to the wasm heap");
  for (const [slot, mem] of plan.heap) {
    const offset = backend.dataIdMap.get(tensors[slot].dataId).memoryOffset as number;
    dnnl.check(
      dnnl.sym.dnnl_memory_set_data_handle(mem, Deno.UnsafePointer.offset(base, offset)),
      "memory_set_data_handle",
    );
  }
  for (const st of plan.steps) {
    dnnl.check(dnnl.sym.dnnl_primitive_execute(st.prim, dnnl.stream, st.n, st.args), "primitive_execute");
  }
  dnnl.check(dnnl.sym.dnnl_stream_wait(dnnl.stream), "stream_wait");
  dnnl.calls++;
}

function float32(...ts: TensorInfo[]): boolean {
  return ts.every((t) => t.dtype === "float32");
}

/**
 * A kernel for one conv direction that runs on oneDNN when kernel_choice.ts says so and the call fits,
 * else `fallback`: Conv2D {x, filter}, Conv2DBackpropInput {dy, filter} (attrs.inputShape),
 * Conv2DBackpropFilter {x, dy} (attrs.filterShape).
 */
function dnnlKernel(dir: Direction, fallback: KernelFn): KernelFn {
  return (args) => {
    const dnnl = currentDnnl();
    const ins = args.inputs as Record<string, TensorInfo>;
    const [a, b] = dir === "forward"
      ? [ins.x, ins.filter]
      : dir === "backwardData"
      ? [ins.dy, ins.filter]
      : [ins.x, ins.dy];
    const xShape: number[] = dir === "backwardData" ? args.attrs.inputShape : a.shape;
    const wShape: number[] = dir === "backwardWeights" ? args.attrs.filterShape : b.shape;
    const s = dnnl && kernelFor("conv2d") === "dnnl" && float32(a, b)
      ? convShape(xShape, wShape, args.attrs)
      : null;
    const plan = s && planFor(dnnl!, dir, s);
    if (!plan) return fallback(args);
    const outShape = dir === "forward"
      ? [s!.B, s!.OH, s!.OW, s!.Co]
      : dir === "backwardData"
      ? xShape
      : wShape;
    const out = args.backend.makeOutput(outShape.slice(), "float32") as TensorInfo;
    const slots = dir === "forward"
      ? { x: a, w: b, y: out }
      : dir === "backwardData"
      ? { x: out, w: b, y: a }
      : { x: a, w: out, y: b };
    execute(dnnl!, args.backend, plan, slots);
    return out;
  };
}

/** Conv2D on oneDNN, else `fallback` (TF.js's XNNPACK kernel). */
export const dnnlConv2D = (fallback: KernelFn) => dnnlKernel("forward", fallback);
/** Conv2DBackpropInput on oneDNN, else `fallback` (ops/conv2d/wasm.ts: matMul + col2im). */
export const dnnlConv2DBackpropInput = (fallback: KernelFn) => dnnlKernel("backwardData", fallback);
/** Conv2DBackpropFilter on oneDNN, else `fallback` (ops/conv2d/wasm.ts: im2col + matMul). */
export const dnnlConv2DBackpropFilter = (fallback: KernelFn) => dnnlKernel("backwardWeights", fallback);

let registered = false;

/**
 * Wraps the wasm backend's Conv2D, Conv2DBackpropInput and Conv2DBackpropFilter kernels (TF.js's and
 * ops/conv2d/wasm.ts's) so that each call goes to oneDNN when it can. Idempotent; backend.ts calls it once oneDNN
 * has loaded.
 */
export function registerDnnlConvKernels(): void {
  if (registered) return;
  registered = true;
  const wrap = [
    [tf.Conv2D, dnnlConv2D],
    [tf.Conv2DBackpropInput, dnnlConv2DBackpropInput],
    [tf.Conv2DBackpropFilter, dnnlConv2DBackpropFilter],
  ] as const;
  for (const [name, make] of wrap) {
    const old = tf.getKernel(name, "wasm");
    if (!old) continue;
    tf.unregisterKernel(name, "wasm");
    tf.registerKernel({
      ...old,
      kernelFunc: make(old.kernelFunc as unknown as KernelFn) as unknown as tf.KernelFunc,
    });
  }
}

/**
 * For tests and reports: the cached plans' keys ("forward:N,H,W,Ci,Co,KH,KW,sh,sw,pt,pb,pl,pr"), the
 * oneDNN implementations chosen, and the last shape oneDNN refused (those run on today's path).
 */
export function dnnlConvStats(): { shapes: string[]; impls: string[]; lastRefusal: string } {
  const impls = [...plans.entries()].map(([k, p]) => `${k.split(":")[0]} ${p ? p.impl : "refused"}`);
  return { shapes: [...plans.keys()], impls: [...new Set(impls)], lastRefusal };
}
