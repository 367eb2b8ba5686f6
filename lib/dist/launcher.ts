// Which launcher started this process, read from the environment it sets, so that `lmpipe train` under
// `mpirun -np 4` or `srun -n 4` becomes one rank of a data-parallel job without any flag, and a plain
// run never touches MPI. Also: how many CPU threads one rank may use so that the ranks on a node do not
// oversubscribe its cores.
import { usageError } from "../errors.ts";

export type DistMode = "auto" | "mpi" | "none";
export const DIST_MODES: readonly DistMode[] = ["auto", "mpi", "none"];

/** What a launcher says about this process. */
export interface LaunchInfo {
  /** "Open MPI mpirun", "MPICH/Hydra", "PMIx", "Slurm srun". */
  launcher: string;
  rank: number;
  size: number;
  /** Rank among the processes on this node (null when the launcher does not say). */
  localRank: number | null;
  localSize: number | null;
}

type Env = (name: string) => string | undefined;

function defaultEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function int(v: string | undefined): number | null {
  if (v === undefined || !/^\s*\d+\s*$/.test(v)) return null;
  return Number(v);
}

/**
 * The launcher's view of this process, or null when no MPI launcher started it. Checked in order: Open
 * MPI's mpirun (OMPI_COMM_WORLD_*), MPICH's Hydra and Intel MPI (PMI_RANK/PMI_SIZE, MPI_LOCALRANKID),
 * PMIx (PMIX_RANK, e.g. Open MPI 5 or `srun --mpi=pmix`; its size comes from Slurm or Open MPI), and
 * Slurm's srun (SLURM_PROCID inside a job step of more than one task: SLURM_STEP_NUM_TASKS; a batch
 * script's own SLURM_NTASKS does not count, since the script is not one of the step's tasks).
 */
export function detectLauncher(env: Env = defaultEnv): LaunchInfo | null {
  const ompiRank = int(env("OMPI_COMM_WORLD_RANK")), ompiSize = int(env("OMPI_COMM_WORLD_SIZE"));
  if (ompiRank !== null && ompiSize !== null) {
    return {
      launcher: "Open MPI mpirun",
      rank: ompiRank,
      size: ompiSize,
      localRank: int(env("OMPI_COMM_WORLD_LOCAL_RANK")),
      localSize: int(env("OMPI_COMM_WORLD_LOCAL_SIZE")),
    };
  }
  const pmiRank = int(env("PMI_RANK")), pmiSize = int(env("PMI_SIZE"));
  if (pmiRank !== null && pmiSize !== null) {
    return {
      launcher: "MPICH/Hydra (PMI)",
      rank: pmiRank,
      size: pmiSize,
      localRank: int(env("MPI_LOCALRANKID")),
      localSize: int(env("MPI_LOCALNRANKS")),
    };
  }
  const slurmRank = int(env("SLURM_PROCID"));
  const slurmSize = int(env("SLURM_STEP_NUM_TASKS"));
  const slurmLocal = { localRank: int(env("SLURM_LOCALID")), localSize: slurmLocalSize(env) };
  const pmixRank = int(env("PMIX_RANK"));
  if (pmixRank !== null) {
    const size = int(env("OMPI_UNIVERSE_SIZE")) ?? slurmSize;
    if (size !== null) return { launcher: "PMIx", rank: pmixRank, size, ...slurmLocal };
  }
  if (slurmRank !== null && slurmSize !== null && slurmSize > 1) {
    return { launcher: "Slurm srun", rank: slurmRank, size: slurmSize, ...slurmLocal };
  }
  return null;
}

/** Tasks of this job step on this node: SLURM_STEP_TASKS_PER_NODE ("2(x3),1") at SLURM_NODEID. */
function slurmLocalSize(env: Env): number | null {
  const spec = env("SLURM_STEP_TASKS_PER_NODE"), node = int(env("SLURM_NODEID"));
  if (!spec || node === null) return null;
  const perNode: number[] = [];
  for (const part of spec.split(",")) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return null;
    for (let i = 0; i < Number(m[2] ?? 1); i++) perNode.push(Number(m[1]));
  }
  return perNode[node] ?? null;
}

/** Parses --dist. */
export function parseDistMode(value: string | undefined, cmd: string): DistMode {
  const v = (value ?? "auto") as DistMode;
  if (!DIST_MODES.includes(v)) {
    throw usageError(`lmpipe ${cmd}: --dist must be ${DIST_MODES.join(", ")}; got '${value}'`);
  }
  return v;
}

/**
 * Whether this run is a rank of an MPI job: `mpi` always; `auto` when a launcher started more than one
 * process; `none` never.
 */
export function wantsMpi(mode: DistMode, launch: LaunchInfo | null): boolean {
  if (mode === "mpi") return true;
  if (mode === "none") return false;
  return launch !== null && launch.size > 1;
}

/**
 * CPU threads one rank may use: the cores this process may run on (which a launcher's binding already
 * narrows) shared among the ranks of this node, at least 1, at most `cap` (lmpipe's wasm default is 2).
 */
export function threadsPerRank(cores: number, localSize: number | null, cap: number): number {
  const share = localSize && localSize > 1 ? Math.floor(cores / localSize) : cores;
  return Math.max(1, Math.min(cap, share));
}
