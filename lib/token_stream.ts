// Token streams on stdin for `lmpipe eval --data -` (e.g. `lmpipe tokenize < f.txt --out - | ...`).
// Accepted: one or more llm.c segments (a 1024-byte header whose token count N is followed by N uint16
// tokens; a count of -1 means "tokens until the end of the stream", for writers that cannot know the
// length up front), or headerless uint16 tokens (nanoGPT's layout). Segments are concatenated.
import { inputError } from "./errors.ts";
import { decodeU16, HEADER_BYTES, parseHeader, SHARD_VERSION } from "./shard.ts";

/** Reads a whole byte stream. */
export async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const c of stream) {
    chunks.push(c);
    total += c.length;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) out.set(c, off), off += c.length;
  return out;
}

/** Parses a token stream (see the top of this file); `what` names it in errors. */
export function parseTokenStream(bytes: Uint8Array, what = "stdin"): Uint16Array {
  if (parseHeader(bytes) === null) {
    if (bytes.length % 2 !== 0) {
      throw inputError(
        `${what}: ${bytes.length} bytes of headerless tokens is an odd count; expected uint16 tokens`,
      );
    }
    return decodeU16(bytes.slice());
  }
  const parts: Uint16Array[] = [];
  let off = 0, total = 0;
  while (off < bytes.length) {
    const hdr = parseHeader(bytes.subarray(off, off + HEADER_BYTES));
    if (hdr === null || bytes.length - off < HEADER_BYTES) {
      throw inputError(`${what}: expected an llm.c shard header at byte ${off} (after ${total} tokens)`);
    }
    if (hdr.version !== SHARD_VERSION) {
      throw inputError(`${what}: header at byte ${off} has version ${hdr.version}`);
    }
    off += HEADER_BYTES;
    const n = hdr.tokens === -1 ? Math.floor((bytes.length - off) / 2) : hdr.tokens;
    if (n < 0 || off + 2 * n > bytes.length) {
      throw inputError(
        `${what}: header at byte ${off - HEADER_BYTES} announces ${n} tokens but the stream ends sooner`,
      );
    }
    parts.push(decodeU16(bytes.slice(off, off + 2 * n)));
    off += 2 * n;
    total += n;
    if (hdr.tokens === -1 && off !== bytes.length) {
      throw inputError(`${what}: odd trailing byte after the tokens`);
    }
  }
  const out = new Uint16Array(total);
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
}
