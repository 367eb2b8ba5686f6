// Child process for tests/blas_test.ts: starts wasm under whatever $LMPIPE_BLAS and permissions the
// test gave it, runs one matMul big enough for the BLAS path, and prints the backend description and
// the result's largest error against a plain JS loop as one JSON line.
import { initBackend, tf } from "../lib/tensor/backend.ts";

const info = await initBackend("wasm", { quiet: true, threads: 1 });
const M = 40, K = 50, N = 60;
const a = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i));
const b = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i));
const got = tf.matMul(tf.tensor2d(a, [M, K]), tf.tensor2d(b, [K, N])).dataSync();
let err = 0;
for (let i = 0; i < M; i++) {
  for (let j = 0; j < N; j++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += a[i * K + k] * b[k * N + j];
    err = Math.max(err, Math.abs(s - got[i * N + j]));
  }
}
console.log(JSON.stringify({ device: info.device, err }));
