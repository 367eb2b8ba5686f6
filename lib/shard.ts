// Token shard formats and random access to them. lmpipe writes llm.c's layout (a 1024-byte header of
// 256 little-endian int32: magic 20240520, version 1, token count; then uint16 tokens) so shards
// interoperate with llm.c, and reads nanoGPT's headerless uint16 `train.bin`/`val.bin` as well.
// Readers go by offset: nothing here loads a whole shard into memory.
import { basename } from "node:path";
import { inputError } from "./errors.ts";
import { ByteReader } from "./readers/byte_reader.ts";

export const SHARD_MAGIC = 20240520;
export const SHARD_VERSION = 1;
export const HEADER_BYTES = 1024;
export const HEADER_INTS = 256;

export type ShardFormat = "llmc" | "nanogpt";

/** Builds the 1024-byte llm.c header for a shard of `tokens` tokens. */
export function shardHeader(tokens: number): Uint8Array {
  if (!Number.isInteger(tokens) || tokens < 0 || tokens > 0x7fffffff) {
    throw new RangeError(`shard token count ${tokens} does not fit the llm.c header (int32)`);
  }
  const buf = new Uint8Array(HEADER_BYTES);
  const view = new DataView(buf.buffer);
  view.setInt32(0, SHARD_MAGIC, true);
  view.setInt32(4, SHARD_VERSION, true);
  view.setInt32(8, tokens, true);
  return buf;
}

export interface ShardInfo {
  path: string;
  format: ShardFormat;
  /** Number of tokens in the shard. */
  tokens: number;
  /** Byte offset of the first token. */
  dataOffset: number;
}

/** Parses a header; returns the token count, or null when the bytes do not start with the magic. */
export function parseHeader(bytes: Uint8Array): { version: number; tokens: number } | null {
  if (bytes.length < 12) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getInt32(0, true) !== SHARD_MAGIC) return null;
  return { version: view.getInt32(4, true), tokens: view.getInt32(8, true) };
}

/** nanoGPT's names for its headerless token files (train.bin, val.bin; lmpipe adds a part label). */
export const RAW_SHARD_NAME = /^(train|val)(_p\d+of\d+)?\.bin$/;

/**
 * Why bytes that lack the llm.c magic are not headerless tokens either, or null when they may be: an
 * llm.c header whose magic is damaged (version 1 and the rest of the header zeros), or text (no control
 * bytes besides whitespace, valid UTF-8) that should have gone through `lmpipe tokenize` first.
 */
export function notRawTokens(head: Uint8Array): string | null {
  if (head.length >= HEADER_BYTES) {
    const v = new DataView(head.buffer, head.byteOffset, HEADER_BYTES);
    let zeros = true;
    for (let i = 12; i < HEADER_BYTES && zeros; i += 4) zeros = v.getInt32(i, true) === 0;
    if (zeros && v.getInt32(4, true) === SHARD_VERSION) {
      return `its first 1024 bytes are an llm.c shard header with a damaged magic number (${
        v.getInt32(0, true)
      } instead of ${SHARD_MAGIC}); the shard is corrupt: re-create it with 'lmpipe tokenize'`;
    }
  }
  if (head.length >= 16) {
    const sample = head.subarray(0, 4096);
    // Token ids below 8192 (most of GPT-2's frequent tokens) put a byte below 0x20 in every pair.
    const control = sample.some((b) => b < 0x20 && b !== 9 && b !== 10 && b !== 13 && b !== 12);
    if (!control) {
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(sample.subarray(0, sample.length - 4));
        return `it holds text, not token ids; tokenize it first, e.g. 'lmpipe tokenize FILE --out -'`;
      } catch { /* not UTF-8: may be tokens */ }
    }
  }
  return null;
}

/**
 * Identifies a shard file and validates its size against its header. A file without the llm.c magic
 * is read as nanoGPT's raw uint16 layout only when it has nanoGPT's name (train.bin, val.bin) and does
 * not look like a damaged llm.c header or text; it must then have an even size.
 */
export async function probeShard(path: string): Promise<ShardInfo> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (err) {
    throw inputError(`${path}: cannot read shard (${(err as Error).message})`);
  }
  if (!stat.isFile) throw inputError(`${path}: not a file; expected a token shard (.bin)`);
  const size = stat.size;
  const head = new Uint8Array(Math.min(HEADER_BYTES, size));
  const f = await Deno.open(path);
  try {
    await readFull(f, head, 0, path);
  } finally {
    f.close();
  }
  const hdr = parseHeader(head);
  if (hdr) {
    if (hdr.version !== SHARD_VERSION) {
      throw inputError(
        `${path}: llm.c shard header has version ${hdr.version}; lmpipe reads version ${SHARD_VERSION} (uint16 tokens). ` +
          `Re-tokenize with 'lmpipe tokenize'.`,
      );
    }
    const expected = HEADER_BYTES + 2 * hdr.tokens;
    if (hdr.tokens < 0 || size !== expected) {
      throw inputError(
        `${path}: header says ${hdr.tokens} tokens (${expected} bytes) but the file has ${size} bytes; ` +
          `the shard is truncated or corrupt. Re-create it with 'lmpipe tokenize'.`,
      );
    }
    return { path, format: "llmc", tokens: hdr.tokens, dataOffset: HEADER_BYTES };
  }
  const why = notRawTokens(head);
  if (why) throw inputError(`${path}: not a token shard: ${why}.`);
  if (!RAW_SHARD_NAME.test(basename(path))) {
    const magic = head.length >= 4 ? new DataView(head.buffer).getInt32(0, true) : "none";
    throw inputError(
      `${path}: no llm.c header (magic ${magic}, expected ${SHARD_MAGIC}), so the shard is corrupt or not ` +
        `a token file. Headerless nanoGPT uint16 files are read only under nanoGPT's names (train.bin, ` +
        `val.bin); rename it if it is one, else re-create it with 'lmpipe tokenize'.`,
    );
  }
  if (size % 2 !== 0) {
    throw inputError(
      `${path}: no llm.c header and an odd size (${size} bytes), so it is not a nanoGPT uint16 token file either.`,
    );
  }
  return { path, format: "nanogpt", tokens: size / 2, dataOffset: 0 };
}

/** Reads exactly `buf.length` bytes at `position`, or fails naming the file. */
export async function readFull(
  f: Deno.FsFile,
  buf: Uint8Array,
  position: number,
  path: string,
): Promise<void> {
  await f.seek(position, Deno.SeekMode.Start);
  let off = 0;
  while (off < buf.length) {
    const n = await f.read(buf.subarray(off));
    if (n === null) throw inputError(`${path}: unexpected end of file at byte ${position + off}`);
    off += n;
  }
}

/** Random access to one shard's tokens by offset. */
export class ShardReader {
  private constructor(readonly info: ShardInfo, private file: Deno.FsFile) {}

  static async open(path: string): Promise<ShardReader> {
    const info = await probeShard(path);
    return new ShardReader(info, await Deno.open(path));
  }

  get tokens(): number {
    return this.info.tokens;
  }

  /** Reads `count` tokens starting at token `offset`. */
  async read(offset: number, count: number): Promise<Uint16Array> {
    if (offset < 0 || count < 0 || offset + count > this.info.tokens) {
      throw new RangeError(
        `${this.info.path}: read of [${offset}, ${offset + count}) outside ${this.info.tokens} tokens`,
      );
    }
    const bytes = new Uint8Array(count * 2);
    await readFull(this.file, bytes, this.info.dataOffset + offset * 2, this.info.path);
    return decodeU16(bytes);
  }

  close(): void {
    this.file.close();
  }
}

/** Little-endian bytes to uint16 tokens (copying only on big-endian hosts or misaligned input). */
export function decodeU16(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0 && LITTLE_ENDIAN) {
    return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
  }
  const out = new Uint16Array(bytes.byteLength >> 1);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint16(2 * i, true);
  return out;
}

/** uint16 tokens to little-endian bytes. */
export function encodeU16(tokens: Uint16Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength);
  const out = new Uint8Array(tokens.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < tokens.length; i++) view.setUint16(2 * i, tokens[i], true);
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Tokens of a byte stream in either format, in chunks of at most `chunkTokens`: one or more llm.c
 * shards back to back (each with its own header, as `lmpipe tokenize --out -` writes), or raw
 * headerless uint16 (nanoGPT). Streams: only one chunk is held at a time. `what` names it in errors.
 */
export async function* readTokenStream(
  stream: ReadableStream<Uint8Array>,
  what = "stdin",
  chunkTokens = 1 << 18,
): AsyncGenerator<Uint16Array> {
  const r = new ByteReader(stream);
  try {
    const first = await r.exact(4);
    const headered = parseHeader(new Uint8Array([...first, 0, 0, 0, 0, 0, 0, 0, 0])) !== null;
    if (!headered) {
      let carry = first;
      let checked = false;
      while (true) {
        const want = checked ? chunkTokens * 2 : Math.max(chunkTokens * 2, HEADER_BYTES);
        const c = await r.exact(want);
        if (!checked) {
          checked = true;
          const why = notRawTokens(new Uint8Array([...first, ...c.subarray(0, HEADER_BYTES * 4)]));
          if (why) throw inputError(`${what}: not a token stream: ${why}.`);
        }
        const all = carry.length ? new Uint8Array(carry.length + c.length) : c;
        if (carry.length) all.set(carry), all.set(c, carry.length);
        carry = new Uint8Array(0);
        const even = all.length & ~1;
        if (even > 0) yield decodeU16(all.slice(0, even));
        if (all.length !== even) {
          throw inputError(
            `${what}: headerless token stream has an odd number of bytes (${r.position}); it is truncated`,
          );
        }
        if (c.length < want) return;
      }
    }
    let head: Uint8Array = first;
    let shardNo = 0;
    while (true) {
      const start = r.position - head.length;
      const rest = await r.exact(HEADER_BYTES - head.length);
      const h = new Uint8Array(HEADER_BYTES);
      h.set(head), h.set(rest, head.length);
      const hdr = parseHeader(h);
      if (hdr === null || head.length + rest.length < HEADER_BYTES) {
        throw inputError(
          `${what}: expected an llm.c shard header at byte ${start} (shard ${shardNo}); the stream is corrupt or truncated`,
        );
      }
      if (hdr.version !== SHARD_VERSION) {
        throw inputError(
          `${what}: header at byte ${start} has version ${hdr.version}, expected ${SHARD_VERSION}`,
        );
      }
      if (hdr.tokens < 0) throw inputError(`${what}: header at byte ${start} has a negative token count`);
      let left = hdr.tokens;
      while (left > 0) {
        const n = Math.min(left, chunkTokens);
        const b = await r.exact(n * 2);
        if (b.length < n * 2) {
          throw inputError(
            `${what}: shard ${shardNo} (header at byte ${start}) announces ${hdr.tokens} tokens but the stream ends after ${
              hdr.tokens - left + (b.length >> 1)
            }`,
          );
        }
        yield decodeU16(b);
        left -= n;
      }
      shardNo++;
      head = await r.exact(4);
      if (head.length === 0) return;
    }
  } finally {
    await r.cancel();
  }
}
