// GELU as elementwise WGSL programs on webgpu, both forms, registered under the names ops/gelu/mod.ts
// calls (kernel_names.ts; kernel_choice.ts decides when). TF.js spells GELU as ~7 programs forward and
// ~10 backward; LmpipeGelu / LmpipeGeluGrad (tanh) and LmpipeGeluExact / LmpipeGeluExactGrad (erf) are
// one TF.js program each (runWebGPUProgram), with the float32 operations of ops/gelu/mod.ts's op chains
// in their order, tanh in TF.js's own overflow-safe form and erf in TF.js's (Abramowitz and Stegun
// 7.1.26, absolute error under 1.5e-7, with TF.js's constants). NaN in x or dy gives NaN, tested on the
// bits, so the mixed-precision loss scaler still sees its overflows.
import * as tf from "@tensorflow/tfjs-core";
import {
  GELU_C,
  GELU_EXACT_GRAD_KERNEL,
  GELU_EXACT_KERNEL,
  GELU_GRAD_KERNEL,
  GELU_K,
  GELU_KERNEL,
} from "../../kernel_names.ts";
import { requireShape, requireWithinBindingLimit, setWebGPUKernelsRegistered } from "../../webgpu/kernels.ts";
import { WGSL_FLOAT_TESTS } from "../../webgpu/wgsl.ts";

// The backend's internals are reached on purpose (runWebGPUProgram), typed loosely.
// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

// The constants as the op chain's float32 scalar tensors hold them (3c is computed in float64 first, as
// ops/gelu/mod.ts does), written as exact WGSL literals.
const f32 = (v: number) => `f32(${Math.fround(v)})`;

// TF.js's Erf constants (Abramowitz and Stegun 7.1.26) as WGSL literals.
const [ERF_P, ERF_A1, ERF_A2, ERF_A3, ERF_A4, ERF_A5] = [
  tf.backend_util.ERF_P,
  tf.backend_util.ERF_A1,
  tf.backend_util.ERF_A2,
  tf.backend_util.ERF_A3,
  tf.backend_util.ERF_A4,
  tf.backend_util.ERF_A5,
].map(f32);

// ops/gelu/mod.ts geluByOps, one float32 operation per TF.js op, in its order; TF.js's Tanh program's formula.
const GELU_WGSL = `
${WGSL_FLOAT_TESTS}
fn tanhTf(a: f32) -> f32 {
  let e2x = exp(-2.0 * abs(a));
  return sign(a) * (1.0 - e2x) / (1.0 + e2x);
}
fn geluTanh(v: f32) -> f32 {
  let x2 = v * v;
  return tanhTf((v * (x2 * ${f32(GELU_C)} + 1.0)) * ${f32(GELU_K)});
}
fn erfTf(a: f32) -> f32 {
  let t = 1.0 / (1.0 + ${ERF_P} * abs(a));
  let poly = ((((${ERF_A5} * t + ${ERF_A4}) * t) + ${ERF_A3}) * t + ${ERF_A2}) * t + ${ERF_A1};
  return sign(a) * (1.0 - poly * t * exp(-abs(a) * abs(a)));
}
// 1 + erf(x / sqrt 2), the op chain's saved term
fn onePlusErf(v: f32) -> f32 {
  return erfTf(v * ${f32(Math.SQRT1_2)}) + 1.0;
}`;

/** GELU's form and direction: the shader of each of the four kernels. */
type Program = "tanh" | "tanhGrad" | "exact" | "exactGrad";

// Each program's body: v = x, d = dy (gradients), `out` the result (NaN where v or d is NaN).
const BODIES: Record<Program, string> = {
  tanh: `let t = geluTanh(v);
          let out = (v * 0.5) * (t + 1.0);`,
  tanhGrad: `let t = geluTanh(v);
          let inner = (v * v * ${f32(3 * GELU_C)} + 1.0) * ${f32(GELU_K)};
          let dt = (v * (1.0 - t * t)) * inner;
          let out = d * (((t + 1.0) + dt) * 0.5);`,
  exact: `let out = (v * 0.5) * onePlusErf(v);`,
  exactGrad: `let phi = exp((v * v) * -0.5) * ${f32(1 / Math.sqrt(2 * Math.PI))};
          let out = d * ((onePlusErf(v) * 0.5) + v * phi);`,
};

/** A one-output elementwise TF.js program (runWebGPUProgram compiles, caches and dispatches it). */
class LmpipeGeluProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames: string[];
  workgroupSize: [number, number, number] = [128, 1, 1];
  size = true;
  readonly grad: boolean;
  constructor(shape: number[], readonly program: Program) {
    this.outputShape = shape;
    this.grad = program.endsWith("Grad");
    this.shaderKey = `lmpipe_gelu_${program}`;
    this.variableNames = this.grad ? ["X", "Dy"] : ["X"];
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    const groups = Math.ceil(tf.util.sizeFromShape(shape) / this.workgroupSize[0]);
    this.dispatch = [Math.max(1, groups), 1, 1]; // runWebGPUProgram folds it into 2-D when too wide
  }
  getUserCode(): string {
    const body = this.grad
      ? `let d = getDyByOutputIndex(index);
          ${BODIES[this.program]}
          setOutputAtIndex(index, select(out, uniforms.NAN, isNaN(v) || isNaN(d)));`
      : `${BODIES[this.program]}
          setOutputAtIndex(index, select(out, uniforms.NAN, isNaN(v)));`;
    return `${GELU_WGSL}
      fn main(index: i32) {
        if (index < uniforms.size) {
          let v = getXByOutputIndex(index);
          ${body}
        }
      }`;
  }
}

function geluInput(kernel: string, what: string, t: TensorInfo, backend: GpuBackend): void {
  if (t.dtype !== "float32") {
    throw new Error(
      `${kernel}: ${what} must be float32, got ${t.dtype}; gelu (lib/tensor/ops/gelu/mod.ts) runs the op chain`,
    );
  }
  requireWithinBindingLimit(kernel, what, t, backend);
}

/** The kernel `name` running `program`: y from x, or dx from x and dy. */
function geluKernel(name: string, program: Program) {
  return ({ inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend }): TensorInfo => {
    const { x, dy } = inputs as Record<string, TensorInfo>;
    geluInput(name, "x", x, backend);
    const gpuProgram = new LmpipeGeluProgram(x.shape.slice(), program);
    if (!gpuProgram.grad) return backend.runWebGPUProgram(gpuProgram, [x], "float32");
    requireShape(name, "dy", dy, x.shape);
    return backend.runWebGPUProgram(gpuProgram, [x, dy], "float32");
  };
}

const KERNELS = [
  [GELU_KERNEL, geluKernel(GELU_KERNEL, "tanh")],
  [GELU_GRAD_KERNEL, geluKernel(GELU_GRAD_KERNEL, "tanhGrad")],
  [GELU_EXACT_KERNEL, geluKernel(GELU_EXACT_KERNEL, "exact")],
  [GELU_EXACT_GRAD_KERNEL, geluKernel(GELU_EXACT_GRAD_KERNEL, "exactGrad")],
] as const;

/**
 * Registers the GELU kernels for webgpu (true) or takes them out of the registry (false), so that gelu
 * runs its op chain while the other fused kernels stay on (tests/webgpu_kernels_test.ts: these round
 * differently; on Mesa llvmpipe ~0.2% of y and ~4% of dx differ from the op chain in the last bits).
 */
export function setGeluKernelsRegistered(on: boolean): void {
  setWebGPUKernelsRegistered(KERNELS, on);
}

// Registered once, when this module is first imported (backend.ts loads the webgpu backend first).
setGeluKernelsRegistered(true);
