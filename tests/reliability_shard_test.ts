// Shards that are not what they seem: an llm.c shard whose magic number is damaged, a headerless file
// under a name that does not ask for nanoGPT's raw format, and text where tokens are expected (a file,
// or plain text piped into `eval --data -`) are input errors naming the file, never junk tokens.
import assert from "node:assert/strict";
import { join } from "node:path";
import { EXIT, LmpipeError } from "../lib/errors.ts";
import { encodeU16, probeShard, readTokenStream, shardHeader } from "../lib/shard.ts";
import { rejectsWith } from "./helpers_run.ts";
import { run as inspect } from "../pipelines/inspect/mod.ts";

const ids = new Uint16Array(600).map((_, i) => (i * 37) % 2000);
const llmc = new Uint8Array([...shardHeader(ids.length), ...encodeU16(ids)]);
const damaged = llmc.slice();
damaged[0] ^= 0x01; // one bit of the magic
const text = new TextEncoder().encode("The old town sat by the river.\n".repeat(100));

async function fileWith(name: string, bytes: Uint8Array): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-rel-shard-" });
  await Deno.writeFile(join(dir, name), bytes);
  return join(dir, name);
}

Deno.test("shard: a damaged llm.c magic is exit 3 naming the file, whatever the file's name", async () => {
  for (const name of ["train_000000.bin", "val.bin", "train.bin"]) {
    const p = await fileWith(name, damaged);
    await rejectsWith(probeShard(p), EXIT.input, new RegExp(`${name}: not a token shard: .*damaged magic`));
    await rejectsWith(
      inspect([p], { stdout: () => Promise.resolve() } as never),
      EXIT.input,
      /damaged magic/,
    );
  }
});

Deno.test("shard: headerless tokens are read only under nanoGPT's names (train.bin, val.bin)", async () => {
  const raw = encodeU16(ids).slice();
  for (const name of ["train.bin", "val.bin", "train_p001of002.bin"]) {
    const info = await probeShard(await fileWith(name, raw));
    assert.deepEqual([info.format, info.tokens], ["nanogpt", ids.length]);
  }
  for (const name of ["train_000000.bin", "data.bin", "toy_val_000001.bin"]) {
    await rejectsWith(
      probeShard(await fileWith(name, raw)),
      EXIT.input,
      new RegExp(`${name}: no llm\\.c header \\(magic \\d+, expected 20240520\\).*train\\.bin, val\\.bin`),
    );
  }
  assert.equal((await probeShard(await fileWith("x_000000.bin", llmc))).format, "llmc");
});

Deno.test("shard: text where tokens are expected is exit 3 (a file, or a stream on stdin)", async () => {
  await rejectsWith(
    probeShard(await fileWith("val.bin", text)),
    EXIT.input,
    /val\.bin: not a token shard: it holds text/,
  );
  const read = async (b: Uint8Array) => {
    for await (
      const _ of readTokenStream(ReadableStream.from([b.subarray(0, 100), b.subarray(100)]), "stdin")
    ) {
      // drain
    }
  };
  await rejectsWith(read(text), EXIT.input, /stdin: not a token stream: it holds text/);
  await rejectsWith(read(damaged), EXIT.input, /stdin: not a token stream: .*damaged magic/);
  await read(encodeU16(ids).slice()); // headerless tokens on a stream stay accepted
  await read(llmc);
  assert.ok(new LmpipeError("x") instanceof Error);
});
