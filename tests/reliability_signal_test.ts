// Signals through the ./lmpipe wrapper: SIGTERM to the wrapper's pid (as Slurm and CI runners send it)
// must reach the training process, which finishes its step, saves a checkpoint and exits 130. The
// wrapper once ran deno under npx, which exited alone on SIGTERM and left training running.
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathExists } from "../lib/fs.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test({
  name: "./lmpipe: SIGTERM to the wrapper's pid saves a checkpoint and exits 130",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "lmpipe-rel-signal-" });
    // PATH without a deno 2.9.6 makes the wrapper take its npm path, the one that lost signals.
    const env = { NO_COLOR: "1", PATH: "/usr/local/bin:/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/tmp" };
    const child = new Deno.Command(join(root, "lmpipe"), {
      args: [
        "train",
        "--data",
        join(root, "fixtures/shards"),
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--backend",
        "wasm",
        "--max-time",
        "90s", // bounds a training process orphaned by a wrapper that loses the signal
        "--out",
        out,
      ],
      cwd: root,
      env,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 240_000);
    let err = "";
    const dec = new TextDecoder();
    const reader = child.stderr.getReader();
    // Wait for the first training step, then send SIGTERM to the pid we started (the wrapper's).
    let sent = false;
    const reading = (async () => {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        err += dec.decode(value, { stream: true });
        if (!sent && /^step 1 \|/m.test(err)) {
          child.kill("SIGTERM");
          sent = true;
        }
      }
    })();
    const status = await child.status;
    // An orphaned deno would keep stderr open: stop reading shortly after the wrapper's pid exits.
    await Promise.race([reading, new Promise((r) => setTimeout(r, 15_000))]);
    await reader.cancel().catch(() => {});
    clearTimeout(killer);
    assert.ok(sent, `training never started:\n${err}`);
    assert.equal(status.code, 130, err);
    assert.match(err, /SIGTERM: finishing step/);
    assert.ok(await pathExists(join(out, "state.json")), "a checkpoint was saved");
    await Deno.remove(out, { recursive: true });
  },
});
