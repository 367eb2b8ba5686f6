// Writing token shards safely. Tokens go to `<name>.tmp` in the output folder through a write buffer; a
// shard is cut on a document boundary once it would pass --shard-tokens; the llm.c header (which needs
// the token count) is written last; the caller renames every .tmp file only after the whole run has
// succeeded, so a killed or failed run never leaves a shard that looks whole.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { outputError } from "./errors.ts";
import { writeAll, writeFailure } from "./fs.ts";
import { encodeU16, HEADER_BYTES, type ShardFormat, shardHeader } from "./shard.ts";

export interface ShardRecord {
  /** Final file name inside the output folder. */
  file: string;
  split: string;
  tokens: number;
  docs: number;
  /** UTF-8 bytes of the documents' text. */
  bytes: number;
  sha256?: string;
}

const BUFFER_BYTES = 1 << 20;

/** Writes one split ("train" or "val") as a sequence of shards named `<split>[_<part>]_NNNNNN.bin`. */
export class ShardWriter {
  readonly records: ShardRecord[] = [];
  #file: Deno.FsFile | null = null;
  #tmpPath = "";
  #cur: ShardRecord | null = null;
  #buf = new Uint8Array(BUFFER_BYTES);
  #bufLen = 0;

  constructor(
    readonly dir: string,
    readonly split: string,
    readonly format: ShardFormat,
    /** Most tokens per shard (llm.c format); a document larger than this gets a shard of its own. */
    readonly shardTokens: number,
    readonly partLabel: string | null,
  ) {}

  /** Final name of shard number `n`. */
  name(n: number): string {
    const part = this.partLabel ? `_${this.partLabel}` : "";
    if (this.format === "nanogpt") return `${this.split}${part}.bin`;
    return `${this.split}${part}_${String(n).padStart(6, "0")}.bin`;
  }

  /** Temp files written so far (to rename on success or remove on failure). */
  tmpPaths(): string[] {
    return this.records.map((r) => join(this.dir, r.file + ".tmp"));
  }

  /** Appends one document's tokens (the caller includes the EOT). */
  async addDoc(tokens: Uint16Array, bytes: number): Promise<void> {
    const cur = this.#cur;
    if (cur && this.format === "llmc" && cur.tokens > 0 && cur.tokens + tokens.length > this.shardTokens) {
      await this.#close();
    }
    if (!this.#cur) await this.#open();
    const rec = this.#cur!;
    if (rec.tokens + tokens.length > 0x7fffffff) {
      throw outputError(
        `${this.#tmpPath}: a shard cannot hold more than 2^31-1 tokens; lower --shard-tokens`,
      );
    }
    await this.#write(encodeU16(tokens));
    rec.tokens += tokens.length;
    rec.docs++;
    rec.bytes += bytes;
  }

  /** Closes the last shard. */
  async finish(): Promise<ShardRecord[]> {
    if (this.#cur) await this.#close();
    return this.records;
  }

  /** Closes without finishing (after a failure); the caller removes the temp files. */
  abort(): void {
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = null;
  }

  async #open(): Promise<void> {
    const rec: ShardRecord = {
      file: this.name(this.records.length),
      split: this.split,
      tokens: 0,
      docs: 0,
      bytes: 0,
    };
    this.#tmpPath = join(this.dir, rec.file + ".tmp");
    try {
      this.#file = await Deno.open(this.#tmpPath, { write: true, create: true, truncate: true });
    } catch (err) {
      throw writeFailure(this.#tmpPath, err);
    }
    this.records.push(rec);
    this.#cur = rec;
    if (this.format === "llmc") await this.#write(new Uint8Array(HEADER_BYTES)); // placeholder, filled at close
  }

  async #write(bytes: Uint8Array): Promise<void> {
    if (this.#bufLen + bytes.length > this.#buf.length) {
      await this.#flush();
      if (bytes.length > this.#buf.length) {
        try {
          await writeAll(this.#file!, bytes);
        } catch (err) {
          throw writeFailure(this.#tmpPath, err);
        }
        return;
      }
    }
    this.#buf.set(bytes, this.#bufLen);
    this.#bufLen += bytes.length;
  }

  async #flush(): Promise<void> {
    if (this.#bufLen === 0) return;
    try {
      await writeAll(this.#file!, this.#buf.subarray(0, this.#bufLen));
    } catch (err) {
      throw writeFailure(this.#tmpPath, err);
    }
    this.#bufLen = 0;
  }

  async #close(): Promise<void> {
    await this.#flush();
    const f = this.#file!;
    const rec = this.#cur!;
    try {
      if (this.format === "llmc") {
        await f.seek(0, Deno.SeekMode.Start);
        await writeAll(f, shardHeader(rec.tokens));
      }
      await f.syncData();
    } catch (err) {
      throw writeFailure(this.#tmpPath, err);
    } finally {
      f.close();
      this.#file = null;
      this.#cur = null;
    }
    rec.sha256 = await sha256File(this.#tmpPath);
  }
}

/** sha256 of a file, read in chunks. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  const f = await Deno.open(path);
  try {
    const buf = new Uint8Array(1 << 20);
    while (true) {
      const n = await f.read(buf);
      if (n === null) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return h.digest("hex");
}

/**
 * Token output to a stream (`--out -`): llm.c format is written as consecutive chunks, each with its own
 * header, cut on document boundaries every `chunkTokens`; nanoGPT format is the raw tokens. lmpipe's
 * stream readers (lib/shard.ts readTokenStream) accept both.
 */
export class StreamTokenWriter {
  #buf: Uint16Array;
  #len = 0;
  tokens = 0;
  docs = 0;
  bytes = 0;
  chunks = 0;

  constructor(
    readonly out: (b: Uint8Array) => Promise<void>,
    readonly format: ShardFormat,
    readonly chunkTokens: number,
  ) {
    this.#buf = new Uint16Array(chunkTokens);
  }

  async addDoc(tokens: Uint16Array, bytes: number): Promise<void> {
    if (this.#len > 0 && this.#len + tokens.length > this.#buf.length) await this.#flush();
    if (tokens.length > this.#buf.length) {
      await this.#emit(tokens);
    } else {
      this.#buf.set(tokens, this.#len);
      this.#len += tokens.length;
    }
    this.tokens += tokens.length;
    this.docs++;
    this.bytes += bytes;
  }

  async finish(): Promise<void> {
    await this.#flush();
  }

  async #flush(): Promise<void> {
    if (this.#len === 0) return;
    await this.#emit(this.#buf.subarray(0, this.#len));
    this.#len = 0;
  }

  async #emit(tokens: Uint16Array): Promise<void> {
    if (this.format === "llmc") await this.out(shardHeader(tokens.length));
    await this.out(encodeU16(tokens).slice());
    this.chunks++;
  }
}
