// Shared helpers for the tokenize/inspect/detokenize tests: running the pipelines in-process with
// captured stdout, the fixture corpus as documents, and temp folders.
import { join } from "node:path";
import { run as tokenize } from "../pipelines/tokenize/mod.ts";

export const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
export const CORPUS = join(FIXTURES, "corpus");
export const SHARDS = join(FIXTURES, "shards");
/** The options that made fixtures/shards (scripts/make_fixtures.ts). */
export const FIXTURE_OPTS = ["--val-fraction", "0.06", "--seed", "0"];

/** Runs `lmpipe tokenize` in-process; returns what it wrote to stdout. */
export async function tok(
  argv: string[],
  stdin?: Uint8Array | ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const s = stdin instanceof Uint8Array ? new Blob([stdin as BlobPart]).stream() : stdin;
  await tokenize(argv, {
    stdin: s,
    stdout: (b) => (parts.push(b.slice()), Promise.resolve()),
    signals: false,
  });
  return concat(parts);
}

export async function capture(
  run: (
    argv: string[],
    env: { stdout: (b: Uint8Array) => Promise<void>; stdin?: ReadableStream<Uint8Array> },
  ) => Promise<void>,
  argv: string[],
  stdin?: Uint8Array,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await run(argv, {
    stdout: (b) => (parts.push(b.slice()), Promise.resolve()),
    stdin: stdin ? new Blob([stdin as BlobPart]).stream() : undefined,
  });
  return concat(parts);
}

export function bytesStream(b: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([b as BlobPart]).stream();
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
}

/** The corpus documents in file-name order. */
export async function corpusDocs(): Promise<{ name: string; text: string }[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(CORPUS)) names.push(e.name);
  names.sort();
  return await Promise.all(
    names.map(async (name) => ({ name, text: await Deno.readTextFile(join(CORPUS, name)) })),
  );
}

export async function tmp(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "lmpipe-test-" });
}

export async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

export async function same(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
