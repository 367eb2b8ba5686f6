// One process per run folder. `train --out DIR` holds DIR/.lmpipe-lock (pid, host, start time, command)
// for as long as it runs, so a second run on the same folder refuses at once instead of racing the
// first one's checkpoint renames. A lock left by a process that died (kill -9, power loss) on this host
// is recognised by its pid no longer running and taken over with a note; a lock from another host is
// never taken over (its pid cannot be checked from here).
import { join } from "node:path";
import { hostname } from "node:os";
import { outputError } from "./errors.ts";
import { warn } from "./log.ts";

export const LOCK_FILE = ".lmpipe-lock";

interface LockInfo {
  pid: number;
  host: string;
  started: string;
  command: string;
}

/** Whether process `pid` runs on this host (true when it cannot be told: a lock is never stolen by guess). */
function alive(pid: number): boolean {
  if (Deno.build.os !== "linux") return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** A held lock; release() removes it (also done when the process exits normally or by Deno.exit). */
export interface RunLock {
  path: string;
  release(): void;
}

/**
 * Takes the lock of run folder `dir` (which must exist) for `command`, or fails with an output error
 * (exit 4) naming the process that holds it.
 */
export async function lockRunFolder(dir: string, command: string): Promise<RunLock> {
  const path = join(dir, LOCK_FILE);
  const me: LockInfo = { pid: Deno.pid, host: hostname(), started: new Date().toISOString(), command };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await Deno.writeTextFile(path, JSON.stringify(me) + "\n", { createNew: true });
      const release = () => {
        try {
          const held = JSON.parse(Deno.readTextFileSync(path)) as LockInfo;
          if (held.pid === me.pid && held.host === me.host) Deno.removeSync(path);
        } catch { /* already gone */ }
        globalThis.removeEventListener("unload", release);
      };
      globalThis.addEventListener("unload", release);
      return { path, release };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) {
        throw outputError(`${path}: cannot create the run lock (${(err as Error).message})`);
      }
    }
    let held: LockInfo | null = null;
    try {
      held = JSON.parse(await Deno.readTextFile(path));
    } catch { /* being written by its owner this instant, or damaged: judged by age below */ }
    if (held && typeof held.pid === "number" && typeof held.host === "string") {
      if (held.host !== me.host || alive(held.pid)) {
        throw outputError(
          `--out ${dir} is in use by another run: pid ${held.pid} on ${held.host} since ${held.started} ` +
            `(${held.command}). Wait for it to finish or choose another --out; if that process is gone ` +
            `(e.g. on another machine), delete ${path}.`,
        );
      }
      warn(
        `${path}: taking over a stale lock of pid ${held.pid} (started ${held.started}, no longer running)`,
      );
    } else {
      const age = Date.now() - (await Deno.stat(path).then((s) => s.mtime?.getTime() ?? 0).catch(() => 0));
      if (age < 5000) {
        await new Promise((r) => setTimeout(r, 200)); // its owner is writing it: look again
        continue;
      }
      warn(`${path}: replacing a damaged lock file`);
    }
    await Deno.remove(path).catch(() => {});
  }
  throw outputError(`${path}: could not take the run lock; another run may be starting on --out ${dir}`);
}
