// Shared set-up of the tests that run the train/eval/sample pipelines in-process on the bigram stand-in:
// the pipeline env (its family, no signal handlers, stdout dropped) and a small data folder with one
// training and one validation shard.
import { join } from "node:path";
import { BIGRAM_FAMILY, writeToyShard } from "./bigram_model.ts";

/** The env for in-process pipeline runs with the bigram family. */
export const BIGRAM_ENV = {
  families: { bigram: BIGRAM_FAMILY },
  signals: false,
  stdout: async (_b: Uint8Array) => {},
} as never;

/** A temp folder with toy_train_000001.bin (`trainTokens`) and toy_val_000000.bin (`valTokens`). */
export async function toyData(trainTokens = 3000, valTokens = 800): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-toy-data-" });
  await writeToyShard(join(dir, "toy_train_000001.bin"), trainTokens, 64, 1);
  await writeToyShard(join(dir, "toy_val_000000.bin"), valTokens, 64, 3);
  return dir;
}

/** `train` flags for a quick bigram run on `data` (cpu, no periodic evaluation); add --out, --max-steps. */
export function bigramTrainFlags(data: string, batchSize = 2): string[] {
  return [
    "--model",
    "bigram",
    "--data",
    data,
    "--backend",
    "cpu",
    "--batch-size",
    String(batchSize),
    "--eval-every",
    "0",
  ];
}
