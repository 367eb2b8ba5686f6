// Run-folder locks: a second `train` on a folder whose lock is held by a running process (here a
// `sleep` child standing in for the first run) or by another host refuses at once with exit 4 naming
// the holder; a lock left by a dead process on this host is taken over; a finished run leaves no lock.
import assert from "node:assert/strict";
import { join } from "node:path";
import { hostname } from "node:os";
import { initBackend } from "../lib/tensor/backend.ts";
import { EXIT } from "../lib/errors.ts";
import { LOCK_FILE } from "../lib/run_lock.ts";
import { pathExists } from "../lib/fs.ts";
import { run as train } from "../pipelines/train/mod.ts";
import { BIGRAM_ENV, toyData } from "./helpers_bigram_run.ts";
import { rejectsWith } from "./helpers_run.ts";

await initBackend("cpu", { quiet: true });
const env = BIGRAM_ENV;
const data = await toyData();
const args = (
  out: string,
) => ["--model", "bigram", "--data", data, "--backend", "cpu", "--max-steps", "2", "--out", out];
const lock = (pid: number, host = hostname()) =>
  JSON.stringify({ pid, host, started: "2026-01-01T00:00:00.000Z", command: "lmpipe train --out x" });

Deno.test("lock: a run folder held by a live process is refused at once (exit 4); a dead holder's lock is taken over", async () => {
  const out = await Deno.makeTempDir();
  const holder = new Deno.Command("sleep", { args: ["60"] }).spawn();
  try {
    await Deno.writeTextFile(join(out, LOCK_FILE), lock(holder.pid));
    const t0 = performance.now();
    await rejectsWith(
      train(args(out), env),
      EXIT.output,
      new RegExp(`in use by another run: pid ${holder.pid} on `),
    );
    assert.ok(performance.now() - t0 < 2000);
    assert.ok(!(await pathExists(join(out, "state.json"))), "the refused run wrote nothing");
  } finally {
    holder.kill("SIGKILL");
    await holder.status;
  }
  await train(args(out), env); // the holder is dead now: its lock is stale and taken over
  assert.ok(await pathExists(join(out, "state.json")));
  assert.ok(!(await pathExists(join(out, LOCK_FILE))), "the lock is released at the end");
});

Deno.test("lock: a lock from another host is never taken over", async () => {
  const out = await Deno.makeTempDir();
  await Deno.writeTextFile(join(out, LOCK_FILE), lock(1, "some-other-host"));
  await rejectsWith(train(args(out), env), EXIT.output, /pid 1 on some-other-host .*delete .*\.lmpipe-lock/);
});

Deno.test("lock: two runs started together on one folder: one trains, the other refuses with exit 4", async () => {
  const out = await Deno.makeTempDir();
  const results = await Promise.allSettled([train(args(out), env), train(args(out), env)]);
  const refused = results.filter((r) => r.status === "rejected");
  assert.equal(refused.length, 1, JSON.stringify(results.map((r) => r.status)));
  const err = (refused[0] as PromiseRejectedResult).reason;
  assert.equal(err.exitCode, EXIT.output, err.message);
  assert.match(err.message, new RegExp(`in use by another run: pid ${Deno.pid}`));
});
