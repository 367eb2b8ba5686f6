// Bytes to text for tokenizing: UTF-8 decoding that replaces invalid sequences with U+FFFD and counts
// them (so a damaged corpus is reported, not silently mangled), and splitting a plain-text stream into
// documents at a separator (`--doc-sep blank` or a literal string) without holding the stream in memory.

const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lossy = new TextDecoder("utf-8", { ignoreBOM: true });

/** U+FFFD characters in `s`. */
function countReplacement(s: string): number {
  let n = 0, i = -1;
  while ((i = s.indexOf("\uFFFD", i + 1)) !== -1) n++;
  return n;
}

/** Occurrences of the bytes EF BF BD (a literal, valid U+FFFD) in `b`. */
function countLiteralReplacement(b: Uint8Array): number {
  let n = 0;
  for (let i = b.indexOf(0xef); i !== -1 && i + 2 < b.length; i = b.indexOf(0xef, i + 1)) {
    if (b[i + 1] === 0xbf && b[i + 2] === 0xbd) n++;
  }
  return n;
}

/** Decodes UTF-8; returns the text and how many invalid sequences were replaced by U+FFFD. */
export function decodeUtf8(bytes: Uint8Array): { text: string; replaced: number } {
  try {
    return { text: fatal.decode(bytes), replaced: 0 };
  } catch {
    const text = lossy.decode(bytes);
    return { text, replaced: Math.max(0, countReplacement(text) - countLiteralReplacement(bytes)) };
  }
}

/** Streaming UTF-8 decoding with the same replacement count (sequences split across chunks are joined). */
export class Utf8Stream {
  #dec = new TextDecoder("utf-8", { ignoreBOM: true });
  #tail = new Uint8Array(0); // the last 2 bytes seen, for literal U+FFFD split across chunks
  replaced = 0;

  push(chunk: Uint8Array, final = false): string {
    const text = this.#dec.decode(chunk, { stream: !final });
    let lit = 0;
    if (text.includes("\uFFFD")) {
      const joined = new Uint8Array(this.#tail.length + chunk.length);
      joined.set(this.#tail), joined.set(chunk, this.#tail.length);
      lit = countLiteralReplacement(joined);
      this.replaced += Math.max(0, countReplacement(text) - lit);
    }
    if (chunk.length >= 2) this.#tail = chunk.slice(chunk.length - 2);
    else this.#tail = new Uint8Array([...this.#tail, ...chunk].slice(-2));
    return text;
  }
}

/** UTF-8 byte length of a string (without encoding it). */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 2; // 4 bytes for 2 code units
        i++;
      } else n += 2;
    } else n += 2;
  }
  return n;
}

/** Turns a --doc-sep value into a separator: "blank" (blank lines) or a literal with \n, \t, \r, \\ escapes. */
export function parseDocSep(raw: string): RegExp | string {
  if (raw === "blank") return /\r?\n(?:[ \t]*\r?\n)+/g;
  return raw.replace(/\\([ntr\\])/g, (_, c) => ({ n: "\n", t: "\t", r: "\r", "\\": "\\" })[c as "n"]);
}

/**
 * Splits a stream of text chunks into documents at `sep`. Empty documents are dropped (and, for blank
 * line separation, whitespace-only ones). Only the current partial document is held in memory, as the
 * pieces it arrived in, and each chunk is searched once: the time is linear in the text, however long
 * a document is (searching a growing buffer again on every chunk was quadratic). With `maxDocChars`, a
 * longer document throws (via `tooLong`) as soon as it passes the limit.
 */
export async function* splitDocs(
  chunks: AsyncIterable<string>,
  sep: RegExp | string,
  tooLong?: { maxChars: number; fail: (chars: number) => Error },
): AsyncGenerator<string> {
  const keep = (d: string) => (typeof sep === "string" ? d.length > 0 : d.trim().length > 0);
  let parts: string[] = []; // the current document's text before `tail`
  let partsChars = 0;
  let tail = ""; // the buffered end, where a separator may have begun
  function* scan(chunk: string, final: boolean): Generator<string> {
    const work = tail + chunk;
    let start = 0;
    let pending = -1; // a regex separator touching the end of the text, which may still grow
    const doc = (end: string) => {
      const d = parts.length ? parts.join("") + end : end;
      parts = [], partsChars = 0;
      return d;
    };
    if (typeof sep === "string") {
      let i: number;
      while ((i = work.indexOf(sep, start)) !== -1) {
        const d = doc(work.slice(start, i));
        if (keep(d)) yield d;
        start = i + sep.length;
      }
    } else {
      let m: RegExpExecArray | null;
      sep.lastIndex = start;
      while ((m = sep.exec(work)) !== null) {
        if (!final && m.index + m[0].length >= work.length) {
          pending = m.index;
          break;
        }
        const d = doc(work.slice(start, m.index));
        if (keep(d)) yield d;
        start = m.index + m[0].length;
        sep.lastIndex = start;
      }
    }
    if (final) {
      tail = "";
      const d = doc(work.slice(start));
      if (keep(d)) yield d;
      return;
    }
    // Where an unfinished separator may begin: the last sep.length-1 chars of a literal; for blank lines
    // the pending match, else the last newline (or the \r before it), else the very last char (a \r).
    let cut: number;
    if (typeof sep === "string") cut = Math.max(start, work.length - sep.length + 1);
    else if (pending >= 0) cut = pending;
    else {
      const nl = work.lastIndexOf("\n");
      // A separator can begin at that newline only while nothing but spaces and tabs follows it.
      const open = nl >= start && !/[^ \t\r]/.test(work.slice(nl + 1));
      cut = Math.max(start, open ? nl - 1 : work.length - 1);
    }
    if (cut > start) {
      parts.push(work.slice(start, cut));
      partsChars += cut - start;
    }
    tail = work.slice(cut);
    if (tooLong && partsChars + tail.length > tooLong.maxChars) throw tooLong.fail(partsChars + tail.length);
  }
  for await (const c of chunks) yield* scan(c, false);
  yield* scan("", true);
}
