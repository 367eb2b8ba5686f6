// Hostile tar headers: every malformed size field (fractional, negative or huge pax sizes, base-256
// sizes of 2^40 and 2^60, octal garbage, broken pax records) ends with an input error (exit 3) that
// names the archive, the member and the field, quickly; a fractional size once made the reader spin.
import assert from "node:assert/strict";
import { EXIT, LmpipeError } from "../lib/errors.ts";
import { readTar, tarHeader } from "../lib/readers/tar.ts";
import { concat, fixChecksum, pad } from "./helpers_tar.ts";

const enc = new TextEncoder();
const DOC = enc.encode("hello world ".repeat(10));

/** A pax record "LEN key=value\n" with its own length counted. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let n = body.length + 1;
  while (String(n).length + body.length !== n) n++;
  return `${n}${body}`;
}

/** An archive whose member a.txt is described by the pax header body `paxBody`. */
export function paxTar(paxBody: string): Uint8Array {
  const body = enc.encode(paxBody);
  const h = tarHeader("PaxHeaders/a.txt", body.length);
  h[156] = "x".charCodeAt(0);
  fixChecksum(h);
  return concat([h, pad(body), tarHeader("a.txt", DOC.length), pad(DOC), new Uint8Array(1024)]);
}

/** An archive whose member a.txt has a GNU base-256 size of `value`. */
function base256Tar(value: number, negative = false): Uint8Array {
  const h = tarHeader("a.txt", 0);
  h.fill(0, 124, 136);
  let v = value;
  for (let i = 135; i > 124; i--) h[i] = v % 256, v = Math.floor(v / 256);
  h[124] = negative ? 0xff : 0x80;
  fixChecksum(h);
  return concat([h, pad(DOC), new Uint8Array(1024)]);
}

function octalTar(field: string): Uint8Array {
  const h = tarHeader("a.txt", DOC.length);
  h.fill(0, 124, 136);
  h.set(enc.encode(field), 124);
  fixChecksum(h);
  return concat([h, pad(DOC), new Uint8Array(1024)]);
}

function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
}

async function readAll(bytes: Uint8Array): Promise<void> {
  for await (const m of readTar(streamOf(bytes), "evil.tar")) if (m.type === "file") await m.bytes();
}

const CASES: [string, Uint8Array, RegExp][] = [
  ["pax size 10.5", paxTar(paxRecord("size", "10.5")), /bad pax size record "10\.5"/],
  ["pax size -5", paxTar(paxRecord("size", "-5")), /bad pax size record "-5"/],
  ["pax size 1e20", paxTar(paxRecord("size", "1e20")), /bad pax size record "1e20"/],
  ["pax size 2^60", paxTar(paxRecord("size", String(2 ** 60))), /bad pax size record/],
  ["pax record length", paxTar("99999 size=3\n"), /bad pax header record length '99999'/],
  ["pax record without =", paxTar(paxRecord("size", "3").replace("=", ":")), /bad pax header .*key=value/],
  ["base-256 size 2^60", base256Tar(2 ** 60), /bad size field base-256 0x8/],
  ["base-256 negative size", base256Tar(5, true), /bad size field base-256 0xff/],
  ["octal garbage", octalTar("0000000001x"), /bad size field "0000000001x"/],
  // A size of 2^40 is well-formed but the archive ends long before: truncated, without allocating 1 TiB.
  [
    "base-256 size 2^40",
    base256Tar(2 ** 40),
    /truncated inside member 'a\.txt' \(its header says 1099511627776/,
  ],
];

for (const [label, tar, re] of CASES) {
  Deno.test(`tar: ${label} is an input error naming the archive, the member and the field`, async () => {
    const t0 = performance.now();
    await assert.rejects(readAll(tar), (e: unknown) => {
      assert.ok(e instanceof LmpipeError, String(e));
      assert.equal(e.exitCode, EXIT.input, e.message);
      assert.match(e.message, /^evil\.tar: tar (member|archive)/);
      assert.match(e.message, /'a\.txt'|PaxHeaders\/a\.txt/);
      assert.match(e.message, re);
      return true;
    });
    assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
  });
}

Deno.test("tar: tokenize of a fractional pax size exits 3 within seconds (it used to spin forever)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/evil.tar`, paxTar(paxRecord("size", "10.5")));
    const t0 = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "cli.ts", "tokenize", `${dir}/evil.tar`, "--out", `${dir}/out`, "--workers", "0"],
      cwd: new URL("..", import.meta.url).pathname,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // SIGKILL: a process stuck in a loop that never yields cannot run its SIGTERM handler.
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const out = await child.output();
    clearTimeout(timer);
    const err = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, EXIT.input, err);
    assert.match(err, /evil\.tar: tar member 'a\.txt'.*bad pax size record "10\.5"/);
    assert.ok(performance.now() - t0 < 30_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
