// `lmpipe inspect`: reports format, tokens, documents, id range and the first tokens for llm.c shards,
// nanoGPT files, folders and stdin streams; exits with an input error naming the reason when a shard's
// header or size is wrong, an id is outside the vocabulary, or a folder disagrees with its meta.json.
import assert from "node:assert/strict";
import { join } from "node:path";
import { EXIT, LmpipeError } from "../lib/errors.ts";
import { encodeU16, HEADER_BYTES, shardHeader } from "../lib/shard.ts";
import { run as inspect } from "../pipelines/inspect/mod.ts";
import { capture, concat, SHARDS, tmp } from "./helpers_tokenize.ts";

const json = async (argv: string[], stdin?: Uint8Array) =>
  JSON.parse(new TextDecoder().decode(await capture(inspect, [...argv, "--json"], stdin)));

async function fails(argv: string[], re: RegExp): Promise<void> {
  await assert.rejects(capture(inspect, argv), (e: Error) => {
    assert.ok(e instanceof LmpipeError, String(e));
    assert.equal(e.exitCode, EXIT.input);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("inspect: the fixture folder, one shard, a nanoGPT file and a stdin stream", async () => {
  const meta = JSON.parse(await Deno.readTextFile(join(SHARDS, "meta.json")));
  const r = await json([SHARDS]);
  assert.equal(r.ok, true);
  assert.deepEqual(r.meta_files, [join(SHARDS, "meta.json")]);
  assert.equal(r.total.train_tokens, meta.splits.train.tokens);
  assert.equal(r.total.val_tokens, meta.splits.val.tokens);
  assert.equal(r.total.docs, 260);
  const train = r.shards[0];
  assert.equal(train.format, "llmc");
  assert.equal(train.docs, meta.splits.train.docs);
  assert.equal(train.max_id, 50256);
  assert.equal(train.ends_with_eot, true);
  assert.equal(train.head.length, 32);
  assert.ok(train.head_text.length > 10);
  const text = new TextDecoder().decode(
    await capture(inspect, [join(SHARDS, "val_000000.bin"), "--head", "8"]),
  );
  assert.match(text, /val_000000\.bin: llm\.c shard, val, .* 12 documents, ids \d+\.\.50256.*: ok/);
  assert.match(text, /first 8 tokens: /);

  const dir = await tmp();
  const raw = (await Deno.readFile(join(SHARDS, "val_000000.bin"))).subarray(HEADER_BYTES);
  await Deno.writeFile(join(dir, "val.bin"), raw);
  const nano = await json([join(dir, "val.bin")]);
  assert.equal(nano.shards[0].format, "nanogpt");
  assert.equal(nano.shards[0].tokens, raw.length / 2);
  const stream = await json(
    ["-"],
    concat([
      shardHeader(2),
      encodeU16(new Uint16Array([40, 50256])),
      shardHeader(1),
      encodeU16(new Uint16Array([50256])),
    ]),
  );
  assert.deepEqual([stream.shards[0].tokens, stream.shards[0].docs], [3, 2]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("inspect: corrupt shards and folders that disagree with meta.json exit non-zero with the reason", async () => {
  const dir = await tmp();
  const good = await Deno.readFile(join(SHARDS, "val_000000.bin"));
  await Deno.writeFile(join(dir, "short.bin"), good.subarray(0, good.length - 2));
  await fails([join(dir, "short.bin")], /short\.bin: header says \d+ tokens .* truncated or corrupt/);
  await Deno.writeFile(join(dir, "odd.bin"), new Uint8Array(11));
  await fails([join(dir, "odd.bin")], /odd\.bin: no llm\.c header/);
  await Deno.writeFile(
    join(dir, "ids.bin"),
    concat([shardHeader(3), encodeU16(new Uint16Array([1, 60000, 50256]))]),
  );
  await fails([join(dir, "ids.bin")], /ids\.bin: token id 60000 at token 1 is outside the GPT-2 vocabulary/);
  const v2 = shardHeader(0);
  v2[4] = 2;
  await Deno.writeFile(join(dir, "v2.bin"), v2);
  await fails([join(dir, "v2.bin")], /version 2/);

  // A folder: one flipped byte breaks the checksum; a missing shard is reported; a stray one too.
  const folder = join(dir, "ds");
  await Deno.mkdir(folder);
  for (const f of ["meta.json", "train_000000.bin", "val_000000.bin"]) {
    await Deno.copyFile(join(SHARDS, f), join(folder, f));
  }
  const t = await Deno.readFile(join(folder, "train_000000.bin"));
  t[HEADER_BYTES + 101] ^= 1;
  await Deno.writeFile(join(folder, "train_000000.bin"), t);
  await fails([folder], /train_000000\.bin: sha256 [0-9a-f]+ differs from the meta file's/);
  await Deno.copyFile(join(SHARDS, "train_000000.bin"), join(folder, "train_000000.bin"));
  await Deno.rename(join(folder, "val_000000.bin"), join(folder, "val_000001.bin"));
  await fails(
    [folder],
    /val_000000\.bin: listed in the meta file but missing[\s\S]*val_000001\.bin: not listed in meta\.json/,
  );
  await Deno.rename(join(folder, "val_000001.bin"), join(folder, "val_000000.bin"));
  assert.equal((await json([folder])).ok, true);
  await fails([join(dir, "nope")], /nope: no such shard file or folder/);
  await Deno.remove(dir, { recursive: true });
});
