// GPU node probe: which WebGPU adapter Deno sees (and whether it offers shader-f16), and TF.js's
// webgpu matMul rate, to compare with PyTorch's on the same card (bench/gpu/torch_matmul.py).
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-webgpu";

const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) {
  console.log("no WebGPU adapter: is the Vulkan loader installed and VK_DRIVER_FILES set?");
  Deno.exit(1);
}
console.log(`adapter: ${adapter.info.description || adapter.info.vendor}`);
console.log(`shader-f16: ${adapter.features.has("shader-f16")}`);
console.log(`maxStorageBufferBindingSize: ${adapter.limits.maxStorageBufferBindingSize}`);
await tf.setBackend("webgpu");
await tf.ready();
for (const n of [1024, 2048, 4096]) {
  const a = tf.randomNormal([n, n]), b = tf.randomNormal([n, n]);
  let c = tf.matMul(a, b);
  await c.data();
  c.dispose();
  const reps = 10, t0 = performance.now();
  for (let i = 0; i < reps; i++) {
    c = tf.matMul(a, b);
    if (i < reps - 1) c.dispose();
  }
  await c.data();
  const dt = (performance.now() - t0) / 1000;
  console.log(`tfjs webgpu matMul fp32 ${n}^3: ${(2 * n ** 3 * reps / dt / 1e9).toFixed(0)} GFLOP/s`);
  tf.dispose([a, b, c]);
}
