// GPT-2 encoder exactness: ids identical to js-tiktoken's encode(text, [], []) (encode_ordinary) on a
// varied set and a seeded unicode fuzz, the hand-written pre-tokenizer identical to the GPT-2 regex, long
// pieces (checked against tiktoken's WASM build of the Rust encoder, since js-tiktoken is quadratic there),
// and decode round trips.
import assert from "node:assert/strict";
import { getEncoding } from "js-tiktoken";
import gpt2 from "js-tiktoken/ranks/gpt2";
import { get_encoding } from "tiktoken";
import { clearPieceCache, pieceEnd } from "../lib/bpe.ts";
import { decode, decodeBytes, encodeBatch, encodeOrdinary, EOT, VOCAB_SIZE } from "../lib/tokenizer.ts";

const jsRef = getEncoding("gpt2");
const ref = (text: string): number[] => jsRef.encode(text, [], []);
const ids = (text: string): number[] => Array.from(encodeOrdinary(text));

/** Encodes with an empty piece cache, then again with a warm one; both must equal the reference. */
function assertExact(text: string, expected: number[], what = JSON.stringify(text.slice(0, 60))): void {
  clearPieceCache();
  assert.deepEqual(ids(text), expected, `${what} (cold cache)`);
  assert.deepEqual(ids(text), expected, `${what} (warm cache)`);
}

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VARIED: Record<string, string> = {
  prose: 'The quick brown fox jumps over the lazy dog. It wasn\'t me -- honestly!  She said: "Fine."',
  accents: "Crème brûlée, naïve façade, Ångström, São Paulo, Łódź, Ελληνικά, Русский текст.",
  cjk: "日本語の文章です。中文文本，还有한국어 문장도 있습니다。",
  arabic: "مرحبا بالعالم، هذا نص عربي. שלום עולם",
  devanagari: "नमस्ते दुनिया। यह हिन्दी पाठ है। ক বাংলা",
  emoji: "I ❤️ 🍕! 👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 🇫🇷🇯🇵 flags, 👍🏽 skin tone, 🧑‍💻",
  crlf: "line one\r\nline two\r\n\r\nlone CR\rend\n",
  tabs: "\tindented\t\ttext\t \t mixed \t\n\t\tcode();",
  whitespaceRuns: "a" + " ".repeat(40) + "b" + "\n".repeat(12) + "c  \n  \t  d" + " ".repeat(7),
  trailing: "trailing spaces   ",
  trailingNewlines: "trailing newlines\n\n\n",
  onlySpace: "     ",
  contractions: "I'm you're he's we've they'll she'd it't 'S 'LL 'Re He'S DON'T don't '' 's's 'l 'r",
  quotes: "'''s ''ll x'sy 'ss '", // "'s" only at a piece start; "'" runs are "other"
  digits: "0 12 345 6789 1234567890123 3.14159 1,000,000 ２０２４ ٣٤٥ ⅷ",
  mixed: "abc123def ٣ü日本42x—–…«»“”„ and % @ # $ ^ & * ( ) [ ] { } | \\ / ~ `",
  endoftext: "before <|endoftext|> after<|endoftext|><|endoftext|>",
  code: "for (let i = 0; i < n; i++) {\n    x[i] += y[i] * 2; // comment\n}\n",
  nbsp: "non\u00a0breaking\u2009thin\u3000ideographic\u2028sep\u0085nel\ufeffbom",
  controls: "\u0000\u0001\u001f\u007f\u0080\u009f",
  loneSurrogates: "a\ud800b \udc00c \ud83d \ude00 x\ud800\ud800\udc00y",
  astral: "𝒜𝓁𝓅𝒽𝒶 𝟙𝟚𝟛 𐍈 𠀀𠀁 🀄",
  empty: "",
  single: "x",
};

for (const [name, text] of Object.entries(VARIED)) {
  Deno.test(`encode matches js-tiktoken: ${name}`, () => {
    assertExact(text, ref(text), name);
    if (!/[\ud800-\udfff]/.test(text.replace(/[\ud800-\udbff][\udc00-\udfff]/g, ""))) {
      assert.equal(decode(encodeOrdinary(text)), text, `${name}: round trip`);
    }
  });
}

Deno.test("the reference call is encode_ordinary: <|endoftext|> is text, not 50256", () => {
  const text = "a<|endoftext|>b";
  assert.ok(!ref(text).includes(EOT));
  assert.ok(!ids(text).includes(EOT));
  assert.deepEqual(ids("<|endoftext|>"), ref("<|endoftext|>"));
  assert.deepEqual(ids("<|endoftext|>"), [27, 91, 437, 1659, 5239, 91, 29]);
});

Deno.test("pre-tokenizer splits exactly like the GPT-2 regex (fuzz)", () => {
  const regex = new RegExp(gpt2.pat_str, "gu");
  const rand = prng(7);
  const alphabet = [
    "a",
    "Z",
    "é",
    "日",
    "1",
    "٣",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "\u00a0",
    "'",
    "'s",
    "'ll",
    "'S",
    "'re",
    "'ve",
    "!",
    ".",
    "-",
    "🙂",
    "𝒜",
    "𝟙",
    "\ud800",
    "\udc00",
    "\u3000",
    "\u0085",
  ];
  for (let t = 0; t < 3000; t++) {
    let s = "";
    const len = Math.floor(rand() * 24);
    for (let k = 0; k < len; k++) s += alphabet[Math.floor(rand() * alphabet.length)];
    const expected = [...s.matchAll(regex)].map((m) => m[0]);
    const got: string[] = [];
    for (let i = 0; i < s.length;) {
      const e = pieceEnd(s, i, s.length);
      got.push(s.slice(i, e));
      i = e;
    }
    assert.deepEqual(got, expected, JSON.stringify(s));
  }
});

/** Random strings sampled from a mix of code point ranges. */
function fuzzString(rand: () => number, maxLen: number): string {
  const ranges: [number, number][] = [
    [0x20, 0x7e],
    [0x20, 0x7e],
    [0x61, 0x7a],
    [0x30, 0x39],
    [0x09, 0x0d],
    [0x80, 0x24f],
    [0x370, 0x3ff],
    [0x400, 0x4ff],
    [0x590, 0x6ff],
    [0x900, 0x97f],
    [0x3040, 0x30ff],
    [0x4e00, 0x9fff],
    [0xac00, 0xd7a3],
    [0x2000, 0x206f],
    [0xd800, 0xdfff],
    [0xe000, 0xffff],
    [0x1f300, 0x1faff],
    [0x1d400, 0x1d7ff],
    [0x10000, 0x10ffff],
  ];
  let s = "";
  const len = Math.floor(rand() * maxLen);
  for (let k = 0; k < len; k++) {
    const [lo, hi] = ranges[Math.floor(rand() * ranges.length)];
    const cp = lo + Math.floor(rand() * (hi - lo + 1));
    s += cp >= 0xd800 && cp <= 0xdfff ? String.fromCharCode(cp) : String.fromCodePoint(cp);
    if (rand() < 0.15) s += " ";
  }
  return s;
}

Deno.test("encode matches js-tiktoken on 3000 random unicode strings (seeded)", () => {
  const rand = prng(42);
  clearPieceCache();
  for (let t = 0; t < 3000; t++) {
    const s = fuzzString(rand, 40);
    assert.deepEqual(ids(s), ref(s), JSON.stringify(s));
  }
});

Deno.test("encode matches js-tiktoken on random single words of 40..400 bytes (heap merge path)", () => {
  const rand = prng(3);
  const pools = [
    "abcdefghijklmnopqrstuvwxyz",
    "etaoinshrdlu",
    "=-_*#.",
    "0123456789",
    "éèàüöß",
    "日本語中文",
  ];
  for (let t = 0; t < 200; t++) {
    const pool = pools[t % pools.length];
    const len = 20 + Math.floor(rand() * 200);
    let s = t % 2 ? " " : "";
    for (let k = 0; k < len; k++) s += pool[Math.floor(rand() * pool.length)];
    assertExact(s, ref(s));
  }
});

Deno.test("long pieces: 1,500 '=' and a 1,500-letter word match js-tiktoken", () => {
  assertExact("=".repeat(1500), ref("=".repeat(1500)));
  const rand = prng(11);
  let word = "";
  for (let k = 0; k < 1500; k++) word += String.fromCharCode(97 + Math.floor(rand() * 26));
  assertExact(word, ref(word));
});

Deno.test("long pieces: 16,000 '=', 5,000 random letters and 100k random non-space match tiktoken (Rust)", () => {
  const rust = get_encoding("gpt2");
  try {
    const rustRef = (s: string) => Array.from(rust.encode_ordinary(s));
    // The two references agree where both are fast enough to run.
    const probe = "héllo wörld 12345 <|endoftext|> 🙂 " + "=".repeat(300);
    assert.deepEqual(rustRef(probe), ref(probe));
    assertExact("=".repeat(16000), rustRef("=".repeat(16000)), "16,000 '='");
    const rand = prng(5);
    let word = "";
    for (let k = 0; k < 5000; k++) word += String.fromCharCode(97 + Math.floor(rand() * 26));
    assertExact(word, rustRef(word), "5,000 random letters");
    let junk = "";
    for (let k = 0; k < 100000; k++) junk += String.fromCharCode(0x21 + Math.floor(rand() * 94));
    assertExact(junk, rustRef(junk), "100k random printable ASCII without spaces");
    const spaces = " ".repeat(20000) + "x" + "\n".repeat(20000);
    assertExact(spaces, rustRef(spaces), "40k whitespace");
  } finally {
    rust.free();
  }
});

Deno.test("encodeBatch: per-document tokens back to back", () => {
  const docs = ["Hello", "", " world's", "<|endoftext|>", "日本"];
  const { tokens, offsets } = encodeBatch(docs);
  assert.equal(offsets.length, docs.length + 1);
  assert.equal(offsets[docs.length], tokens.length);
  for (let d = 0; d < docs.length; d++) {
    assert.deepEqual(Array.from(tokens.subarray(offsets[d], offsets[d + 1])), ref(docs[d]));
  }
});

Deno.test("decode: round trips, bytes of EOT, cut characters, bad ids", () => {
  const rand = prng(9);
  for (let t = 0; t < 500; t++) {
    const s = fuzzString(rand, 30).replace(
      /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
      "?",
    );
    assert.equal(decode(encodeOrdinary(s)), s);
  }
  assert.equal(decode([EOT]), "<|endoftext|>");
  assert.deepEqual(decodeBytes([EOT]), new TextEncoder().encode("<|endoftext|>"));
  const emoji = encodeOrdinary("🙂"); // 4 bytes, split over tokens
  assert.ok(emoji.length > 1);
  assert.deepEqual(decodeBytes(emoji), new TextEncoder().encode("🙂"));
  assert.equal(decode(emoji.subarray(0, 1)), "\ufffd");
  assert.deepEqual(decodeBytes([]), new Uint8Array(0));
  for (let id = 0; id < VOCAB_SIZE; id += 997) assert.equal(decode([id]), jsRef.decode([id]));
  assert.throws(() => decode([VOCAB_SIZE]), RangeError);
  assert.throws(() => decode([-1]), RangeError);
});
