// lib/tensor/kernel_choice.ts: the one rule for which implementation of an op runs. Every row names
// files that exist and ends in an implementation that always applies; the switches change the answer.
import assert from "node:assert/strict";
import { initBackend } from "../lib/tensor/backend.ts";
import {
  kernelFor,
  setBlasMinWork,
  setDnnlBatchedMatMuls,
  setDnnlMatMuls,
  sgemmForMatMul,
  TABLE,
} from "../lib/tensor/kernel_choice.ts";
import { currentDnnl } from "../lib/native/dnnl.ts";
import { dnnlMatMulAvailable } from "../lib/tensor/ops/matmul/dnnl.ts";
import { setWasmKernelsEnabled } from "../lib/tensor/wasm/kernels.ts";
import { currentBlas } from "../lib/native/blas.ts";

Deno.test("kernel choice: every row names existing files and ends in an implementation that always runs", () => {
  const seen = new Set<string>();
  for (const row of TABLE) {
    const key = `${row.op}/${row.backend}`;
    assert.ok(!seen.has(key), `${key} has two rows`);
    seen.add(key);
    assert.ok(row.implementations.length >= 2, `${key}: a choice needs two implementations`);
    assert.ok(row.force.length > 0, `${key}: say how to force the choice`);
    for (const impl of row.implementations) {
      const file = impl.file.split(" ")[0];
      assert.ok(Deno.statSync(new URL(`../${file}`, import.meta.url)).isFile, `${key}: ${file} is missing`);
    }
    assert.ok(row.implementations.at(-1)!.active(0), `${key}: the last implementation must always apply`);
  }
});

Deno.test("kernel choice: wasm runs lmpipe's kernels unless switched off; cpu the op chains", async () => {
  await initBackend("cpu", { quiet: true });
  for (const op of ["softmaxRows", "layerNorm", "gelu", "causalSoftmax"]) {
    assert.equal(kernelFor(op), "ops", op);
  }
  await initBackend("wasm", { quiet: true });
  // on explicitly, so that the test means the same under LMPIPE_WASM_FUSED=0
  const old = setWasmKernelsEnabled(true);
  try {
    for (const op of ["softmaxRows", "layerNorm", "gelu", "adamW", "sumSquares", "causalSoftmax"]) {
      assert.equal(kernelFor(op), "lmpipe", op);
    }
    setWasmKernelsEnabled(false);
    for (const op of ["softmaxRows", "layerNorm", "gelu", "adamW", "sumSquares", "causalSoftmax"]) {
      assert.equal(kernelFor(op), "ops", op);
    }
  } finally {
    setWasmKernelsEnabled(old);
  }
});

Deno.test("kernel choice: wasm matMuls go to BLAS from blasMinWork multiply-adds up, when a library is loaded", async () => {
  await initBackend("wasm", { quiet: true });
  const old = setBlasMinWork(1000), oldDnnl = setDnnlMatMuls(false);
  try {
    assert.equal(sgemmForMatMul(999), null);
    assert.equal(sgemmForMatMul(1000), currentBlas()); // null without a library: XNNPACK then
    assert.equal(kernelFor("matMul", "wasm", 1000), currentBlas() ? "blas" : "lmpipe");
  } finally {
    setBlasMinWork(old), setDnnlMatMuls(oldDnnl);
  }
});

Deno.test("kernel choice: wasm matMuls go to oneDNN's sgemm first, when the library is loaded and has one", async () => {
  await initBackend("wasm", { quiet: true });
  const old = setBlasMinWork(1000);
  try {
    const gemm = currentDnnl()?.gemm ?? null;
    assert.equal(sgemmForMatMul(999), null);
    assert.equal(sgemmForMatMul(1000), gemm ?? currentBlas()); // OpenBLAS, then XNNPACK without oneDNN
    assert.equal(kernelFor("matMul", "wasm", 1000), gemm ? "dnnl" : currentBlas() ? "blas" : "lmpipe");
    const oldDnnl = setDnnlMatMuls(false);
    try {
      assert.equal(sgemmForMatMul(1000), currentBlas());
    } finally {
      setDnnlMatMuls(oldDnnl);
    }
  } finally {
    setBlasMinWork(old);
  }
});

Deno.test("kernel choice: true batches, and evaluation's products with a bias, go to oneDNN's matmul primitive", async () => {
  await initBackend("wasm", { quiet: true });
  const old = setBlasMinWork(1000);
  try {
    const primitive = currentDnnl()?.gemm != null && dnnlMatMulAvailable();
    assert.equal(kernelFor("batchMatMul", "wasm", 999), "matMul");
    assert.equal(kernelFor("batchMatMul", "wasm", 1000), primitive ? "dnnl-matmul" : "matMul");
    assert.equal(kernelFor("matMulBias", "wasm", 1000), primitive ? "dnnl-matmul" : "ops");
    const oldDnnl = setDnnlMatMuls(false);
    try {
      assert.equal(kernelFor("batchMatMul", "wasm", 1000), "matMul");
    } finally {
      setDnnlMatMuls(oldDnnl);
    }
    const oldBatched = setDnnlBatchedMatMuls(false);
    try {
      assert.equal(kernelFor("batchMatMul", "wasm", 1000), "matMul");
      assert.equal(kernelFor("matMulBias", "wasm", 1000), "ops");
    } finally {
      setDnnlBatchedMatMuls(oldBatched);
    }
  } finally {
    setBlasMinWork(old);
  }
});
