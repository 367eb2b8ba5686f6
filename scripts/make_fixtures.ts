// Generates lmpipe's fixtures, deterministically (fixed seed): a corpus of varied synthetic documents
// (fixtures/corpus/*.txt: prose-like sentences, code, lists, tables, several scripts and languages,
// emoji, CRLF, long whitespace, very long words, literal <|endoftext|>), the same documents as an
// OpenWebText-layout archive (fixtures/openwebtext.tar.xz holding openwebtext/urlsf_subset*.xz, each an
// xz tar of .txt), as JSON Lines (corpus.jsonl, corpus.jsonl.gz), and tokenized shards (fixtures/shards).
// Everything here is generated from the word lists below, written for lmpipe.
// Needs the `xz` command (xz-utils). Run: deno run -A scripts/make_fixtures.ts
import { gzipSync } from "node:zlib";
import { buildTar } from "../lib/readers/tar.ts";
import { main } from "../cli.ts";

const ROOT = new URL("../fixtures/", import.meta.url).pathname;
const DOCS = 260;
const SUBSETS = 4;

// ---- seeded randomness ----------------------------------------------------------------------------
let state = 0x5eed1234;
function rand(): number {
  state = (state + 0x6d2b79f5) | 0;
  let t = Math.imul(state ^ (state >>> 15), 1 | state);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
const cap = (s: string) => s[0].toUpperCase() + s.slice(1);

// ---- English-like prose -----------------------------------------------------------------------------
const W = {
  det: ["the", "a", "every", "some", "that", "this", "one", "no", "each", "another"],
  adj: [
    "quiet",
    "red",
    "patient",
    "sudden",
    "narrow",
    "electric",
    "old",
    "curious",
    "bright",
    "heavy",
    "tiny",
    "careful",
    "distant",
    "wooden",
    "broken",
    "gentle",
    "rapid",
    "hollow",
    "silver",
    "ordinary",
    "strange",
    "warm",
  ],
  noun: [
    "river",
    "engineer",
    "lantern",
    "village",
    "machine",
    "question",
    "garden",
    "signal",
    "teacher",
    "bridge",
    "harbor",
    "notebook",
    "mountain",
    "kettle",
    "library",
    "farmer",
    "compass",
    "window",
    "storm",
    "orchestra",
    "algorithm",
    "bicycle",
    "market",
    "letter",
    "island",
    "committee",
    "forest",
    "tunnel",
    "pilot",
    "recipe",
  ],
  verb: [
    "finds",
    "carries",
    "watches",
    "builds",
    "forgets",
    "measures",
    "follows",
    "repairs",
    "paints",
    "answers",
    "crosses",
    "counts",
    "remembers",
    "borrows",
    "opens",
    "describes",
    "ignores",
    "collects",
    "tests",
    "hears",
  ],
  adv: [
    "slowly",
    "again",
    "carefully",
    "almost",
    "never",
    "quietly",
    "suddenly",
    "often",
    "gladly",
    "barely",
  ],
  prep: ["near", "under", "behind", "across", "beside", "inside", "beyond", "without", "toward", "above"],
  conj: ["and", "but", "because", "while", "although", "so", "until", "before", "after", "since"],
  name: [
    "Ada",
    "Bruno",
    "Chen",
    "Dalia",
    "Emeka",
    "Freya",
    "Goran",
    "Hana",
    "Ivo",
    "Juno",
    "Kofi",
    "Lena",
    "Mateo",
  ],
};
const np = () => `${pick(W.det)} ${rand() < 0.6 ? pick(W.adj) + " " : ""}${pick(W.noun)}`;
function clause(): string {
  const subj = rand() < 0.25 ? pick(W.name) : np();
  const tail = rand() < 0.5 ? ` ${pick(W.prep)} ${np()}` : "";
  return `${subj} ${rand() < 0.3 ? pick(W.adv) + " " : ""}${pick(W.verb)} ${np()}${tail}`;
}
function sentence(): string {
  const r = rand();
  if (r < 0.15) {
    return `"${cap(clause())}," ${pick(W.name)} said, "${rand() < 0.5 ? "don't" : "we'll"} ${
      pick(W.verb).replace(/s$/, "")
    } it."`;
  }
  if (r < 0.25) return `${cap(clause())}?`;
  if (r < 0.5) return `${cap(clause())}, ${pick(W.conj)} ${clause()}.`;
  if (r < 0.6) return `It's ${int(2, 99)} ${pick(W.noun)}s ${pick(W.prep)} ${np()}; ${clause()}.`;
  return `${cap(clause())}.`;
}
const paragraph = (n: number) => Array.from({ length: n }, sentence).join(" ");
function prose(): string {
  const paras = Array.from({ length: int(3, 9) }, () => paragraph(int(3, 8)));
  const title = rand() < 0.5 ? `${cap(np())} ${pick(W.prep)} ${np()}\n\n` : "";
  return title + paras.join("\n\n") + "\n";
}

// ---- code ---------------------------------------------------------------------------------------------
const ident = () => pick(W.adj) + cap(pick(W.noun));
function jsCode(): string {
  const fns = Array.from({ length: int(2, 6) }, () => {
    const name = ident(), a = pick(W.noun), b = pick(W.noun) + "s";
    return `/** ${cap(clause())}. */\nexport function ${name}(${a}, ${b} = []) {\n` +
      `  const total = ${b}.reduce((acc, x) => acc + x.${pick(W.noun)}Count, ${int(0, 9)});\n` +
      `  if (${a} === undefined || total > ${
        int(10, 9999)
      }) {\n    throw new Error(\`${name}: bad \${${a}}\`);\n  }\n` +
      `  for (let i = 0; i < ${b}.length; i++) {\n    ${b}[i] = { ...${b}[i], rank: i * ${
        int(2, 7)
      } };\n  }\n` +
      `  return { ${a}, total, ratio: total / ${(rand() * 10).toFixed(3)} };\n}\n`;
  });
  return `// ${cap(paragraph(1))}\n"use strict";\n\n` + fns.join("\n");
}
function pyCode(): string {
  const cls = cap(pick(W.noun)) + cap(pick(W.noun));
  const methods = Array.from({ length: int(2, 5) }, () => {
    const m = pick(W.verb).replace(/s$/, "") + "_" + pick(W.noun);
    return `    def ${m}(self, ${pick(W.noun)}: int, *args, **kwargs) -> dict:\n` +
      `        """${cap(clause())}."""\n        values = [v ** ${int(2, 3)} for v in range(${
        int(3, 40)
      }) if v % ${int(2, 5)}]\n` +
      `        self.cache[${
        JSON.stringify(m)
      }] = sum(values) / max(len(values), 1)\n        return {"ok": True, "n": len(values)}\n`;
  });
  return `import math\nfrom collections import defaultdict\n\n\nclass ${cls}:\n    def __init__(self):\n        self.cache = defaultdict(float)\n\n` +
    methods.join("\n") + `\n\nif __name__ == "__main__":\n    print(${cls}().__dict__)\n`;
}
function cCode(): string {
  return `#include <stdio.h>\n#include <stdint.h>\n\n/* ${clause()} */\nstatic uint32_t mix(uint32_t h) {\n` +
    `\th ^= h >> ${int(11, 17)};\n\th *= 0x${
      int(0x10000000, 0x7fffffff).toString(16)
    }u;\n\treturn h ^ (h >> ${int(13, 16)});\n}\n\n` +
    `int main(void) {\n\tuint32_t acc = ${int(1, 999)};\n\tfor (int i = 0; i < ${
      int(10, 500)
    }; ++i) {\n\t\tacc = mix(acc + (uint32_t)i);\n\t}\n` +
    `\tprintf("%u\\n", acc);\n\treturn 0;\n}\n`;
}

// ---- lists, tables, numbers --------------------------------------------------------------------------
function list(): string {
  const head = `## ${cap(pick(W.adj))} ${pick(W.noun)}s to ${pick(W.verb).replace(/s$/, "")}\n\n`;
  const bullets = Array.from(
    { length: int(5, 25) },
    (_, i) =>
      (rand() < 0.5 ? `${i + 1}. ` : pick(["- ", "* ", "  - "])) + cap(clause()) +
      (rand() < 0.3 ? ` (${int(1, 500)} g)` : ""),
  );
  return head + bullets.join("\n") + "\n";
}
function table(): string {
  const cols = ["id", "date", pick(W.noun), "price", "ratio", "hex"];
  const rows = Array.from(
    { length: int(10, 60) },
    (_, i) =>
      [
        i + 1,
        `20${int(10, 26)}-${String(int(1, 12)).padStart(2, "0")}-${String(int(1, 28)).padStart(2, "0")}`,
        pick(W.adj),
        (rand() * 1000).toFixed(2),
        (rand() * 2 - 1).toExponential(3),
        "0x" + int(0, 0xffffff).toString(16),
      ].join(","),
  );
  return cols.join(",") + "\n" + rows.join("\n") + "\n";
}
function numbers(): string {
  const parts = Array.from({ length: int(20, 80) }, () => {
    const r = rand();
    if (r < 0.2) return String(int(0, 1e9));
    if (r < 0.4) return (rand() * 1e4).toFixed(int(1, 6));
    if (r < 0.55) {
      return `${int(1, 999)},${String(int(0, 999)).padStart(3, "0")},${String(int(0, 999)).padStart(3, "0")}`;
    }
    if (r < 0.7) return `+${int(1, 99)} ${int(100, 999)} ${int(1000, 9999)}`;
    if (r < 0.85) return `${int(0, 23)}:${String(int(0, 59)).padStart(2, "0")}`;
    return `${int(1, 100)}%`;
  });
  return `Readings for the ${pick(W.adj)} ${pick(W.noun)}: ` + parts.join(" ") + ".\n";
}

// ---- other languages and scripts (word salad from small hand-written lists) -------------------------
const LANGS: Record<string, string[]> = {
  de: [
    "Straße",
    "Mädchen",
    "größer",
    "über",
    "schön",
    "Brücke",
    "fährt",
    "Bücher",
    "heißt",
    "weiß",
    "Äpfel",
    "und",
    "der",
    "die",
    "nicht",
  ],
  fr: [
    "été",
    "où",
    "garçon",
    "déjà",
    "forêt",
    "très",
    "hôpital",
    "français",
    "noël",
    "cœur",
    "à",
    "le",
    "la",
    "et",
    "ça",
  ],
  es: [
    "niño",
    "mañana",
    "corazón",
    "también",
    "árbol",
    "canción",
    "pequeña",
    "¿dónde",
    "está?",
    "¡hola!",
    "el",
    "y",
    "muy",
  ],
  ru: [
    "привет",
    "мир",
    "книга",
    "река",
    "солнце",
    "быстро",
    "говорит",
    "новый",
    "дом",
    "и",
    "в",
    "не",
    "это",
    "хорошо",
  ],
  el: [
    "καλημέρα",
    "θάλασσα",
    "βιβλίο",
    "ήλιος",
    "και",
    "το",
    "η",
    "ένα",
    "γράφει",
    "ποτάμι",
    "φως",
    "δρόμος",
  ],
  ja: [
    "こんにちは",
    "世界",
    "猫",
    "が",
    "好き",
    "です",
    "。",
    "東京",
    "の",
    "電車",
    "は",
    "速い",
    "ありがとう",
    "山",
    "川",
  ],
  zh: ["你好", "世界", "我们", "学习", "语言", "模型", "，", "。", "天气", "很", "好", "北京", "河流", "书"],
  ko: ["안녕하세요", "세계", "고양이", "학교", "에서", "공부", "합니다", "바다", "는", "그리고", "책"],
  ar: ["مرحبا", "العالم", "كتاب", "في", "على", "من", "البحر", "شمس", "جميل", "و"],
  hi: ["नमस्ते", "दुनिया", "किताब", "पानी", "और", "है", "में", "बहुत", "अच्छा", "नदी"],
};
function foreign(): string {
  const lang = pick(Object.keys(LANGS));
  const words = LANGS[lang];
  const spaced = !["ja", "zh"].includes(lang);
  const sent = () => Array.from({ length: int(5, 16) }, () => pick(words)).join(spaced ? " " : "");
  const paras = Array.from(
    { length: int(3, 10) },
    () => Array.from({ length: int(2, 6) }, sent).join(spaced ? ". " : "") + (spaced ? "." : ""),
  );
  return paras.join("\n\n") + "\n";
}
const EMOJI = ["😀", "🚀", "🌍", "🎉", "👍🏽", "❤️", "👩‍💻", "🇯🇵", "🐍", "☕", "🧪", "✨", "🔥", "🙈", "1️⃣"];
function emoji(): string {
  return Array.from(
    { length: int(10, 40) },
    () => (rand() < 0.4 ? pick(EMOJI) + pick(EMOJI) + " " : "") + sentence(),
  ).join(" ") + "\n";
}

// ---- awkward cases -------------------------------------------------------------------------------------
const crlf = () => prose().replace(/\n/g, "\r\n");
function whitespace(): string {
  return [
    paragraph(2),
    " ".repeat(int(50, 400)),
    paragraph(2),
    "\t".repeat(int(10, 60)),
    "\n".repeat(int(10, 80)),
    paragraph(1),
    " \t \u00a0 \u3000 ".repeat(int(3, 20)),
    paragraph(2),
    "    indented line\n".repeat(int(3, 10)),
  ].join("");
}
function endoftext(): string {
  return `${paragraph(2)} The marker <|endoftext|> appears here as plain text. ${
    paragraph(2)
  }\n<|endoftext|>\n` +
    `${paragraph(1)} <|endoftext|><|endoftext|> and <|fim_prefix|> too.\n`;
}
function longWords(): string {
  const r = rand();
  const run = r < 0.3
    ? "=".repeat(int(2000, 6000))
    : r < 0.6
    ? "ab".repeat(int(500, 2000))
    : "x".repeat(int(1000, 3000));
  return `${paragraph(2)}\n${run}\n${paragraph(1)} https://example.org/${
    "segment/".repeat(int(10, 40))
  }index.html?q=${"a".repeat(200)}\n` +
    `${"Pneumono" + "ultramicroscopic".repeat(10) + "silicovolcanoconiosis"}\n`;
}
function markup(): string {
  return `<html>\n<head><title>${cap(np())}</title></head>\n<body>\n` +
    Array.from(
      { length: int(3, 10) },
      () => `  <p class="${pick(W.adj)}">${sentence()} &amp; ${sentence()}</p>`,
    ).join("\n") +
    `\n  <a href="https://example.com/${pick(W.noun)}?id=${
      int(1, 9999)
    }&amp;x=1">${np()}</a>\n</body>\n</html>\n`;
}

const KINDS: [string, () => string, number][] = [
  ["prose", prose, 40],
  ["js", jsCode, 7],
  ["py", pyCode, 7],
  ["c", cCode, 4],
  ["list", list, 7],
  ["table", table, 5],
  ["numbers", numbers, 4],
  ["foreign", foreign, 10],
  ["emoji", emoji, 4],
  ["crlf", crlf, 4],
  ["space", whitespace, 3],
  ["eot", endoftext, 2],
  ["long", longWords, 2],
  ["html", markup, 3],
];
const totalWeight = KINDS.reduce((a, k) => a + k[2], 0);
function kind(): [string, () => string] {
  let r = rand() * totalWeight;
  for (const [n, f, w] of KINDS) if ((r -= w) < 0) return [n, f];
  return [KINDS[0][0], KINDS[0][1]];
}

// ---- write everything ------------------------------------------------------------------------------------
async function xz(data: Uint8Array): Promise<Uint8Array> {
  const p = new Deno.Command("xz", { args: ["-9", "-T1", "-c"], stdin: "piped", stdout: "piped" }).spawn();
  const w = p.stdin.getWriter();
  await w.write(data);
  await w.close();
  const { code, stdout } = await p.output();
  if (code !== 0) throw new Error("xz failed");
  return stdout;
}

const enc = new TextEncoder();
const docs: { name: string; text: string }[] = [];
// Every kind appears at least once; the rest are drawn by weight.
for (const [n, f] of KINDS) docs.push({ name: n, text: f() });
while (docs.length < DOCS) {
  const [n, f] = kind();
  docs.push({ name: n, text: f() });
}
const named = docs.map((d, i) => ({ name: `doc${String(i).padStart(4, "0")}-${d.name}.txt`, text: d.text }));

await Deno.remove(ROOT + "corpus", { recursive: true }).catch(() => {});
await Deno.mkdir(ROOT + "corpus", { recursive: true });
for (const d of named) await Deno.writeTextFile(ROOT + "corpus/" + d.name, d.text);

// OpenWebText layout: openwebtext/urlsf_subsetNN-1_data.xz, each an xz tar of .txt, inside an xz tar.
const per = Math.ceil(named.length / SUBSETS);
const subsets: { name: string; data: Uint8Array }[] = [];
for (let s = 0; s < SUBSETS; s++) {
  const members = named.slice(s * per, (s + 1) * per).map((d) => ({
    name: d.name,
    data: enc.encode(d.text),
  }));
  subsets.push({
    name: `openwebtext/urlsf_subset${String(s).padStart(2, "0")}-1_data.xz`,
    data: await xz(buildTar(members)),
  });
}
await Deno.writeFile(ROOT + "openwebtext.tar.xz", await xz(buildTar(subsets)));

const jsonl =
  named.map((d) => JSON.stringify({ id: d.name.replace(/\.txt$/, ""), text: d.text })).join("\n") + "\n";
await Deno.writeTextFile(ROOT + "corpus.jsonl", jsonl);
await Deno.writeFile(ROOT + "corpus.jsonl.gz", gzipSync(enc.encode(jsonl), { level: 9 }));

// Tokenized shards (train + val) for the training and eval tests.
await Deno.remove(ROOT + "shards", { recursive: true }).catch(() => {});
const code = await main([
  "tokenize",
  "fixtures/corpus",
  "--out",
  "fixtures/shards",
  "--val-fraction",
  "0.06",
  "--seed",
  "0",
  "--shard-tokens",
  "100M",
]);
if (code !== 0) throw new Error(`tokenize failed with ${code}`);
const bytes = named.reduce((a, d) => a + enc.encode(d.text).length, 0);
console.error(`fixtures: ${named.length} documents, ${(bytes / 1e3).toFixed(0)} kB of text`);
