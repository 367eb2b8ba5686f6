// Data-parallel training over MPI (lib/dist/, lib/native/mpi.ts), run for real with mpirun: 2 ranks
// train the same model as 1 process with the same --batch-size and --grad-accum (tiny gpt and tiny
// pixel-attn on wasm: the same losses and bit-identical final weights, since with 2 micro-batches on 2
// ranks the one addition MPI makes is the one the single process makes); a 2-rank run stopped by SIGTERM
// to one rank stops everywhere at the same step with exit 130 and resumes exactly, on 1 rank and on 2;
// a killed rank ends the job with a non-zero exit within 60 s, a stalled one through lmpipe's own
// timeout; --grad-reduce bf16 keeps the replicas identical and within bf16 rounding of f32, and an fp16
// overflow in the 16-bit sum skips the step on every rank. Without mpirun or libmpi these tests skip with
// the reason (and fail when LMPIPE_REQUIRE_NATIVE is set, as in CI's run with the native libraries). The
// launcher detection, the thread share, the missing-MPI message and --grad-reduce's usage errors are
// tested everywhere.
import assert from "node:assert/strict";
import { join } from "node:path";
import { EXIT } from "../lib/errors.ts";
import { loadCheckpoint } from "../lib/checkpoint.ts";
import { detectLauncher, threadsPerRank, wantsMpi } from "../lib/dist/launcher.ts";
import { mpiAvailable, mpiStatus } from "../lib/native/mpi.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { readLog, rejectsWith, TINY_SHAPES, tinyModelFlags } from "./helpers_run.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLI = join(ROOT, "cli.ts");

/** The mpirun command and its flags, or why there is none. */
async function findMpirun(): Promise<{ cmd: string; flags: string[] } | string> {
  try {
    const out = await new Deno.Command("mpirun", { args: ["--version"], stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    // Open MPI refuses root without --allow-run-as-root and more ranks than cores without --oversubscribe
    return /Open MPI|OpenRTE/.test(text)
      ? { cmd: "mpirun", flags: ["--allow-run-as-root", "--oversubscribe"] }
      : { cmd: "mpirun", flags: [] };
  } catch {
    return "no mpirun on PATH";
  }
}

const mpirun = await findMpirun();
const noMpi = typeof mpirun === "string" ? mpirun : !mpiAvailable() ? mpiStatus() : null;
if (noMpi) {
  if (Deno.env.get("LMPIPE_REQUIRE_NATIVE")) {
    throw new Error(
      `MPI tests must run here (LMPIPE_REQUIRE_NATIVE is set; .ci/run installs openmpi-bin libopenmpi3): ${noMpi}`,
    );
  }
  console.error(`MPI tests skipped: ${noMpi}`);
}

function trainArgs(model: string, out: string, steps: number, extra: string[] = []): string[] {
  return [
    "train",
    ...tinyModelFlags(model),
    "--data",
    join(ROOT, "fixtures/shards"),
    "--backend",
    "wasm",
    "--batch-size",
    "4",
    "--grad-accum",
    "2",
    "--seed",
    "11",
    "--lr",
    "3e-3",
    "--warmup",
    "2",
    "--decay-steps",
    "10",
    "--eval-every",
    "3",
    "--eval-iters",
    "3",
    "--ckpt-every",
    "1",
    "--max-steps",
    String(steps),
    "--out",
    out,
    ...extra,
  ];
}

/** One thread per process everywhere, so the ranks and the single process run the same kernels. */
const ENV = { NO_COLOR: "1", LMPIPE_WASM_THREADS: "1" };

interface Job {
  code: number;
  stderr: string;
  ms: number;
}

/**
 * Runs `lmpipe ARGS` with `np` ranks under mpirun (np 0: a plain single process). `watch` sees stderr as
 * it comes (it may signal a rank); the job must end within `timeoutMs`.
 */
async function job(
  np: number,
  args: string[],
  opts: { env?: Record<string, string>; watch?: (stderr: string) => void; timeoutMs?: number } = {},
): Promise<Job> {
  const deno = [Deno.execPath(), "run", "-A", CLI, ...args];
  const m = mpirun as { cmd: string; flags: string[] };
  const [cmd, ...rest] = np === 0 ? deno : [m.cmd, ...m.flags, "-np", String(np), ...deno];
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args: rest,
    cwd: ROOT,
    env: { ...ENV, ...opts.env },
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(opts.timeoutMs ?? 60_000),
  }).spawn();
  let stderr = "";
  const dec = new TextDecoder();
  for await (const chunk of child.stderr) {
    stderr += dec.decode(chunk, { stream: true });
    opts.watch?.(stderr);
  }
  const status = await child.status;
  return { code: status.code, stderr, ms: performance.now() - t0 };
}

/**
 * A watcher for job(): once rank 1 has announced its pid ("dist: rank 1/2, pid 1234, ...") and rank 0
 * has logged step 2, sends `signal` to rank 1, once. `sent` says whether it did.
 */
function signalRank1AfterStep2(signal: Deno.Signal): { watch: (stderr: string) => void; sent: boolean } {
  const w = {
    sent: false,
    watch: (stderr: string) => {
      const m = /dist: rank 1\/\d+, pid (\d+)/.exec(stderr);
      if (!w.sent && m && /^step 2\//m.test(stderr)) {
        w.sent = true;
        Deno.kill(Number(m[1]), signal);
      }
    },
  };
  return w;
}

async function assertSameRun(a: string, b: string, steps: number, resumed = false): Promise<void> {
  const la = await readLog(join(a, "log.jsonl")), lb = await readLog(join(b, "log.jsonl"));
  assert.deepEqual(lb.map((r) => r.step), Array.from({ length: steps }, (_, i) => i + 1));
  for (let i = 0; i < steps; i++) {
    for (const k of ["loss", "grad_norm", "lr", "tokens", "val_loss"] as const) {
      // a run stopped and resumed also evaluates where it stopped: compare the evaluations both made
      if (k === "val_loss" && resumed && (la[i][k] === undefined || lb[i][k] === undefined)) continue;
      // bitwise: with 2 micro-batches on 2 ranks MPI's one addition is the one a single process makes
      assert.equal(lb[i][k], la[i][k], `step ${i + 1} ${k}: ${lb[i][k]} vs ${la[i][k]}`);
    }
  }
  const wa = await loadCheckpoint(a, { optimizer: true }), wb = await loadCheckpoint(b, { optimizer: true });
  assert.equal(wb.weights.size, wa.weights.size);
  for (const [n, t] of wa.weights) assert.deepEqual(wb.weights.get(n)!.data, t.data, n);
  for (const [n, t] of wa.optimizer!) assert.deepEqual(wb.optimizer!.get(n)!.data, t.data, `optimizer ${n}`);
  assert.deepEqual(wb.state!.rng, wa.state!.rng, "data position");
}

const tmp = () => Deno.makeTempDir({ prefix: "lmpipe-dist-" });
const single: Record<string, string> = {}; // model -> its 1-process run of 10 steps

for (const model of Object.keys(TINY_SHAPES)) {
  Deno.test({
    name: `dist ${model}: 2 ranks = 1 process (--batch-size 4 --grad-accum 2, wasm): same losses and weights`,
    ignore: noMpi !== null,
    sanitizeResources: false,
    fn: async () => {
      const a = single[model] = await tmp(), b = await tmp();
      const steps = model === "gpt" ? 10 : 5;
      const [ja, jb] = [await job(0, trainArgs(model, a, steps)), await job(2, trainArgs(model, b, steps))];
      assert.equal(ja.code, 0, ja.stderr);
      assert.equal(jb.code, 0, jb.stderr);
      assert.match(jb.stderr, /dist: 2 ranks over MPI/);
      assert.match(jb.stderr, /1 micro-batch\(es\) on each of 2 ranks/);
      // rank 1 says who it is and nothing else: rank 0 alone logs the steps
      assert.equal(jb.stderr.match(/^step 1\//gm)?.length, 1, jb.stderr);
      await assertSameRun(a, b, steps);
    },
  });
}

Deno.test({
  name: "dist gpt: 2 ranks = 1 process under --batch-ramp (each rank trains and skips the ramp's sizes)",
  ignore: noMpi !== null,
  sanitizeResources: false,
  fn: async () => {
    const a = await tmp(), b = await tmp();
    const args = (out: string) => trainArgs("gpt", out, 6, ["--batch-ramp", "256"]);
    const [ja, jb] = [await job(0, args(a)), await job(2, args(b))];
    assert.equal(ja.code, 0, ja.stderr);
    assert.equal(jb.code, 0, jb.stderr);
    // B = 4, 2 micro-batches of 16 tokens a sequence: seen 0, 32, 64 -> 1; 96, 160 -> 2; 224 -> 3
    assert.deepEqual((await readLog(join(b, "log.jsonl"))).map((r) => r.batch_size), [1, 1, 1, 2, 2, 3]);
    await assertSameRun(a, b, 6);
  },
});

Deno.test({
  name:
    "dist gpt: SIGTERM to rank 1 stops both ranks at one step (exit 130, rank 0 saves); resumes on 1 then 2 ranks",
  ignore: noMpi !== null,
  sanitizeResources: false,
  fn: async () => {
    const ref = single.gpt, out = await tmp();
    assert.ok(ref, "runs after the 2-rank gpt test");
    const term = signalRank1AfterStep2("SIGTERM");
    const j = await job(2, trainArgs("gpt", out, 10), { watch: term.watch });
    assert.ok(term.sent, j.stderr);
    assert.equal(j.code, EXIT.interrupted, j.stderr);
    const stopped = (await loadCheckpoint(out)).state!.step;
    assert.ok(stopped >= 2 && stopped < 10, `stopped at ${stopped}`);
    const log = await readLog(join(out, "log.jsonl"));
    assert.equal(log[log.length - 1].step, stopped, "the checkpoint is the last logged step");
    // the ranks stopped after that step: rank 0 says so and saved it; rank 1 says so too, but mpirun aborts
    // the job as soon as one rank exits non-zero and may drop the other's last line, so its line is not
    // required (the exit code 130 above is the interrupt path's on whichever rank exited first)
    const said = j.stderr.match(new RegExp(`interrupted.* after step ${stopped};`, "g"))?.length ?? 0;
    assert.ok(said >= 1 && said <= 2, j.stderr);
    assert.match(j.stderr, new RegExp(`after step ${stopped}; checkpoint saved in .* by rank 0`));
    // resume one step on 1 process, then the rest on 2 ranks: the straight run's losses and weights
    const r1 = await job(0, ["train", "--resume", "--max-steps", String(stopped + 1), "--out", out]);
    assert.equal(r1.code, 0, r1.stderr);
    const r2 = await job(2, ["train", "--resume", "--max-steps", "10", "--out", out]);
    assert.equal(r2.code, 0, r2.stderr);
    await assertSameRun(ref, out, 10, true);
  },
});

Deno.test({
  name: "dist gpt: --grad-reduce bf16 on 2 ranks: identical replicas, losses within bf16 rounding of f32",
  ignore: noMpi !== null,
  sanitizeResources: false,
  fn: async () => {
    const ref = single.gpt, out = await tmp();
    assert.ok(
      ref,
      "runs after the 2-rank gpt test (whose 1-process run equals the f32 2-rank run bit for bit)",
    );
    const j = await job(2, trainArgs("gpt", out, 10, ["--grad-reduce", "bf16"]));
    assert.equal(j.code, 0, j.stderr);
    assert.match(j.stderr, /gradients summed in bf16/);
    // the weights are compared across ranks at every checkpoint (--ckpt-every 1): a 32-bit digest of all
    // their bits; a mismatch would be warned about and repaired
    assert.doesNotMatch(j.stderr, /weights differ/);
    const stored = (await loadCheckpoint(out)).config.training as { gradReduce?: string };
    assert.equal(stored.gradReduce, "bf16"); // kept for --resume
    const f32 = await readLog(join(ref, "log.jsonl")), bf16 = await readLog(join(out, "log.jsonl"));
    let differ = 0;
    for (let i = 0; i < 10; i++) {
      const [a, b] = [f32[i], bf16[i]];
      // bf16 keeps 8 significant bits: each gradient value is off by at most 2^-9 of itself
      assert.ok(Math.abs(b.grad_norm! - a.grad_norm!) <= 2 ** -8 * a.grad_norm!, `step ${i + 1} grad_norm`);
      assert.ok(Math.abs(b.loss! - a.loss!) <= 1e-3, `step ${i + 1} loss ${b.loss} vs ${a.loss}`);
      if (b.grad_norm !== a.grad_norm) differ++;
    }
    assert.ok(differ >= 8, `the gradients were rounded (${differ} of 10 norms differ from f32)`);
  },
});

Deno.test({
  name:
    "dist gpt: --grad-reduce fp16 under mixed precision: an fp16 overflow in the sum skips the step everywhere",
  ignore: noMpi !== null,
  sanitizeResources: false,
  fn: async () => {
    // --scale-window 1 doubles the loss scale after every clean step: 2^16, 2^17, then 2^18 at step 3, where
    // this model's scaled gradients pass float16's 65504. (With float32 sums the same run first overflows,
    // in mixed precision's own float16 roundings, at 2^20, step 5: without the 16-bit sum no step here skips.)
    const out = await tmp();
    const j = await job(2, [
      ...trainArgs("gpt", out, 3, ["--precision", "mixed", "--scale-window", "1", "--grad-reduce", "fp16"]),
      ...["--eval-every", "0", "--eval-iters", "1"],
    ]);
    assert.equal(j.code, 0, j.stderr);
    assert.doesNotMatch(j.stderr, /weights differ/); // both ranks skipped the same step
    const log = await readLog(join(out, "log.jsonl"));
    assert.deepEqual(log.map((r) => [r.loss_scale, r.skipped]), [[2 ** 16, false], [2 ** 17, false], [
      2 ** 18,
      true,
    ]]);
  },
});

Deno.test({
  name: "dist: a killed rank ends the job non-zero within 60 s, the last checkpoint intact",
  ignore: noMpi !== null,
  sanitizeResources: false,
  fn: async () => {
    const out = await tmp();
    const kill = signalRank1AfterStep2("SIGKILL");
    const j = await job(2, trainArgs("gpt", out, 100_000), { watch: kill.watch, timeoutMs: 60_000 });
    assert.ok(kill.sent, j.stderr);
    assert.notEqual(j.code, 0, j.stderr);
    // the last checkpoint is intact (step 1 or 2: rank 0 may have been saving step 2 when rank 1 died)
    assert.ok((await loadCheckpoint(out, { optimizer: true })).state!.step >= 1);
  },
});

Deno.test({
  name: "dist: a rank that stalls (SIGSTOP) ends the job through LMPIPE_MPI_TIMEOUT, not a hang",
  ignore: noMpi !== null,
  sanitizeResources: false,
  fn: async () => {
    const out = await tmp();
    const stop = signalRank1AfterStep2("SIGSTOP");
    const j = await job(2, trainArgs("gpt", out, 100_000), {
      env: { LMPIPE_MPI_TIMEOUT: "3" },
      watch: stop.watch,
      timeoutMs: 60_000,
    });
    assert.ok(stop.sent, j.stderr);
    assert.notEqual(j.code, 0, j.stderr);
    assert.match(j.stderr, /rank 0\/2: MPI_\w+ \(.*\) did not complete within 3 s/);
  },
});

// --- everywhere, with or without MPI

Deno.test("dist: MPI asked for but unusable -> exit 2 naming the packages and the off switch", async () => {
  const before = Deno.env.get("LMPIPE_MPI");
  Deno.env.set("LMPIPE_MPI", "off");
  try {
    const args = trainArgs("gpt", await tmp(), 1, ["--dist", "mpi"]);
    await rejectsWith(
      train(args.slice(1), { signals: false }),
      EXIT.usage,
      /--dist mpi.*MPI is needed here but unusable: MPI off \(LMPIPE_MPI=off\)[\s\S]*apt-get install openmpi-bin libopenmpi3[\s\S]*module load openmpi/,
    );
    await rejectsWith(
      train(["--dist", "maybe", "--out", "x"], { signals: false }),
      EXIT.usage,
      /--dist must be/,
    );
  } finally {
    if (before === undefined) Deno.env.delete("LMPIPE_MPI");
    else Deno.env.set("LMPIPE_MPI", before);
  }
});

Deno.test("dist: --grad-reduce usage errors: the values, fp16 without mixed, with --dist none", async () => {
  const args = async (extra: string[]) => trainArgs("gpt", await tmp(), 1, extra).slice(1);
  await rejectsWith(
    train(await args(["--grad-reduce", "half"]), { signals: false }),
    EXIT.usage,
    /--grad-reduce must be f32, bf16, fp16, got 'half'/,
  );
  await rejectsWith(
    train(await args(["--grad-reduce", "fp16"]), { signals: false }),
    EXIT.usage,
    /--grad-reduce fp16 needs --precision mixed[\s\S]*Use --grad-reduce bf16/,
  );
  await rejectsWith(
    train(await args(["--grad-reduce", "bf16", "--dist", "none"]), { signals: false }),
    EXIT.usage,
    /--grad-reduce bf16 sets how MPI ranks sum their gradients, and --dist none runs no ranks/,
  );
});

Deno.test("dist: launcher detection (mpirun, Hydra, srun steps, not a batch script) and --dist", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.deepEqual(
    detectLauncher(env({
      OMPI_COMM_WORLD_RANK: "1",
      OMPI_COMM_WORLD_SIZE: "4",
      OMPI_COMM_WORLD_LOCAL_RANK: "1",
      OMPI_COMM_WORLD_LOCAL_SIZE: "2",
    })),
    { launcher: "Open MPI mpirun", rank: 1, size: 4, localRank: 1, localSize: 2 },
  );
  assert.equal(detectLauncher(env({ PMI_RANK: "3", PMI_SIZE: "8", MPI_LOCALNRANKS: "4" }))?.localSize, 4);
  const srun = detectLauncher(env({
    SLURM_PROCID: "5",
    SLURM_STEP_NUM_TASKS: "8",
    SLURM_LOCALID: "1",
    SLURM_NODEID: "1",
    SLURM_STEP_TASKS_PER_NODE: "4(x2)",
  }));
  assert.deepEqual(srun, { launcher: "Slurm srun", rank: 5, size: 8, localRank: 1, localSize: 4 });
  assert.equal(detectLauncher(env({ PMIX_RANK: "2", SLURM_STEP_NUM_TASKS: "4" }))?.launcher, "PMIx");
  // a batch script (SLURM_PROCID 0, SLURM_NTASKS 4, no job step of its own) is one process
  assert.equal(detectLauncher(env({ SLURM_PROCID: "0", SLURM_NTASKS: "4" })), null);
  assert.equal(detectLauncher(env({})), null);
  const one = { launcher: "Open MPI mpirun", rank: 0, size: 1, localRank: 0, localSize: 1 };
  assert.equal(wantsMpi("auto", null), false);
  assert.equal(wantsMpi("auto", one), false); // mpirun -np 1: a plain run
  assert.equal(wantsMpi("auto", { ...one, size: 2 }), true);
  assert.equal(wantsMpi("mpi", null), true);
  assert.equal(wantsMpi("none", { ...one, size: 2 }), false);
  // CPU threads: the node's cores shared by its ranks, 1 at least, lmpipe's default at most
  assert.equal(threadsPerRank(16, 4, 2), 2);
  assert.equal(threadsPerRank(2, 2, 2), 1);
  assert.equal(threadsPerRank(1, 2, 2), 1);
  assert.equal(threadsPerRank(8, null, 2), 2);
});

Deno.test("dist: skipping another rank's micro-batch keeps the data position of reading it", async () => {
  const shard = join(ROOT, "fixtures/shards/train_000000.bin");
  const a = await WindowSampler.open([shard], 16, 50304, 5),
    b = await WindowSampler.open([shard], 16, 50304, 5);
  try {
    await a.next(4);
    b.skip(4);
    assert.deepEqual(b.rng.state(), a.rng.state());
    assert.deepEqual((await b.next(4)).x, (await a.next(4)).x);
  } finally {
    a.close(), b.close();
  }
});
