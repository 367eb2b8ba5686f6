// Full disks: a checkpoint save that hits ENOSPC, a step log on /dev/full and a token stream to
// /dev/full end with exit 4 naming the path and what was kept; a failed save leaves no ckpt.tmp-*
// folder, the last complete checkpoint still resumes, and --resume clears temp folders of saves that
// died half-written. The ENOSPC of a checkpoint save is injected by wrapping Deno.open (no root needed).
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend } from "../lib/tensor/backend.ts";
import { EXIT } from "../lib/errors.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { BIGRAM_ENV, bigramTrainFlags, toyData } from "./helpers_bigram_run.ts";
import { readLog, rejectsWith } from "./helpers_run.ts";

await initBackend("cpu", { quiet: true });
const env = BIGRAM_ENV;
const data = await toyData();
const BASE = bigramTrainFlags(data);

/** Runs `fn` while every file opened for writing inside a ckpt.tmp-* folder fails its writes with ENOSPC. */
async function withFullCheckpointDisk<T>(fn: () => Promise<T>): Promise<T> {
  const open = Deno.open;
  (Deno as { open: typeof Deno.open }).open = async (path, opts) => {
    const f = await open(path, opts);
    if (!opts?.write || !String(path).includes("ckpt.tmp-")) return f;
    const full = () => new Error("No space left on device (os error 28)");
    return new Proxy(f, {
      get(target, key) {
        if (key === "write") return () => Promise.reject(full());
        if (key === "writeSync") {
          return () => {
            throw full();
          };
        }
        const v = Reflect.get(target, key);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  };
  try {
    return await fn();
  } finally {
    (Deno as { open: typeof Deno.open }).open = open;
  }
}

const tmpFolders = async (dir: string) =>
  (await Array.fromAsync(Deno.readDir(dir))).filter((e) => e.name.startsWith("ckpt.tmp-")).map((e) => e.name);

Deno.test("full disk: a failed checkpoint save is exit 4, leaves no temp folder, and the last checkpoint resumes", async () => {
  const out = await Deno.makeTempDir();
  await train([...BASE, "--max-steps", "2", "--out", out], env); // a complete checkpoint at step 2
  await withFullCheckpointDisk(() =>
    rejectsWith(
      train(["--resume", "--max-steps", "4", "--out", out], env),
      EXIT.output,
      /ckpt\.tmp-\w+: cannot write \(No space left.*The disk is full.*step 4 was not saved; the last complete one \(step 2\).*is kept/,
    )
  );
  assert.deepEqual(await tmpFolders(out), []);
  await train(["--resume", "--max-steps", "4", "--out", out], env); // space again: resumes from step 2
  const state = JSON.parse(await Deno.readTextFile(join(out, "state.json")));
  assert.equal(state.step, 4);
  assert.deepEqual((await readLog(join(out, "log.jsonl"))).map((r) => r.step), [1, 2, 3, 4]);
});

Deno.test("full disk: --resume clears the temp folders of saves that died half-written", async () => {
  const out = await Deno.makeTempDir();
  await train([...BASE, "--max-steps", "2", "--out", out], env);
  await Deno.mkdir(join(out, "ckpt.tmp-deadbeef00000000"));
  await Deno.writeTextFile(join(out, "ckpt.tmp-deadbeef00000000", "model.safetensors"), "partial");
  await train(["--resume", "--max-steps", "3", "--out", out], env);
  assert.deepEqual(await tmpFolders(out), []);
});

Deno.test(
  "full disk: --log /dev/full is exit 4 naming the log",
  { ignore: Deno.build.os !== "linux" },
  async () => {
    const out = await Deno.makeTempDir();
    await rejectsWith(
      train([...BASE, "--max-steps", "2", "--log", "/dev/full", "--out", out], env),
      EXIT.output,
      /\/dev\/full: cannot write \(No space left.*Training stopped at step 1; checkpoints already saved in .* are kept/,
    );
  },
);

Deno.test("full disk: tokenize --out - into /dev/full is exit 4 naming stdout", {
  ignore: Deno.build.os !== "linux",
}, async () => {
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      '"$0" run -A --quiet cli.ts tokenize fixtures/corpus --out - --workers 0 > /dev/full',
      Deno.execPath(),
    ],
    cwd: new URL("..", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, EXIT.output, err);
  assert.match(err, /^error: stdout: cannot write \(No space left on device.*The disk is full.*incomplete/m);
  assert.doesNotMatch(err, /internal error|    at /);
});
