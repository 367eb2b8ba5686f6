// `lmpipe tokenize`: text in (OpenWebText archives or folders, tars, JSONL, .txt, stdin), GPT-2 tokens
// out (llm.c or nanoGPT shards in a folder, or one token stream on stdout). Documents stream from the
// readers (lib/readers/) through the Web Worker encode pool (lib/encode_pool.ts, results in input order)
// into the shard writers (lib/shard_writer.ts); every document is followed by the EOT token 50256.
import { join, resolve } from "node:path";
import { EncodePool } from "../../lib/encode_pool.ts";
import { inputError, outputError, usageError } from "../../lib/errors.ts";
import { bool, num, parseCount, parseFlags, str } from "../../lib/flags.ts";
import { fmtBytes, fmtCount, fmtDuration, info, progress, warn } from "../../lib/log.ts";
import {
  DEFAULT_MAX_DOC_BYTES,
  INPUT_FORMATS,
  type InputFormat,
  parsePart,
  partLabel,
  readDocuments,
  ReadStats,
} from "../../lib/readers/documents.ts";
import { parseDocSep, utf8Length } from "../../lib/readers/text.ts";
import type { ShardFormat } from "../../lib/shard.ts";
import { type ShardRecord, ShardWriter, StreamTokenWriter } from "../../lib/shard_writer.ts";
import { writeAll, writeAtomic, writeFailure } from "../../lib/fs.ts";
import { EOT, TOKENIZER_NAME, VOCAB_SIZE } from "../../lib/tokenizer.ts";
import { VERSION } from "../../lib/version.ts";
import { isVal } from "./split.ts";
import { peakRss } from "../../lib/rss.ts";

const CMD = "tokenize";

const HELP = `lmpipe tokenize [INPUT ...] --out DIR|- [options]

Encodes text with GPT-2 BPE (encode_ordinary: a literal <|endoftext|> in a document is plain text),
appends the end-of-text token ${EOT} after every document, and writes token shards.

Inputs (several allowed; '-' or none reads stdin; the format is detected, --format overrides):
  openwebtext.tar.xz     OpenWebText as released, or its unpacked openwebtext/ folder of urlsf_subset*.xz:
                         streamed (xz > tar > xz > tar > .txt), never unpacked to disk
  *.tar[.xz|.gz]         any tar of .txt documents (or of nested .xz/.gz tars)
  *.jsonl[.gz|.xz]       JSON Lines, one document per line in the --field text field
  *.txt, FOLDER          plain text, one document per file (folders: every *.txt inside, sorted by path)
  -                      stdin, format detected (compressed, tar, JSONL or plain text)
Plain text (stdin or .txt) is one document per input unless --doc-sep splits it.

Options:
  --out DIR|-            output folder, or - for one token stream on stdout (required)
  --format F             auto | owt | tar | jsonl | txt (default: auto)
  --field NAME           JSONL field holding the text (default: text)
  --doc-sep SEP          split plain text into documents: 'blank' (blank lines) or a literal string
                         with \\n \\t escapes, e.g. --doc-sep '\\n---\\n' (default: none, whole input)
  --val-fraction F       share of documents for validation, decided per document by a hash of its
                         text and --seed (default: 0.0005, as nanoGPT uses for OpenWebText)
  --seed N               seed of the train/val hash (default: 0)
  --shard-tokens N       most tokens per shard, cut on document boundaries; accepts 50k, 100M, 1G
                         (default: 100M; llm.c format only)
  --shard-format F       llmc (1024-byte header + uint16, train_000000.bin ...) or nanogpt
                         (headerless train.bin / val.bin, not cut) (default: llmc)
  --workers N            encoding threads; 0 encodes on the main thread; output is byte-identical for
                         any N (default: all cores, here ${navigator.hardwareConcurrency})
  --part i/N             process only the i-th of N partitions: input units (a .txt or .jsonl file, an
                         OpenWebText urlsf_subset archive, a tar member) numbered in order, unit k goes to
                         part (k mod N)+1; shard names carry the part (train_p003of016_000000.bin) and
                         the folder's meta file is meta_p003of016.json (default: everything)
  --max-doc-bytes N      largest document (a JSONL line, a .txt file or tar member, a --doc-sep document);
                         a larger one stops with exit 3. Accepts 500M, 2G (default: 64M)
  --force                replace shards already in --out (otherwise refused)
  --json                 print a JSON summary on stdout when done (folder output only)
  -h, --help             show this help

Output folder: train_*.bin and val_*.bin shards plus meta.json (tokenizer, vocab size, EOT id, docs,
tokens and bytes per split, every shard with its token count and sha256, the command and options,
lmpipe version, invalid UTF-8 count). Shards are written as .tmp files and renamed only when the whole
run succeeds, so an interrupted run leaves no shard that looks complete.
With --out -, every document goes to stdout (no train/val split) as consecutive llm.c chunks, each
with its own header (about 1M tokens each, on document boundaries), or raw uint16 with nanogpt.

Memory: bounded, independent of the input's size: about 150 MB for the process and its V8 heap, plus
about 4 MiB of text per worker in flight, plus about 14 bytes per byte of the largest single document (a
whole stdin or .txt file without --doc-sep is one document), which --max-doc-bytes bounds (64M: < 1 GB). V8 may let its heap grow lazily by a few tens of MB when memory is
plentiful; with --v8-flags=--max-old-space-size=32 a 24 MB run peaks within 24 MB of a 2 MB run
(tests/shard_test.ts).

Example:
  lmpipe tokenize fixtures/corpus --out /tmp/fixture-shards --val-fraction 0.05 --force
`;

/** Hooks for running in-process (tests); the CLI uses the defaults. */
export interface TokenizeEnv {
  stdin?: ReadableStream<Uint8Array>;
  stdout?: (b: Uint8Array) => Promise<void>;
  /** Clean up temp files on SIGINT/SIGTERM (default true). */
  signals?: boolean;
}

const SHARD_NAME = /^(train|val)(_p\d+of\d+)?(_\d{6})?\.bin(\.tmp)?$/;
const META_NAME = /^(meta)(_p\d+of\d+)?\.json$/;

export async function run(argv: string[], env: TokenizeEnv = {}): Promise<void> {
  const p = parseFlags(CMD, argv, {
    out: { type: "string" },
    format: { type: "string" },
    field: { type: "string" },
    "doc-sep": { type: "string" },
    "val-fraction": { type: "string" },
    seed: { type: "string" },
    "shard-tokens": { type: "string" },
    "shard-format": { type: "string" },
    workers: { type: "string" },
    part: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
    "max-doc-bytes": { type: "string" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const out = str(p, "out");
  if (!out) throw usageError(`lmpipe ${CMD}: --out DIR|- is required\nSee 'lmpipe ${CMD} --help'.`);
  const format = str(p, "format", "auto") as InputFormat;
  if (!INPUT_FORMATS.includes(format)) {
    throw usageError(`lmpipe ${CMD}: --format must be one of ${INPUT_FORMATS.join(", ")}, got '${format}'`);
  }
  const field = str(p, "field", "text");
  const docSepRaw = str(p, "doc-sep");
  if (docSepRaw === "") throw usageError(`lmpipe ${CMD}: --doc-sep must not be empty`);
  const docSep = docSepRaw === undefined ? undefined : parseDocSep(docSepRaw);
  const valFraction = num(p, CMD, "val-fraction", 0.0005, { min: 0, max: 1 });
  const seed = num(p, CMD, "seed", 0, { integer: true, min: 0, max: 0xffffffff });
  const shardTokens = parseCount(CMD, "shard-tokens", str(p, "shard-tokens", "100M"));
  if (shardTokens < 1 || shardTokens > 0x7fffffff) {
    throw usageError(
      `lmpipe ${CMD}: --shard-tokens must be between 1 and 2^31-1 (the llm.c header is int32)`,
    );
  }
  const shardFormat = str(p, "shard-format", "llmc") as ShardFormat;
  if (shardFormat !== "llmc" && shardFormat !== "nanogpt") {
    throw usageError(`lmpipe ${CMD}: --shard-format must be llmc or nanogpt, got '${shardFormat}'`);
  }
  const maxDocBytes = parseCount(
    CMD,
    "max-doc-bytes",
    str(p, "max-doc-bytes", String(DEFAULT_MAX_DOC_BYTES)),
  );
  const workers = num(p, CMD, "workers", navigator.hardwareConcurrency, { integer: true, min: 0, max: 256 });
  const part = parsePart(str(p, "part"), CMD);
  const label = part[1] > 1 ? partLabel(part) : null;
  const inputs = p.positionals.length ? p.positionals : ["-"];
  if (inputs.filter((i) => i === "-").length > 1) {
    throw usageError(`lmpipe ${CMD}: stdin ('-') can be read only once`);
  }
  const toStdout = out === "-";
  if (toStdout && bool(p, "json")) {
    throw usageError(`lmpipe ${CMD}: --json needs a folder --out (stdout carries the tokens)`);
  }
  if (toStdout && str(p, "val-fraction") !== undefined) {
    warn("--out - writes every document to one stream; --val-fraction is ignored");
  }

  const stats = new ReadStats();
  const totalBytes = await inputSize(inputs);
  const options = {
    inputs,
    format,
    field,
    doc_sep: docSepRaw ?? null,
    val_fraction: toStdout ? 0 : valFraction,
    seed,
    shard_tokens: shardTokens,
    shard_format: shardFormat,
    workers,
    part: label ? { index: part[0] + 1, count: part[1], label } : null,
  };

  // --- output side
  let writers: Record<"train" | "val", ShardWriter> | null = null;
  let streamOut: StreamTokenWriter | null = null;
  let outDir = "";
  if (toStdout) {
    const write = env.stdout ?? (async (b: Uint8Array) => {
      try {
        await writeAll(Deno.stdout, b);
      } catch (err) {
        if (err instanceof Deno.errors.BrokenPipe) throw err; // the reader stopped: not a failure
        throw writeFailure("stdout", err, "The token stream written so far is incomplete.");
      }
    });
    streamOut = new StreamTokenWriter(write, shardFormat, Math.min(shardTokens, 1 << 20));
  } else {
    outDir = out;
    await prepareOutDir(outDir, label, bool(p, "force"));
    writers = {
      train: new ShardWriter(outDir, "train", shardFormat, shardTokens, label),
      val: new ShardWriter(outDir, "val", shardFormat, shardTokens, label),
    };
  }
  const tmpFiles = () => writers ? [...writers.train.tmpPaths(), ...writers.val.tmpPaths()] : [];
  const cleanup = () => {
    writers?.train.abort();
    writers?.val.abort();
    for (const f of tmpFiles()) {
      try {
        Deno.removeSync(f);
      } catch { /* gone already */ }
    }
  };
  const onSignal = () => {
    cleanup();
    Deno.exit(130);
  };
  const signals = env.signals ?? true;
  if (signals) {
    Deno.addSignalListener("SIGINT", onSignal);
    if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", onSignal);
  }

  // --- the pipeline: documents -> (split, bytes) queue + texts -> pool -> writers
  const t0 = performance.now();
  const queue: { val: boolean; bytes: number }[] = [];
  let qHead = 0;
  const counts = { docs: 0, tokens: 0, textBytes: 0 };
  async function* texts(): AsyncGenerator<string> {
    for await (
      const d of readDocuments(inputs, { format, field, docSep, part, stdin: env.stdin, maxDocBytes }, stats)
    ) {
      queue.push({ val: !toStdout && isVal(d.text, seed, valFraction), bytes: utf8Length(d.text) });
      yield d.text;
    }
  }
  const pool = EncodePool.create(workers);
  let lastDraw = 0;
  const draw = () => {
    const sec = (performance.now() - t0) / 1000;
    const rate = stats.inputBytes / Math.max(sec, 1e-3);
    const pct = totalBytes && part[1] === 1
      ? ` (${Math.min(100, (100 * stats.inputBytes) / totalBytes).toFixed(1)}%)`
      : "";
    const eta = totalBytes && part[1] === 1 && rate > 0
      ? `, ETA ${fmtDuration((totalBytes - stats.inputBytes) / rate)}`
      : "";
    progress(
      `tokenize: ${fmtBytes(stats.inputBytes)} read${pct}, ${fmtCount(counts.docs)} docs, ` +
        `${fmtCount(counts.tokens)} tokens, ${(rate / 1e6).toFixed(1)} MB/s${eta}`,
    );
  };
  try {
    for await (const ids of pool.encodeOrdered(texts())) {
      const m = queue[qHead];
      queue[qHead++] = undefined as never;
      if (qHead > 4096) queue.splice(0, qHead), qHead = 0;
      const doc = new Uint16Array(ids.length + 1);
      doc.set(ids);
      doc[ids.length] = EOT;
      if (streamOut) await streamOut.addDoc(doc, m.bytes);
      else await writers![m.val ? "val" : "train"].addDoc(doc, m.bytes);
      counts.docs++;
      counts.tokens += doc.length;
      counts.textBytes += m.bytes;
      const now = performance.now();
      if (now - lastDraw > 250) lastDraw = now, draw();
    }
    if (counts.docs === 0) {
      const why = part[1] > 1
        ? ` in part ${part[0] + 1}/${part[1]} (${stats.units} input unit(s) for ${part[1]} parts)`
        : "";
      throw inputError(
        `no documents${why} in ${inputs.join(", ")}` +
          (stats.emptyDocs ? ` (${stats.emptyDocs} empty document(s) skipped)` : "") +
          `; check the paths and --format/--field`,
      );
    }
    if (streamOut) await streamOut.finish();
    else {
      await writers!.train.finish();
      await writers!.val.finish();
    }
  } catch (err) {
    cleanup();
    throw err;
  } finally {
    pool.close();
    if (signals) {
      Deno.removeSignalListener("SIGINT", onSignal);
      if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", onSignal);
    }
  }
  const seconds = (performance.now() - t0) / 1000;

  if (stats.replaced > 0) {
    const where = stats.replacedIn.slice(0, 5).map((r) => `${r.source} (${r.count})`).join(", ");
    warn(
      `${stats.replaced} invalid UTF-8 sequence(s) replaced by U+FFFD, in ${where}` +
        (stats.replacedIn.length > 5 ? " and more" : "") + `; the count is recorded in meta.json`,
    );
  }
  if (streamOut) {
    info(
      `tokenize: ${fmtCount(streamOut.docs)} docs, ${fmtCount(streamOut.tokens)} tokens to stdout in ${
        fmtDuration(seconds)
      }`,
    );
    return;
  }

  // --- commit: rename the temp shards, drop stale shards of this part, then write the meta file
  const records: ShardRecord[] = [...writers!.train.records, ...writers!.val.records];
  const fresh = new Set(records.map((r) => r.file));
  for (const stale of await ownShards(outDir, label)) {
    if (!fresh.has(stale) && !stale.endsWith(".tmp")) await Deno.remove(join(outDir, stale)).catch(() => {});
  }
  for (const r of records) {
    try {
      await Deno.rename(join(outDir, r.file + ".tmp"), join(outDir, r.file));
    } catch (err) {
      throw writeFailure(join(outDir, r.file), err);
    }
  }
  const split = (s: "train" | "val") => {
    const rs = records.filter((r) => r.split === s);
    return {
      docs: rs.reduce((a, r) => a + r.docs, 0),
      tokens: rs.reduce((a, r) => a + r.tokens, 0),
      bytes: rs.reduce((a, r) => a + r.bytes, 0),
      shards: rs.length,
    };
  };
  const meta = {
    lmpipe_version: VERSION,
    tokenizer: { name: TOKENIZER_NAME, vocab_size: VOCAB_SIZE, eot: EOT },
    vocab_size: VOCAB_SIZE,
    eot: EOT,
    shard_format: shardFormat,
    header_bytes: shardFormat === "llmc" ? 1024 : 0,
    dtype: "uint16",
    splits: { train: split("train"), val: split("val") },
    shards: records.map((r) => ({
      file: r.file,
      split: r.split,
      tokens: r.tokens,
      docs: r.docs,
      bytes: r.bytes,
      sha256: r.sha256,
    })),
    part: options.part,
    units: { total: stats.units, kept: stats.unitsKept },
    empty_docs_skipped: stats.emptyDocs,
    replacement_chars: stats.replaced,
    replacement_sources: stats.replacedIn,
    command: ["lmpipe", CMD, ...argv],
    options,
  };
  const metaName = label ? `meta_${label}.json` : "meta.json";
  await writeAtomic(join(outDir, metaName), JSON.stringify(meta, null, 2) + "\n");

  const s = meta.splits;
  info(
    `tokenize: ${fmtCount(counts.docs)} docs, ${fmtCount(counts.tokens)} tokens ` +
      `(train ${fmtCount(s.train.tokens)} in ${s.train.shards} shard(s), val ${
        fmtCount(s.val.tokens)
      } in ${s.val.shards}) ` +
      `-> ${outDir} in ${fmtDuration(seconds)}, ${
        (counts.textBytes / 1e6 / seconds).toFixed(1)
      } MB/s of text`,
  );
  if (valFraction > 0 && s.val.docs === 0) {
    warn(
      `no document fell into the validation split (--val-fraction ${valFraction} of ${counts.docs} docs); raise --val-fraction`,
    );
  }
  if (bool(p, "json")) {
    const summary = {
      out: resolve(outDir),
      meta: join(outDir, metaName),
      docs: counts.docs,
      tokens: counts.tokens,
      text_bytes: counts.textBytes,
      input_bytes: stats.inputBytes,
      splits: s,
      shards: records.map((r) => r.file),
      replacement_chars: stats.replaced,
      workers,
      seconds: Number(seconds.toFixed(3)),
      text_mb_per_s: Number((counts.textBytes / 1e6 / seconds).toFixed(3)),
      peak_rss_bytes: peakRss(),
    };
    const line = new TextEncoder().encode(JSON.stringify(summary) + "\n");
    await (env.stdout ?? ((b: Uint8Array) => writeAll(Deno.stdout, b)))(line);
  }
}

/** Shard files of this part (or of any part-less run) already in `dir`. */
async function ownShards(dir: string, label: string | null): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile) continue;
      const m = SHARD_NAME.exec(e.name);
      if (m && (label ? m[2] === `_${label}` : m[2] === undefined)) out.push(e.name);
    }
  } catch { /* no folder yet */ }
  return out.sort();
}

/**
 * Finished shard and meta files in `dir` that this run would duplicate: its own (same part, or part-less
 * for a whole run) and, in `foreign`, those of the other kind (a complete part-less tokenization when
 * writing a part, or parts when writing a whole run), which together with this run would hold the same
 * documents twice.
 */
async function existingOutput(
  dir: string,
  label: string | null,
): Promise<{ own: string[]; foreign: string[] }> {
  const own: string[] = [], foreign: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile) continue;
      const m = SHARD_NAME.exec(e.name) ?? META_NAME.exec(e.name);
      if (!m || e.name.endsWith(".tmp")) continue;
      const filePart = (m[2] ?? "").replace(/^_/, "") || null;
      if (filePart === label) own.push(e.name);
      else if (label === null || filePart === null) foreign.push(e.name);
    }
  } catch { /* no folder yet */ }
  return { own: own.sort(), foreign: foreign.sort() };
}

/** Creates the output folder, refusing one that holds shards of this part unless --force. */
async function prepareOutDir(dir: string, label: string | null, force: boolean): Promise<void> {
  try {
    const st = await Deno.stat(dir);
    if (!st.isDirectory) {
      throw outputError(`--out ${dir} is a file, not a folder; choose a folder (or '-' for stdout)`);
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound === false) {
      if (err instanceof Error && err.name === "LmpipeError") throw err;
      throw outputError(`--out ${dir}: cannot use the folder (${(err as Error).message})`);
    }
    try {
      await Deno.mkdir(dir, { recursive: true });
    } catch (e) {
      throw outputError(`--out ${dir}: cannot create the folder (${(e as Error).message})`);
    }
  }
  const { own, foreign } = await existingOutput(dir, label);
  const list = (fs: string[]) => `${fs.slice(0, 3).join(", ")}${fs.length > 3 ? ", ..." : ""}`;
  if (own.length > 0 && !force) {
    throw outputError(
      `--out ${dir} already holds shards or the meta file of a tokenization (${list(own)}); ` +
        `pass --force to replace it or choose another folder`,
    );
  }
  if (foreign.length > 0) {
    throw outputError(
      `--out ${dir} already holds ${label ? "a complete tokenization" : "the parts of a tokenization"} ` +
        `(${list(foreign)}); ${label ? `part ${label}` : "this run"} would duplicate its documents. ` +
        `Remove those files or choose another folder`,
    );
  }
  // Stale temp files of an interrupted run of this part are removed now.
  for (const f of await ownShards(dir, label)) {
    if (f.endsWith(".tmp")) await Deno.remove(join(dir, f)).catch(() => {});
  }
  // Fail early on an unwritable folder rather than after hours of encoding.
  const probe = join(dir, `.lmpipe-write-test-${Deno.pid}`);
  try {
    await Deno.writeFile(probe, new Uint8Array(1));
    await Deno.remove(probe);
  } catch (err) {
    throw writeFailure(dir, err);
  }
}

/** Total size of the input files (for ETA), or 0 when unknown (stdin). */
async function inputSize(inputs: string[]): Promise<number> {
  let total = 0;
  const walk = async (p: string): Promise<void> => {
    const st = await Deno.stat(p).catch(() => null);
    if (!st) return;
    if (st.isFile) total += st.size;
    else if (st.isDirectory) { for await (const e of Deno.readDir(p)) await walk(join(p, e.name)); }
  };
  for (const i of inputs) {
    if (i === "-") return 0;
    await walk(i);
  }
  return total;
}
