// Flag parsing shared by every subcommand: node:util parseArgs in strict mode, with `--help`
// handled uniformly and parse failures turned into usage errors that point at the help text.
import { parseArgs } from "node:util";
import { usageError } from "./errors.ts";

export type FlagSpec = Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  help: boolean;
}

/** Parses argv for subcommand `cmd`; unknown flags and missing values become usage errors. */
export function parseFlags(cmd: string, argv: string[], spec: FlagSpec): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...spec, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    const help = Boolean(values.help);
    delete (values as Record<string, unknown>).help;
    return { values: values as Parsed["values"], positionals, help };
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw usageError(`lmpipe ${cmd}: ${msg.replace(/\. To specify.*$/s, "")}\nSee 'lmpipe ${cmd} --help'.`);
  }
}

/** Reads a string flag, or its default. */
export function str(p: Parsed, name: string, dflt: string): string;
export function str(p: Parsed, name: string): string | undefined;
export function str(p: Parsed, name: string, dflt?: string): string | undefined {
  const v = p.values[name];
  if (Array.isArray(v)) return v[v.length - 1];
  return typeof v === "string" ? v : dflt;
}

/** Reads a comma-separated list flag (e.g. --models gpt,pixel-attn), or its default; blanks dropped. */
export function list(p: Parsed, name: string, dflt: string): string[] {
  return str(p, name, dflt).split(",").map((s) => s.trim()).filter((s) => s);
}

/** Reads a numeric flag with bounds, naming the flag in the error. */
export function num(
  p: Parsed,
  cmd: string,
  name: string,
  dflt: number,
  opts: { min?: number; max?: number; integer?: boolean } = {},
): number {
  const raw = str(p, name);
  if (raw === undefined) return dflt;
  const v = Number(raw);
  const kind = opts.integer ? "an integer" : "a number";
  if (raw.trim() === "" || !Number.isFinite(v) || (opts.integer && !Number.isInteger(v))) {
    throw usageError(`lmpipe ${cmd}: --${name} must be ${kind}, got '${raw}'`);
  }
  if (opts.min !== undefined && v < opts.min) {
    throw usageError(`lmpipe ${cmd}: --${name} must be >= ${opts.min}, got ${raw}`);
  }
  if (opts.max !== undefined && v > opts.max) {
    throw usageError(`lmpipe ${cmd}: --${name} must be <= ${opts.max}, got ${raw}`);
  }
  return v;
}

export function bool(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** Parses sizes like `100M`, `2G`, `512k` or plain integers (decimal multipliers), at least 1. */
export function parseCount(cmd: string, name: string, raw: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmMgGtT]?)$/.exec(raw.trim());
  if (!m) {
    throw usageError(`lmpipe ${cmd}: --${name} must be a count like 1000, 50k, 100M or 2G, got '${raw}'`);
  }
  const mult = { "": 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[m[2].toLowerCase()]!;
  const n = Math.round(Number(m[1]) * mult);
  if (n < 1) throw usageError(`lmpipe ${cmd}: --${name} must be at least 1, got '${raw}'`);
  return n;
}

/** Parses durations like `90s`, `10m`, `2h`, `1h30m`, or plain seconds, more than 0. Returns seconds. */
export function parseDuration(cmd: string, name: string, raw: string): number {
  const s = raw.trim();
  const seconds = /^\d+(\.\d+)?$/.test(s) ? Number(s) : durationParts(cmd, name, raw, s);
  if (!(seconds > 0)) throw usageError(`lmpipe ${cmd}: --${name} must be more than 0 seconds, got '${raw}'`);
  return seconds;
}

function durationParts(cmd: string, name: string, raw: string, s: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0, m: RegExpExecArray | null, used = 0;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "s"];
    used = re.lastIndex;
  }
  if (used !== s.length || s.length === 0) {
    throw usageError(`lmpipe ${cmd}: --${name} must be a duration like 90s, 10m, 2h or 1h30m, got '${raw}'`);
  }
  return total;
}
