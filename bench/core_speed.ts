// How fast each core of this machine runs the same compute-bound wasm kernel, alone and with the other
// cores busy, round after round: the ceiling that a 2-thread / 1-thread ratio (bench/train.ts --threads
// 1,2) can reach here. On a shared VM a core's speed can jump between rounds (another tenant's work on the
// host core behind it), and a 1-thread run on a fast moment against a 2-thread run on a slow one reads as
// poor scaling. Each measurement is a child process pinned with taskset that runs lmpipe's tanh GELU kernel
// (lib/tensor/ops/gelu/wasm.ts, compute bound: ~2 ns a value, 16 MB of traffic per 4 ms call) on one wasm
// thread over [1024, 2048] values for --seconds and reports its median call.
//
//   deno run -A bench/core_speed.ts --rounds 5
import { num, parseFlags, str } from "../lib/flags.ts";
import { usageError } from "../lib/errors.ts";
import { initBackend, tf } from "../lib/tensor/backend.ts";
import { gelu } from "../lib/tensor/ops/gelu/mod.ts";
import { loadAverage, median, runBench } from "./common.ts";

const CMD = "bench/core_speed";
const HELP = `deno run -A bench/core_speed.ts [flags]

  --rounds N     rounds, each: every cpu alone, one after another, then all at once (default 5)
  --seconds S    seconds per measurement (default 2)
  --cpus L       cpus to compare, comma-separated (default: every cpu this process may use)

Prints, per round, each cpu's median ms per kernel call alone and together, and the ceiling of a 2-thread /
1-thread ratio that round: a perfectly parallel job on all the cpus at their "together" speed against one
thread at one cpu's "alone" speed (the range over which cpu the one thread ran on). Needs taskset
(util-linux).

Example: deno run -A bench/core_speed.ts --rounds 5 --seconds 2`;

const SHAPE = [1024, 2048];

/** The child: median ms of the GELU kernel over SHAPE on one wasm thread, for `seconds`. */
async function child(seconds: number): Promise<void> {
  await initBackend("wasm", { quiet: true, threads: 1 });
  const x = tf.randomNormal(SHAPE);
  for (let i = 0; i < 5; i++) gelu(x, "tanh").dispose(); // compiled and the heap grown
  const ms: number[] = [];
  const end = performance.now() + 1000 * seconds;
  while (performance.now() < end) {
    const t0 = performance.now();
    const y = gelu(x, "tanh");
    ms.push(performance.now() - t0);
    y.dispose();
  }
  console.log(median(ms).toFixed(3));
}

/** Starts a child pinned to `cpu`; resolves to its median ms. */
async function pinned(cpu: number, seconds: number): Promise<number> {
  const cmd = new Deno.Command("taskset", {
    args: ["-c", String(cpu), Deno.execPath(), "run", "-A", new URL(import.meta.url).pathname, "--child"]
      .concat(["--seconds", String(seconds)]),
    stdout: "piped",
    stderr: "piped",
  });
  const out = await cmd.output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || !Number.isFinite(Number(text))) {
    throw new Error(`${CMD}: the child on cpu ${cpu} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return Number(text);
}

/** The cpus this process may run on (taskset -p of itself), or undefined where taskset is missing. */
export async function allowedCpus(): Promise<number[] | undefined> {
  try {
    const out = await new Deno.Command("taskset", { args: ["-c", "-p", String(Deno.pid)], stdout: "piped" })
      .output();
    const list = new TextDecoder().decode(out.stdout).split(":").pop()!.trim();
    return list.split(",").flatMap((part) => {
      const [a, b] = part.split("-").map(Number);
      return b === undefined ? [a] : Array.from({ length: b - a + 1 }, (_, i) => a + i);
    });
  } catch {
    return undefined;
  }
}

/**
 * One round: each cpu's median ms alone, one after another, then all at once, and per cpu the ceiling of
 * 2t/1t if the one thread ran on that cpu.
 */
export async function coreRound(
  cpus: number[],
  seconds: number,
): Promise<{ alone: number[]; together: number[]; ceilings: number[] }> {
  const alone: number[] = [];
  for (const c of cpus) alone.push(await pinned(c, seconds));
  const together = await Promise.all(cpus.map((c) => pinned(c, seconds)));
  // calls per ms of all the cpus together, over one cpu's calls per ms alone
  const rate = together.reduce((s, ms) => s + 1 / ms, 0);
  return { alone, together, ceilings: alone.map((ms) => ms * rate) };
}

/** The range of a round's ceilings, "1.93-2.01". */
function ceilingRange(r: { ceilings: number[] }): string {
  return `${Math.min(...r.ceilings).toFixed(2)}-${Math.max(...r.ceilings).toFixed(2)}`;
}

/** A round as one line: "cpu 0 4.61 | 4.72 ms, cpu 1 ... (alone | together), ceiling of 2t/1t 1.93-2.01". */
export function coreRoundLine(cpus: number[], r: Awaited<ReturnType<typeof coreRound>>): string {
  const per = cpus.map((c, i) => `cpu ${c} ${r.alone[i].toFixed(2)} | ${r.together[i].toFixed(2)} ms`);
  return `${per.join(", ")} (alone | together), ceiling of 2t/1t ${ceilingRange(r)}`;
}

async function main(): Promise<void> {
  const p = parseFlags(CMD, Deno.args, {
    rounds: { type: "string" },
    seconds: { type: "string" },
    cpus: { type: "string" },
    child: { type: "boolean" },
  });
  if (p.help) return console.log(HELP);
  const seconds = num(p, CMD, "seconds", 2, { min: 0.1 });
  if (p.values.child === true) return await child(seconds);
  const rounds = num(p, CMD, "rounds", 5, { min: 1, integer: true });
  const allowed = await allowedCpus();
  if (!allowed) {
    throw usageError(`${CMD}: needs taskset (Debian's util-linux) to pin each measurement to a cpu`);
  }
  const cpuFlag = str(p, "cpus");
  const cpus = cpuFlag === undefined ? allowed : cpuFlag.split(",").map((s) => Number(s.trim()));
  const bad = cpus.filter((c) => !allowed.includes(c));
  if (cpus.length < 2 || bad.length > 0) {
    throw usageError(
      `${CMD}: --cpus ${cpuFlag ?? ""} must name two or more of the cpus this process may use (${allowed})`,
    );
  }
  console.log(
    `${CMD}: lmpipe's tanh GELU kernel over [${SHAPE}] on one wasm thread, median ms per call over ` +
      `${seconds} s, each measurement a child pinned to one cpu; load average ${loadAverage()}\n`,
  );
  const head = cpus.map((c) => `cpu ${c} alone`).concat(cpus.map((c) => `cpu ${c} together`));
  console.log(`| round | ${head.join(" | ")} | ceiling of 2t/1t |`);
  console.log(`|---:|${head.map(() => "---:").join("|")}|---:|`);
  const ceilings: number[] = [];
  const alone = new Map<number, number[]>(cpus.map((c) => [c, []]));
  for (let r = 1; r <= rounds; r++) {
    const round = await coreRound(cpus, seconds);
    round.alone.forEach((ms, i) => alone.get(cpus[i])!.push(ms));
    ceilings.push(...round.ceilings);
    const cells = [...round.alone, ...round.together].map((ms) => ms.toFixed(2));
    console.log(`| ${r} | ${cells.join(" | ")} | ${ceilingRange(round)} |`);
  }
  const spread = cpus.map((c) => {
    const xs = alone.get(c)!;
    return `cpu ${c} ${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)} ms`;
  });
  console.log(
    `\none core alone between rounds: ${spread.join(", ")}; ceiling of 2t/1t: median ` +
      `${median(ceilings).toFixed(2)}, range ${Math.min(...ceilings).toFixed(2)}-${
        Math.max(...ceilings).toFixed(2)
      }; load average ${loadAverage()}`,
  );
}

if (import.meta.main) await runBench(main);
