// Shards and token streams: the shard writer (cutting, temp names, checksums), reading concatenated
// llm.c chunks and headerless streams (whole, truncated, corrupt), and, in child processes, that a
// killed or interrupted `tokenize` leaves no shard that looks complete and that memory does not grow
// with the size of the input.
import assert from "node:assert/strict";
import { join } from "node:path";
import { LmpipeError } from "../lib/errors.ts";
import { encodeU16, HEADER_BYTES, probeShard, readTokenStream, shardHeader } from "../lib/shard.ts";
import { sha256File, ShardWriter } from "../lib/shard_writer.ts";
import { writeFailure } from "../lib/fs.ts";
import { concat, corpusDocs, files, tmp } from "./helpers_tokenize.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

function chunked(b: Uint8Array, size: number): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= b.length) return c.close();
      c.enqueue(b.slice(off, off + size)), off += size;
    },
  });
}

async function readAll(b: Uint8Array, size = 5, chunkTokens = 3): Promise<number[]> {
  const out: number[] = [];
  for await (const c of readTokenStream(chunked(b, size), "s", chunkTokens)) out.push(...c);
  return out;
}

Deno.test("token streams: llm.c chunks back to back, headerless uint16, and damaged streams", async () => {
  const a = new Uint16Array([1, 2, 3, 50256]), b = new Uint16Array([7, 50256]);
  const llmc = concat([shardHeader(4), encodeU16(a), shardHeader(0), shardHeader(2), encodeU16(b)]);
  for (const size of [1, 3, 1024, 5000]) {
    assert.deepEqual(await readAll(llmc, size), [1, 2, 3, 50256, 7, 50256]);
  }
  assert.deepEqual(await readAll(encodeU16(new Uint16Array([5, 6, 7, 8, 9]))), [5, 6, 7, 8, 9]);
  assert.deepEqual(await readAll(new Uint8Array(0)), []);
  await assert.rejects(
    readAll(new Uint8Array([1, 0, 2])),
    (e: Error) => e instanceof LmpipeError && /odd number of bytes/.test(e.message),
  );
  await assert.rejects(
    readAll(llmc.subarray(0, llmc.length - 1)),
    /shard 2 .* announces 2 tokens but the stream ends after 1/,
  );
  const junk = concat([
    shardHeader(1),
    encodeU16(new Uint16Array([1])),
    new Uint8Array(HEADER_BYTES).fill(9),
  ]);
  await assert.rejects(readAll(junk), /expected an llm\.c shard header at byte 1026 \(shard 1\)/);
});

Deno.test("shard writer: cuts on document boundaries, header counts, .tmp names until the caller renames", async () => {
  const dir = await tmp();
  const w = new ShardWriter(dir, "train", "llmc", 10, "p002of003");
  const docs = [[1, 2, 3, 50256], [4, 5, 50256], [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 50256], [
    17,
    50256,
  ]];
  for (const d of docs) await w.addDoc(new Uint16Array(d), d.length);
  const recs = await w.finish();
  assert.deepEqual(recs.map((r) => [r.file, r.tokens, r.docs]), [
    ["train_p002of003_000000.bin", 7, 2],
    ["train_p002of003_000001.bin", 12, 1], // one document larger than the limit gets a shard of its own
    ["train_p002of003_000002.bin", 2, 1],
  ]);
  assert.deepEqual(await files(dir), recs.map((r) => r.file + ".tmp"));
  for (const r of recs) {
    const p = join(dir, r.file + ".tmp");
    assert.equal((await Deno.stat(p)).size, HEADER_BYTES + 2 * r.tokens);
    assert.equal(await sha256File(p), r.sha256);
    await Deno.rename(p, join(dir, r.file));
    assert.equal((await probeShard(join(dir, r.file))).tokens, r.tokens);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("shard writer: a full disk or unwritable file is an output error naming the file and the fix", () => {
  const full = writeFailure("out/train_000003.bin.tmp", new Error("No space left on device (os error 28)"));
  assert.ok(full instanceof LmpipeError && full.exitCode === 4);
  assert.match(
    full.message,
    /out\/train_000003\.bin\.tmp: cannot write .* disk is full: free space or choose another --out/,
  );
  assert.match(
    writeFailure("out", new Error("Permission denied (os error 13)")).message,
    /permissions or choose another --out/,
  );
});

/** Starts `lmpipe tokenize` on stdin in a child process. */
function child(args: string[], denoFlags: string[] = []): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", ...denoFlags, CLI, "tokenize", "-", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Corpus text with blank lines between documents, repeated to about `bytes`. */
async function blankSeparated(bytes: number): Promise<Uint8Array> {
  const docs = (await corpusDocs()).map((d) => d.text.replace(/\r?\n[ \t]*\r?\n/g, "\n") + "\n\n");
  const one = new TextEncoder().encode(docs.join(""));
  const out = new Uint8Array(bytes);
  for (let o = 0; o < bytes; o += one.length) out.set(one.subarray(0, Math.min(one.length, bytes - o)), o);
  return out;
}

async function waitFor(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test("tokenize killed or interrupted mid-run: no shard that looks complete, no meta.json", async () => {
  // More than the encode pool keeps in flight (about 1M characters per worker), so shards get written.
  const text = await blankSeparated(4 << 20);
  for (const signal of ["SIGKILL", "SIGINT"] as const) {
    const dir = await tmp();
    const p = child(["--doc-sep", "blank", "--out", dir, "--shard-tokens", "5k", "--workers", "1"]);
    const w = p.stdin.getWriter();
    await w.write(text); // the input stays open: the run cannot finish on its own
    await waitFor(
      async () => (await files(dir)).filter((f) => f.endsWith(".tmp")).length >= 3,
      "temp shards",
    );
    p.kill(signal);
    const status = await p.status;
    await w.close().catch(() => {});
    await p.stdout.cancel(), await p.stderr.cancel();
    const left = await files(dir);
    assert.ok(left.every((f) => f.endsWith(".tmp")), `${signal}: ${left.join(" ")}`);
    if (signal === "SIGINT") {
      assert.equal(status.code, 130);
      assert.deepEqual(left, [], "SIGINT removes the temp files");
    } else {
      assert.ok(left.length >= 3);
    }
    await Deno.remove(dir, { recursive: true });
  }
});

// V8 grows its heap lazily when memory is plentiful, so an uncapped run's peak RSS creeps up with input
// size without any leak. Under a 32 MB old-generation cap, holding on to the input text (48 MB of
// strings for 24 MB) would be fatal (out of memory), and the peak RSS for 24 MB of input must stay
// within 24 MB of that for 2 MB. Encoding runs on the main thread (--workers 0) to keep one V8 heap.
Deno.test("tokenize memory is bounded: under a fixed heap cap, 24 MB of input peaks close to 2 MB", async () => {
  const peak = async (bytes: number) => {
    const dir = await tmp();
    const p = child(["--doc-sep", "blank", "--out", dir, "--workers", "0", "--json"], [
      "--v8-flags=--max-old-space-size=32",
    ]);
    const w = p.stdin.getWriter();
    const text = await blankSeparated(bytes);
    const out = p.output();
    for (let o = 0; o < text.length; o += 1 << 20) await w.write(text.subarray(o, o + (1 << 20)));
    await w.close();
    const { code, stdout, stderr } = await out;
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    await Deno.remove(dir, { recursive: true });
    const s = JSON.parse(new TextDecoder().decode(stdout));
    assert.ok(s.text_bytes > bytes * 0.9);
    return s.peak_rss_bytes as number;
  };
  const small = await peak(2e6), large = await peak(24e6);
  assert.ok(
    large - small < 24e6,
    `peak RSS ${(small / 1e6).toFixed(0)} MB for 2 MB, ${(large / 1e6).toFixed(0)} MB for 24 MB`,
  );
  console.error(
    `peak RSS: ${(small / 1e6).toFixed(0)} MB for 2 MB of input, ${(large / 1e6).toFixed(0)} MB for 24 MB`,
  );
});
