// GELU as two elementwise WGSL programs on webgpu, registered under the names ops/gelu/mod.ts calls
// (kernel_names.ts; kernel_choice.ts decides when). TF.js spells GELU as ~7 programs forward and ~10
// backward; LmpipeGelu / LmpipeGeluGrad are one TF.js program each (runWebGPUProgram), with the float32
// operations of ops/gelu/mod.ts's op chain in its order, tanh in TF.js's own overflow-safe form. NaN in
// x or dy gives NaN, tested on the bits, so the mixed-precision loss scaler still sees its overflows.
import * as tf from "@tensorflow/tfjs-core";
import { GELU_C, GELU_GRAD_KERNEL, GELU_K, GELU_KERNEL } from "../../kernel_names.ts";
import { requireShape, requireWithinBindingLimit, setWebGPUKernelsRegistered } from "../../webgpu/kernels.ts";
import { WGSL_FLOAT_TESTS } from "../../webgpu/wgsl.ts";

// The backend's internals are reached on purpose (runWebGPUProgram), typed loosely.
// deno-lint-ignore no-explicit-any
type GpuBackend = any;
type TensorInfo = tf.TensorInfo;

// The constants as the op chain's float32 scalar tensors hold them (3c is computed in float64 first, as
// ops/gelu/mod.ts does), written as exact WGSL literals.
const f32 = (v: number) => `f32(${Math.fround(v)})`;

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
}`;

/** A one-output elementwise TF.js program (runWebGPUProgram compiles, caches and dispatches it). */
class LmpipeGeluProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames: string[];
  workgroupSize: [number, number, number] = [128, 1, 1];
  size = true;
  constructor(shape: number[], readonly grad: boolean) {
    this.outputShape = shape;
    this.shaderKey = grad ? "lmpipe_gelu_grad" : "lmpipe_gelu";
    this.variableNames = grad ? ["X", "Dy"] : ["X"];
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    const groups = Math.ceil(tf.util.sizeFromShape(shape) / this.workgroupSize[0]);
    this.dispatch = [Math.max(1, groups), 1, 1]; // runWebGPUProgram folds it into 2-D when too wide
  }
  getUserCode(): string {
    const body = this.grad
      ? `let d = getDyByOutputIndex(index);
          let t = geluTanh(v);
          let inner = (v * v * ${f32(3 * GELU_C)} + 1.0) * ${f32(GELU_K)};
          let dt = (v * (1.0 - t * t)) * inner;
          let out = d * (((t + 1.0) + dt) * 0.5);
          setOutputAtIndex(index, select(out, uniforms.NAN, isNaN(v) || isNaN(d)));`
      : `let t = geluTanh(v);
          let out = (v * 0.5) * (t + 1.0);
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

function geluKernel({ inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend }): TensorInfo {
  const { x } = inputs as Record<string, TensorInfo>;
  geluInput(GELU_KERNEL, "x", x, backend);
  return backend.runWebGPUProgram(new LmpipeGeluProgram(x.shape.slice(), false), [x], "float32");
}

function geluGradKernel(
  { inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: GpuBackend },
): TensorInfo {
  const { x, dy } = inputs as Record<string, TensorInfo>;
  geluInput(GELU_GRAD_KERNEL, "x", x, backend);
  requireShape(GELU_GRAD_KERNEL, "dy", dy, x.shape);
  return backend.runWebGPUProgram(new LmpipeGeluProgram(x.shape.slice(), true), [x, dy], "float32");
}

const KERNELS = [
  [GELU_KERNEL, geluKernel],
  [GELU_GRAD_KERNEL, geluGradKernel],
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
