// Peak resident memory of this process, for `tokenize --json` and the memory-bound test: the kernel's
// high-water mark (VmHWM) on Linux, otherwise the current RSS.

export function peakRss(): number {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}
