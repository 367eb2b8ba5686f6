// The pthread worker of TF.js's threaded wasm backend, loadable by Deno's node:worker_threads.
// tfjs-backend-wasm ships the worker only as a string (wasmWorkerContents) that browsers load from a
// blob: URL; node-style workers need a file, so this file runs that string. The worker script assigns
// Node-style globals (self, location, ...) that a Deno worker defines as read-only accessors, so they
// are first made plain writable properties.
"use strict";
const path = require("path");
const workerModule = path.resolve(
  __dirname,
  "../../../node_modules/@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.worker.js",
);
const { wasmWorkerContents } = require(process.env.LMPIPE_TFJS_WASM_WORKER || workerModule);
for (
  const k of [
    "self",
    "require",
    "Module",
    "location",
    "Worker",
    "importScripts",
    "postMessage",
    "performance",
  ]
) {
  Object.defineProperty(globalThis, k, {
    value: globalThis[k],
    writable: true,
    configurable: true,
    enumerable: true,
  });
}
// The string was written for a template literal: its "\n" escapes arrive as real newlines.
const source = wasmWorkerContents.replace(/\n/g, "\\n");
new Function("require", "__filename", "global", source)(require, __filename, globalThis);
