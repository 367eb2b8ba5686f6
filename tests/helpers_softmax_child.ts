// Child process for tests/softmax_rows_test.ts: starts wasm with $LMPIPE_WASM_THREADS threads (fixed
// per process), runs the softmax kernel on inputs with every row-length remainder, special values and
// rows enough for the worker threads, and prints one JSON line: the threads used, the largest errors
// against a float64 loop, and a checksum of the output bits (equal across thread counts).
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { softmaxRows } from "../lib/tensor/softmax_rows.ts";
import { wasmSoftmaxStats, wasmSoftmaxThreads } from "../lib/tensor/wasm_softmax.ts";
import { randomArray } from "../lib/tensor/testing.ts";

const info = await initBackend("wasm", { quiet: true });
const shapes = [[1, 1], [3, 5], [4, 6], [2, 7], [5, 8], [6, 259], [2, 1024], [64, 4099], [3, 50304]];
let eErr = 0, sErr = 0, mErr = 0, hash = 2166136261;
const mix = (bytes: Uint8Array) => {
  for (const b of bytes) hash = Math.imul(hash ^ b, 16777619) >>> 0;
};
for (const [rows, cols] of shapes) {
  const x = randomArray(rows * cols, rows * 7919 + cols).map((v, i) => v * (i % 3 === 0 ? 40 : 8));
  const { e, m, s } = softmaxRows(tf.tensor2d(x, [rows, cols]));
  const [ev, mv, sv] = [e.dataSync(), m.dataSync(), s.dataSync()];
  mix(new Uint8Array(ev.buffer)), mix(new Uint8Array(sv.buffer));
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * cols, (r + 1) * cols);
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
    mErr = Math.max(mErr, Math.abs(mv[r] - max));
    let sum = 0;
    for (let j = 0; j < cols; j++) {
      const want = Math.exp(Math.fround(row[j] - max)); // x - max rounds to float32 on every path
      sum += want;
      eErr = Math.max(eErr, Math.abs(ev[r * cols + j] - want) / (want + 1e-30) * (want > 1e-30 ? 1 : 0));
    }
    sErr = Math.max(sErr, Math.abs(sv[r] - sum) / sum);
  }
}
// Special values: a NaN makes its row's sum NaN and leaves the other rows alone; -Infinity gives 0.
const special = softmaxRows(tf.tensor2d([1, NaN, 3, 2, 0, -Infinity, 5, 1, 2, 3, 4, 5], [3, 4]));
// With worker threads, they take rows of big jobs (the main thread takes rows too, so give them a few
// chances on a busy machine).
const big = tf.tensor2d(randomArray(256 * 4096, 5), [256, 4096]);
for (let i = 0; i < 50 && wasmSoftmaxStats().rowsOnWorkers === 0; i++) {
  tf.dispose(Object.values(softmaxRows(big)));
}
console.log(JSON.stringify({
  rowsOnWorkers: wasmSoftmaxStats().rowsOnWorkers,
  backend: info.device,
  threads: wasmSoftmaxThreads(),
  eErr,
  sErr,
  mErr,
  hash,
  specialS: Array.from(special.s.dataSync()).map(String),
  specialE: Array.from(special.e.dataSync()).slice(4, 8),
}));
