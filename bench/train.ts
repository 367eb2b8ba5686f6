// Training and sampling speed per backend and preset, measured through the real engine
// (lib/train_loop.ts: forward, backward, clipping, AdamW) on synthetic shards: ms/step and tokens/s
// after warm-up steps (the first steps compile kernels / grow memory), then sampling tokens/s with the
// key/value cache and with full recomputation. With --vs-torch, each lmpipe measurement is followed by
// the same configuration in PyTorch (bench/torch_reference.py, same shapes, thread count and step
// counts) and the table gives the ratio lmpipe/PyTorch instead of sampling rates. Prints a Markdown
// table on stdout (progress on stderr); results are kept in bench/RESULTS.md.
//
// wasm threads are fixed once the wasm backend starts in a process, so a list of thread counts
// (--threads 1,2) runs this script once per count as a child process and merges their rows.
import { bool, list, num, parseFlags, str } from "../lib/flags.ts";
import { LmpipeError, usageError } from "../lib/errors.ts";
import { type BackendName, getGpuAdapter, initBackend } from "../lib/tensor/backend.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import type { ModelConfig, Precision } from "../lib/models/types.ts";
import { Rng } from "../lib/rng.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { type StepLog, trainLoop } from "../lib/train_loop.ts";
import { allowedCpus, coreRound, coreRoundLine } from "./core_speed.ts";
import { cachedStepper, chooseToken, topKNeed, uncachedStepper } from "../pipelines/sample/generate.ts";
import {
  benchTrainOptions,
  loadAverage,
  median,
  runBench,
  SHAPE_FLAGS,
  shapeOverrides,
  timeEvalStep,
  writeRandomShard,
} from "./common.ts";

const HELP = `deno run -A bench/train.ts [flags]

  --backends L         comma-separated backends (default: wasm, plus webgpu when an adapter exists; cpu is slow)
  --models L           model families (default: gpt)
  --presets L          presets (default: tiny,small)
  --n-layer N, --n-head N, --n-embd N, --context N
                       override these gpt config fields in every preset (the preset column gets a '*')
  --batch-size N       sequences per step (default 8)
  --steps N            timed steps (default 3)
  --warmup-steps N     untimed steps first, the same count on both sides (default 10: lmpipe's image-model
                       steps settle over their first ~10, the wasm heap still growing in some of them, and
                       PyTorch's over its first few; 2-3 warm-up steps measured the settling, not the steps)
  --precision P        lmpipe precision: fp32 | mixed (default fp32)
  --mode M             train | eval: a whole training step, or an evaluation step (forward and loss of one
                       batch, no gradients; lmpipe's evaluateBatches, PyTorch under no_grad) (default train)
  --threads L          wasm thread counts, e.g. 1,2: one child process per count (default: lmpipe's own,
                       $LMPIPE_WASM_THREADS or 2 on 2+ cores); with --vs-torch also PyTorch's threads.
                       With several counts each round starts with a check of the cores' speed (bench/
                       core_speed.ts, ~3 s; listed under the tables): a 2t/1t ratio is read against it
  --repeat N           measure every configuration N times, one row each (default 1)
  --sample-tokens N    tokens generated for the sampling rates (default 32; not with --vs-torch)
  --vs-torch           after each lmpipe measurement run bench/torch_reference.py on the same config
                       (gpt and the image models with a VGG CNN; parameter counts must be equal): ms/step,
                       tokens/s and the ratio lmpipe/PyTorch of tokens/s
  --dnnl L             on | off | on,off: wasm convolutions on oneDNN or not (LMPIPE_DNNL=off), one child
                       process per thread count and mode, rounds of --repeat alternating over them
  --torch-precision L  PyTorch precisions, fp32 first (the ratio's yardstick): fp32 | bf16 | fp16
                       (autocast; fp16 on CUDA only), e.g. fp32,bf16 (default fp32)
  --torch-python P     python with PyTorch (default: $LMPIPE_TORCH_PYTHON, else the first of python3,
                       /usr/bin/python3 that imports torch; Debian: apt-get install python3-torch)

PyTorch runs on the CPU next to wasm/cpu rows and on CUDA (when it sees a GPU) next to webgpu/tensorflow
rows. Debian's python3-torch installed without recommends uses netlib's reference BLAS (~10x slower);
install libopenblas0-openmp too (torch_reference.py warns when it finds the reference BLAS). PyTorch is
given Debian's OpenMP build of OpenBLAS where installed, its faster one ($LMPIPE_TORCH_BLAS=system: the
system's choice), and $OMP_NUM_THREADS / $OPENBLAS_NUM_THREADS set to the thread count.

Examples:
  deno run -A bench/train.ts --backends wasm --presets tiny --steps 3
  deno run -A bench/train.ts --vs-torch --backends wasm --presets tiny --threads 1,2 --repeat 2
  deno run -A bench/train.ts --vs-torch --backends wasm --presets tiny --n-layer 4 --n-head 4 \\
      --n-embd 128 --context 128 --batch-size 8 --threads 1,2 --torch-precision fp32,bf16
  deno run -A bench/train.ts --vs-torch --mode eval --backends wasm --presets tiny --n-layer 4 \\
      --n-head 4 --n-embd 128 --context 128 --batch-size 8 --steps 5 --threads 1,2 --repeat 2`;

const CMD = "bench/train";
const FLAGS = {
  backends: { type: "string" },
  models: { type: "string" },
  presets: { type: "string" },
  ...SHAPE_FLAGS,
  "batch-size": { type: "string" },
  steps: { type: "string" },
  "warmup-steps": { type: "string" },
  precision: { type: "string" },
  mode: { type: "string" },
  threads: { type: "string" },
  repeat: { type: "string" },
  "sample-tokens": { type: "string" },
  "vs-torch": { type: "boolean" },
  "torch-precision": { type: "string" },
  "torch-python": { type: "string" },
  dnnl: { type: "string" },
  "emit-rows": { type: "boolean" }, // internal: a child of a --threads list prints its rows as JSON
} as const;

interface Options {
  backends?: BackendName[];
  models: string[];
  presets: string[];
  overrides: Record<string, number>;
  batch: number;
  steps: number;
  warm: number;
  repeat: number;
  sampleTokens: number;
  precision: Precision;
  /** A whole training step, or an evaluation step (forward and loss, no gradients). */
  mode: "train" | "eval";
  threads: number[];
  vsTorch: boolean;
  torchPrecisions: string[];
  torchPython?: string;
  emitRows: boolean;
  /** oneDNN modes, one child process each (LMPIPE_DNNL=off for "off"); empty: the environment's. */
  dnnl: string[];
}

/** The flags as Options, or a usage error naming the bad one. */
function parseOptions(argv: string[]): Options | null {
  const p = parseFlags(CMD, argv, FLAGS);
  if (p.help) return null;
  const whole = (name: string, dflt: number, min = 1) => num(p, CMD, name, dflt, { min, integer: true });
  const precision = str(p, "precision", "fp32") as Precision;
  if (precision !== "fp32" && precision !== "mixed") {
    throw usageError(`${CMD}: --precision must be fp32 or mixed, got '${precision}'`);
  }
  const mode = str(p, "mode", "train");
  if (mode !== "train" && mode !== "eval") {
    throw usageError(`${CMD}: --mode must be train or eval, got '${mode}'`);
  }
  const threads = list(p, "threads", "").map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) {
      throw usageError(`${CMD}: --threads takes whole numbers >= 1, e.g. 1,2; got '${s}'`);
    }
    return n;
  });
  const vsTorch = bool(p, "vs-torch");
  const models = list(p, "models", "gpt");
  const torchPrecisions = list(p, "torch-precision", "fp32");
  for (const tp of torchPrecisions) {
    if (!["fp32", "bf16", "fp16"].includes(tp)) {
      throw usageError(`${CMD}: --torch-precision: '${tp}' is not fp32, bf16 or fp16`);
    }
  }
  if (vsTorch && torchPrecisions[0] !== "fp32") {
    throw usageError(
      `${CMD}: --torch-precision must start with fp32 (the ratio's yardstick), e.g. fp32,bf16`,
    );
  }
  const dnnl = list(p, "dnnl", "");
  for (const d of dnnl) {
    if (d !== "on" && d !== "off") throw usageError(`${CMD}: --dnnl takes on, off or on,off; got '${d}'`);
  }
  const overrides = shapeOverrides(p, CMD);
  const backends = str(p, "backends") === undefined ? undefined : list(p, "backends", "") as BackendName[];
  return {
    backends,
    models,
    presets: list(p, "presets", "tiny,small"),
    overrides,
    batch: whole("batch-size", 8),
    steps: whole("steps", 3),
    warm: whole("warmup-steps", 10, 0),
    repeat: whole("repeat", 1),
    sampleTokens: whole("sample-tokens", 32, 2),
    precision,
    mode,
    threads,
    vsTorch,
    torchPrecisions,
    torchPython: str(p, "torch-python"),
    emitRows: bool(p, "emit-rows"),
    dnnl,
  };
}

/** One measured configuration; the torch fields only with --vs-torch, the sampling ones only without. */
interface Row {
  run: number;
  backend: string;
  device: string;
  threads?: number;
  model: string;
  preset: string;
  config: string;
  params: number;
  msPerStep: number;
  tokensPerS: number;
  sampleCached?: number;
  sampleUncached?: number;
  /** lmpipe's sgemm library and the OpenBLAS kernels it dispatched (backend description). */
  blas: string;
  torch?: TorchResult[];
}

interface TorchResult {
  precision: string;
  device: string;
  threads: number;
  msPerStep: number;
  tokensPerS: number;
  params: number;
  version: string;
  blas: string;
  /** openblas_get_corename in the PyTorch process, and its OPENBLAS_CORETYPE and malloc settings. */
  blasCore: string | null;
  coretype: string;
  malloc: string;
}

let o: Options;
/** The cores' speed before each round of a several-thread-count run (runPerThreadCount), one line each. */
const coreChecks: string[] = [];
/** The preset column's mark for config overrides. */
const star = () => (Object.keys(o.overrides).length > 0 ? "*" : "");

async function main(): Promise<void> {
  const parsed = parseOptions(Deno.args);
  if (!parsed) return console.log(HELP);
  o = parsed;
  let rows: Row[];
  if (o.threads.length > 1 || o.dnnl.length > 0) rows = await runPerThreadCount();
  else rows = await measure(o.threads[0]);
  if (o.emitRows) {
    for (const r of rows) console.log(JSON.stringify(r));
    return;
  }
  const how =
    `lmpipe ${o.mode === "eval" ? "evaluation steps (forward and loss, no gradients)" : "training steps"}, ` +
    `precision ${o.precision}, ${o.warm} warm-up + ${o.steps} timed steps (median ms/step), ` +
    `batch ${o.batch}; load average at the end ${loadAverage()} on ` +
    `${navigator.hardwareConcurrency} cores; OPENBLAS_CORETYPE=${
      Deno.env.get("OPENBLAS_CORETYPE") ?? "unset"
    }`;
  if (o.vsTorch) {
    const t = rows.find((r) => r.torch?.length)?.torch?.[0];
    console.log(
      `${how}\nlmpipe: ${rows[0]?.blas ?? "?"}\nPyTorch ${t?.version ?? "?"}: BLAS ${t?.blas ?? "?"} ` +
        `(${t?.blasCore ?? "?"} kernels, OPENBLAS_CORETYPE=${t?.coretype ?? "?"}, malloc ${
          t?.malloc ?? "?"
        }), ` +
        `same steps and threads, run after each lmpipe measurement (alternating)\n`,
    );
    printVsTorch(rows);
    if (o.repeat > 1) printMedianRatios(rows);
  } else {
    console.log(`${how}, sampling ${o.sampleTokens} tokens\n`);
    printSpeeds(rows);
  }
  if (coreChecks.length > 0) {
    console.log(`\nthe cores before each round (bench/core_speed.ts, ms per call of one wasm kernel):`);
    for (const line of coreChecks) console.log(`  ${line}`);
  }
}

/**
 * Runs this script once per thread count (wasm threads are fixed per process) and oneDNN mode, each child
 * one round, the rounds of --repeat alternating over them, and merges the rows.
 */
async function runPerThreadCount(): Promise<Row[]> {
  const rows: Row[] = [];
  const self = new URL(import.meta.url).pathname;
  const drop = new Set(["--threads", "--dnnl", "--repeat"]);
  const args = Deno.args.filter((a, i, all) =>
    !(drop.has(a) || drop.has(all[i - 1]) || [...drop].some((f) => a.startsWith(`${f}=`)))
  );
  const threads = o.threads.length > 0 ? o.threads : [undefined];
  const modes = o.dnnl.length > 0 ? o.dnnl : [undefined];
  const cpus = threads.length > 1 ? await allowedCpus() : undefined;
  for (let run = 1; run <= o.repeat; run++) {
    if (cpus && cpus.length > 1) {
      const line = `round ${run}: ${coreRoundLine(cpus, await coreRound(cpus, 0.5))}`;
      console.error(`--- ${line} ---`);
      coreChecks.push(line);
    }
    for (const t of threads) {
      for (const mode of modes) {
        const what = `${t ?? "default"} thread${t === 1 ? "" : "s"}${mode ? `, oneDNN ${mode}` : ""}`;
        console.error(`--- round ${run}: ${what} (child process) ---`);
        const env: Record<string, string> = mode === "off" ? { LMPIPE_DNNL: "off" } : {};
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", self, ...args, ...(t ? ["--threads", String(t)] : []), "--emit-rows"],
          env,
          stdout: "piped",
          stderr: "inherit",
        }).output();
        if (!out.success) {
          throw new LmpipeError(
            `${CMD}: the child run with ${what} failed (exit ${out.code}); its messages are above`,
          );
        }
        for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
          if (line.startsWith("{")) rows.push({ ...JSON.parse(line), run });
        }
      }
    }
  }
  return rows;
}

/** Every backend x model x preset x repeat in this process, wasm with `threads` (undefined: default). */
async function measure(threads: number | undefined): Promise<Row[]> {
  const python = o.vsTorch ? await findTorchPython() : null;
  const backends = o.backends ?? ((await getGpuAdapter()) ? ["wasm", "webgpu"] : ["wasm"]) as BackendName[];
  const dir = await Deno.makeTempDir({ prefix: "lmpipe-bench-train-" });
  const rows: Row[] = [];
  try {
    // Synthetic shards: uniform random GPT-2 ids (speed does not depend on the text).
    const trainShard = await writeRandomShard(dir, "bench_train_000001.bin", 200_000, 1);
    const valShard = await writeRandomShard(dir, "bench_val_000000.bin", 20_000, 2);
    for (let run = 1; run <= o.repeat; run++) {
      for (const backendName of backends) {
        const info = await initBackend(backendName, { quiet: true, threads });
        for (const family of o.models) {
          for (const preset of o.presets) {
            const config = resolveConfig(family, preset, o.overrides);
            const T = config.contextLength;
            const model = createModel(config, 1);
            const train = await WindowSampler.open([trainShard], T, config.vocabSize, 1);
            const val = await WindowSampler.open([valShard], T, config.vocabSize, 1, "validation");
            const logs: StepLog[] = [];
            const out = await Deno.makeTempDir({ dir });
            const label = `${info.name}${
              info.threads ? ` ${info.threads}t` : ""
            } ${family}/${preset}${star()}`;
            console.error(
              `[run ${run}] ${label}: ${o.warm} + ${o.steps} steps of ${o.batch} x ${T} tokens ...`,
            );
            let ms: number;
            if (o.mode === "eval") ms = await evalStepMs(model, train);
            else {
              await trainLoop(
                { model, train, val, out, config: {}, log: (r) => logs.push(r), quiet: true },
                benchTrainOptions({ batchSize: o.batch, maxSteps: o.warm + o.steps, precision: o.precision }),
              );
              ms = median(logs.slice(o.warm).map((r) => r.ms_per_step));
            }
            const row: Row = {
              run,
              backend: info.name,
              device: info.device,
              threads: info.threads,
              model: family,
              preset: preset + star(),
              config: describe(config),
              params: model.paramCount(),
              blas: info.device,
              msPerStep: ms,
              tokensPerS: (o.batch * T * 1000) / ms,
            };
            if (!o.vsTorch) {
              row.sampleCached = await sampleRate(model, T, true);
              row.sampleUncached = await sampleRate(model, T, false);
            }
            train.close(), val.close(), model.dispose();
            await Deno.remove(out, { recursive: true });
            if (python) {
              // PyTorch next to it: CPU for CPU backends, CUDA (when present) for GPU ones.
              const device = info.name === "wasm" || info.name === "cpu" ? "cpu" : "auto";
              const torchThreads = threads ?? info.threads ?? lmpipeDefaultThreads();
              row.torch = [];
              for (const tp of o.torchPrecisions) {
                row.torch.push(await runTorch(python, config, torchThreads, tp, device));
              }
              const torchCore = row.torch[0].blasCore;
              if (torchCore && !row.blas.includes(`(${torchCore} kernels`)) {
                console.error(
                  `warning: PyTorch's OpenBLAS runs ${torchCore} kernels, lmpipe's: ${row.blas}; ` +
                    "set OPENBLAS_CORETYPE to compare the same kernels",
                );
              }
              if (row.torch[0].params !== row.params) {
                throw new LmpipeError(
                  `${CMD}: PyTorch's ${family} has ${
                    row.torch[0].params
                  } parameters, lmpipe's ${row.params}: ` +
                    "not the same model; bench/torch_reference.py must be brought in line with lib/models/",
                );
              }
            }
            rows.push(row);
          }
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return rows;
}

/**
 * Median ms of an evaluation step: the loss of one batch without gradients through the engine's
 * evaluateBatches (one host read), after --warmup-steps untimed ones, a new batch each step.
 */
async function evalStepMs(model: ReturnType<typeof createModel>, train: WindowSampler): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < o.warm + o.steps; i++) {
    const ms = await timeEvalStep(model, train, o.batch, o.precision);
    if (i >= o.warm) times.push(ms);
  }
  return median(times);
}

/** "L4 H4 C128 T128 B8" for gpt configs; the preset's own fields otherwise. */
function describe(c: ModelConfig): string {
  if (c.model === "gpt") return `L${c.nLayer} H${c.nHead} C${c.nEmbd} T${c.contextLength} B${o.batch}`;
  return `T${c.contextLength} B${o.batch}`;
}

/** Sampling tokens/s after a one-token prompt (a short untimed warm-up first). */
async function sampleRate(
  model: ReturnType<typeof createModel>,
  T: number,
  cached: boolean,
): Promise<number> {
  const rng = new Rng(3);
  const n = Math.min(o.sampleTokens, T - 1);
  const gen = async (count: number) => {
    const sampling = { temperature: 1, topK: 200, topP: 1, allowedVocab: 50257 };
    const stepper = cached
      ? cachedStepper(model, topKNeed(sampling, model.config.vocabSize))
      : uncachedStepper(model);
    const seq = [198];
    for (let i = 0; i < count; i++) seq.push(chooseToken(await stepper.next(seq), sampling, rng));
    stepper.dispose();
  };
  await gen(2);
  const t0 = performance.now();
  await gen(n);
  return n / ((performance.now() - t0) / 1000);
}

/** lib/tensor/backend.ts's default wasm thread count, for PyTorch next to a non-wasm backend. */
function lmpipeDefaultThreads(): number {
  const env = Number(Deno.env.get("LMPIPE_WASM_THREADS"));
  return Number.isInteger(env) && env >= 1
    ? env
    : Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1));
}

/** The first python that imports torch: --torch-python, $LMPIPE_TORCH_PYTHON, python3, /usr/bin/python3. */
async function findTorchPython(): Promise<string> {
  const given = o.torchPython ?? Deno.env.get("LMPIPE_TORCH_PYTHON");
  const candidates = given ? [given] : ["python3", "/usr/bin/python3"];
  const tried: string[] = [];
  for (const py of candidates) {
    try {
      const out = await new Deno.Command(py, {
        args: ["-c", "import torch; print(torch.__version__)"],
        stdout: "piped",
        stderr: "piped",
      })
        .output();
      if (out.success) return py;
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").pop();
      tried.push(`${py}: ${err}`);
    } catch (err) {
      tried.push(`${py}: ${err instanceof Deno.errors.NotFound ? "not found" : (err as Error).message}`);
    }
  }
  throw usageError(
    `${CMD} --vs-torch: no python that imports torch (tried ${tried.join("; ")}). Install Debian's PyTorch ` +
      `(apt-get install -y --no-install-recommends python3-torch libopenblas0-openmp; it runs with /usr/bin/python3) ` +
      `or name a python with --torch-python PATH or LMPIPE_TORCH_PYTHON.`,
  );
}

/**
 * Debian's OpenMP build of OpenBLAS, which PyTorch gets when it is the system's choice: PyTorch's best
 * BLAS here. With the pthread build (the system's choice once libopenblas0-pthread is installed, as
 * .ci/run does for lmpipe), PyTorch's OpenMP pool and OpenBLAS's threads contend: 980 ms/step at 2
 * threads against 600 with the OpenMP build (issue 5's shape, this VM). So the yardstick always loads
 * the OpenMP build where it is installed; $LMPIPE_TORCH_BLAS=system keeps the system's choice.
 */
function torchOpenBlasDir(): string | null {
  if (Deno.env.get("LMPIPE_TORCH_BLAS") === "system") return null;
  for (
    const dir of ["/usr/lib/x86_64-linux-gnu/openblas-openmp", "/usr/lib/aarch64-linux-gnu/openblas-openmp"]
  ) {
    try {
      Deno.statSync(`${dir}/libopenblas.so.0`);
      return dir;
    } catch {
      // not this one
    }
  }
  return null;
}

/** Runs bench/torch_reference.py on `config` and reads its JSON line. */
async function runTorch(
  python: string,
  config: ModelConfig,
  threads: number,
  tp: string,
  device: string,
): Promise<TorchResult> {
  const script = new URL("./torch_reference.py", import.meta.url).pathname;
  const model = config.model === "gpt"
    ? []
    : ["--model", config.model, "--pixel-config", JSON.stringify(config)];
  const args = [
    script,
    ...model,
    "--n-layer",
    String(config.nLayer ?? 1),
    "--n-head",
    String(config.nHead),
    "--n-embd",
    String(config.nEmbd),
    "--context",
    String(config.contextLength),
    "--vocab",
    String(config.vocabSize),
    "--batch",
    String(o.batch),
    "--steps",
    String(o.steps),
    "--warmup-steps",
    String(o.warm),
    "--threads",
    String(threads),
    "--precision",
    tp,
    "--device",
    device,
    "--mode",
    o.mode,
  ];
  if (config.bias === false) args.push("--no-bias");
  const n = String(threads); // BLAS pools that do not follow torch.set_num_threads (OpenBLAS pthreads)
  const env: Record<string, string> = { OMP_NUM_THREADS: n, OPENBLAS_NUM_THREADS: n, MKL_NUM_THREADS: n };
  const openmp = torchOpenBlasDir();
  if (openmp) env.LD_LIBRARY_PATH = [openmp, Deno.env.get("LD_LIBRARY_PATH")].filter(Boolean).join(":");
  const out = await new Deno.Command(python, { args, stdout: "piped", stderr: "inherit", env }).output();
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  if (!out.success) {
    throw new LmpipeError(
      `${CMD}: ${python} ${args.join(" ")} failed (exit ${out.code}); its messages are above`,
    );
  }
  const j = JSON.parse(lines[lines.length - 1]);
  return {
    precision: j.precision,
    device: j.device,
    threads: j.threads,
    msPerStep: j.ms_per_step,
    tokensPerS: j.tokens_per_s,
    params: j.params,
    version: j.torch,
    blas: j.blas,
    blasCore: j.blas_core ?? null,
    coretype: j.openblas_coretype ?? "?",
    malloc: typeof j.malloc === "string" ? j.malloc : "tuned",
  };
}

/** Per configuration: the median over the --repeat rounds of the per-round ratio lmpipe/PyTorch. */
function printMedianRatios(rows: Row[]): void {
  const groups = new Map<string, number[]>();
  for (const r of rows) {
    const t = r.torch?.[0];
    if (!t) continue;
    const key = `| ${r.model} | ${r.preset} | ${r.config} | ${backendLabel(r)} `;
    groups.set(key, [...(groups.get(key) ?? []), r.tokensPerS / t.tokensPerS]);
  }
  console.log(
    "\n| model | preset | config | lmpipe backend | ratio lmpipe/PyTorch: median (range) | rounds |",
  );
  console.log("|---|---|---|---|---:|---:|");
  for (const [key, ratios] of groups) {
    const lo = Math.min(...ratios).toFixed(2), hi = Math.max(...ratios).toFixed(2);
    console.log(`${key}| ${median(ratios).toFixed(2)}x (${lo}-${hi}) | ${ratios.length} |`);
  }
}

const fmt = (x: number | undefined, d = 1) => (x === undefined ? "-" : x.toFixed(d));
/** "wasm 2t", or the backend and its device ("webgpu (NVIDIA H100 ...)"). */
const backendLabel = (r: Row) =>
  (r.threads ? `${r.backend} ${r.threads}t` : `${r.backend} (${r.device})`) +
  (/oneDNN \d/.test(r.blas) ? " oneDNN" : r.backend === "wasm" ? " no oneDNN" : "");

function printSpeeds(rows: Row[]): void {
  console.log(
    "| run | backend | device | model | preset | config | params | ms/step | train tokens/s | sample tok/s (cache) | sample tok/s (no cache) |",
  );
  console.log("|---:|---|---|---|---|---|---:|---:|---:|---:|---:|");
  for (const r of rows) {
    console.log(
      `| ${r.run} | ${r.backend} | ${r.device} | ${r.model} | ${r.preset} | ${r.config} | ${
        (r.params / 1e6).toFixed(2)
      }M | ` +
        `${fmt(r.msPerStep, 0)} | ${fmt(r.tokensPerS)} | ${fmt(r.sampleCached)} | ${fmt(r.sampleUncached)} |`,
    );
  }
}

function printVsTorch(rows: Row[]): void {
  const extra = o.torchPrecisions.slice(1);
  const head = [
    "run",
    "model",
    "preset",
    "config",
    "params",
    "lmpipe backend",
    "lmpipe ms/step",
    "lmpipe tok/s",
    "PyTorch",
    "PyTorch fp32 ms/step",
    "PyTorch fp32 tok/s",
    "ratio lmpipe/PyTorch",
  ];
  for (const tp of extra) head.push(`PyTorch ${tp} ms/step`, `PyTorch ${tp} tok/s`);
  console.log(`| ${head.join(" | ")} |`);
  console.log(
    `|${
      head.map((
        h,
      ) => (h === "model" || h === "preset" || h === "config" || h.endsWith("backend") || h === "PyTorch"
        ? "---"
        : "---:")
      )
        .join("|")
    }|`,
  );
  for (const r of rows) {
    const [t, ...more] = r.torch ?? [];
    const cells = [
      String(r.run),
      r.model,
      r.preset,
      r.config,
      `${(r.params / 1e6).toFixed(2)}M`,
      backendLabel(r),
      fmt(r.msPerStep, 0),
      fmt(r.tokensPerS),
      t ? `${t.device} ${t.threads}t` : "-",
      fmt(t?.msPerStep, 0),
      fmt(t?.tokensPerS),
      t ? `${(r.tokensPerS / t.tokensPerS).toFixed(2)}x` : "-",
    ];
    for (const m of more) cells.push(fmt(m.msPerStep, 0), fmt(m.tokensPerS));
    console.log(`| ${cells.join(" | ")} |`);
  }
}

await runBench(main);
