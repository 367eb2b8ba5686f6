// Human-facing output on stderr. Data goes to stdout; everything a person reads goes here, and the
// live progress line is drawn only when stderr is a terminal so logs of batch jobs stay clean.

const enc = new TextEncoder();
export const stderrIsTTY = Deno.stderr.isTerminal();

let progressShown = false;
let infoMuted = false, warnPrefix = "";

/**
 * For the ranks of a data-parallel job other than rank 0: their info lines are dropped (rank 0 speaks
 * for the job) and their warnings say which rank wrote them.
 */
export function setRankOutput(rank: number, muteInfo: boolean): void {
  infoMuted = muteInfo;
  warnPrefix = `rank ${rank}: `;
}

function writeErr(s: string): void {
  Deno.stderr.writeSync(enc.encode(s));
}

/** A log line for people. Clears a progress line first so the two never interleave. */
export function info(msg: string): void {
  if (infoMuted) return;
  clearProgress();
  writeErr(msg + "\n");
}

export function warn(msg: string): void {
  clearProgress();
  writeErr(`${warnPrefix}warning: ${msg}\n`);
}

/** Redraws the single progress line (TTY only; a no-op otherwise). */
export function progress(line: string): void {
  if (!stderrIsTTY || infoMuted) return;
  const cols = (() => {
    try {
      // a pseudo-terminal that reports 0 columns (some ssh/tmux/CI set-ups) means "unknown", not "none"
      return Deno.consoleSize().columns || 100;
    } catch {
      return 100;
    }
  })();
  writeErr("\r\x1b[2K" + line.slice(0, Math.max(10, cols - 1)));
  progressShown = true;
}

export function clearProgress(): void {
  if (progressShown) {
    writeErr("\r\x1b[2K");
    progressShown = false;
  }
}

/** Formats a byte count as e.g. 12.3 MB. */
export function fmtBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) n /= 1000, i++;
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Formats seconds as e.g. 1h02m, 3m20s, 12.5s. */
export function fmtDuration(sec: number): string {
  if (!Number.isFinite(sec)) return "?";
  if (sec < 60) return `${sec.toFixed(1)}s`;
  const m = Math.floor(sec / 60), s = Math.floor(sec % 60);
  if (m < 60) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** Formats large counts as e.g. 1.23M. */
export function fmtCount(n: number): string {
  if (n < 1e3) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(1)}k`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)}M`;
  return `${(n / 1e9).toFixed(2)}B`;
}
