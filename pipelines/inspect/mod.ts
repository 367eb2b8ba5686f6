// `lmpipe inspect`: what a token shard (llm.c or nanoGPT), a shard folder or a token stream holds, and
// whether it is sound: header and size, ids inside the GPT-2 vocabulary, documents (EOT count), and for
// folders the token counts and sha256 checksums recorded in the meta files. Exits non-zero on problems.
import { createHash } from "node:crypto";
import { basename } from "node:path";
import { listDataset, type MetaShard } from "../../lib/dataset.ts";
import { inputError } from "../../lib/errors.ts";
import { bool, num, parseFlags } from "../../lib/flags.ts";
import { fmtCount } from "../../lib/log.ts";
import { decodeU16, probeShard, readFull, readTokenStream, type ShardFormat } from "../../lib/shard.ts";
import { writeAll } from "../../lib/fs.ts";
import { decode, EOT, VOCAB_SIZE } from "../../lib/tokenizer.ts";

const CMD = "inspect";

const HELP = `lmpipe inspect PATH ... [options]

Checks token shards and shows what they hold: format (llm.c with its 1024-byte header, or nanoGPT's
headerless uint16), token count, documents (EOT ${EOT} count), smallest and largest id, and the first
tokens decoded. PATH is a .bin shard, a shard folder (every .bin in it, checked against the token
counts and sha256 checksums in its meta.json / meta_p*.json), or - for a token stream on stdin.
Exits with status 3 and the reason when a shard is corrupt (bad header, size, id outside the
vocabulary, checksum or token count differing from the meta file).

Options:
  --head N     how many leading tokens to decode and show (default: 32; 0 shows none)
  --json       print the report as JSON on stdout
  -h, --help   show this help

Example:
  lmpipe inspect fixtures/shards
`;

export interface ShardReport {
  path: string;
  split: string;
  format: ShardFormat | "stream";
  tokens: number;
  docs: number;
  min_id: number | null;
  max_id: number | null;
  ends_with_eot: boolean;
  sha256: string | null;
  head: number[];
  head_text: string;
  problems: string[];
}

export async function run(
  argv: string[],
  env: { stdin?: ReadableStream<Uint8Array>; stdout?: (b: Uint8Array) => Promise<void> } = {},
): Promise<void> {
  const p = parseFlags(CMD, argv, { head: { type: "string" }, json: { type: "boolean" } });
  if (p.help) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length === 0) {
    throw inputError(`lmpipe ${CMD}: give a shard, a shard folder or - (see 'lmpipe ${CMD} --help')`);
  }
  const headN = num(p, CMD, "head", 32, { integer: true, min: 0 });
  const out = env.stdout ?? ((b: Uint8Array) => writeAll(Deno.stdout, b));

  const reports: ShardReport[] = [];
  const problems: string[] = [];
  const metaFiles: string[] = [];
  for (const path of p.positionals) {
    if (path === "-") {
      reports.push(
        await scan(
          readTokenStream(env.stdin ?? Deno.stdin.readable, "stdin"),
          "-",
          "stream",
          "stream",
          null,
          headN,
        ),
      );
      continue;
    }
    const ds = await listDataset([path]);
    metaFiles.push(...ds.metas.map((m) => m.path));
    for (const [split, files] of [["train", ds.train], ["val", ds.val]] as const) {
      for (const f of files) {
        const r = await inspectFile(f, split, headN);
        const m = ds.shardMeta.get(f);
        if (m && r.problems.length === 0) checkMeta(r, m);
        else if (ds.metas.length > 0) {
          r.problems.push(
            `not listed in ${ds.metas.map((x) => basename(x.path)).join(", ")} (left over from another run?)`,
          );
        }
        reports.push(r);
      }
    }
    const seen = new Set([...ds.train, ...ds.val]);
    for (const [f] of ds.shardMeta) {
      if (!seen.has(f)) problems.push(`${f}: listed in the meta file but missing; the dataset is incomplete`);
    }
  }
  for (const r of reports) for (const q of r.problems) problems.push(`${r.path}: ${q}`);

  const total = {
    shards: reports.length,
    tokens: reports.reduce((a, r) => a + r.tokens, 0),
    docs: reports.reduce((a, r) => a + r.docs, 0),
    train_tokens: reports.filter((r) => r.split === "train").reduce((a, r) => a + r.tokens, 0),
    val_tokens: reports.filter((r) => r.split === "val").reduce((a, r) => a + r.tokens, 0),
  };
  const ok = problems.length === 0;
  let text: string;
  if (bool(p, "json")) {
    text = JSON.stringify({ ok, problems, total, meta_files: metaFiles, shards: reports }) + "\n";
  } else {
    const lines: string[] = [];
    for (const r of reports) {
      const fmt = r.format === "llmc"
        ? "llm.c shard"
        : r.format === "nanogpt"
        ? "nanoGPT shard (headerless)"
        : "token stream";
      lines.push(
        `${r.path}: ${fmt}, ${r.split}, ${fmtCount(r.tokens)} tokens (${r.tokens}), ${r.docs} documents, ` +
          `ids ${r.min_id ?? "-"}..${r.max_id ?? "-"}${r.ends_with_eot ? "" : ", does not end with EOT"}` +
          `${r.sha256 ? `, sha256 ${r.sha256.slice(0, 12)}…` : ""}: ${r.problems.length ? "CORRUPT" : "ok"}`,
      );
      if (headN > 0 && r.head.length) {
        lines.push(`  first ${r.head.length} tokens: ${JSON.stringify(r.head_text)}`);
      }
    }
    lines.push(
      `total: ${total.shards} shard(s), ${fmtCount(total.tokens)} tokens` +
        // a stream from stdin carries no split; a folder or named shards do
        (total.train_tokens + total.val_tokens > 0
          ? ` (train ${fmtCount(total.train_tokens)}, val ${fmtCount(total.val_tokens)})`
          : "") +
        `, ${total.docs} documents` +
        (metaFiles.length ? `; checked against ${metaFiles.map((m) => basename(m)).join(", ")}` : "") +
        `: ${ok ? "ok" : `${problems.length} problem(s)`}`,
    );
    text = lines.join("\n") + "\n";
  }
  await out(new TextEncoder().encode(text));
  if (!ok) {
    throw inputError(
      `${problems.slice(0, 5).join("\n  ")}${
        problems.length > 5 ? `\n  ... and ${problems.length - 5} more` : ""
      }`,
    );
  }
}

/** Reads one shard file in chunks (hashing it on the way); a bad header or size is a problem, not a crash. */
async function inspectFile(path: string, split: string, headN: number): Promise<ShardReport> {
  let info;
  try {
    info = await probeShard(path);
  } catch (err) {
    const r = emptyReport(path, split, "llmc");
    r.problems.push((err as Error).message.replace(`${path}: `, ""));
    return r;
  }
  const hash = createHash("sha256");
  const f = await Deno.open(path);
  async function* chunks(): AsyncGenerator<Uint16Array> {
    const CH = 1 << 18;
    if (info!.dataOffset) {
      const h = new Uint8Array(info!.dataOffset);
      await readFull(f, h, 0, path);
      hash.update(h);
    }
    for (let off = 0; off < info!.tokens; off += CH) {
      const n = Math.min(CH, info!.tokens - off);
      const b = new Uint8Array(n * 2);
      await readFull(f, b, info!.dataOffset + off * 2, path);
      hash.update(b);
      yield decodeU16(b);
    }
  }
  try {
    const r = await scan(chunks(), path, split, info.format, hash, headN);
    return r;
  } finally {
    f.close();
  }
}

function emptyReport(path: string, split: string, format: ShardReport["format"]): ShardReport {
  return {
    path,
    split,
    format,
    tokens: 0,
    docs: 0,
    min_id: null,
    max_id: null,
    ends_with_eot: false,
    sha256: null,
    head: [],
    head_text: "",
    problems: [],
  };
}

/** Counts tokens, EOTs and the id range over a chunk stream; notes the first id outside the vocabulary. */
async function scan(
  chunks: AsyncIterable<Uint16Array>,
  path: string,
  split: string,
  format: ShardReport["format"],
  hash: ReturnType<typeof createHash> | null,
  headN: number,
): Promise<ShardReport> {
  const r = emptyReport(path, split, format);
  let min = Infinity, max = -1, last = -1;
  try {
    for await (const c of chunks) {
      for (let i = 0; i < c.length; i++) {
        const id = c[i];
        if (id < min) min = id;
        if (id > max) max = id;
        if (id === EOT) r.docs++;
        else if (id >= VOCAB_SIZE && r.problems.length === 0) {
          r.problems.push(
            `token id ${id} at token ${r.tokens + i} is outside the GPT-2 vocabulary (0..${
              VOCAB_SIZE - 1
            }): corrupt or another tokenizer`,
          );
        }
      }
      if (r.head.length < headN) r.head.push(...c.subarray(0, headN - r.head.length));
      if (c.length) last = c[c.length - 1];
      r.tokens += c.length;
    }
  } catch (err) {
    r.problems.push((err as Error).message.replace(`${path}: `, ""));
  }
  r.min_id = r.tokens ? min : null;
  r.max_id = r.tokens ? max : null;
  r.ends_with_eot = last === EOT;
  r.sha256 = hash ? hash.digest("hex") : null;
  r.head_text = decode(r.head.filter((t) => t < VOCAB_SIZE));
  return r;
}

function checkMeta(r: ShardReport, m: MetaShard): void {
  if (typeof m.tokens === "number" && m.tokens !== r.tokens) {
    r.problems.push(`meta file records ${m.tokens} tokens, the shard holds ${r.tokens}`);
  }
  if (typeof m.docs === "number" && m.docs !== r.docs && r.problems.length === 0) {
    r.problems.push(`meta file records ${m.docs} documents, the shard holds ${r.docs}`);
  }
  if (m.sha256 && r.sha256 && m.sha256 !== r.sha256) {
    r.problems.push(
      `sha256 ${r.sha256} differs from the meta file's ${m.sha256}: the shard was modified or damaged`,
    );
  }
}
