// The MPI library of the cluster, through Deno FFI: lmpipe builds no networking of its own. Data-parallel
// training (lib/dist/) needs only a handful of calls: MPI_Init_thread, Comm_rank/size, an in-place
// Allreduce, Alltoall and Allgather (16-bit gradient sums, lib/dist/half_reduce.ts), Bcast, Barrier,
// Abort and Finalize, on MPI_COMM_WORLD with MPI_ERRORS_RETURN so that a
// failed call comes back as an error code instead of killing the process without a word.
//
// Two ABIs exist in the wild and both are supported, chosen by what the opened library exports:
//   - Open MPI (libmpi.so.40): handles are pointers to exported globals (MPI_COMM_WORLD is
//     &ompi_mpi_comm_world, MPI_FLOAT &ompi_mpi_float, MPI_SUM &ompi_mpi_op_sum), MPI_IN_PLACE is 1.
//   - MPICH and its derivatives (libmpi.so.12: MPICH, Intel MPI, MVAPICH, Cray MPICH): handles are
//     32-bit integers fixed in mpi.h (MPI_COMM_WORLD 0x44000000, ...), MPI_IN_PLACE is -1.
// Only the Open MPI path has been run (Open MPI 4.1.4 on Debian); the MPICH constants are those of
// MPICH's mpi.h. The MPI 5 standard ABI (libmpi_abi.so) is not supported yet.
//
// Collectives run as nonblocking FFI calls (on a helper thread; MPI_THREAD_MULTIPLE is requested, at least
// MPI_THREAD_SERIALIZED needed) so the JavaScript thread stays free to time them out: a peer that died or
// hangs makes a call fail after LMPIPE_MPI_TIMEOUT seconds instead of blocking the job forever, and where
// the library is fully thread-safe the rank then calls MPI_Abort so the launcher ends every rank at once.
import { EXIT, LmpipeError, usageError } from "../errors.ts";

/** How to get an MPI library, printed whenever one is needed and missing. */
export const MPI_INSTALL_HINT = "install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi3; " +
  "Fedora: dnf install openmpi) or MPICH (apt-get install mpich libmpich12), or on a cluster " +
  "`module load openmpi` (or mpich); LMPIPE_MPI=/path/to/libmpi.so names a library, LMPIPE_MPI=off turns MPI off";

const CANDIDATES = ["libmpi.so.40", "libmpi.so.12", "libmpi.so"];

export type MpiAbi = "openmpi" | "mpich";
export type ReduceOp = "sum" | "max";

/** The C calls, for a handle type of "pointer" (Open MPI) or "i32" (MPICH). */
function symbols(h: "pointer" | "i32"): Deno.ForeignLibraryInterface {
  const collective = (parameters: Deno.NativeType[]): Deno.ForeignFunction => ({
    parameters,
    result: "i32",
    nonblocking: true,
  });
  const blocking = (name: string, parameters: Deno.NativeType[]): Deno.ForeignFunction => ({
    name,
    parameters,
    result: "i32",
  });
  return {
    MPI_Initialized: { parameters: ["buffer"], result: "i32" },
    MPI_Finalized: { parameters: ["buffer"], result: "i32" },
    MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
    MPI_Comm_rank: { parameters: [h, "buffer"], result: "i32" },
    MPI_Comm_size: { parameters: [h, "buffer"], result: "i32" },
    MPI_Comm_set_errhandler: { parameters: [h, h], result: "i32" },
    MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
    // sendbuf, recvbuf, count, datatype, op, comm
    MPI_Allreduce: collective(["pointer", "pointer", "i32", h, h, h]),
    // sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm
    MPI_Alltoall: collective(["pointer", "i32", h, "pointer", "i32", h, h]),
    MPI_Allgather: collective(["pointer", "i32", h, "pointer", "i32", h, h]),
    // buffer, count, datatype, root, comm
    MPI_Bcast: collective(["pointer", "i32", h, "i32", h]),
    MPI_Barrier: collective([h]),
    // the same calls on the main thread, for a library that does not grant MPI_THREAD_SERIALIZED
    MPI_Allreduce_main: blocking("MPI_Allreduce", ["pointer", "pointer", "i32", h, h, h]),
    MPI_Alltoall_main: blocking("MPI_Alltoall", ["pointer", "i32", h, "pointer", "i32", h, h]),
    MPI_Allgather_main: blocking("MPI_Allgather", ["pointer", "i32", h, "pointer", "i32", h, h]),
    MPI_Bcast_main: blocking("MPI_Bcast", ["pointer", "i32", h, "i32", h]),
    MPI_Barrier_main: blocking("MPI_Barrier", [h]),
    MPI_Abort: { parameters: [h, "i32"], result: "i32" },
    MPI_Finalize: { parameters: [], result: "i32" },
  };
}

const OMPI_GLOBALS = {
  ompi_mpi_comm_world: { type: "pointer" },
  ompi_mpi_float: { type: "pointer" },
  ompi_mpi_double: { type: "pointer" },
  ompi_mpi_unsigned_short: { type: "pointer" },
  ompi_mpi_op_sum: { type: "pointer" },
  ompi_mpi_op_max: { type: "pointer" },
  ompi_mpi_errors_return: { type: "pointer" },
} as const;

/** MPICH's fixed handles (mpi.h). */
const MPICH = {
  comm: 0x44000000,
  float: 0x4c00040a,
  double: 0x4c00080b,
  uint16: 0x4c000204, // MPI_UNSIGNED_SHORT
  sum: 0x58000003,
  max: 0x58000001,
  errorsReturn: 0x54000001,
};

const THREAD_SERIALIZED = 2, THREAD_MULTIPLE = 3; // the same values in Open MPI and MPICH

type Handle = Deno.PointerValue | number;
// deno-lint-ignore no-explicit-any
type AnySymbols = Record<string, (...args: any[]) => any>;

/** An initialised MPI_COMM_WORLD. */
export interface Mpi {
  /** The library file that was opened. */
  path: string;
  abi: MpiAbi;
  /** MPI_Get_library_version's first line, e.g. "Open MPI v4.1.4, ...". */
  version: string;
  rank: number;
  size: number;
  /** In place over all ranks: `count` float32 values at `ptr` (a host array or the wasm heap). */
  allreduceF32(ptr: Deno.PointerValue, count: number, op: ReduceOp, what: string): Promise<void>;
  /** In place over all ranks, on a host Float64Array. */
  allreduceF64(buf: Float64Array, op: ReduceOp, what: string): Promise<void>;
  /**
   * MPI_Alltoall of 2-byte values (16-bit floats moved as MPI_UNSIGNED_SHORT, never summed by MPI): `send`
   * holds `size` blocks of `count`, block r goes to rank r; `recv` gets rank r's block for this rank at r.
   */
  alltoall16(send: Deno.PointerValue, recv: Deno.PointerValue, count: number, what: string): Promise<void>;
  /** MPI_Allgather of 2-byte values: every rank's `count` values at `send` into `recv`, rank order. */
  allgather16(send: Deno.PointerValue, recv: Deno.PointerValue, count: number, what: string): Promise<void>;
  /** Rank `root`'s `count` float32 values at `ptr` to every rank. */
  bcastF32(ptr: Deno.PointerValue, count: number, root: number, what: string): Promise<void>;
  barrier(what: string): Promise<void>;
  /** MPI_Abort on MPI_COMM_WORLD: asks the launcher to end every rank with `code`. */
  abort(code: number): void;
  /** MPI_Finalize (once; later calls do nothing). */
  finalize(): void;
}

export interface MpiOptions {
  /** Seconds a collective may take before this rank gives up on its peers (default $LMPIPE_MPI_TIMEOUT or 300). */
  timeoutS?: number;
}

let reason = "not loaded";
let current: Mpi | null = null;
let serialOnly = false;
/** The thread level MPI_Init_thread granted (0 when MPI was initialised by someone else). */
let threadLevel = 0;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function ffiAllowed(): boolean {
  try {
    return typeof Deno.dlopen === "function" &&
      Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Makes the library's symbols global before Deno opens it (RTLD_GLOBAL, as mpi4py does): Open MPI
 * builds that load their components as plugins need libmpi's symbols visible to them.
 */
function preloadGlobal(path: string): void {
  try {
    const libc = Deno.dlopen("libc.so.6", { dlopen: { parameters: ["buffer", "i32"], result: "pointer" } });
    const RTLD_NOW = 2, RTLD_GLOBAL = 0x100;
    libc.symbols.dlopen(new TextEncoder().encode(path + "\0"), RTLD_NOW | RTLD_GLOBAL);
    // libc stays open: closing it would not unload anything anyway
  } catch {
    // not glibc: Deno's own dlopen below decides
  }
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message.split("\n")[0] : String(err)).replace(
    /^(Could not open library: )+/,
    "",
  );
}

interface Opened {
  path: string;
  abi: MpiAbi;
  fn: AnySymbols;
  h: {
    comm: Handle;
    float: Handle;
    double: Handle;
    uint16: Handle;
    sum: Handle;
    max: Handle;
    errorsReturn: Handle;
  };
  inPlace: Deno.PointerValue;
}

/** Opens `path` with the Open MPI ABI when it exports ompi_mpi_comm_world, else with MPICH's. */
function openLibrary(path: string): Opened {
  preloadGlobal(path);
  try {
    const lib = Deno.dlopen(path, { ...symbols("pointer"), ...OMPI_GLOBALS });
    const s = lib.symbols as unknown as AnySymbols & Record<keyof typeof OMPI_GLOBALS, Deno.PointerValue>;
    return {
      path,
      abi: "openmpi",
      fn: s,
      h: {
        comm: s.ompi_mpi_comm_world,
        float: s.ompi_mpi_float,
        double: s.ompi_mpi_double,
        uint16: s.ompi_mpi_unsigned_short,
        sum: s.ompi_mpi_op_sum,
        max: s.ompi_mpi_op_max,
        errorsReturn: s.ompi_mpi_errors_return,
      },
      inPlace: Deno.UnsafePointer.create(1n),
    };
  } catch (err) {
    if (!/ompi_mpi_/.test(String(err))) throw err; // not there, or not an MPI library at all
  }
  const lib = Deno.dlopen(path, symbols("i32"));
  return {
    path,
    abi: "mpich",
    fn: lib.symbols as unknown as AnySymbols,
    h: MPICH,
    inPlace: Deno.UnsafePointer.create(0xffffffffffffffffn),
  };
}

/**
 * Finds the MPI library ($LMPIPE_MPI: "off", a path, or unset to search libmpi.so.40, .12, libmpi.so).
 * Returns it, or null with mpiStatus() saying why.
 */
function findLibrary(): Opened | null {
  const setting = env("LMPIPE_MPI");
  if (setting === "off" || setting === "0") {
    reason = "MPI off (LMPIPE_MPI=off)";
    return null;
  }
  if (!ffiAllowed()) {
    reason = "MPI needs Deno's --allow-ffi";
    return null;
  }
  if (setting) {
    try {
      return openLibrary(setting);
    } catch (err) {
      reason = `LMPIPE_MPI=${setting} did not open as an MPI library (${firstLine(err)})`;
      return null;
    }
  }
  const tried: string[] = [];
  for (const name of CANDIDATES) {
    try {
      return openLibrary(name);
    } catch (err) {
      tried.push(`${name}: ${firstLine(err)}`);
    }
  }
  reason = `no MPI library found (${tried.join("; ")})`;
  return null;
}

/** Why MPI is not available (or "not loaded" before the first try, or the library in use). */
export function mpiStatus(): string {
  return current ? `${current.version} (${current.path})` : reason;
}

/** Whether an MPI library can be opened here (opens it, does not initialise it). */
export function mpiAvailable(): boolean {
  return current !== null || findLibrary() !== null;
}

/**
 * Opens and initialises MPI once (later calls return the same world). Without a usable library it
 * throws a usage error (exit 2) that says what is missing and how to install it.
 */
export function initMpi(opts: MpiOptions = {}): Mpi {
  if (current) return current;
  const lib = findLibrary();
  if (!lib) throw usageError(`MPI is needed here but unusable: ${reason}.\nTo fix: ${MPI_INSTALL_HINT}.`);
  const { fn, h } = lib;
  const i32 = new Int32Array(1);
  const check = (rc: number, call: string) => {
    if (rc !== 0) throw new LmpipeError(`${call} failed: ${errorString(rc)} (MPI error ${rc}, ${lib.path})`);
  };
  const errorString = (rc: number) => {
    const buf = new Uint8Array(1024), len = new Int32Array(1);
    if (fn.MPI_Error_string(rc, buf, len) !== 0) return "unknown error";
    return new TextDecoder().decode(buf.subarray(0, Math.max(0, Math.min(len[0], buf.length))));
  };
  check(fn.MPI_Initialized(i32), "MPI_Initialized");
  if (i32[0] === 0) {
    const provided = new Int32Array(1);
    check(fn.MPI_Init_thread(null, null, THREAD_MULTIPLE, provided), "MPI_Init_thread");
    threadLevel = provided[0];
    if (provided[0] < THREAD_SERIALIZED) {
      // Calls then come from the main thread only: collectives block, and the timeout cannot fire.
      serialOnly = true;
    }
  }
  check(fn.MPI_Comm_set_errhandler(h.comm, h.errorsReturn), "MPI_Comm_set_errhandler");
  check(fn.MPI_Comm_rank(h.comm, i32), "MPI_Comm_rank");
  const rank = i32[0];
  check(fn.MPI_Comm_size(h.comm, i32), "MPI_Comm_size");
  const size = i32[0];
  const vbuf = new Uint8Array(8192), vlen = new Int32Array(1);
  fn.MPI_Get_library_version(vbuf, vlen);
  const version = new TextDecoder().decode(vbuf.subarray(0, Math.max(0, Math.min(vlen[0], vbuf.length))))
    .split("\n")[0].replace(/\0.*$/, "").trim();
  const timeoutS = opts.timeoutS ?? timeoutFromEnv();

  /** Runs one collective, failing (instead of hanging) after timeoutS. */
  const collective = async (call: string, what: string, run: () => Promise<number> | number) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const msg =
          `rank ${rank}/${size}: ${call} (${what}) did not complete within ${timeoutS} s: another ` +
          `rank died, hangs or is far behind. Stopping this rank (LMPIPE_MPI_TIMEOUT=${timeoutS} sets the limit).`;
        if (threadLevel >= THREAD_MULTIPLE) {
          // The stuck call holds no lock a second thread needs: MPI_Abort asks the launcher to end the job.
          console.error(`error: ${msg} Aborting the MPI job.`);
          fn.MPI_Abort(h.comm, EXIT.internal);
        }
        reject(new LmpipeError(msg));
      }, timeoutS * 1000);
    });
    try {
      const rc = await Promise.race([Promise.resolve(run()), timeout]);
      if (rc !== 0) {
        throw new LmpipeError(
          `rank ${rank}/${size}: ${call} (${what}) failed: ${errorString(rc)} (MPI error ${rc}); ` +
            `another rank probably died`,
        );
      }
    } finally {
      clearTimeout(timer);
    }
  };
  const opOf = (op: ReduceOp) => op === "sum" ? h.sum : h.max;
  const allreduce = serialOnly ? fn.MPI_Allreduce_main : fn.MPI_Allreduce;
  const bcast = serialOnly ? fn.MPI_Bcast_main : fn.MPI_Bcast;
  const alltoall = serialOnly ? fn.MPI_Alltoall_main : fn.MPI_Alltoall;
  const allgather = serialOnly ? fn.MPI_Allgather_main : fn.MPI_Allgather;
  const barrier = serialOnly ? fn.MPI_Barrier_main : fn.MPI_Barrier;
  let finalized = false;
  const mpi: Mpi = {
    path: lib.path,
    abi: lib.abi,
    version,
    rank,
    size,
    allreduceF32: (ptr, count, op, what) =>
      collective("MPI_Allreduce", what, () => allreduce(lib.inPlace, ptr, count, h.float, opOf(op), h.comm)),
    allreduceF64: (buf, op, what) =>
      collective(
        "MPI_Allreduce",
        what,
        () => allreduce(lib.inPlace, Deno.UnsafePointer.of(buf), buf.length, h.double, opOf(op), h.comm),
      ),
    alltoall16: (send, recv, count, what) =>
      collective("MPI_Alltoall", what, () => alltoall(send, count, h.uint16, recv, count, h.uint16, h.comm)),
    allgather16: (send, recv, count, what) =>
      collective(
        "MPI_Allgather",
        what,
        () => allgather(send, count, h.uint16, recv, count, h.uint16, h.comm),
      ),
    bcastF32: (ptr, count, root, what) =>
      collective("MPI_Bcast", what, () => bcast(ptr, count, h.float, root, h.comm)),
    barrier: (what) => collective("MPI_Barrier", what, () => barrier(h.comm)),
    abort(code) {
      fn.MPI_Abort(h.comm, code);
    },
    finalize() {
      if (finalized) return;
      finalized = true;
      const f = new Int32Array(1);
      fn.MPI_Finalized(f);
      if (f[0] === 0) fn.MPI_Finalize();
    },
  };
  current = mpi;
  return mpi;
}

/** Whether the library granted only single-threaded use (then no collective can time out). */
export function mpiSerialOnly(): boolean {
  return serialOnly;
}

function timeoutFromEnv(): number {
  const v = env("LMPIPE_MPI_TIMEOUT");
  if (v === undefined || v === "") return DEFAULT_TIMEOUT_S;
  const n = Number(v);
  if (!(n > 0)) throw usageError(`LMPIPE_MPI_TIMEOUT=${v}: expected a number of seconds > 0`);
  return n;
}

/** Default seconds a collective may wait for the slowest rank (rank 0 saving a large checkpoint included). */
export const DEFAULT_TIMEOUT_S = 300;
