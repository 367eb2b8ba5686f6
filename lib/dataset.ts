// A dataset is one or more shard folders or files: the output of one `lmpipe tokenize` run, of several
// `--part i/N` runs (in one folder or many), or nanoGPT's train.bin/val.bin. This lists its shards by
// split (a name with a `val` part is validation) in a stable order, and gathers what the meta files
// (meta.json, meta_pXXXofYYY.json) say about each shard, so train, eval and inspect see one dataset.
import { basename, join } from "node:path";
import { inputError } from "./errors.ts";

export interface MetaShard {
  file: string;
  split?: string;
  tokens?: number;
  docs?: number;
  bytes?: number;
  sha256?: string;
}

export interface Dataset {
  train: string[];
  val: string[];
  /** Meta files found, with their parsed contents. */
  metas: { path: string; meta: Record<string, unknown> }[];
  /** What the meta files say about each shard, by shard path. */
  shardMeta: Map<string, MetaShard>;
}

const VAL_NAME = /(^|[^a-z])val([^a-z]|$)/i;
const META_NAME = /^meta(_p\d+of\d+)?\.json$/;

export function isValShard(path: string): boolean {
  return VAL_NAME.test(basename(path).replace(/\.bin$/, ""));
}

/** Lists the shards of `paths` (folders or .bin files). Fails on a path that is missing or holds no shards. */
export async function listDataset(paths: string[]): Promise<Dataset> {
  const ds: Dataset = { train: [], val: [], metas: [], shardMeta: new Map() };
  for (const p of paths) {
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(p);
    } catch {
      throw inputError(
        `${p}: no such shard file or folder; make shards with 'lmpipe tokenize ... --out ${p}'`,
      );
    }
    const files: string[] = [];
    if (st.isDirectory) {
      const names: string[] = [];
      for await (const e of Deno.readDir(p)) if (e.isFile) names.push(e.name);
      names.sort();
      for (const n of names) {
        if (n.endsWith(".bin")) files.push(join(p, n));
        else if (META_NAME.test(n)) {
          const mp = join(p, n);
          let meta: Record<string, unknown>;
          try {
            meta = JSON.parse(await Deno.readTextFile(mp));
          } catch (err) {
            throw inputError(
              `${mp}: not valid JSON (${(err as Error).message}); re-run 'lmpipe tokenize' or delete it`,
            );
          }
          ds.metas.push({ path: mp, meta });
          for (const s of (Array.isArray(meta.shards) ? meta.shards : []) as MetaShard[]) {
            if (s && typeof s.file === "string") ds.shardMeta.set(join(p, basename(s.file)), s);
          }
        }
      }
      if (files.length === 0) throw inputError(`${p}: holds no .bin token shards`);
    } else {
      files.push(p);
    }
    for (const f of files) (isValShard(f) ? ds.val : ds.train).push(f);
  }
  return ds;
}
