// Pull-style reading of a byte stream: exact-length reads, bounded chunk reads and skips over a
// ReadableStream, which is what a tar parser needs (headers of 512 bytes, bodies of known size)
// without ever holding more than one upstream chunk in memory.

export class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #done = false;
  /** Bytes handed out so far (the offset of the next byte). */
  position = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Makes at least one byte available; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    while (this.#buf.length === 0) {
      if (this.#done) return false;
      const { value, done } = await this.#reader.read();
      if (done) {
        this.#done = true;
        return false;
      }
      this.#buf = value;
    }
    return true;
  }

  /** Up to `max` bytes (at least 1), or null at the end. The result may be a view into upstream data. */
  async chunk(max: number): Promise<Uint8Array | null> {
    checkCount(max, "chunk");
    if (!(await this.#fill())) return null;
    const n = Math.min(max, this.#buf.length);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    this.position += n;
    return out;
  }

  /** Exactly `n` bytes (a fresh copy), or fewer when the stream ends first (check the length). */
  async exact(n: number): Promise<Uint8Array> {
    checkCount(n, "exact");
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = await this.chunk(n - off);
      if (c === null) return out.subarray(0, off);
      out.set(c, off);
      off += c.length;
    }
    return out;
  }

  /** Skips `n` bytes; returns how many were skipped (fewer at the end of the stream). */
  async skip(n: number): Promise<number> {
    checkCount(n, "skip");
    let left = n;
    while (left > 0) {
      const c = await this.chunk(left);
      if (c === null) break;
      left -= c.length;
    }
    return n - left;
  }

  /** Stops reading upstream (e.g. after an error). */
  async cancel(): Promise<void> {
    try {
      await this.#reader.cancel();
    } catch { /* already errored */ }
  }
}

/** Byte counts must be whole and non-negative: a fraction would make the read loops spin forever. */
function checkCount(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`ByteReader.${what}: bad byte count ${n}`);
}
