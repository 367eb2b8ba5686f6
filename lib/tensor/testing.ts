// Shared by the test files that compare backends: which backends this machine can run, the rule for
// webgpu (skipped with a reason locally when there is no adapter; a failure in CI, where .ci/run
// installs Mesa's software Vulkan driver), a numeric comparison helper, and a record of the webgpu
// programs an operation dispatches (for the fused-kernel tests).
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { getGpuAdapter, tf } from "./backend.ts";

export type TestBackend = "cpu" | "wasm" | "webgpu";

/** Whether webgpu tests can run here; when not, `reason` says why (printed by the caller). */
export async function webgpuStatus(): Promise<{ ok: boolean; reason: string }> {
  const adapter = await getGpuAdapter();
  if (adapter) return { ok: true, reason: "" };
  const reason = "no WebGPU adapter (install mesa-vulkan-drivers and libvulkan1 for a software one)";
  if (Deno.env.get("CI")) {
    throw new Error(`webgpu tests must run in CI, but there is ${reason}`);
  }
  console.error(`webgpu tests skipped: ${reason}`);
  return { ok: false, reason };
}

/**
 * Whether the current webgpu device has shader-f16 (for the tests of binary16 operands); CI's llvmpipe
 * adapter offers it, so there a missing feature is an error; elsewhere it says on stderr that a test skips.
 */
export function webgpuHasF16(): boolean {
  // deno-lint-ignore no-explicit-any
  const ok = (tf.backend() as any).device?.features?.has("shader-f16") === true;
  if (!ok && Deno.env.get("CI")) {
    throw new Error("CI's llvmpipe adapter offers shader-f16; this one does not");
  }
  if (!ok) console.error("f16 test skipped: this WebGPU adapter does not offer shader-f16");
  return ok;
}

/** The backends to compare on this machine: cpu and wasm always, webgpu when an adapter exists. */
export async function testBackends(): Promise<TestBackend[]> {
  return (await webgpuStatus()).ok ? ["cpu", "wasm", "webgpu"] : ["cpu", "wasm"];
}

/** max |a - b| / max(max |b|, tiny): one relative error for a whole tensor. */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0, den = 1e-12;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= num)) num = Number.isNaN(d) ? Infinity : d;
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

/** Throws, naming `what`, when `a` and `b` differ by more than `tol` relative error. */
export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const e = maxRelErr(a, b);
  if (!(e <= tol)) {
    const head = (x: ArrayLike<number>) => Array.from(x).slice(0, 6).map((v) => v.toPrecision(5)).join(", ");
    throw new Error(
      `${what}: relative error ${e.toExponential(2)} > ${tol} (lengths ${a.length}/${b.length}; ` +
        `got [${head(a)}...], want [${head(b)}...])`,
    );
  }
}

/** Deterministic pseudo-random floats in [-1, 1) (tests must not depend on TF.js's RNG per backend). */
export function randomArray(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13, s >>>= 0, s ^= s >>> 17, s ^= s << 5, s >>>= 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}

/** Wraps WebGPUBackend.recordAndSubmit (every webgpu program passes through it) to push program names. */
function recordDispatches(names: string[]): () => void {
  // deno-lint-ignore no-explicit-any
  const proto = WebGPUBackend.prototype as any;
  const record = proto.recordAndSubmit;
  // deno-lint-ignore no-explicit-any
  proto.recordAndSubmit = function (program: any, ...rest: unknown[]) {
    names.push(program.constructor.name);
    return record.call(this, program, ...rest);
  };
  return () => void (proto.recordAndSubmit = record);
}

/** `f`'s result and the class names of the webgpu programs dispatched while it ran. */
export function dispatchedBy<T>(f: () => T): { result: T; names: string[] } {
  const names: string[] = [];
  const restore = recordDispatches(names);
  try {
    return { result: f(), names };
  } finally {
    restore();
  }
}

/** dispatchedBy for an asynchronous `f`. */
export async function dispatchedByAsync<T>(f: () => Promise<T>): Promise<{ result: T; names: string[] }> {
  const names: string[] = [];
  const restore = recordDispatches(names);
  try {
    return { result: await f(), names };
  } finally {
    restore();
  }
}
