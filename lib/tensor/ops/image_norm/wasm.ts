// The image models' per-image norm + channel affine + ReLU on wasm, registered as LmpipeImageNorm /
// LmpipeImageNormGrad (kernel_names.ts): one job each way (kernels.wat imgnorm_*) on the kernels' threads
// (wasm/kernels.ts), an image per row, for any H, W and C. The op it replaces was lmpipe's LayerNorm
// kernel over rows of H·W·C with g and b tiled over the pixels, then TF.js's Relu, and backward the ReLU
// gradient, the LayerNorm gradient and the tiles' sums back to the channels (~8 kernels each step).
import { registerKernels } from "../../host_kernel.ts";
import { IMAGE_NORM_GRAD_KERNEL, IMAGE_NORM_KERNEL } from "../../kernel_names.ts";
import { type AnyBackend, offsetOf, requireFloat32, runRows, type TensorInfo } from "../../wasm/kernels.ts";
import { floatBits, KIND } from "../../wasm/kernel_calls.ts";
import { switchOn } from "../../env_switch.ts";

let enabled = switchOn("LMPIPE_WASM_IMAGE_NORM");

/**
 * Turns these kernels on or off for this process (off: the LayerNorm kernel path of ./mod.ts runs, as
 * before they existed); returns the old state. For tests and benchmarks; LMPIPE_WASM_IMAGE_NORM=0 too.
 */
export function setWasmImageNormEnabled(on: boolean): boolean {
  const old = enabled;
  enabled = on;
  return old;
}

/** Whether these kernels are switched on (kernel_choice.ts also asks whether wasm kernels can run). */
export function wasmImageNormEnabled(): boolean {
  return enabled;
}

/** N images of n values each, C channels; throws naming `kernel` unless x is [N, H, W, C] with g and b [C]. */
function sizes(kernel: string, x: TensorInfo, g: TensorInfo, b: TensorInfo) {
  requireFloat32(kernel, "x", x);
  if (x.shape.length !== 4) throw new Error(`${kernel}: x must be [N, H, W, C], got [${x.shape}]`);
  const [N, H, W, C] = x.shape;
  requireFloat32(kernel, "g", g, [C]);
  requireFloat32(kernel, "b", b, [C]);
  return { N, n: H * W * C, C };
}

/**
 * g and b, each repeated four times, in a temporary [2, 4C] tensor on the heap (the kernels read a
 * channel's values at any lane from it: kernels.wat imgnorm_fwd). The caller disposes it.
 */
function channelTiles(backend: AnyBackend, g: TensorInfo, b: TensorInfo, C: number): TensorInfo {
  const gb = backend.makeOutput([2, 4 * C], "float32") as TensorInfo;
  const out = backend.typedArrayFromHeap(gb) as Float32Array;
  const gv = backend.typedArrayFromHeap(g) as Float32Array,
    bv = backend.typedArrayFromHeap(b) as Float32Array;
  for (let k = 0; k < 4; k++) {
    out.set(gv, k * C);
    out.set(bv, (4 + k) * C);
  }
  return gb;
}

function imageNormKernel(
  { inputs, backend, attrs }: { inputs: Record<string, TensorInfo>; backend: AnyBackend; attrs: unknown },
): TensorInfo[] {
  const { x, g, b } = inputs;
  const { relu, eps } = attrs as { relu: boolean; eps: number };
  const { N, n, C } = sizes(IMAGE_NORM_KERNEL, x, g, b);
  const y = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  const stats = backend.makeOutput([N, 2], "float32") as TensorInfo;
  if (N * n > 0) {
    const gb = channelTiles(backend, g, b, C);
    const o = (t: TensorInfo) => offsetOf(backend, t);
    runRows(backend, [KIND.imageNorm, o(x), o(gb), o(y), o(stats), n, C, floatBits(eps), relu ? 1 : 0], N, n);
    backend.disposeData(gb.dataId);
  }
  return [y, stats];
}

function imageNormGradKernel(
  { inputs, backend, attrs }: { inputs: Record<string, TensorInfo>; backend: AnyBackend; attrs: unknown },
): TensorInfo[] {
  const { x, g, b, stats, dy } = inputs;
  const { relu } = attrs as { relu: boolean };
  const { N, n, C } = sizes(IMAGE_NORM_GRAD_KERNEL, x, g, b);
  requireFloat32(IMAGE_NORM_GRAD_KERNEL, "dy", dy, x.shape);
  requireFloat32(IMAGE_NORM_GRAD_KERNEL, "stats", stats, [N, 2]);
  const dx = backend.makeOutput(x.shape.slice(), "float32") as TensorInfo;
  const dg = backend.makeOutput([C], "float32") as TensorInfo;
  const db = backend.makeOutput([C], "float32") as TensorInfo;
  // per image, at the channel tiles' positions: the sums of dy * xhat and of dy (kernels.wat imgnorm_dx)
  const part = backend.makeOutput([N, 2, 4 * C], "float32") as TensorInfo;
  const gb = channelTiles(backend, g, b, C);
  const o = (t: TensorInfo) => offsetOf(backend, t);
  if (N * n > 0) {
    runRows(
      backend,
      [KIND.imageNormDx, o(dy), o(x), o(gb), o(stats), o(dx), o(part), n, C, relu ? 1 : 0],
      N,
      n,
    );
  }
  runRows(backend, [KIND.imageNormDgDb, o(part), o(dg), o(db), N * n > 0 ? N : 0, C], 1, 0);
  backend.disposeData(gb.dataId);
  backend.disposeData(part.dataId);
  return [dx, dg, db];
}

// Registered once, when this module is first imported.
registerKernels("wasm", [[IMAGE_NORM_KERNEL, imageNormKernel], [
  IMAGE_NORM_GRAD_KERNEL,
  imageNormGradKernel,
]]);
