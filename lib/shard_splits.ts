// The shards behind train's and eval's --data, split into training and validation by lib/dataset.ts,
// with the first folder's meta file (written by 'lmpipe tokenize') for its tokenizer, vocabulary and
// byte counts, so shards of another vocabulary are refused before training starts.
import { listDataset } from "./dataset.ts";
import { LmpipeError } from "./errors.ts";

export interface DataSplits {
  train: string[];
  val: string[];
  /** meta.json (or meta_pXofY.json) of the first folder that has one. */
  meta: Record<string, unknown> | null;
  metaPath: string | null;
}

/** listDataset for `lmpipe <cmd> --data`: its errors name the command and the flag. */
export async function listShards(paths: string[], cmd: string): Promise<DataSplits> {
  try {
    const ds = await listDataset(paths);
    return {
      train: ds.train,
      val: ds.val,
      meta: ds.metas[0]?.meta ?? null,
      metaPath: ds.metas[0]?.path ?? null,
    };
  } catch (err) {
    if (err instanceof LmpipeError) {
      throw new LmpipeError(`lmpipe ${cmd}: --data ${err.message}`, err.exitCode);
    }
    throw err;
  }
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
