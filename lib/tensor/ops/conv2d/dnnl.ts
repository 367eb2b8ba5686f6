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
//
// Under --precision bf16 the model rounds every conv operand to bfloat16 (lib/precision.ts) and marks it
// (lib/tensor/bf16_values.ts). A call whose two operands hold bf16 values (both marked, or one marked and the
// other, a copy such as the CNN's chunk of images, checked value by value) runs a bf16 plan where the CPU
// has native bf16 (kernel_choice.ts's "dnnl-bf16"): reorders convert the float32 operands on the heap to bf16
// (exact: they are bf16 values already; the weights' reorder also picks oneDNN's layout), the conv sums in
// float32 and writes a float32 output (the filter gradient through its reorder back to HWIO), which the
// model then rounds as it rounds the float32 conv's output. Any other call takes the float32 plan.
import * as tf from "@tensorflow/tfjs-core";
import {
  CONV_DESC_BYTES,
  currentDnnl,
  DIMS_BYTES,
  DNNL,
  type Dnnl,
  outPointer,
} from "../../../native/dnnl.ts";
import { kernelFor } from "../../kernel_choice.ts";
import {
  createMemory,
  createPrimitive,
  memoryDesc,
  pointMemories,
  primitiveDesc,
  runSteps,
  type Step,
  step,
} from "../../../native/dnnl_primitives.ts";
import { isMarkedBf16, looksBf16, markBf16Values } from "../../bf16_values.ts";
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

function dims2(a: number, b: number): BigInt64Array {
  const d = new BigInt64Array(DIMS_BYTES / 8);
  d[0] = BigInt(a), d[1] = BigInt(b);
  return d;
}

/** Which tensor each heap-backed memory of a plan wraps. */
type Slot = "x" | "w" | "y";

/**
 * The primitives of one conv direction at one shape: [operand reorders], conv, [gradient reorder]. The
 * float32 plan reorders only the weights (into oneDNN's layout); the bf16 plan converts each operand.
 */
interface Plan {
  /** Whether the conv reads bf16 operands. */
  bf16: boolean;
  steps: Step[];
  /** Memories that wrap tensors on the wasm heap, re-pointed every call. */
  heap: [Slot, Deno.PointerValue][];
  impl: string;
}

type Direction = "forward" | "backwardData" | "backwardWeights";

/** The conv's operand type: "f32" reads the heap's float32 as it is, "bf16" converts operands first. */
type OperandType = "f32" | "bf16";

const plans = new Map<string, Plan | null>();
const forwardHints = new Map<string, Deno.PointerValue>();

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

function implName(dnnl: Dnnl, pd: Deno.PointerValue): string {
  const out = new BigUint64Array(1);
  if (dnnl.sym.dnnl_primitive_desc_query(pd, DNNL.queryImplInfoStr, 0, out) !== DNNL.success) return "?";
  const p = outPointer(out);
  return p ? new Deno.UnsafePointerView(p).getCString() : "?";
}

function shapeKey(s: ConvShape): string {
  return [s.B, s.H, s.W, s.Ci, s.Co, s.KH, s.KW, s.sh, s.sw, s.pt, s.pb, s.pl, s.pr].join(",");
}

/**
 * The descriptors every direction shares: data NHWC and user weights HWIO as float32 on the heap, chosen
 * weights 'any'; `xOp`, `yOp`, `wAny` are what the conv reads (bf16 in a bf16 plan), while the outputs it
 * writes (y forward, x's gradient, the weights' gradient) stay float32.
 */
function descs(dnnl: Dnnl, s: ConvShape, type: OperandType) {
  const op = type === "bf16" ? DNNL.bf16 : DNNL.f32;
  const xDims = [s.B, s.Ci, s.H, s.W], yDims = [s.B, s.Co, s.OH, s.OW], wDims = [s.Co, s.Ci, s.KH, s.KW];
  return {
    x: memoryDesc(dnnl, xDims, DNNL.nhwc),
    y: memoryDesc(dnnl, yDims, DNNL.nhwc),
    xOp: memoryDesc(dnnl, xDims, DNNL.nhwc, op),
    yOp: memoryDesc(dnnl, yDims, DNNL.nhwc, op),
    wUser: memoryDesc(dnnl, wDims, DNNL.hwio),
    wAny: memoryDesc(dnnl, wDims, DNNL.tagAny, op),
    wAnyF32: memoryDesc(dnnl, wDims, DNNL.tagAny),
    strides: dims2(s.sh, s.sw),
    padL: dims2(s.pt, s.pl),
    padR: dims2(s.pb, s.pr),
  };
}

/**
 * The forward primitive descriptor of a shape and operand type, the hint the backward ones need (kept for
 * the process).
 */
function forwardPd(dnnl: Dnnl, s: ConvShape, type: OperandType): Deno.PointerValue {
  const key = `${type}:${shapeKey(s)}`;
  let pd = forwardHints.get(key);
  if (!pd) {
    const d = descs(dnnl, s, type);
    const cd = new Uint8Array(CONV_DESC_BYTES);
    dnnl.check(
      dnnl.sym.dnnl_convolution_forward_desc_init(
        cd,
        DNNL.forwardTraining,
        DNNL.convolutionDirect,
        d.xOp,
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

function buildPlan(dnnl: Dnnl, dir: Direction, s: ConvShape, type: OperandType): Plan {
  const d = descs(dnnl, s, type);
  const fwd = forwardPd(dnnl, s, type);
  const wUserPtr = Deno.UnsafePointer.of(d.wUser);
  const same = (a: Deno.PointerValue) => dnnl.sym.dnnl_memory_desc_equal(a, wUserPtr) === 1;
  const x = createMemory(dnnl, d.x, null);
  const y = createMemory(dnnl, d.y, null);
  const wUser = createMemory(dnnl, d.wUser, null);
  const heap: [Slot, Deno.PointerValue][] = [["x", x], ["y", y], ["w", wUser]];
  /** The data operand `mem` (descriptor `md`) as the conv reads it: a bf16 copy in a bf16 plan. */
  const operand = (md: Uint8Array, opMd: Uint8Array, mem: Deno.PointerValue, steps: Step[]) => {
    if (type === "f32") return mem;
    const op = createMemory(dnnl, opMd, allocate());
    steps.push(reorder(dnnl, Deno.UnsafePointer.of(md), mem, Deno.UnsafePointer.of(opMd), op));
    return op;
  };
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
    const xo = operand(d.x, d.xOp, x, steps);
    const w = weightsFor(fwd, steps);
    steps.push(step(createPrimitive(dnnl, fwd), [[DNNL.argSrc, xo], [DNNL.argWeights, w], [DNNL.argDst, y]]));
    return { bf16: type === "bf16", steps, heap, impl: implName(dnnl, fwd) };
  }
  const cd = new Uint8Array(CONV_DESC_BYTES);
  if (dir === "backwardData") {
    dnnl.check(
      dnnl.sym.dnnl_convolution_backward_data_desc_init(
        cd,
        DNNL.convolutionDirect,
        d.x,
        d.wAny,
        d.yOp,
        d.strides,
        d.padL,
        d.padR,
      ),
      "convolution_backward_data_desc_init",
    );
    const pd = primitiveDesc(dnnl, cd, fwd, "convolution backward-data primitive_desc_create");
    const steps: Step[] = [];
    const yo = operand(d.y, d.yOp, y, steps);
    const w = weightsFor(pd, steps);
    steps.push(
      step(createPrimitive(dnnl, pd), [[DNNL.argDiffDst, yo], [DNNL.argWeights, w], [DNNL.argDiffSrc, x]]),
    );
    const impl = implName(dnnl, pd);
    dnnl.sym.dnnl_primitive_desc_destroy(pd);
    return { bf16: type === "bf16", steps, heap, impl };
  }
  dnnl.check(
    dnnl.sym.dnnl_convolution_backward_weights_desc_init(
      cd,
      DNNL.convolutionDirect,
      d.xOp,
      d.wAnyF32,
      null,
      d.yOp,
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
  const steps: Step[] = [];
  const xo = operand(d.x, d.xOp, x, steps), yo = operand(d.y, d.yOp, y, steps);
  steps.push(
    step(createPrimitive(dnnl, pd), [[DNNL.argSrc, xo], [DNNL.argDiffDst, yo], [DNNL.argDiffWeights, dw]]),
  );
  if (chosen) steps.push(reorder(dnnl, dwMd, dw, wUserPtr, wUser));
  const impl = implName(dnnl, pd);
  dnnl.sym.dnnl_primitive_desc_destroy(pd);
  return { bf16: type === "bf16", steps, heap, impl };
}

/**
 * The cached plan of a direction, shape and operand type; null (cached too) when oneDNN refused to build
 * it, or, for bf16, offered only its reference code (slower than the float32 kernels).
 */
function planFor(dnnl: Dnnl, dir: Direction, s: ConvShape, type: OperandType): Plan | null {
  const key = `${dir}${type === "bf16" ? "/bf16" : ""}:${shapeKey(s)}`;
  if (plans.has(key)) return plans.get(key)!;
  let plan: Plan | null = null;
  try {
    plan = buildPlan(dnnl, dir, s, type);
    if (type === "bf16" && /^ref/.test(plan.impl)) {
      lastRefusal = `${key}: oneDNN offers only ${plan.impl} for bf16`;
      plan = null;
    }
  } catch (err) {
    lastRefusal = `${key}: ${(err as Error).message}`;
  }
  plans.set(key, plan);
  return plan;
}

let lastRefusal = "";

/** Runs `plan` with its memories pointing at the tensors' bytes in the wasm heap. */
function execute(dnnl: Dnnl, backend: AnyBackend, plan: Plan, tensors: Record<Slot, TensorInfo>): void {
  const offset = (t: TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset as number;
  pointMemories(
    dnnl,
    backend.wasm.HEAPU8.buffer as ArrayBufferLike,
    "ops/conv2d/dnnl.ts",
    plan.heap.map(([slot, mem]) => [mem, offset(tensors[slot])]),
  );
  runSteps(dnnl, plan.steps);
  dnnl.calls++;
  if (plan.bf16) dnnl.bf16Calls++;
}

function float32(...ts: TensorInfo[]): boolean {
  return ts.every((t) => t.dtype === "float32");
}

/** The float32 words of `t` on the wasm heap (a view, valid until the heap grows). */
function heapBits(backend: AnyBackend, t: TensorInfo): Uint32Array {
  const offset = backend.dataIdMap.get(t.dataId).memoryOffset as number;
  const n = t.shape.reduce((a, b) => a * b, 1);
  return new Uint32Array(backend.wasm.HEAPU8.buffer as ArrayBufferLike, offset, n);
}

/**
 * Whether both operands of a conv hold bfloat16 values. A marked operand (lib/precision.ts's toBf16) is
 * trusted after a spot check of its first values, which catches a mark that outlived an in-place write. When
 * one operand is marked, the other may be a copy of bf16 values that lost its mark (the CNN's chunked
 * images are slices of the rounded images): its values are checked in full, stopping at the first that is
 * not bf16, and it is marked when they all are (the filter gradient reads the same input next).
 */
function bothHoldBf16(backend: AnyBackend, a: TensorInfo, b: TensorInfo): boolean {
  const [ma, mb] = [isMarkedBf16(a), isMarkedBf16(b)];
  if (!ma && !mb) return false;
  for (const [t, marked] of [[a, ma], [b, mb]] as const) {
    const bits = heapBits(backend, t);
    if (!looksBf16(bits, marked ? 64 : bits.length)) return false;
    if (!marked) markBf16Values(t);
  }
  return true;
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
    const choice = kernelFor("conv2d");
    const s = dnnl && choice.startsWith("dnnl") && float32(a, b)
      ? convShape(xShape, wShape, args.attrs)
      : null;
    const bf16 = s && choice === "dnnl-bf16" && bothHoldBf16(args.backend, a, b);
    const plan = s && ((bf16 && planFor(dnnl!, dir, s, "bf16")) || planFor(dnnl!, dir, s, "f32"));
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

/**
 * For tests: `values` through the conversion a bf16 plan applies to its operands (oneDNN's reorder from
 * float32 to bf16), and back to float32 (exact), so it can be compared with lib/precision.ts's toBf16.
 */
export function dnnlRoundTripBf16(values: Float32Array): Float32Array {
  const dnnl = currentDnnl();
  if (!dnnl) throw new Error("ops/conv2d/dnnl.ts: dnnlRoundTripBf16 needs oneDNN");
  const n = values.length;
  const f32 = memoryDesc(dnnl, [n], DNNL.tagA), bf16 = memoryDesc(dnnl, [n], DNNL.tagA, DNNL.bf16);
  const src = values.slice(), out = new Float32Array(n);
  const mems = [
    createMemory(dnnl, f32, Deno.UnsafePointer.of(src)),
    createMemory(dnnl, bf16, allocate()),
    createMemory(dnnl, f32, Deno.UnsafePointer.of(out)),
  ];
  const steps = [
    reorder(dnnl, Deno.UnsafePointer.of(f32), mems[0], Deno.UnsafePointer.of(bf16), mems[1]),
    reorder(dnnl, Deno.UnsafePointer.of(bf16), mems[1], Deno.UnsafePointer.of(f32), mems[2]),
  ];
  try {
    runSteps(dnnl, steps);
  } finally {
    for (const st of steps) dnnl.sym.dnnl_primitive_destroy(st.prim);
    for (const m of mems) dnnl.sym.dnnl_memory_destroy(m);
  }
  return out;
}
