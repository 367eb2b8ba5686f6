// --precision bf16 through the commands: train accepts it, stores it in config.json, trains without a loss
// scale and resumes with it; eval and sample run the bf16 forward pass (a different number than fp32);
// study passes it to every train and eval; bad values are refused naming the choices.
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend } from "../lib/tensor/backend.ts";
import { EXIT } from "../lib/errors.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { run as evaluate } from "../pipelines/eval/mod.ts";
import { run as sample } from "../pipelines/sample/mod.ts";
import { trainArgs } from "../pipelines/study/runner.ts";
import { readLog, rejectsWith, tinyModelFlags } from "./helpers_run.ts";

await initBackend("wasm", { quiet: true });

function capture() {
  let out = "";
  return {
    env: {
      signals: false,
      stdout: (b: Uint8Array) => Promise.resolve(void (out += new TextDecoder().decode(b))),
    },
    text: () => out,
  };
}

const common = [
  ...tinyModelFlags("gpt"),
  "--data",
  "fixtures/shards",
  "--backend",
  "wasm",
  "--batch-size",
  "2",
  "--seed",
  "5",
  "--lr",
  "3e-3",
  "--warmup",
  "1",
  "--eval-every",
  "0",
  "--eval-iters",
  "1",
];

Deno.test("--precision bf16: train stores it and trains unscaled, resume keeps it; eval and sample use it", async () => {
  const out = await Deno.makeTempDir({ prefix: "lmpipe-bf16-" });
  await train([...common, "--precision", "bf16", "--max-steps", "2", "--out", out], capture().env);
  const config = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
  assert.equal(config.training.precision, "bf16");
  await train(["--resume", "--max-steps", "3", "--out", out], capture().env);
  const log = await readLog(join(out, "log.jsonl"));
  assert.deepEqual(log.map((r) => r.loss_scale), [1, 1, 1], "bf16 has no loss scale");
  assert.ok(log.every((r) => !r.skipped && Number.isFinite(r.loss!)));
  const evalWith = async (precision: string) => {
    const c = capture();
    const args = ["--ckpt", out, "--data", "fixtures/shards", "--max-tokens", "200", "--backend", "wasm"];
    await evaluate([...args, "--precision", precision], c.env);
    return JSON.parse(c.text()).loss as number;
  };
  const lossFp32 = await evalWith("fp32"), lossBf16 = await evalWith("bf16");
  assert.ok(Number.isFinite(lossBf16) && lossBf16 !== lossFp32, `bf16 ${lossBf16} vs fp32 ${lossFp32}`);
  assert.ok(Math.abs(lossBf16 - lossFp32) < 0.05 * lossFp32);
  const topWith = async (precision: string) => {
    const c = capture();
    await sample([
      "--ckpt",
      out,
      "--backend",
      "wasm",
      "--prompt-ids",
      "464,3290",
      "--top",
      "3",
      "--format",
      "jsonl",
      "--precision",
      precision,
    ], c.env);
    return JSON.parse(c.text()).top as { token: number; p: number }[];
  };
  const a = await topWith("fp32"), b = await topWith("bf16");
  assert.equal(b.length, 3);
  assert.notDeepEqual(b.map((t) => t.p), a.map((t) => t.p), "bf16 rounds the forward pass of sample");
  await rejectsWith(
    train(
      [...common, "--precision", "fp16", "--max-steps", "1", "--out", await Deno.makeTempDir()],
      capture().env,
    ),
    EXIT.usage,
    /--precision must be fp32, mixed, bf16, got 'fp16'/,
  );
  await rejectsWith(
    evaluate(["--ckpt", out, "--data", "fixtures/shards", "--precision", "half"], capture().env),
    EXIT.usage,
    /--precision must be fp32, mixed, bf16/,
  );
});

Deno.test("study --precision reaches the train command of every run", () => {
  const run = {
    model: { name: "gpt", sets: [], raw: "gpt" },
    size: { name: "tiny", sets: [], raw: "tiny" },
    dir: "gpt@tiny",
    label: "gpt @ tiny",
  };
  const o = {
    data: "shards",
    budget: null,
    budgetTokens: 1000,
    out: "s",
    models: [],
    sizes: null,
    preset: "tiny",
    backend: "cpu",
    seed: 1,
    evalTokens: 0,
    force: false,
    precision: "bf16" as const,
    trainExtra: [],
  };
  // deno-lint-ignore no-explicit-any
  const args = trainArgs(run as any, o, "s/x", false);
  assert.deepEqual(args.slice(args.indexOf("--precision"), args.indexOf("--precision") + 2), [
    "--precision",
    "bf16",
  ]);
  // deno-lint-ignore no-explicit-any
  assert.ok(!trainArgs(run as any, { ...o, precision: "fp32" }, "s/x", false).includes("--precision"));
});
