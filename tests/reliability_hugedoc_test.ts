// Huge documents: a multi-MB JSONL line or --doc-sep paragraph is read in time linear in its size
// (the readers once re-joined or re-searched the growing buffer on every chunk: a 32 MB line took 65 s),
// its ids equal js-tiktoken's, and a document over --max-doc-bytes stops at once with exit 3 naming it,
// so memory stays bounded however large the input's documents are.
import assert from "node:assert/strict";
import { join } from "node:path";
import { getEncoding } from "js-tiktoken";
import { EXIT } from "../lib/errors.ts";
import { readDocuments, ReadStats } from "../lib/readers/documents.ts";
import { buildTar } from "../lib/readers/tar.ts";
import { parseDocSep, splitDocs } from "../lib/readers/text.ts";
import { parseTokenStream } from "../lib/token_stream.ts";
import { rejectsWith } from "./helpers_run.ts";
import { tmp, tok } from "./helpers_tokenize.ts";

const enc = new TextEncoder();
const WORDS = [
  "the",
  "river",
  "town",
  "old",
  "sat",
  "by",
  "über",
  "naïve",
  "😀",
  "1234",
  "don't",
  "  ",
  "\t",
  "!!",
];

/** About `chars` characters of word soup without blank lines (one paragraph). */
function soup(chars: number, seed = 1): string {
  const out: string[] = [];
  let n = 0, s = seed;
  while (n < chars) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const w = WORDS[s % WORDS.length] + (s % 97 === 0 ? "\n" : " ");
    out.push(w);
    n += w.length;
  }
  return out.join("");
}

function chunked(bytes: Uint8Array, size = 65536): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream({
    pull(c) {
      if (o >= bytes.length) return c.close();
      c.enqueue(bytes.slice(o, o + size));
      o += size;
    },
  });
}

async function readAllDocs(bytes: Uint8Array, format: "jsonl" | "txt", docSep?: string): Promise<number> {
  let chars = 0;
  const opts = {
    format,
    field: "text",
    part: [0, 1] as [number, number],
    stdin: chunked(bytes),
    docSep: docSep ? parseDocSep(docSep) : undefined,
    maxDocBytes: 1e9,
  };
  for await (const d of readDocuments(["-"], opts, new ReadStats())) chars += d.text.length;
  return chars;
}

/**
 * Seconds `small` and `big` take, each the best of 3 runs taken in turns (small, big, small, ...), so that
 * a busy machine's slow moments fall on both sizes alike.
 */
async function seconds2(
  small: () => Promise<unknown>,
  big: () => Promise<unknown>,
): Promise<[number, number]> {
  const best: [number, number] = [Infinity, Infinity];
  for (let i = 0; i < 3; i++) {
    for (const [j, fn] of [small, big].entries()) {
      const t0 = performance.now();
      await fn();
      best[j] = Math.min(best[j], (performance.now() - t0) / 1000);
    }
  }
  return best;
}

Deno.test("huge documents: reading a long JSONL line or --doc-sep paragraph is linear in its size", async () => {
  // Time ratios between two sizes swing with the garbage collector's regime (a 4 MB read ran in 0.04 s and
  // 0.22 s on the same machine), so each read is compared with the least work any reader must do on the same
  // bytes: decode them once and parse (JSONL) or split (paragraphs) them. A linear reader stays within a
  // small factor of that at every size (1.3-1.5x measured at 34 MB); a reader that re-joins its carried bytes
  // on every chunk measured 6.8x at 17 MB and grows with the size.
  const big = soup(32e6);
  const line = enc.encode(JSON.stringify({ text: big }) + "\n");
  const para = enc.encode(`a\n\n${big}\n\nb\n`);
  const dec = new TextDecoder();
  const [tl, tlBase] = await seconds2(
    () => readAllDocs(line, "jsonl"),
    async () => JSON.parse(dec.decode(line)).text.length,
  );
  const [tp, tpBase] = await seconds2(
    () => readAllDocs(para, "txt", "blank"),
    async () => dec.decode(para).split(/\n\n/).length,
  );
  console.log(
    `34 MB: JSONL line ${tl.toFixed(2)} s (${
      (tl / tlBase).toFixed(1)
    }x decode + parse), --doc-sep paragraph ` +
      `${tp.toFixed(2)} s (${(tp / tpBase).toFixed(1)}x decode + split)`,
  );
  assert.ok(tl < 5 * tlBase, `JSONL: ${tl} s against ${tlBase} s`);
  assert.ok(tp < 5 * tpBase, `doc-sep: ${tp} s against ${tpBase} s`);
});

Deno.test("huge documents: splitDocs gives the same documents as before for a paragraph over many chunks", async () => {
  const text = `x\n\n${soup(3e5)}\n \n\n${soup(2e5, 7)}\r\n\r\n\r\n`;
  const chunks = async function* () {
    for (let i = 0; i < text.length; i += 4099) yield text.slice(i, i + 4099);
  };
  const docs: string[] = [];
  for await (const d of splitDocs(chunks(), parseDocSep("blank"))) docs.push(d);
  assert.deepEqual(docs, text.split(/\r?\n(?:[ \t]*\r?\n)+/).filter((d) => d.trim().length > 0));
});

Deno.test("huge documents: ids of a 2 MB JSONL line and --doc-sep paragraph equal js-tiktoken's", async () => {
  const text = soup(2e6, 3);
  const want = [...getEncoding("gpt2").encode(text, [], []), 50256];
  const same = (got: Uint16Array) => {
    assert.equal(got.length, want.length);
    const i = want.findIndex((id, k) => got[k] !== id);
    assert.equal(i, -1, `first difference at token ${i}`);
  };
  const line = enc.encode(JSON.stringify({ text }) + "\n");
  same(parseTokenStream(await tok(["-", "--format", "jsonl", "--out", "-", "--workers", "1"], line)));
  // The soup holds a few whitespace-only lines: --doc-sep blank cuts there, each piece is a document.
  const js = getEncoding("gpt2");
  const docs = text.split(/\r?\n(?:[ \t]*\r?\n)+/).filter((d) => d.trim().length > 0);
  want.length = 0;
  for (const d of docs) {
    for (const id of js.encode(d, [], [])) want.push(id);
    want.push(50256);
  }
  same(
    parseTokenStream(
      await tok(["-", "--out", "-", "--doc-sep", "blank", "--workers", "0"], enc.encode(text)),
    ),
  );
});

Deno.test("huge documents: a document over --max-doc-bytes is exit 3 naming it (JSONL, text, --doc-sep, tar member)", async () => {
  const dir = await tmp();
  const text = soup(3e6, 5);
  await Deno.writeFile(join(dir, "big.jsonl"), enc.encode(`{"text":"ok"}\n${JSON.stringify({ text })}\n`));
  await Deno.writeTextFile(join(dir, "big.txt"), text);
  await Deno.writeFile(join(dir, "big.tar"), buildTar([{ name: "big.txt", data: enc.encode(text) }]));
  const limit = ["--max-doc-bytes", "1M", "--workers", "0"];
  const re = (where: string) =>
    new RegExp(`${where}: a document of .* is larger than --max-doc-bytes 1000000`);
  await rejectsWith(
    tok([join(dir, "big.jsonl"), "--out", "-", ...limit]),
    EXIT.input,
    re("big\\.jsonl: line 2"),
  );
  await rejectsWith(tok([join(dir, "big.txt"), "--out", "-", ...limit]), EXIT.input, re("big\\.txt"));
  const oneParagraph = enc.encode(text.replaceAll("\n", " "));
  await rejectsWith(
    tok(["-", "--out", "-", "--doc-sep", "blank", ...limit], oneParagraph),
    EXIT.input,
    re("stdin: document 1"),
  );
  await rejectsWith(
    tok([join(dir, "big.tar"), "--out", "-", ...limit]),
    EXIT.input,
    re("big\\.tar > big\\.txt"),
  );
  await tok([join(dir, "big.jsonl"), "--out", "-", "--max-doc-bytes", "4M", "--workers", "0"]); // under the limit: fine
});
