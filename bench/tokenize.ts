// Tokenizer throughput, all encoders on the same text in the same run: plain js-tiktoken, tiktoken (WASM
// build of the Rust encoder), lmpipe's encoder on one thread, and lmpipe's EncodePool with N workers.
// Prints MB/s and tokens/s with ratios against tiktoken and js-tiktoken, checks that every encoder gives
// the same ids, and times one long piece (16,000 '=') per encoder. Results are kept in bench/RESULTS.md.
//
//   deno run -A bench/tokenize.ts [--input FILE] [--mb 4] [--workers 1,2] [--repeat 3] [--long 16000]
import { getEncoding } from "js-tiktoken";
import gpt2 from "js-tiktoken/ranks/gpt2";
import { get_encoding } from "tiktoken";
import { EncodePool } from "../lib/encode_pool.ts";
import { num, parseFlags, str } from "../lib/flags.ts";
import { encodeOrdinary } from "../lib/tokenizer.ts";

const HELP = `deno run -A bench/tokenize.ts [flags]

  --input FILE   UTF-8 text to encode (default: fixtures/corpus/* if present, else generated text)
  --mb N         repeat the text up to N MB (default 4)
  --workers L    comma-separated pool sizes to measure (default 1,2)
  --repeat N     best of N timed runs per encoder (default 3; js-tiktoken runs once, it is slow)
  --long N       length of the '=' run timed as one long piece (default 16000; 0 skips)
  --js-long N    cap on that length for js-tiktoken, which is quadratic there (default 4000)

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

async function loadText(input: string | undefined, mb: number): Promise<{ text: string; source: string }> {
  let text: string, source: string;
  if (input) {
    text = await Deno.readTextFile(input);
    source = input;
  } else {
    const files: string[] = [];
    try {
      for await (const e of Deno.readDir("fixtures/corpus")) {
        if (e.isFile && /\.(txt|md)$/.test(e.name)) files.push(e.name);
      }
    } catch { /* no corpus yet */ }
    if (files.length > 0) {
      files.sort();
      text = (await Promise.all(files.map((f) => Deno.readTextFile(`fixtures/corpus/${f}`)))).join("\n\n");
      source = `fixtures/corpus/{${files.join(",")}}`;
    } else {
      text = generateText(mb * 1e6);
      source = "generated (seeded Zipf prose + code + 6 scripts + emoji)";
    }
  }
  if (text.length === 0) throw new Error(`${source}: no text`);
  const target = mb * 1e6;
  const bytes = new TextEncoder().encode(text).length;
  if (bytes < target) text = text.repeat(Math.ceil(target / bytes));
  return { text, source };
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

async function main(): Promise<void> {
  const p = parseFlags("bench:tokenize", Deno.args, {
    input: { type: "string" },
    mb: { type: "string" },
    workers: { type: "string" },
    repeat: { type: "string" },
    long: { type: "string" },
    "js-long": { type: "string" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const mb = num(p, "bench:tokenize", "mb", 4, { min: 0.001 });
  const repeat = num(p, "bench:tokenize", "repeat", 3, { min: 1, integer: true });
  const longLen = num(p, "bench:tokenize", "long", 16000, { min: 0, integer: true });
  const workerList = str(p, "workers", "1,2").split(",").map((w) => Number(w));
  if (workerList.some((w) => !Number.isInteger(w) || w < 1)) throw new Error("--workers: a list like 1,2,4");

  const { text, source } = await loadText(str(p, "input"), mb);
  const docs = splitDocs(text);
  const bytes = new TextEncoder().encode(text).length;
  const longText = "=".repeat(longLen);
  console.log(`text: ${source}; ${(bytes / 1e6).toFixed(2)} MB in ${docs.length} documents`);
  console.log(
    `machine: ${navigator.hardwareConcurrency} logical CPUs, Deno ${Deno.version.deno}, ` +
      `load average ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
  );

  const rows: Row[] = [];
  const js = getEncoding("gpt2");
  {
    js.encode(docs[0], [], []);
    const { s, out } = await bestOf(1, () => docs.map((d) => js.encode(d, [], [])));
    // js-tiktoken is quadratic on one long piece (16,000 '=' took 161 s here): time at most --js-long.
    const jsLong = Math.min(longLen, num(p, "bench:tokenize", "js-long", 4000, { min: 0, integer: true }));
    const longMs = jsLong ? timeMs(() => js.encode("=".repeat(jsLong), [], [])) : null;
    rows.push({
      name: "js-tiktoken 1.0.21",
      seconds: s,
      tokens: out.reduce((a, b) => a + b.length, 0),
      sum: checksum(out),
      longMs,
      note: jsLong < longLen ? `long piece: ${jsLong} '=' only` : undefined,
    });
  }
  const wasm = get_encoding("gpt2");
  try {
    wasm.encode_ordinary(docs[0]);
    const { s, out } = await bestOf(repeat, () => docs.map((d) => wasm.encode_ordinary(d)));
    wasm.encode_ordinary(longText);
    const longMs = longLen ? timeMs(() => wasm.encode_ordinary(longText)) : null;
    rows.push({
      name: "tiktoken 1.0.22 (WASM)",
      seconds: s,
      tokens: out.reduce((a, b) => a + b.length, 0),
      sum: checksum(out),
      longMs,
    });
  } finally {
    wasm.free();
  }
  {
    encodeOrdinary(docs[0]);
    const { s, out } = await bestOf(repeat, () => docs.map((d) => encodeOrdinary(d)));
    encodeOrdinary(longText);
    const longMs = longLen ? timeMs(() => encodeOrdinary(longText)) : null;
    rows.push({
      name: "lmpipe encodeOrdinary (1 thread)",
      seconds: s,
      tokens: out.reduce((a, b) => a + b.length, 0),
      sum: checksum(out),
      longMs,
    });
  }
  for (const w of workerList) {
    const t0 = performance.now();
    const pool = EncodePool.create(w);
    try {
      await pool.encode([docs[0]]); // the first result means a worker has loaded its tables
      await Promise.all(Array.from({ length: w * 2 }, () => pool.encode(["warm up"])));
      const startMs = performance.now() - t0;
      const { s, out } = await bestOf(repeat, () => pool.encode(docs));
      if (longLen) await Promise.all(Array.from({ length: w }, () => pool.encode([longText]))); // warm each
      const t1 = performance.now();
      if (longLen) await pool.encode([longText]);
      const longMs = longLen ? performance.now() - t1 : null;
      rows.push({
        name: `lmpipe EncodePool, ${w} worker${w > 1 ? "s" : ""}`,
        seconds: s,
        tokens: out.reduce((a, b) => a + b.length, 0),
        sum: checksum(out),
        longMs,
        note: `start-up ${startMs.toFixed(0)} ms`,
      });
    } finally {
      pool.close();
    }
  }

  const jsRow = rows[0], wasmRow = rows[1];
  const mbs = (r: Row) => bytes / 1e6 / r.seconds;
  const lines = [
    "| encoder | MB/s | Mtokens/s | vs tiktoken | vs js-tiktoken | long '=' piece | ids |",
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
    } bytes/token); best of ${repeat} runs ` +
      `(js-tiktoken: 1 run)`,
  );
  if (rows.some((r) => r.sum !== wasmRow.sum)) {
    console.error("error: encoders disagree on the ids");
    Deno.exit(1);
  }
}

if (import.meta.main) await main();
