// `lmpipe detokenize`: shards and streams back to the exact text (round trip with tokenize), documents
// separated as asked, UTF-8 characters split across tokens and across read chunks rejoined.
import assert from "node:assert/strict";
import { join } from "node:path";
import { LmpipeError } from "../lib/errors.ts";
import { encodeU16, shardHeader } from "../lib/shard.ts";
import { encodeOrdinary, EOT } from "../lib/tokenizer.ts";
import { run as detokenize } from "../pipelines/detokenize/mod.ts";
import { isVal } from "../pipelines/tokenize/split.ts";
import { capture, concat, CORPUS, corpusDocs, FIXTURE_OPTS, SHARDS, tmp, tok } from "./helpers_tokenize.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

Deno.test("detokenize: the fixture shards give back the corpus documents exactly (text -> tokens -> text)", async () => {
  const docs = await corpusDocs();
  const SEP = "\n\u0001DOC\u0001\n";
  for (const split of ["train", "val"]) {
    const text = dec.decode(
      await capture(detokenize, [join(SHARDS, `${split}_000000.bin`), "--doc-sep", SEP]),
    );
    const want = docs.filter((d) => isVal(d.text, 0, 0.06) === (split === "val")).map((d) => d.text);
    assert.deepEqual(text.split(SEP), want);
  }
  // Default: every EOT is written as <|endoftext|>, like tiktoken's decode.
  const whole = dec.decode(await capture(detokenize, [join(SHARDS, "val_000000.bin")]));
  assert.ok(whole.endsWith("<|endoftext|>"));
  // A folder is its train shards then its val shards.
  const folder = await capture(detokenize, [SHARDS, "--doc-sep", SEP]);
  assert.equal(dec.decode(folder).split(SEP).length, docs.length);
});

Deno.test("detokenize: a tokenize --out - stream on stdin round-trips with --doc-sep blank", async () => {
  const text = "Grüße aus Köln 🙂\n\nsecond document, 'quoted'\n\n<|endoftext|> third\n";
  const stream = await tok(["-", "--doc-sep", "blank", "--out", "-", "--workers", "0"], enc.encode(text));
  const back = dec.decode(await capture(detokenize, ["-", "--doc-sep", "blank"], stream));
  assert.equal(back, text); // the last document keeps its single trailing newline
  // The same stream from a folder run's shards, nanoGPT format, read from a file.
  const dir = await tmp();
  await tok([CORPUS, "--out", dir, ...FIXTURE_OPTS, "--shard-format", "nanogpt", "--workers", "0"]);
  const nano = await capture(detokenize, [join(dir, "val.bin")]);
  assert.deepEqual(nano, await capture(detokenize, [join(SHARDS, "val_000000.bin")]));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("detokenize: characters split across tokens and across 1-token stream chunks are rejoined", async () => {
  // An emoji and a CJK run that GPT-2 encodes as partial-byte tokens.
  const s = "🦜🦜 𝔘𝔫𝔦 漢字かな";
  const ids = encodeOrdinary(s);
  assert.ok(ids.length > [...s].length, "expected byte-level tokens");
  const parts = [];
  for (const id of ids) parts.push(shardHeader(1), encodeU16(new Uint16Array([id])));
  parts.push(shardHeader(1), encodeU16(new Uint16Array([EOT])));
  const out = await capture(detokenize, ["-", "--doc-sep", "|"], concat(parts));
  assert.equal(dec.decode(out), s);
  await assert.rejects(
    capture(detokenize, ["-"], concat([shardHeader(1), encodeU16(new Uint16Array([65000]))])),
    (e: Error) =>
      e instanceof LmpipeError && /token id 65000 at token 0 is outside the GPT-2 vocabulary/.test(e.message),
  );
});
