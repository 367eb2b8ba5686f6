// Input readers: the streaming tar reader (ustar, GNU long names, pax, skips, corrupt and truncated
// archives), xz/gzip decompression errors, UTF-8 decoding with a replacement count, and --doc-sep
// splitting, including separators that straddle chunk boundaries.
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { LmpipeError } from "../lib/errors.ts";
import { autoDecompress } from "../lib/readers/decompress.ts";
import { buildTar, readTar, tarHeader } from "../lib/readers/tar.ts";
import { decodeUtf8, parseDocSep, splitDocs, utf8Length, Utf8Stream } from "../lib/readers/text.ts";
import { concat, fixChecksum, pad } from "./helpers_tar.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A stream that hands out `bytes` in chunks of `size` (to exercise boundaries). */
function streamOf(bytes: Uint8Array, size = 7): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      c.enqueue(bytes.slice(off, off + size));
      off += size;
    },
  });
}

async function members(bytes: Uint8Array, chunk = 100): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for await (const m of readTar(streamOf(bytes, chunk), "t.tar")) {
    if (m.type === "file") out.push([m.name, dec.decode(await m.bytes())]);
  }
  return out;
}

Deno.test("tar: round trip of buildTar, in odd chunk sizes, bodies streamed or skipped", async () => {
  const files = [
    { name: "a.txt", data: enc.encode("alpha") },
    { name: "dir/b.txt", data: new Uint8Array(1500).fill(98) },
    { name: "empty.txt", data: new Uint8Array(0) },
    { name: "c.txt", data: enc.encode("gamma ☃") },
  ];
  const tar = buildTar(files);
  for (const chunk of [1, 13, 512, 100000]) {
    assert.deepEqual(await members(tar, chunk), files.map((f) => [f.name, dec.decode(f.data)]));
  }
  // Streaming one body and skipping others.
  const seen: string[] = [];
  for await (const m of readTar(streamOf(tar, 33), "t.tar")) {
    if (m.name === "dir/b.txt") {
      let n = 0;
      for await (const c of m.stream()) n += c.length;
      assert.equal(n, 1500);
    }
    seen.push(m.name);
  }
  assert.deepEqual(seen, ["a.txt", "dir/b.txt", "empty.txt", "c.txt"]);
});

Deno.test("tar: GNU long names and pax path headers name the next member", async () => {
  const long = "x/".repeat(80) + "long.txt";
  const lnBody = enc.encode(long + "\0");
  const gnu = tarHeader("././@LongLink", lnBody.length);
  gnu[156] = "L".charCodeAt(0);
  fixChecksum(gnu);
  const paxRec = `path=pax/name.txt\n`;
  const rec = `${paxRec.length + 3 + String(paxRec.length + 3).length - 2} ${paxRec}`;
  const paxBody = enc.encode(
    `${rec.length} ${paxRec}`.length === rec.length ? rec : `${rec.length + 1} ${paxRec}`,
  );
  const pax = tarHeader("PaxHeaders/x", paxBody.length);
  pax[156] = "x".charCodeAt(0);
  fixChecksum(pax);
  const parts = [
    gnu,
    pad(lnBody),
    tarHeader("short-name", 3),
    pad(enc.encode("one")),
    pax,
    pad(paxBody),
    tarHeader("ignored.txt", 3),
    pad(enc.encode("two")),
    new Uint8Array(1024),
  ];
  const tar = concat(parts);
  assert.deepEqual(await members(tar), [[long, "one"], ["pax/name.txt", "two"]]);
});

Deno.test("tar: corrupt header and truncated member are input errors naming the archive and member", async () => {
  const tar = buildTar([{ name: "a.txt", data: enc.encode("alpha") }, {
    name: "b.txt",
    data: new Uint8Array(2000),
  }]);
  const bad = tar.slice();
  bad[512 + 512 + 3] ^= 0xff; // inside b.txt's header
  await assert.rejects(
    members(bad),
    (e: Error) =>
      e instanceof LmpipeError && /t\.tar: corrupt tar header after member 'a\.txt'/.test(e.message),
  );
  await assert.rejects(
    members(tar.slice(0, 512 * 3 + 100)),
    (e: Error) => e instanceof LmpipeError && /truncated inside member 'b\.txt'/.test(e.message),
  );
  await assert.rejects(
    members(enc.encode("just some text, not a tar at all".repeat(30))),
    /corrupt tar header/,
  );
});

Deno.test("decompress: gzip and xz streams decode; truncated or corrupt data is an input error naming the file", async () => {
  const text = enc.encode("hello compressed world\n".repeat(2000));
  const gz = gzipSync(text);
  const read = async (b: Uint8Array) => {
    const { kind, stream } = await autoDecompress(streamOf(b, 999), "f.gz");
    let out = "";
    for await (const c of stream) out += dec.decode(c, { stream: true });
    return { kind, out };
  };
  assert.deepEqual(await read(gz), { kind: "gzip", out: dec.decode(text) });
  await assert.rejects(
    read(gz.slice(0, gz.length - 30)),
    (e: Error) => e instanceof LmpipeError && /f\.gz: gzip data is truncated or corrupt/.test(e.message),
  );
  const xz = await Deno.readFile(new URL("../fixtures/openwebtext.tar.xz", import.meta.url));
  const { kind } = await read(xz.slice(0, 5000)).catch((e) => ({ kind: String(e.message) }));
  assert.match(kind, /xz data is truncated or corrupt/);
  const flipped = xz.slice();
  flipped[4000] ^= 0x55;
  await assert.rejects(read(flipped), /xz data is truncated or corrupt/);
  const plain = await read(enc.encode("plain"));
  assert.deepEqual(plain, { kind: "none", out: "plain" });
});

Deno.test("utf-8: invalid sequences become U+FFFD and are counted; literal U+FFFD is not counted", () => {
  assert.deepEqual(decodeUtf8(enc.encode("ok ☃")), { text: "ok ☃", replaced: 0 });
  const bad = new Uint8Array([0x61, 0xff, 0x62, 0xe2, 0x98, 0x63, ...enc.encode("\uFFFD")]);
  const r = decodeUtf8(bad);
  assert.equal(r.replaced, 2);
  assert.equal(r.text, "a\uFFFDb\uFFFDc\uFFFD");
  // Streaming: a 3-byte character split across chunks is joined; a stray byte is counted once.
  const u = new Utf8Stream();
  const whole = new Uint8Array([...enc.encode("x☃"), 0xc0, ...enc.encode("\uFFFDy")]);
  let text = "";
  for (let i = 0; i < whole.length; i++) text += u.push(whole.subarray(i, i + 1));
  text += u.push(new Uint8Array(0), true);
  assert.equal(text, "x☃\uFFFD\uFFFDy");
  assert.equal(u.replaced, 1);
  assert.equal(utf8Length("aé☃😀"), enc.encode("aé☃😀").length);
});

Deno.test("doc-sep: blank lines and literal separators, across every chunk boundary", async () => {
  const input = "\n\none\ntwo\n\n  \n\nthree\r\n\r\nfour\n \nfive\n\n\n";
  for (let size = 1; size <= input.length; size++) {
    const chunks = async function* () {
      for (let i = 0; i < input.length; i += size) yield input.slice(i, i + size);
    };
    const docs: string[] = [];
    for await (const d of splitDocs(chunks(), parseDocSep("blank"))) docs.push(d);
    assert.deepEqual(docs, ["one\ntwo", "three", "four", "five"], `chunk size ${size}`);
  }
  const lit = "a<SEP>b<SEP><SEP>c<SE";
  for (let size = 1; size <= lit.length; size++) {
    const chunks = async function* () {
      for (let i = 0; i < lit.length; i += size) yield lit.slice(i, i + size);
    };
    const docs: string[] = [];
    for await (const d of splitDocs(chunks(), "<SEP>")) docs.push(d);
    assert.deepEqual(docs, ["a", "b", "c<SE"], `chunk size ${size}`);
  }
  assert.equal(parseDocSep("\\n---\\n"), "\n---\n");
});
