// Fixes to TF.js 4.22 on the cpu backend, which tests use as the reference and which trains when
// nothing else starts: UnsortedSegmentSum (the embedding gradient) loops over every segment (minutes for
// a 50304-row table) -> the one-pass JS kernel of patches/wasm.ts; Conv2DBackpropFilter runs at ~0.02
// GFLOP/s -> composed from ops (ops/conv2d/mod.ts), at the speed of cpu matMul.
import * as tf from "@tensorflow/tfjs-core";
import { replaceKernel } from "../host_kernel.ts";
import { conv2DBackpropFilterByOps } from "../ops/conv2d/mod.ts";
import { unsortedSegmentSumKernel } from "./wasm.ts";

/** Registers the cpu fixes above; once. */
export function applyCpuPatches(): void {
  if (tf.getKernel(tf.UnsortedSegmentSum, "cpu")) {
    replaceKernel(tf.UnsortedSegmentSum, "cpu", () => unsortedSegmentSumKernel);
    replaceKernel(tf.Conv2DBackpropFilter, "cpu", (orig) => conv2DBackpropFilterByOps(orig!));
  }
}
