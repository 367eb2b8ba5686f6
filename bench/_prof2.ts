import { initBackend, tf } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { HeapView, headRow } from "../lib/tensor/ops/gemv/wasm.ts";
await initBackend("wasm", { quiet: true, threads: Number(Deno.env.get("TH") ?? 1) });
const m = createModel(resolveConfig("gpt", "tiny", { nLayer: 4, nHead: 4, nEmbd: 128, contextLength: 128 }), 1);
const heap = new HeapView(tf.backend());
const off = (t: tf.Tensor) => (tf.backend() as any).dataIdMap.get(t.dataId).memoryOffset as number;
const x = tf.randomNormal([128]), y = tf.zeros([50304]);
const wte = m.params.get("transformer.wte.weight")!;
for (let r = 0; r < 3; r++) {
  const s = m.startDecode(1);
  let t0 = performance.now();
  for (let i = 0; i < 120; i++) s.stepOnHost!(198);
  const step = (performance.now() - t0) / 120;
  t0 = performance.now();
  for (let i = 0; i < 120; i++) headRow(heap, off(wte), off(x), off(y), 50304, 128);
  const head = (performance.now() - t0) / 120;
  t0 = performance.now();
  for (let i = 0; i < 120; i++) heap.kernels.gemv_rows(off(wte), 128, off(x), off(y), 0, 50304, 128);
  const kern = (performance.now() - t0) / 120;
  console.log(`step ${step.toFixed(3)} ms, headRow ${head.toFixed(3)}, kernel head ${kern.toFixed(3)}`);
  s.dispose();
}
