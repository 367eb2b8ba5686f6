// Tokenizer throughput, all encoders on the same text in the same run: plain js-tiktoken, tiktoken (WASM
// build of the Rust encoder), lmpipe's encoder on one thread, and lmpipe's EncodePool with N workers.
// Prints MB/s and tokens/s with ratios against tiktoken and js-tiktoken, checks that every encoder gives
// the same ids, and times one long piece (16,000 '=') per encoder. Results are kept in bench/RESULTS.md.
//
//   deno run -A bench/tokenize.ts [--input FILE] [--text corpus,generated] [--mb 4] [--workers 1,2] [--repeat 3]
import { getEncoding } from "js-tiktoken";
import gpt2 from "js-tiktoken/ranks/gpt2";
import { get_encoding } from "tiktoken";
import { EncodePool } from "../lib/encode_pool.ts";
import { num, parseFlags, str } from "../lib/flags.ts";
import { encodeOrdinary } from "../lib/tokenizer.ts";

const HELP = `deno run -A bench/tokenize.ts [flags]

  --input FILE   UTF-8 text to encode (default: the texts named by --text)
  --text L       which built-in texts: corpus (fixtures/corpus/*.txt), generated (default corpus,generated)
  --mb N         repeat each text up to N MB (default 4)
  --workers L    comma-separated pool sizes to measure (default 1,2)
  --repeat N     best of N timed runs per encoder (default 3; js-tiktoken runs once, it is slow)
  --long N       length of the '=' run timed as one long piece (default 16000; 0 skips)
  --js-long N    cap on that length for js-tiktoken, which is quadratic there (default 4000)
  --js-mb N      js-tiktoken encodes only the first N MB of documents, it is slow (default 1)

Example: deno run -A bench/tokenize.ts --mb 2 --workers 1,2`;

/**
 * A seeded generator of varied English-like text: words drawn Zipf-style (P ~ 1/rank) from GPT-2's own
 * " word" tokens in rank order (a stand-in for word frequency), some rare compounds, capitals, punctuation,
 * numbers, code, and sentences in six other scripts and emoji.
 */
export function generateText(bytes: number): string {
  let seed = 20240607;
  const rand = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const words: string[] = [];
  for (const b64 of gpt2.bpe_ranks.split(" ")) {
    const w = b64.length > 2 && b64.length < 24 ? atob(b64) : "";
    if (/^ [a-z]{2,}$/.test(w)) words.push(w.slice(1));
  }
  const zipf = () => words[Math.min(words.length - 1, Math.floor(Math.exp(rand() * Math.log(words.length))))];
  const foreign = [
    "Die Straße war nass, aber schön.",
    "Le café était très chaud à Montréal.",
    "日本語の文章も少し含まれています。",
    "Это предложение на русском языке.",
    "هذا نص عربي قصير.",
    "यह एक हिंदी वाक्य है।",
    "Emoji time 🎉🚀 and 👨‍👩‍👧 too!",
  ];
  const code = [
    "function add(a, b) {\n  return a + b;\n}\n",
    "for i in range(10):\n    print(i ** 2)\n",
    "if (x != null && y >= 0) { z[i] = x * y; }\n",
  ];
  const parts: string[] = [];
  let size = 0;
  while (size < bytes) {
    let para = "";
    const sentences = 2 + Math.floor(rand() * 6);
    for (let s = 0; s < sentences; s++) {
      const r = rand();
      if (r < 0.04) para += foreign[Math.floor(rand() * foreign.length)] + " ";
      else if (r < 0.08) {
        para += `${Math.floor(rand() * 100000)} of ${(rand() * 100).toFixed(2)}% in ${
          1900 + Math.floor(rand() * 125)
        }. `;
      } else {
        const n = 5 + Math.floor(rand() * 20);
        let sent = "";
        for (let w = 0; w < n; w++) {
          let word = rand() < 0.03 ? zipf() + zipf() : zipf();
          if (w === 0 || rand() < 0.05) word = word[0].toUpperCase() + word.slice(1);
          sent += (w ? " " : "") + word;
          if (rand() < 0.07) sent += ",";
          if (rand() < 0.02) sent += "'s";
        }
        para += sent + (rand() < 0.1 ? "? " : ". ");
      }
    }
    if (rand() < 0.08) para += "\n\n" + code[Math.floor(rand() * code.length)];
    parts.push(para.trimEnd() + "\n\n");
    size += para.length + 2;
  }
  return parts.join("");
}

/** The texts to measure, each repeated up to `mb` MB: --input, else the fixture corpus and generated text. */
async function loadTexts(
  input: string | undefined,
  which: string[],
  mb: number,
): Promise<{ text: string; source: string }[]> {
  const found: { text: string; source: string }[] = [];
  if (input) found.push({ text: await Deno.readTextFile(input), source: input });
  else {
    if (which.includes("corpus")) {
      const files: string[] = [];
      try {
        for await (const e of Deno.readDir("fixtures/corpus")) {
          if (e.isFile && /\.(txt|md)$/.test(e.name)) files.push(e.name);
        }
      } catch { /* no corpus */ }
      files.sort();
      if (files.length > 0) {
        const text = (await Promise.all(files.map((f) => Deno.readTextFile(`fixtures/corpus/${f}`)))).join(
          "\n\n",
        );
        found.push({ text, source: `fixtures/corpus (${files.length} files)` });
      } else console.log("note: fixtures/corpus/ has no .txt files; skipping it");
    }
    if (which.includes("generated")) {
      found.push({
        text: generateText(mb * 1e6),
        source: "generated (seeded Zipf prose + code + 6 scripts + emoji)",
      });
    }
  }
  return found.map(({ text, source }) => {
    if (text.length === 0) throw new Error(`${source}: no text`);
    const bytes = new TextEncoder().encode(text).length;
    return { text: bytes < mb * 1e6 ? text.repeat(Math.ceil((mb * 1e6) / bytes)) : text, source };
  });
}

/** Cuts text into documents of about 4 KB at paragraph breaks. */
function splitDocs(text: string): string[] {
  const docs: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + 4000);
    const br = text.indexOf("\n\n", end);
    end = br < 0 ? text.length : br + 2;
    docs.push(text.slice(start, end));
    start = end;
  }
  return docs;
}

function checksum(arrays: ArrayLike<number>[]): string {
  let h = 0x811c9dc5, n = 0;
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) h = Math.imul(h ^ a[i], 0x01000193);
    n += a.length;
  }
  return `${n}:${(h >>> 0).toString(16)}`;
}

interface Row {
  name: string;
  bytes: number; // of text encoded (js-tiktoken gets a prefix)
  seconds: number;
  tokens: number;
  sum: string;
  longMs: number | null;
  note?: string;
}

async function bestOf(
  n: number,
  fn: () => Promise<ArrayLike<number>[]> | ArrayLike<number>[],
): Promise<{ s: number; out: ArrayLike<number>[] }> {
  let best = Infinity, out: ArrayLike<number>[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    out = await fn();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return { s: best, out };
}

function timeMs(fn: () => unknown): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

interface Settings {
  repeat: number;
  longLen: number;
  jsLong: number;
  jsMB: number;
  workers: number[];
}

function utf8Length(docs: string[]): number {
  const enc = new TextEncoder();
  return docs.reduce((a, d) => a + enc.encode(d).length, 0);
}

/** Measures every encoder on one text and prints the table; returns false if any ids differ. */
async function benchText(text: string, source: string, cfg: Settings): Promise<boolean> {
  const docs = splitDocs(text);
  const bytes = utf8Length(docs);
  const longText = "=".repeat(cfg.longLen);
  // js-tiktoken is slow (and quadratic on long pieces), so it gets a prefix of about --js-mb MB.
  const jsDocs: string[] = [];
  for (let i = 0, n = 0; i < docs.length && n < cfg.jsMB * 1e6; i++) {
    jsDocs.push(docs[i]), n += docs[i].length;
  }
  console.log(`\ntext: ${source}; ${(bytes / 1e6).toFixed(2)} MB in ${docs.length} documents`);
  console.log(
    `machine: ${navigator.hardwareConcurrency} logical CPUs, Deno ${Deno.version.deno}, ` +
      `load average ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
  );
  const tokensOf = (out: ArrayLike<number>[]) => out.reduce((a, b) => a + b.length, 0);

  const rows: Row[] = [];
  let jsRefSum = "";
  const wasm = get_encoding("gpt2");
  try {
    wasm.encode_ordinary(docs[0]);
    const { s, out } = await bestOf(cfg.repeat, () => docs.map((d) => wasm.encode_ordinary(d)));
    wasm.encode_ordinary(longText);
    const longMs = cfg.longLen ? timeMs(() => wasm.encode_ordinary(longText)) : null;
    rows.push({
      name: "tiktoken 1.0.22 (WASM)",
      bytes,
      seconds: s,
      tokens: tokensOf(out),
      sum: checksum(out),
      longMs,
    });
    jsRefSum = checksum(jsDocs.map((d) => wasm.encode_ordinary(d)));
  } finally {
    wasm.free();
  }
  {
    const js = getEncoding("gpt2");
    js.encode(docs[0], [], []);
    const { s, out } = await bestOf(1, () => jsDocs.map((d) => js.encode(d, [], [])));
    const jsLong = Math.min(cfg.longLen, cfg.jsLong);
    const longMs = jsLong ? timeMs(() => js.encode("=".repeat(jsLong), [], [])) : null;
    const notes = [];
    if (jsDocs.length < docs.length) notes.push(`first ${(utf8Length(jsDocs) / 1e6).toFixed(2)} MB`);
    if (jsLong < cfg.longLen) notes.push(`long piece: ${jsLong} '=' only`);
    rows.unshift({
      name: "js-tiktoken 1.0.21",
      bytes: utf8Length(jsDocs),
      seconds: s,
      tokens: tokensOf(out),
      sum: checksum(out) === jsRefSum ? rows[0].sum : `${checksum(out)} (prefix differs)`,
      longMs,
      note: notes.join(", ") || undefined,
    });
  }
  {
    encodeOrdinary(docs[0]);
    const { s, out } = await bestOf(cfg.repeat, () => docs.map((d) => encodeOrdinary(d)));
    encodeOrdinary(longText);
    const longMs = cfg.longLen ? timeMs(() => encodeOrdinary(longText)) : null;
    rows.push({
      name: "lmpipe encodeOrdinary (1 thread)",
      bytes,
      seconds: s,
      tokens: tokensOf(out),
      sum: checksum(out),
      longMs,
    });
  }
  for (const w of cfg.workers) {
    const t0 = performance.now();
    const pool = EncodePool.create(w);
    try {
      await pool.encode([docs[0]]); // the first result means a worker has loaded its tables
      await Promise.all(Array.from({ length: w * 2 }, () => pool.encode(["warm up"])));
      const startMs = performance.now() - t0;
      const { s, out } = await bestOf(cfg.repeat, () => pool.encode(docs));
      if (cfg.longLen) await Promise.all(Array.from({ length: w }, () => pool.encode([longText]))); // warm each
      const t1 = performance.now();
      if (cfg.longLen) await pool.encode([longText]);
      const longMs = cfg.longLen ? performance.now() - t1 : null;
      rows.push({
        name: `lmpipe EncodePool, ${w} worker${w > 1 ? "s" : ""}`,
        bytes,
        seconds: s,
        tokens: tokensOf(out),
        sum: checksum(out),
        longMs,
        note: `start-up ${startMs.toFixed(0)} ms`,
      });
    } finally {
      pool.close();
    }
  }

  const jsRow = rows[0], wasmRow = rows[1];
  const mbs = (r: Row) => r.bytes / 1e6 / r.seconds;
  const lines = [
    `| encoder | MB/s | Mtokens/s | vs tiktoken | vs js-tiktoken | ${cfg.longLen} '=' piece | ids |`,
    "|---|---:|---:|---:|---:|---:|---|",
  ];
  for (const r of rows) {
    const same = r.sum === wasmRow.sum ? "same" : `DIFFERENT (${r.sum} vs ${wasmRow.sum})`;
    lines.push(
      `| ${r.name}${r.note ? ` (${r.note})` : ""} | ${mbs(r).toFixed(1)} | ${
        (r.tokens / r.seconds / 1e6).toFixed(2)
      } | ` +
        `${(mbs(r) / mbs(wasmRow)).toFixed(2)}x | ${(mbs(r) / mbs(jsRow)).toFixed(2)}x | ` +
        `${r.longMs === null ? "-" : `${r.longMs.toFixed(1)} ms`} | ${same} |`,
    );
  }
  console.log(lines.join("\n"));
  console.log(
    `tokens: ${wasmRow.tokens} (${
      (bytes / wasmRow.tokens).toFixed(2)
    } bytes/token); best of ${cfg.repeat} runs ` +
      `(js-tiktoken: 1 run)`,
  );
  return rows.every((r) => r.sum === wasmRow.sum);
}

async function main(): Promise<void> {
  const p = parseFlags("bench:tokenize", Deno.args, {
    input: { type: "string" },
    text: { type: "string" },
    mb: { type: "string" },
    workers: { type: "string" },
    repeat: { type: "string" },
    long: { type: "string" },
    "js-long": { type: "string" },
    "js-mb": { type: "string" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const cmd = "bench:tokenize";
  const mb = num(p, cmd, "mb", 4, { min: 0.001 });
  const cfg: Settings = {
    repeat: num(p, cmd, "repeat", 3, { min: 1, integer: true }),
    longLen: num(p, cmd, "long", 16000, { min: 0, integer: true }),
    jsLong: num(p, cmd, "js-long", 4000, { min: 0, integer: true }),
    jsMB: num(p, cmd, "js-mb", 1, { min: 0.001 }),
    workers: str(p, "workers", "1,2").split(",").map((w) => Number(w)),
  };
  if (cfg.workers.some((w) => !Number.isInteger(w) || w < 1)) throw new Error("--workers: a list like 1,2,4");
  let ok = true;
  const which = str(p, "text", "corpus,generated").split(",");
  for (const { text, source } of await loadTexts(str(p, "input"), which, mb)) {
    ok = (await benchText(text, source, cfg)) && ok;
  }
  if (!ok) {
    console.error("error: encoders disagree on the ids");
    Deno.exit(1);
  }
}

if (import.meta.main) await main();
