// Peak resident memory of a process: the kernel's high-water mark (VmHWM in /proc/<pid>/status) on
// Linux. Used by `tokenize --json` and its memory-bound test (this process) and by `study` (each
// child train process).

/** Peak resident bytes of process `pid` ("self": this one), or null where the OS does not say. */
export function peakRssOf(pid: number | "self"): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null; // not Linux, or the process is gone
  }
}

/** Peak resident bytes of this process; the current RSS where the OS keeps no high-water mark. */
export function peakRss(): number {
  return peakRssOf("self") ?? Deno.memoryUsage().rss;
}
