// From command-line inputs to a stream of documents. Each input (a path or `-` for stdin) is detected
// as an OpenWebText archive or folder, a tar of documents, JSON Lines, a folder of .txt files or plain
// text, then read as a stream: nested tar-in-xz is decoded on the fly, never unpacked to disk.
//
// Inputs are cut into "units" (a .txt file, a JSONL file, an OpenWebText urlsf_subset archive, stdin),
// numbered in a deterministic order; `--part i/N` keeps units whose number is i-1 modulo N, so parts
// can run on different machines and together cover every unit exactly once.
import { join } from "node:path";
import { inputError, usageError } from "../errors.ts";
import { autoDecompress, peek } from "./decompress.ts";
import { readTar } from "./tar.ts";
import { decodeUtf8, splitDocs, Utf8Stream } from "./text.ts";

export type InputFormat = "auto" | "owt" | "tar" | "jsonl" | "txt";
export const INPUT_FORMATS: InputFormat[] = ["auto", "owt", "tar", "jsonl", "txt"];

export interface Doc {
  text: string;
  /** Where the document came from, for messages: file, archive member or JSONL line. */
  source: string;
}

export interface ReadOptions {
  format: InputFormat;
  /** JSONL field holding the text. */
  field: string;
  /** Separator for plain text (stdin and text files): "blank" lines, a literal, or undefined (whole input). */
  docSep?: RegExp | string;
  /** [index (0-based), count] of the partition to keep. */
  part: [number, number];
  stdin?: ReadableStream<Uint8Array>;
  /** Largest document in bytes (a JSONL line, a .txt file or member, a --doc-sep document); larger is exit 3. */
  maxDocBytes?: number;
}

/** Default of --max-doc-bytes: far above any web page, and bounds the memory one document takes. */
export const DEFAULT_MAX_DOC_BYTES = 64_000_000;

/** The input error for a document over the limit. */
function docTooLong(where: string, size: string, limit: number): Error {
  return inputError(
    `${where}: a document of ${size} is larger than --max-doc-bytes ${limit}; raise --max-doc-bytes ` +
      `(tokenizing takes about 14 bytes of memory per byte of a document) or split the text into documents ` +
      `(--doc-sep, one JSONL line each)`,
  );
}

/** Counters the readers update as they go (for progress, warnings and meta.json). */
export class ReadStats {
  /** Raw bytes read from input files (compressed size), for MB/s and ETA. */
  inputBytes = 0;
  /** Invalid UTF-8 sequences replaced by U+FFFD. */
  replaced = 0;
  /** Sources with invalid UTF-8 and their counts (the first few, for warnings). */
  replacedIn: { source: string; count: number }[] = [];
  units = 0;
  unitsKept = 0;
  emptyDocs = 0;

  noteReplaced(source: string, count: number): void {
    if (count === 0) return;
    this.replaced += count;
    if (this.replacedIn.length < 20) this.replacedIn.push({ source, count });
  }
}

/** Counts raw bytes as they are read. */
function counted(stream: ReadableStream<Uint8Array>, stats: ReadStats): ReadableStream<Uint8Array> {
  return stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        stats.inputBytes += chunk.length;
        c.enqueue(chunk);
      },
    }),
  );
}

async function openFile(path: string, stats: ReadStats): Promise<ReadableStream<Uint8Array>> {
  try {
    const f = await Deno.open(path);
    return counted(f.readable, stats);
  } catch (err) {
    throw inputError(`${path}: cannot open (${(err as Error).message})`);
  }
}

/** Sorted paths of files under `dir` (recursive) that `want` accepts. */
async function listFiles(dir: string, want: (name: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    const entries: Deno.DirEntry[] = [];
    for await (const e of Deno.readDir(d)) entries.push(e);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.isFile && want(e.name)) out.push(p);
    }
  };
  await walk(dir);
  return out;
}

const OWT_MEMBER = /\.(xz|gz|tar)$/i;
const TEXT_MEMBER = /\.txt$/i;

/** Whether bytes after decompression look like a tar archive ("ustar" magic at 257). */
function looksLikeTar(head: Uint8Array): boolean {
  return head.length >= 262 && new TextDecoder().decode(head.subarray(257, 262)) === "ustar";
}

/** Whether the start of a stream is a JSON object on its first line holding `field`. */
function looksLikeJsonl(head: Uint8Array, field: string): boolean {
  const text = new TextDecoder().decode(head);
  if (!text.trimStart().startsWith("{")) return false;
  const nl = text.indexOf("\n");
  if (nl === -1) return false;
  try {
    const v = JSON.parse(text.slice(0, nl));
    return v !== null && typeof v === "object" && typeof v[field] === "string";
  } catch {
    return false;
  }
}

/** All documents of the inputs (paths, `-` = stdin), in a deterministic order, filtered by the partition. */
export async function* readDocuments(
  inputs: string[],
  opts: ReadOptions,
  stats: ReadStats,
): AsyncGenerator<Doc> {
  const [partIndex, partCount] = opts.part;
  /** Numbers the next unit; true when it belongs to this partition. */
  const takeUnit = (): boolean => {
    const mine = stats.units++ % partCount === partIndex;
    if (mine) stats.unitsKept++;
    return mine;
  };

  for (const input of inputs) {
    if (input === "-") {
      if (!takeUnit()) continue;
      const stdin = opts.stdin ?? Deno.stdin.readable;
      yield* readStream(counted(stdin, stats), "stdin", opts, stats, takeUnit, false);
      continue;
    }
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(input);
    } catch {
      throw inputError(`${input}: no such file or folder`);
    }
    if (st.isDirectory) {
      yield* readFolder(input, opts, stats, takeUnit);
    } else {
      yield* readPath(input, opts, stats, takeUnit);
    }
  }
}

async function* readFolder(
  dir: string,
  opts: ReadOptions,
  stats: ReadStats,
  takeUnit: () => boolean,
): AsyncGenerator<Doc> {
  const fmt = opts.format;
  const archives = fmt === "auto" || fmt === "owt" || fmt === "tar"
    ? await listFiles(dir, (n) => /^urlsf_subset.*\.xz$/i.test(n) || (fmt !== "auto" && OWT_MEMBER.test(n)))
    : [];
  if (archives.length > 0) {
    // An unpacked OpenWebText folder: every urlsf_subset*.xz is an xz tar of .txt documents (one unit each).
    for (const a of archives) {
      if (!takeUnit()) continue;
      const { stream } = await autoDecompress(await openFile(a, stats), a);
      yield* tarDocs(stream, a, opts, stats);
    }
    return;
  }
  if (fmt === "owt" || fmt === "tar") {
    throw inputError(
      `${dir}: no urlsf_subset*.xz archives in this folder; is it the unpacked openwebtext/ folder?`,
    );
  }
  const wantJsonl = fmt === "jsonl";
  const files = await listFiles(
    dir,
    (n) => (wantJsonl ? /\.jsonl(\.gz|\.xz)?$/i.test(n) : TEXT_MEMBER.test(n)),
  );
  if (files.length === 0) {
    throw inputError(
      `${dir}: no ${
        wantJsonl ? ".jsonl" : ".txt"
      } files in this folder (documents are read from *.txt files, ` +
        `OpenWebText from urlsf_subset*.xz; use --format to say what it holds)`,
    );
  }
  for (const f of files) yield* readPath(f, opts, stats, takeUnit);
}

/** One file: a unit of its own, except a tar archive whose nested archives are units. */
async function* readPath(
  path: string,
  opts: ReadOptions,
  stats: ReadStats,
  takeUnit: () => boolean,
): AsyncGenerator<Doc> {
  const isArchive = /\.(tar|tar\.xz|txz|tar\.gz|tgz)$/i.test(path) || opts.format === "owt" ||
    opts.format === "tar";
  // A tar archive's units are decided member by member inside it; any other file is one unit.
  if (!isArchive && !takeUnit()) return;
  yield* readStream(await openFile(path, stats), path, opts, stats, takeUnit, !isArchive);
}

/** Detects the format of a (possibly compressed) byte stream and reads its documents. */
async function* readStream(
  raw: ReadableStream<Uint8Array>,
  what: string,
  opts: ReadOptions,
  stats: ReadStats,
  takeUnit: () => boolean,
  unitTaken: boolean,
): AsyncGenerator<Doc> {
  const { stream: plain } = await autoDecompress(raw, what);
  const { head, stream } = await peek(plain, 64 * 1024);
  let kind: "tar" | "jsonl" | "txt";
  if (opts.format === "owt" || opts.format === "tar") kind = "tar";
  else if (opts.format === "jsonl") kind = "jsonl";
  else if (opts.format === "txt") kind = "txt";
  else if (looksLikeTar(head)) kind = "tar";
  else if (/\.jsonl(\.gz|\.xz)?$/i.test(what) || looksLikeJsonl(head, opts.field)) kind = "jsonl";
  else kind = "txt";
  if (kind === "tar" && !looksLikeTar(head)) {
    await stream.cancel();
    throw inputError(`${what}: not a tar archive (no ustar header); check --format`);
  }
  if (kind === "tar") {
    // Nested archives (OpenWebText's urlsf_subset*.xz) are units; plain .txt members are documents.
    yield* tarDocs(stream, what, opts, stats, unitTaken ? undefined : takeUnit);
  } else if (kind === "jsonl") {
    yield* jsonlDocs(stream, what, opts.field, stats, opts.maxDocBytes ?? DEFAULT_MAX_DOC_BYTES);
  } else {
    yield* textDocs(stream, what, opts.docSep, stats, opts.maxDocBytes ?? DEFAULT_MAX_DOC_BYTES);
  }
}

/**
 * Documents of a tar stream: `.txt` members are documents; `.xz`/`.gz`/`.tar` members are nested tars;
 * other members are skipped. With `takeUnit`, each member is a partition unit of its own.
 */
async function* tarDocs(
  stream: ReadableStream<Uint8Array>,
  what: string,
  opts: ReadOptions,
  stats: ReadStats,
  takeUnit?: () => boolean,
): AsyncGenerator<Doc> {
  for await (const m of readTar(stream, what)) {
    if (m.type !== "file") continue;
    const where = `${what} > ${m.name}`;
    if (OWT_MEMBER.test(m.name)) {
      if (takeUnit && !takeUnit()) continue;
      const { stream: inner } = await autoDecompress(m.stream(), where);
      yield* tarDocs(inner, where, opts, stats);
    } else if (TEXT_MEMBER.test(m.name)) {
      if (takeUnit && !takeUnit()) continue; // a plain tar of documents: each member is a unit
      const limit = opts.maxDocBytes ?? DEFAULT_MAX_DOC_BYTES;
      if (m.size > limit) throw docTooLong(where, `${m.size} bytes`, limit);
      const { text, replaced } = decodeUtf8(await m.bytes());
      stats.noteReplaced(where, replaced);
      if (text.length === 0) {
        stats.emptyDocs++;
        continue;
      }
      if (opts.docSep !== undefined) {
        for await (const d of splitDocs(one(text), opts.docSep)) yield { text: d, source: where };
      } else yield { text, source: where };
    }
  }
}

async function* one(s: string): AsyncGenerator<string> {
  yield s;
}

/**
 * Lines of a byte stream as byte arrays (without the newline), with 1-based line numbers. A line longer
 * than a chunk is gathered as pieces and joined once (joining on every chunk was quadratic); one longer
 * than `maxBytes` throws `tooLong(lineNo, bytes)` as soon as it passes the limit.
 */
async function* lines(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
  tooLong: (lineNo: number, bytes: number) => Error,
): AsyncGenerator<[Uint8Array, number]> {
  let carry: Uint8Array[] = [];
  let carryLen = 0;
  let n = 0;
  const joined = (last: Uint8Array): Uint8Array => {
    if (carry.length === 0) return last;
    const out = new Uint8Array(carryLen + last.length);
    let o = 0;
    for (const c of carry) out.set(c, o), o += c.length;
    out.set(last, o);
    carry = [], carryLen = 0;
    return out;
  };
  for await (const chunk of stream as AsyncIterable<Uint8Array>) {
    let start = 0;
    let i: number;
    while ((i = chunk.indexOf(10, start)) !== -1) {
      if (carryLen + i - start > maxBytes) throw tooLong(n + 1, carryLen + i - start);
      yield [joined(chunk.subarray(start, i)), ++n];
      start = i + 1;
    }
    if (start < chunk.length) {
      carry.push(chunk.slice(start));
      carryLen += chunk.length - start;
      if (carryLen > maxBytes) throw tooLong(n + 1, carryLen);
    }
  }
  if (carryLen > 0) yield [joined(new Uint8Array(0)), ++n];
}

async function* jsonlDocs(
  stream: ReadableStream<Uint8Array>,
  what: string,
  field: string,
  stats: ReadStats,
  maxDocBytes: number,
): AsyncGenerator<Doc> {
  const tooLong = (lineNo: number, bytes: number) =>
    docTooLong(`${what}: line ${lineNo}`, `more than ${bytes} bytes`, maxDocBytes);
  for await (const [bytes, lineNo] of lines(stream, maxDocBytes, tooLong)) {
    const { text: line, replaced } = decodeUtf8(bytes);
    const where = `${what}: line ${lineNo}`;
    stats.noteReplaced(where, replaced);
    if (line.trim() === "") continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw inputError(
        `${where}: not valid JSON (${
          (err as Error).message
        }). Each line must be one JSON object like {"${field}": "..."}`,
      );
    }
    const value = obj !== null && typeof obj === "object"
      ? (obj as Record<string, unknown>)[field]
      : undefined;
    if (typeof value !== "string") {
      throw inputError(
        `${where}: no string field "${field}" in this JSON line` +
          (obj !== null && typeof obj === "object"
            ? ` (fields: ${Object.keys(obj).slice(0, 8).join(", ")})`
            : "") +
          `. Name the text field with --field.`,
      );
    }
    if (value.length === 0) {
      stats.emptyDocs++;
      continue;
    }
    yield { text: value, source: where };
  }
}

async function* textDocs(
  stream: ReadableStream<Uint8Array>,
  what: string,
  docSep: RegExp | string | undefined,
  stats: ReadStats,
  maxDocBytes: number,
): AsyncGenerator<Doc> {
  if (docSep === undefined) {
    // The whole input is one document.
    const parts: Uint8Array[] = [];
    let total = 0;
    for await (const c of stream) {
      parts.push(c), total += c.length;
      if (total > maxDocBytes) throw docTooLong(what, `more than ${total} bytes`, maxDocBytes);
    }
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) all.set(p, o), o += p.length;
    const { text, replaced } = decodeUtf8(all);
    stats.noteReplaced(what, replaced);
    if (text.length === 0) {
      stats.emptyDocs++;
      return;
    }
    yield { text, source: what };
    return;
  }
  const u = new Utf8Stream();
  async function* chunks(): AsyncGenerator<string> {
    for await (const c of stream) yield u.push(c);
    yield u.push(new Uint8Array(0), true);
  }
  let n = 0;
  const tooLong = {
    maxChars: maxDocBytes,
    fail: (chars: number) =>
      docTooLong(`${what}: document ${n + 1}`, `more than ${chars} characters`, maxDocBytes),
  };
  for await (const d of splitDocs(chunks(), docSep, tooLong)) {
    yield { text: d, source: `${what}: document ${++n}` };
  }
  stats.noteReplaced(what, u.replaced);
}

/** Parses `--part i/N` into a 0-based index and a count. */
export function parsePart(raw: string | undefined, cmd: string): [number, number] {
  if (raw === undefined) return [0, 1];
  const m = /^(\d+)\/(\d+)$/.exec(raw.trim());
  const i = m ? Number(m[1]) : NaN, n = m ? Number(m[2]) : NaN;
  if (!m || n < 1 || i < 1 || i > n) {
    throw usageError(`lmpipe ${cmd}: --part must be i/N with 1 <= i <= N (e.g. --part 3/16), got '${raw}'`);
  }
  return [i - 1, n];
}

/** A short label for a part, used in shard names: p003of016. */
export function partLabel(part: [number, number]): string {
  const w = Math.max(3, String(part[1]).length);
  return `p${String(part[0] + 1).padStart(w, "0")}of${String(part[1]).padStart(w, "0")}`;
}
