// Data and checkpoints that cannot give a meaningful answer: eval on a shard without tokens (exit 3),
// a checkpoint with NaN weights in eval and sample (exit 5, naming the tensor), and token ids at or past
// GPT-2's 50257 (the padding rows of a 50304-row embedding) in train and eval data (exit 3 naming the
// file and the offset).
import { join } from "node:path";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { EXIT } from "../lib/errors.ts";
import { encodeU16, shardHeader } from "../lib/shard.ts";
import { run as evaluate } from "../pipelines/eval/mod.ts";
import { run as sample } from "../pipelines/sample/mod.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { BIGRAM_FAMILY, BigramModel, writeToyShard } from "./bigram_model.ts";
import { rejectsWith, saveUntrainedRun } from "./helpers_run.ts";
import { BIGRAM_ENV } from "./helpers_bigram_run.ts";

await initBackend("cpu", { quiet: true });
const env = BIGRAM_ENV;
const tiny = { ...BIGRAM_FAMILY.presets.tiny };

async function shard(dir: string, name: string, ids: number[]): Promise<void> {
  await Deno.writeFile(
    join(dir, name),
    new Uint8Array([...shardHeader(ids.length), ...encodeU16(Uint16Array.from(ids))]),
  );
}

Deno.test("eval: a shard without tokens is exit 3, not a null loss", async () => {
  const run = await Deno.makeTempDir();
  await saveUntrainedRun(run, new BigramModel(tiny as never, 1));
  const data = await Deno.makeTempDir();
  await shard(data, "x_val_000000.bin", []);
  await rejectsWith(
    evaluate(["--ckpt", run, "--data", data, "--backend", "cpu"], env),
    EXIT.input,
    /no tokens to score/,
  );
  await shard(data, "x_val_000000.bin", [5]);
  await rejectsWith(
    evaluate(["--ckpt", run, "--data", data, "--backend", "cpu"], env),
    EXIT.input,
    /no tokens to score/,
  );
});

Deno.test("eval and sample: NaN weights are exit 5 naming the tensor", async () => {
  const run = await Deno.makeTempDir();
  const model = new BigramModel(tiny as never, 1);
  const w = model.params.get("wte.weight")!;
  const data = w.dataSync().slice();
  data[17] = NaN;
  w.assign(tf.tensor(data, w.shape));
  await saveUntrainedRun(run, model);
  const dataDir = await Deno.makeTempDir();
  await writeToyShard(join(dataDir, "toy_val_000000.bin"), 200, 64, 2);
  const re = /model\.safetensors: tensor 'wte\.weight' holds NaN at index 17/;
  await rejectsWith(evaluate(["--ckpt", run, "--data", dataDir, "--backend", "cpu"], env), EXIT.training, re);
  await rejectsWith(sample(["--ckpt", run, "--prompt-ids", "1", "--backend", "cpu"], env), EXIT.training, re);
});

Deno.test("train and eval: ids 50257..50303 (padding rows of the 50304 vocabulary) are exit 3 with the offset", async () => {
  const big = { ...tiny, vocabSize: 50304, nEmbd: 2 };
  const run = await Deno.makeTempDir();
  await saveUntrainedRun(run, new BigramModel(big as never, 1));
  const data = await Deno.makeTempDir();
  const ids = Array.from({ length: 400 }, (_, i) => i % 300);
  await shard(data, "x_train_000000.bin", ids);
  ids[123] = 50300;
  await shard(data, "x_val_000000.bin", ids);
  await rejectsWith(
    evaluate(["--ckpt", run, "--data", data, "--backend", "cpu"], env),
    EXIT.input,
    /x_val_000000\.bin: holds token id 50300 at token offset 123, outside the vocabulary \(50257 ids\)/,
  );
  const out = await Deno.makeTempDir();
  await rejectsWith(
    train(
      [
        "--model",
        "bigram",
        "--set",
        "vocabSize=50304",
        "--set",
        "nEmbd=2",
        "--data",
        data,
        "--backend",
        "cpu",
        "--max-steps",
        "1",
        "--out",
        out,
      ],
      env,
    ),
    EXIT.input,
    /x_val_000000\.bin: holds token id 50300 at token offset 123, outside the vocabulary \(50257 ids\)/,
  );
});
