// Starting a data-parallel run: `--dist auto|mpi|none` and the launcher's environment decide whether this
// process is a rank of an MPI job; if so MPI is initialised (lib/native/mpi.ts), the rank's CPU thread
// share is computed, ranks other than 0 are made quiet, and every rank says once who it is. A run that
// is not distributed never opens libmpi.
import { LmpipeError, usageError } from "../errors.ts";
import { info, setRankOutput } from "../log.ts";
import { initMpi, type Mpi, mpiSerialOnly } from "../native/mpi.ts";
import { type BatchLosses, DataParallel } from "./data_parallel.ts";
import { detectLauncher, type LaunchInfo, parseDistMode, threadsPerRank, wantsMpi } from "./launcher.ts";

export { DataParallel } from "./data_parallel.ts";

export interface DistRun {
  dp: DataParallel;
  mpi: Mpi;
  launch: LaunchInfo | null;
  /** CPU threads for this rank's backend (wasm threads, BLAS threads), or undefined: the backend's default. */
  threads: number | undefined;
}

/**
 * Reads --dist (`flag`) and the launcher's environment; returns null for a single-process run, else the
 * initialised rank. A usage error (exit 2) says what is missing when MPI is asked for but unusable.
 * `defaultThreads` is what one process would use alone.
 */
export function startDist(
  flag: string | undefined,
  cmd: string,
  batchLosses: BatchLosses,
  defaultThreads: number,
): DistRun | null {
  const mode = parseDistMode(flag, cmd);
  const launch = detectLauncher();
  if (!wantsMpi(mode, launch)) return null;
  const why = mode === "mpi"
    ? "--dist mpi"
    : `${launch!.launcher} started ${launch!.size} processes (this is rank ${launch!.rank})`;
  let mpi: Mpi;
  try {
    mpi = initMpi();
  } catch (err) {
    if (err instanceof LmpipeError) {
      throw new LmpipeError(
        `lmpipe ${cmd}: ${why}, so training runs data-parallel over MPI. ${err.message}` +
          (mode === "auto" ? "\n(--dist none runs each process on its own instead.)" : ""),
        err.exitCode,
      );
    }
    throw err;
  }
  if (launch && launch.size !== mpi.size) {
    throw usageError(
      `lmpipe ${cmd}: ${launch.launcher} started ${launch.size} processes but MPI sees ${mpi.size}: the MPI library ` +
        `(${mpi.path}) does not speak this launcher's protocol. Under Slurm use srun --mpi=pmix (or pmi2, as ` +
        `'srun --mpi=list' offers and your MPI was built for), or start the job with that MPI's own mpirun.`,
    );
  }
  const dp = new DataParallel(mpi, batchLosses);
  let threads: number | undefined;
  if (!envSet("LMPIPE_WASM_THREADS")) {
    threads = threadsPerRank(navigator.hardwareConcurrency || 1, launch?.localSize ?? null, defaultThreads);
  }
  if (mpi.rank !== 0) setRankOutput(mpi.rank, true);
  else setRankOutput(0, false);
  // One line from every rank (info is muted on ranks > 0): who it is, for logs and for tests that
  // signal a particular rank.
  console.error(
    `dist: rank ${mpi.rank}/${mpi.size}, pid ${Deno.pid}, host ${Deno.hostname()}` +
      (launch?.localRank !== null && launch?.localRank !== undefined
        ? `, local rank ${launch.localRank}`
        : "") +
      (threads !== undefined ? `, ${threads} CPU thread${threads === 1 ? "" : "s"}` : ""),
  );
  info(
    `dist: ${mpi.size} rank${
      mpi.size === 1 ? "" : "s"
    } over MPI (${mpi.version}; ${mpi.abi} ABI, ${mpi.path})` +
      (mpiSerialOnly() ? "; the library allows no threads, so a hung peer cannot time out" : ""),
  );
  return { dp, mpi, launch, threads };
}

function envSet(name: string): boolean {
  try {
    return (Deno.env.get(name) ?? "") !== "";
  } catch {
    return false;
  }
}
