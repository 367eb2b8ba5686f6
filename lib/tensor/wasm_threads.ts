// Multithreaded wasm under Deno. TF.js believes Deno is Node and disables wasm threads; this module
// will lift that (work in progress: for now it keeps the backend single-threaded and says so).
export function enableWasmThreads(_threads: number, _distDir: string): number {
  return 1;
}
