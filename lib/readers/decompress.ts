// Compression layers for input streams: xz (the npm package xz-decompress, WASM, streaming with bounded
// memory) and gzip (the platform's DecompressionStream). Errors from either (truncated or corrupt data)
// become input errors that name the file, so a bad archive deep inside OpenWebText is easy to find.
import xzModule from "xz-decompress";
import { inputError, LmpipeError } from "../errors.ts";

// xz-decompress is a CommonJS/webpack build: under Deno its exports arrive as the default import.
const { XzReadableStream } = xzModule as unknown as {
  XzReadableStream: (new (s: ReadableStream<Uint8Array>) => ReadableStream<Uint8Array>) & {
    _contextMutex: { acquire(): Promise<void>; release(): void };
  };
};
// The package lets only one decoder exist at a time (a class-wide mutex taken when a stream starts and
// released when it ends), which deadlocks OpenWebText's xz-inside-tar-inside-xz: the inner stream waits
// for the outer one to finish. Each decoder has its own context in the shared WASM memory, so several
// can run side by side; lmpipe never has more than two (outer archive + inner subset) per input.
XzReadableStream._contextMutex = { acquire: () => Promise.resolve(), release: () => {} };

export type Compression = "xz" | "gzip" | "none";

const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

/** Compression of data starting with `head` (magic bytes). */
export function sniffCompression(head: Uint8Array): Compression {
  if (head.length >= 6 && XZ_MAGIC.every((b, i) => head[i] === b)) return "xz";
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  return "none";
}

/**
 * Reads at least `n` bytes (fewer if the stream is shorter) from the front of `stream` without losing
 * them: returns those bytes and a stream that yields everything, prefix included.
 */
export async function peek(
  stream: ReadableStream<Uint8Array>,
  n: number,
): Promise<{ head: Uint8Array; stream: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let have = 0;
  let ended = false;
  while (have < n) {
    const { value, done } = await reader.read();
    if (done) {
      ended = true;
      break;
    }
    chunks.push(value);
    have += value.length;
  }
  const head = new Uint8Array(have);
  let o = 0;
  for (const c of chunks) head.set(c, o), o += c.length;
  let sentHead = false;
  const out = new ReadableStream<Uint8Array>({
    pull: async (c) => {
      if (!sentHead) {
        sentHead = true;
        if (head.length) return c.enqueue(head);
      }
      if (ended) return c.close();
      const { value, done } = await reader.read();
      if (done) c.close();
      else c.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return { head: head.subarray(0, Math.min(n, head.length)), stream: out };
}

/** Re-throws failures of `stream` as an input error about `what`. */
function guard(stream: ReadableStream<Uint8Array>, what: string, kind: string): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  return new ReadableStream<Uint8Array>({
    pull: async (c) => {
      try {
        const { value, done } = await reader.read();
        if (done) c.close();
        else c.enqueue(value);
      } catch (err) {
        if (err instanceof LmpipeError) return c.error(err);
        const msg = err instanceof Error ? err.message : String(err);
        c.error(inputError(
          `${what}: ${kind} data is truncated or corrupt (${msg}). ` +
            `Check the file (e.g. '${kind === "xz" ? "xz -t" : "gzip -t"} FILE') and download it again.`,
        ));
      }
    },
    cancel: (reason) => reader.cancel(reason).catch(() => {}),
  }, { highWaterMark: 0 });
}

/** The decompressed form of `stream`. */
export function decompress(
  stream: ReadableStream<Uint8Array>,
  kind: Compression,
  what: string,
): ReadableStream<Uint8Array> {
  if (kind === "none") return stream;
  if (kind === "xz") return guard(new XzReadableStream(stream), what, "xz");
  const gunzip = new DecompressionStream("gzip") as unknown as ReadableWritablePair<Uint8Array, Uint8Array>;
  return guard(stream.pipeThrough(gunzip), what, "gzip");
}

/** Sniffs the compression of `stream` and returns the decompressed stream. */
export async function autoDecompress(
  stream: ReadableStream<Uint8Array>,
  what: string,
): Promise<{ kind: Compression; stream: ReadableStream<Uint8Array> }> {
  const p = await peek(stream, 6);
  const kind = sniffCompression(p.head);
  return { kind, stream: decompress(p.stream, kind, what) };
}
