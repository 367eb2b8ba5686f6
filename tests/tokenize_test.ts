// `lmpipe tokenize`: every input format yields the same shards for the same documents (the committed
// fixtures/shards), ids equal js-tiktoken's, output is identical for any worker count, --part units
// add up to the whole, shards are cut on document boundaries, meta.json says what was done, stdout
// streams, nanoGPT files, and every bad input fails with a clear error naming the place.
import assert from "node:assert/strict";
import { join } from "node:path";
import { getEncoding } from "js-tiktoken";
import { get_encoding } from "tiktoken";
import { listDataset } from "../lib/dataset.ts";
import { EXIT, LmpipeError } from "../lib/errors.ts";
import { autoDecompress } from "../lib/readers/decompress.ts";
import { buildTar, readTar } from "../lib/readers/tar.ts";
import { HEADER_BYTES, parseHeader, probeShard, readTokenStream, ShardReader } from "../lib/shard.ts";
import { EOT } from "../lib/tokenizer.ts";
import { isVal } from "../pipelines/tokenize/split.ts";
import {
  bytesStream,
  CORPUS,
  corpusDocs,
  files,
  FIXTURE_OPTS,
  FIXTURES,
  same,
  SHARDS,
  tmp,
  tok,
} from "./helpers_tokenize.ts";

const enc = new TextEncoder();

async function allTokens(path: string): Promise<Uint16Array> {
  const r = await ShardReader.open(path);
  try {
    return (await r.read(0, r.tokens)).slice();
  } finally {
    r.close();
  }
}

async function assertFixtureShards(dir: string, what: string): Promise<void> {
  assert.deepEqual((await files(dir)).filter((f) => f.endsWith(".bin")), [
    "train_000000.bin",
    "val_000000.bin",
  ], what);
  for (const f of ["train_000000.bin", "val_000000.bin"]) {
    assert.ok(await same(join(dir, f), join(SHARDS, f)), `${what}: ${f} differs from fixtures/shards`);
  }
}

const rejectsWith = (p: Promise<unknown>, code: number, re: RegExp) =>
  assert.rejects(p, (e: Error) => {
    assert.ok(e instanceof LmpipeError, `expected LmpipeError, got ${e}`);
    assert.equal(e.exitCode, code, e.message);
    assert.match(e.message, re);
    return true;
  });

Deno.test("tokenize: txt folder, OpenWebText tar.xz and folder, JSONL, JSONL.gz and stdin give the fixture shards", async () => {
  const dir = await tmp();
  // The unpacked OpenWebText layout: openwebtext/urlsf_subset*.xz, extracted with lmpipe's own reader.
  const owtDir = join(dir, "owt");
  const outer = (await Deno.open(join(FIXTURES, "openwebtext.tar.xz"))).readable;
  for await (const m of readTar((await autoDecompress(outer, "owt")).stream, "owt")) {
    await Deno.mkdir(join(owtDir, m.name, ".."), { recursive: true });
    await Deno.writeFile(join(owtDir, m.name), await m.bytes());
  }
  const cases: [string, string[], Uint8Array?][] = [
    ["txt folder", [CORPUS]],
    ["owt tar.xz", [join(FIXTURES, "openwebtext.tar.xz")]],
    ["owt folder", [join(owtDir, "openwebtext")]],
    ["jsonl", [join(FIXTURES, "corpus.jsonl")]],
    ["jsonl.gz", [join(FIXTURES, "corpus.jsonl.gz")]],
    ["stdin (tar.xz)", ["-"], await Deno.readFile(join(FIXTURES, "openwebtext.tar.xz"))],
    ["stdin (jsonl)", [], await Deno.readFile(join(FIXTURES, "corpus.jsonl"))],
  ];
  for (const [what, inputs, stdin] of cases) {
    const out = join(dir, what.replace(/\W+/g, "_"));
    await tok([...inputs, "--out", out, ...FIXTURE_OPTS, "--workers", "0"], stdin);
    await assertFixtureShards(out, what);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokenize: ids equal the reference encoders' per document + EOT; the split follows the content hash", async () => {
  const docs = await corpusDocs();
  // js-tiktoken is the reference but slow (quadratic on long runs): it checks the val split; tiktoken
  // (the WASM build of the Rust encoder, the same ids) checks everything.
  const js = getEncoding("gpt2");
  const wasm = get_encoding("gpt2");
  for (const split of ["train", "val"] as const) {
    const want: number[] = [];
    for (const d of docs) {
      if (isVal(d.text, 0, 0.06) !== (split === "val")) continue;
      // encode_ordinary semantics: a literal <|endoftext|> in the text is ordinary text.
      const ids = split === "val" ? js.encode(d.text, [], []) : Array.from(wasm.encode_ordinary(d.text));
      want.push(...ids, EOT);
    }
    const got = await allTokens(join(SHARDS, `${split}_000000.bin`));
    assert.equal(got.length, want.length, split);
    assert.ok(got.every((v, i) => v === want[i]), `${split} ids differ from the reference`);
  }
  wasm.free();
  const val = await allTokens(join(SHARDS, "val_000000.bin"));
  assert.ok(val.length >= 5000, `fixture val split has ${val.length} tokens`);
});

Deno.test("tokenize: byte-identical output for 0, 1, 2 and 3 workers (small shards)", async () => {
  const dir = await tmp();
  const hashes: string[] = [];
  for (const w of [0, 1, 2, 3]) {
    const out = join(dir, `w${w}`);
    await tok([
      join(FIXTURES, "corpus.jsonl.gz"),
      "--out",
      out,
      ...FIXTURE_OPTS,
      "--shard-tokens",
      "20k",
      "--workers",
      String(w),
    ]);
    const meta = JSON.parse(await Deno.readTextFile(join(out, "meta.json")));
    hashes.push(JSON.stringify(meta.shards));
    assert.ok(meta.shards.length >= 7, `${meta.shards.length} shards`);
  }
  assert.equal(new Set(hashes).size, 1, "shards (names, counts, sha256) differ between worker counts");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokenize: shards are cut at --shard-tokens on document boundaries and add up to the whole", async () => {
  const dir = await tmp();
  await tok([CORPUS, "--out", dir, ...FIXTURE_OPTS, "--shard-tokens", "10k", "--workers", "0"]);
  const ds = await listDataset([dir]);
  assert.ok(ds.train.length >= 12);
  const whole = await allTokens(join(SHARDS, "train_000000.bin"));
  let off = 0;
  for (const f of ds.train) {
    const t = await allTokens(f);
    assert.ok(t.length <= 10_000 || t.indexOf(EOT) === t.length - 1, `${f}: ${t.length} tokens`);
    assert.equal(t[t.length - 1], EOT, `${f} ends inside a document`);
    assert.ok(t.every((v, i) => v === whole[off + i]), `${f} is not the next slice of the whole`);
    off += t.length;
  }
  assert.equal(off, whole.length);
  // A document longer than --shard-tokens gets a shard of its own rather than being split.
  const one = join(dir, "one");
  await tok([CORPUS, "--out", one, "--shard-tokens", "50", "--val-fraction", "0", "--workers", "0"]);
  const meta = JSON.parse(await Deno.readTextFile(join(one, "meta.json")));
  assert.equal(meta.shards.length, 260);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokenize: meta.json records tokenizer, splits, shards with sha256, command, options, version", async () => {
  const meta = JSON.parse(await Deno.readTextFile(join(SHARDS, "meta.json")));
  assert.deepEqual(meta.tokenizer, { name: "gpt2", vocab_size: 50257, eot: 50256 });
  assert.equal(meta.vocab_size, 50257);
  assert.equal(meta.splits.train.docs + meta.splits.val.docs, 260);
  assert.ok(meta.splits.train.tokens >= 100_000);
  assert.ok(meta.splits.val.tokens >= 5_000);
  assert.equal(meta.replacement_chars, 0);
  assert.equal(meta.part, null);
  assert.deepEqual(meta.command.slice(0, 3), ["lmpipe", "tokenize", "fixtures/corpus"]);
  assert.equal(meta.options.val_fraction, 0.06);
  assert.match(meta.lmpipe_version, /^\d+\.\d+\.\d+/);
  for (const s of meta.shards) {
    const info = await probeShard(join(SHARDS, s.file));
    assert.equal(info.tokens, s.tokens);
    const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(join(SHARDS, s.file)));
    assert.equal(
      Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join(""),
      s.sha256,
    );
  }
  const bytes = (await corpusDocs()).reduce((a, d) => a + enc.encode(d.text).length, 0);
  assert.equal(meta.splits.train.bytes + meta.splits.val.bytes, bytes);
});

Deno.test("tokenize: --part i/N over files and archive members adds up to the whole, in one folder or several", async () => {
  const dir = await tmp();
  for (const i of [1, 2, 3]) {
    await tok([CORPUS, "--out", join(dir, "same"), ...FIXTURE_OPTS, "--part", `${i}/3`, "--workers", "0"]);
    await tok([
      join(FIXTURES, "openwebtext.tar.xz"),
      "--out",
      join(dir, `p${i}`),
      ...FIXTURE_OPTS,
      "--part",
      `${i}/3`,
      "--workers",
      "0",
    ]);
  }
  const names = await files(join(dir, "same"));
  assert.ok(
    names.includes("train_p001of003_000000.bin") && names.includes("meta_p003of003.json"),
    names.join(" "),
  );
  const whole = JSON.parse(await Deno.readTextFile(join(SHARDS, "meta.json"))).splits;
  for (
    const ds of [
      await listDataset([join(dir, "same")]),
      await listDataset([1, 2, 3].map((i) => join(dir, `p${i}`))),
    ]
  ) {
    const sum = { train: 0, val: 0 };
    for (const m of ds.metas) {
      for (const s of ["train", "val"] as const) sum[s] += (m.meta.splits as any)[s].tokens;
    }
    assert.deepEqual(sum, { train: whole.train.tokens, val: whole.val.tokens });
    let tokens = 0;
    for (const f of ds.train) tokens += (await probeShard(f)).tokens;
    assert.equal(tokens, whole.train.tokens);
  }
  // OWT parts split by urlsf_subset archive: 4 subsets over 3 parts -> part 1 holds subsets 0 and 3.
  const m1 = JSON.parse(await Deno.readTextFile(join(dir, "p1", "meta_p001of003.json")));
  assert.deepEqual(m1.units, { total: 4, kept: 2 });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokenize: --out - streams llm.c chunks with headers; nanogpt writes headerless train.bin/val.bin", async () => {
  const dir = await tmp();
  const all = join(dir, "all");
  await tok([CORPUS, "--out", all, "--val-fraction", "0", "--workers", "0"]);
  const whole = await allTokens(join(all, "train_000000.bin"));
  const stream = await tok([CORPUS, "--out", "-", "--shard-tokens", "30k", "--workers", "0"]);
  assert.ok(parseHeader(stream.subarray(0, HEADER_BYTES)) !== null);
  const got: number[] = [];
  let chunks = 0;
  let maxChunk = 0;
  for await (const c of readTokenStream(bytesStream(stream), "stdout", 1 << 20)) {
    got.push(...c), chunks++, maxChunk = Math.max(maxChunk, c.length);
  }
  assert.deepEqual(got, Array.from(whole));
  assert.ok(chunks >= 5 && maxChunk <= 30000, `${chunks} chunks, largest ${maxChunk}`);
  assert.equal(stream.length, whole.length * 2 + chunks * HEADER_BYTES);
  const nano = join(dir, "nano");
  await tok([CORPUS, "--out", nano, ...FIXTURE_OPTS, "--shard-format", "nanogpt", "--workers", "0"]);
  assert.deepEqual((await files(nano)).filter((f) => f.endsWith(".bin")), ["train.bin", "val.bin"]);
  for (const s of ["train", "val"]) {
    const raw = await Deno.readFile(join(nano, `${s}.bin`));
    const llmc = await Deno.readFile(join(SHARDS, `${s}_000000.bin`));
    assert.deepEqual(raw, llmc.subarray(HEADER_BYTES));
    assert.equal((await probeShard(join(nano, `${s}.bin`))).format, "nanogpt");
  }
  const raw = await tok([CORPUS, "--out", "-", "--shard-format", "nanogpt", "--workers", "0"]);
  assert.deepEqual(
    raw,
    await Deno.readFile(join(all, "train_000000.bin")).then((b) => b.subarray(HEADER_BYTES)),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokenize: plain text on stdin is one document, or split by --doc-sep blank / literal", async () => {
  const count = async (argv: string[], text: string) => {
    const out = await tok(["-", "--out", "-", "--workers", "0", ...argv], enc.encode(text));
    let eots = 0;
    for await (const c of readTokenStream(bytesStream(out))) for (const t of c) eots += t === EOT ? 1 : 0;
    return eots;
  };
  const text = "first doc\nline two\n\nsecond <|endoftext|> doc\n\n\n\nthird\n";
  assert.equal(await count([], text), 1);
  assert.equal(await count(["--doc-sep", "blank"], text), 3);
  assert.equal(await count(["--doc-sep", "doc"], text), 3);
  assert.equal(await count(["--doc-sep", "\\n\\n"], text), 3); // the empty document between is dropped
});

Deno.test("tokenize: invalid UTF-8 is replaced, counted in meta.json and warned about; not fatal", async () => {
  const dir = await tmp();
  await Deno.mkdir(join(dir, "in"));
  await Deno.writeFile(
    join(dir, "in", "bad.txt"),
    new Uint8Array([...enc.encode("caf"), 0xe9, 0x20, 0xff, 0xfe, ...enc.encode(" ok")]),
  );
  await Deno.writeTextFile(join(dir, "in", "good.txt"), "fine");
  await tok([join(dir, "in"), "--out", join(dir, "out"), "--workers", "0"]);
  const meta = JSON.parse(await Deno.readTextFile(join(dir, "out", "meta.json")));
  assert.equal(meta.replacement_chars, 3);
  assert.match(meta.replacement_sources[0].source, /bad\.txt$/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokenize: bad inputs and outputs fail with an error naming the file, the place and the fix", async () => {
  const dir = await tmp();
  const out = join(dir, "out");
  const w = (name: string, data: Uint8Array | string) =>
    typeof data === "string"
      ? Deno.writeTextFile(join(dir, name), data)
      : Deno.writeFile(join(dir, name), data);
  const xz = await Deno.readFile(join(FIXTURES, "openwebtext.tar.xz"));
  await w("trunc.tar.xz", xz.subarray(0, Math.floor(xz.length / 2)));
  await rejectsWith(
    tok([join(dir, "trunc.tar.xz"), "--out", out, "--workers", "0"]),
    EXIT.input,
    /trunc\.tar\.xz.*(xz data is truncated|truncated)/,
  );
  assert.deepEqual(await files(out), [], "a failed run leaves no temp or shard files");
  const gz = await Deno.readFile(join(FIXTURES, "corpus.jsonl.gz"));
  await w("c.jsonl.gz", gz.subarray(0, gz.length - 100));
  await rejectsWith(
    tok([join(dir, "c.jsonl.gz"), "--out", out, "--workers", "0"]),
    EXIT.input,
    /c\.jsonl\.gz: gzip data is truncated or corrupt/,
  );
  await w("x.jsonl", '{"text": "fine"}\n{"text": "also"}\n{not json}\n');
  await rejectsWith(
    tok([join(dir, "x.jsonl"), "--out", out, "--workers", "0"]),
    EXIT.input,
    /x\.jsonl: line 3: not valid JSON/,
  );
  await w("y.jsonl", '{"text": "fine"}\n{"body": "no text"}\n');
  await rejectsWith(
    tok([join(dir, "y.jsonl"), "--out", out, "--workers", "0"]),
    EXIT.input,
    /y\.jsonl: line 2: no string field "text".*fields: body.*--field/,
  );
  // The inner archive of an OpenWebText tar is damaged: the message names the member.
  const innerBad = buildTar([{ name: "openwebtext/urlsf_subset00-1_data.xz", data: xz.subarray(0, 300) }]);
  await w("owt.tar", innerBad);
  await rejectsWith(
    tok([join(dir, "owt.tar"), "--out", out, "--workers", "0"]),
    EXIT.input,
    /owt\.tar > openwebtext\/urlsf_subset00-1_data\.xz: xz data/,
  );
  await w("empty.txt", "");
  await rejectsWith(
    tok([join(dir, "empty.txt"), "--out", out, "--workers", "0"]),
    EXIT.input,
    /no documents/,
  );
  await rejectsWith(
    tok(["-", "--out", out, "--workers", "0"], new Uint8Array(0)),
    EXIT.input,
    /no documents/,
  );
  await Deno.mkdir(join(dir, "nothing"));
  await rejectsWith(tok([join(dir, "nothing"), "--out", out]), EXIT.input, /no \.txt files/);
  await rejectsWith(tok([join(dir, "missing.txt"), "--out", out]), EXIT.input, /missing\.txt: no such file/);
  await rejectsWith(tok([CORPUS, "--out", out, "--part", "5/3"]), EXIT.usage, /--part must be i\/N/);
  await rejectsWith(tok([CORPUS]), EXIT.usage, /--out DIR\|- is required/);
  // Existing shards are refused without --force; --force replaces them and drops stale ones.
  await tok([CORPUS, "--out", out, "--shard-tokens", "20k", "--val-fraction", "0", "--workers", "0"]);
  await rejectsWith(
    tok([CORPUS, "--out", out, "--workers", "0"]),
    EXIT.output,
    /already holds shards.*--force/,
  );
  await tok([CORPUS, "--out", out, "--force", "--val-fraction", "0", "--workers", "0"]);
  assert.deepEqual(await files(out), ["meta.json", "train_000000.bin"]);
  // An output path that is a file, or a folder that cannot be created.
  await rejectsWith(tok([CORPUS, "--out", join(dir, "x.jsonl")]), EXIT.output, /is a file, not a folder/);
  await rejectsWith(
    tok([CORPUS, "--out", join(dir, "x.jsonl", "sub")]),
    EXIT.output,
    /cannot (create|use) the folder/,
  );
  await Deno.remove(dir, { recursive: true });
});
