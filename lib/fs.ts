// File-system helpers every pipeline shares: atomic writes (a temporary file in the same folder, then a
// rename, so a reader never sees half a file), full writes to streams, and write failures turned into
// output errors that name the path and say what to do (a full disk is told apart from permissions).
import { dirname } from "node:path";
import { outputError } from "./errors.ts";

/**
 * An output error for a failed write to `path`, with the fix: free space, check the disk, or check
 * permissions; `kept` says what is still intact (e.g. the last complete checkpoint).
 */
export function writeFailure(path: string, err: unknown, kept?: string): Error {
  const msg = err instanceof Error ? err.message : String(err);
  const full = /No space left|os error 28|ENOSPC|quota/i.test(msg);
  const io = /Input\/output error|os error 5\b|EIO/i.test(msg);
  return outputError(
    `${path}: cannot write (${msg}). ` +
      (full
        ? "The disk is full: free space or choose another --out."
        : io
        ? "The disk reported an I/O error: check it, or choose another --out."
        : "Check the folder's permissions or choose another --out.") +
      (kept ? ` ${kept}` : ""),
  );
}

/** Writes all of `bytes` to a file synchronously (a single write may take only part of it). */
export function writeAllSync(f: { writeSync(b: Uint8Array): number }, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) off += f.writeSync(bytes.subarray(off));
}

/** Writes all of `bytes` (a single write may take only part of it). */
export async function writeAll(
  f: { write(b: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await f.write(bytes.subarray(off));
}

/** Writes a whole file atomically (creating its folder); `-` writes to stdout. */
export async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  if (path === "-") return await writeAll(Deno.stdout, bytes);
  const tmp = `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw writeFailure(path, err);
  }
}

/** True when something exists at `path` (false for a dangling name, whatever the reason). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
