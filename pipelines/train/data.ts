// Finds the token shards behind --data and splits them into training and validation shards: a file
// whose name has a `val` part (nanoGPT's val.bin, llm.c's *_val_000000.bin) is validation, every other
// .bin file is training. A folder's meta.json (written by 'lmpipe tokenize') is read for its tokenizer,
// vocabulary and byte counts, so shards of another vocabulary are refused before training starts.
import { basename, join } from "node:path";
import { inputError } from "../../lib/errors.ts";

export interface DataSplits {
  train: string[];
  val: string[];
  /** meta.json of the (first) folder that has one. */
  meta: Record<string, unknown> | null;
  metaPath: string | null;
}

const VAL_NAME = /(^|[^a-z])val([^a-z]|$)/i;

export function isValShard(path: string): boolean {
  return VAL_NAME.test(basename(path).replace(/\.bin$/, ""));
}

export async function listShards(paths: string[], cmd: string): Promise<DataSplits> {
  const out: DataSplits = { train: [], val: [], meta: null, metaPath: null };
  for (const p of paths) {
    let stat: Deno.FileInfo;
    try {
      stat = await Deno.stat(p);
    } catch {
      throw inputError(`lmpipe ${cmd}: --data ${p} does not exist; make shards with 'lmpipe tokenize ... --out ${p}'`);
    }
    const files: string[] = [];
    if (stat.isDirectory) {
      for await (const e of Deno.readDir(p)) if (e.isFile && e.name.endsWith(".bin")) files.push(join(p, e.name));
      if (files.length === 0) throw inputError(`lmpipe ${cmd}: --data ${p} holds no .bin token shards`);
      const metaPath = join(p, "meta.json");
      if (out.meta === null) {
        try {
          out.meta = JSON.parse(await Deno.readTextFile(metaPath));
          out.metaPath = metaPath;
        } catch (err) {
          if (!(err instanceof Deno.errors.NotFound)) throw inputError(`${metaPath}: not valid JSON (${(err as Error).message})`);
        }
      }
    } else {
      files.push(p);
    }
    files.sort();
    for (const f of files) (isValShard(f) ? out.val : out.train).push(f);
  }
  return out;
}

/** The vocabulary size a meta.json declares (several spellings accepted), or null. */
export function metaVocab(meta: Record<string, unknown> | null): number | null {
  if (!meta) return null;
  const tok = meta.tokenizer;
  const candidates = [
    meta.vocab_size,
    meta.vocabSize,
    tok && typeof tok === "object" ? (tok as Record<string, unknown>).vocab_size : undefined,
    tok && typeof tok === "object" ? (tok as Record<string, unknown>).vocabSize : undefined,
  ];
  const v = candidates.find((c) => typeof c === "number");
  return v === undefined ? null : v as number;
}

/** The tokenizer name a meta.json declares, or null. */
export function metaTokenizer(meta: Record<string, unknown> | null): string | null {
  if (!meta) return null;
  const tok = meta.tokenizer;
  if (typeof tok === "string") return tok;
  if (tok && typeof tok === "object" && typeof (tok as Record<string, unknown>).name === "string") {
    return (tok as Record<string, unknown>).name as string;
  }
  return null;
}
