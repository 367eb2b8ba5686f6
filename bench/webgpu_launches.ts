// Counts GPU kernel launches (compute dispatches) per training step on the webgpu backend, by phase:
// forward, backward, the gradient-norm / loss-scale overflow check (with the step's one host read),
// and the AdamW update; with the fused WGSL kernels of lib/tensor/webgpu/kernels.ts off and on, plus
// the mean ms/step and ms per phase of each (a GPU sync after each phase makes the phase times real). Every TF.js webgpu program (and the fused AdamW kernel) is recorded through
// WebGPUBackend.recordAndSubmit, which is wrapped here to count. The step below mirrors one step of
// lib/train_loop.ts (grad-accum 1) with phase markers; a real trainLoop run is counted as a cross-check.
// Prints a Markdown table to stdout (progress on stderr). Rerun on a GPU node for the real numbers.
//
//   deno run -A bench/webgpu_launches.ts [--models gpt,pixel-attn] [--preset tiny] [--batch-size 4]
//                                        [--precision fp32,mixed] [--steps 3] [--top 0]
import { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { list, num, parseFlags, str } from "../lib/flags.ts";
import { initBackend, readData, tf } from "../lib/tensor/backend.ts";
import { setFusedKernelsEnabled } from "../lib/tensor/webgpu/kernels.ts";
import { createModel, resolveConfig } from "../lib/models/registry.ts";
import { AdamW, ADAMW_DEFAULTS, clipCoefficient, sumOfSquares } from "../lib/optim.ts";
import { LossScaler } from "../lib/loss_scale.ts";
import { Rng } from "../lib/rng.ts";
import { WindowSampler } from "../lib/sampler.ts";
import { trainLoop } from "../lib/train_loop.ts";
import { benchTrainOptions, writeRandomShard } from "./common.ts";
import type { Precision } from "../lib/models/types.ts";

const HELP = `deno run -A bench/webgpu_launches.ts [flags]

  --models L       model families (default: gpt,pixel-attn)
  --preset P       preset of every model (default: tiny)
  --batch-size N   sequences per step (default 4)
  --precision L    fp32 and/or mixed (default: fp32,mixed)
  --steps N        counted and timed steps after one warm-up step (default 3)
  --gelu F         tanh | exact: GELU's form (default: the preset's; gpt2 and study are exact)
  --top N          also list the N most launched programs per phase (default 0)
  --no-cross-check skip counting a real trainLoop run (the "trainLoop total" column shows -)

Counts compute dispatches per training step on webgpu, by phase, with the fused kernels off and on.
LMPIPE_WEBGPU_FUSED has no effect here: both settings are measured.
Example: deno run -A bench/webgpu_launches.ts --models gpt --precision fp32 --steps 2`;

const p = parseFlags("bench/webgpu_launches", Deno.args, {
  models: { type: "string" },
  preset: { type: "string" },
  "batch-size": { type: "string" },
  precision: { type: "string" },
  steps: { type: "string" },
  top: { type: "string" },
  gelu: { type: "string" },
  "no-cross-check": { type: "boolean" },
});
if (p.help) {
  console.log(HELP);
  Deno.exit(0);
}
const models = list(p, "models", "gpt,pixel-attn");
const preset = str(p, "preset", "tiny");
const B = num(p, "bench/webgpu_launches", "batch-size", 4, { min: 1, integer: true });
const precisions = list(p, "precision", "fp32,mixed") as Precision[];
for (const pr of precisions) {
  if (pr !== "fp32" && pr !== "mixed") {
    throw new Error(`bench/webgpu_launches: --precision ${pr}: use fp32 or mixed`);
  }
}
const steps = num(p, "bench/webgpu_launches", "steps", 3, { min: 1, integer: true });
const geluForm = str(p, "gelu", "");
if (geluForm !== "" && geluForm !== "tanh" && geluForm !== "exact") {
  throw new Error(`bench/webgpu_launches: --gelu ${geluForm}: use tanh or exact`);
}
/** The preset's config of `family`, with --gelu's form when given. */
const configOf = (family: string) => resolveConfig(family, preset, geluForm ? { gelu: geluForm } : {});
const top = num(p, "bench/webgpu_launches", "top", 0, { min: 0, integer: true });
const crossCheck = !p.values["no-cross-check"];

const info = await initBackend("webgpu", { quiet: true });

// --- counting -------------------------------------------------------------------------------------
type Phase = "forward" | "backward" | "check" | "optimizer" | "other";
const PHASES: Phase[] = ["forward", "backward", "check", "optimizer"];
let phase: Phase = "other";
const launches = new Map<Phase, Map<string, number>>();
let submits = 0, reads = 0;
{
  // deno-lint-ignore no-explicit-any
  const proto = WebGPUBackend.prototype as any;
  const record = proto.recordAndSubmit, submit = proto.submitQueue, read = proto.getBufferData;
  // deno-lint-ignore no-explicit-any
  proto.recordAndSubmit = function (program: any, ...rest: unknown[]) {
    const byName = launches.get(phase) ?? new Map<string, number>();
    const name = program.constructor?.name ?? "?";
    byName.set(name, (byName.get(name) ?? 0) + 1);
    launches.set(phase, byName);
    return record.call(this, program, ...rest);
  };
  proto.submitQueue = function (...args: unknown[]) {
    submits++;
    return submit.apply(this, args);
  };
  proto.getBufferData = function (...args: unknown[]) {
    reads++;
    return read.apply(this, args);
  };
}
const total = (ph: Phase) => [...(launches.get(ph)?.values() ?? [])].reduce((a, b) => a + b, 0);
const resetCounts = () => {
  launches.clear();
  submits = 0, reads = 0;
};

// --- one step, as lib/train_loop.ts takes it (grad-accum 1), with phase markers --------------------
function makeBatch(rng: Rng, vocab: number, T: number): { x: Int32Array; y: Int32Array } {
  const x = new Int32Array(B * T), y = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) x[i] = rng.int(vocab), y[i] = rng.int(vocab);
  return { x, y };
}

interface Setup {
  model: ReturnType<typeof createModel>;
  optimizer: AdamW;
  scaler: LossScaler;
  T: number;
  rng: Rng;
  precision: Precision;
}

/** Waits until the GPU has finished everything recorded so far (for the per-phase times). */
async function gpuSync(): Promise<void> {
  // deno-lint-ignore no-explicit-any
  const be = tf.backend() as any;
  be.ensureCommandEncoderReady();
  be.endComputePassEncoder();
  be.submitQueue();
  await (be.device as GPUDevice).queue.onSubmittedWorkDone();
}

/** Milliseconds per phase of the last step (forward + backward, check with its read, optimizer). */
const phaseMs = { fwdBwd: 0, check: 0, optimizer: 0 };

async function trainStep(s: Setup): Promise<number> {
  const { model, optimizer, scaler, T, precision } = s;
  const names = [...model.params.keys()];
  const vars = names.map((n) => model.params.get(n)!);
  const S = scaler.scale;
  const batch = makeBatch(s.rng, model.config.vocabSize as number, T);
  const t0 = performance.now();
  phase = "forward";
  const { value, grads } = tf.tidy(() => {
    const x = tf.tensor2d(batch.x, [B, T], "int32");
    const y = tf.tensor2d(batch.y, [B, T], "int32");
    return tf.variableGrads(() => {
      phase = "forward";
      const l = tf.mul(model.loss(x, y, { precision, training: true }), S) as tf.Scalar;
      phase = "backward"; // tf.variableGrads runs the backward pass after this function returns
      return l;
    }, vars);
  });
  await gpuSync();
  const t1 = performance.now();
  phase = "check";
  const acc = vars.map((v) => grads[v.name]);
  const both = tf.tidy(() => tf.stack([sumOfSquares(acc, 1 / S), value]));
  const [sqVal, scaledLoss] = await readData(both);
  both.dispose(), value.dispose();
  const loss = scaledLoss / S, gradNorm = Math.sqrt(sqVal);
  const finite = Number.isFinite(sqVal) && Number.isFinite(loss);
  const t2 = performance.now();
  phase = "optimizer";
  if (!scaler.update(finite)) {
    optimizer.step(new Map(names.map((n, i) => [n, acc[i]])), 3e-4, clipCoefficient(gradNorm, 1) / S);
  }
  acc.forEach((t) => t.dispose());
  await gpuSync();
  const t3 = performance.now();
  phase = "other";
  phaseMs.fwdBwd += t1 - t0, phaseMs.check += t2 - t1, phaseMs.optimizer += t3 - t2;
  return loss;
}

// --- a real trainLoop run, counted between its per-step log records --------------------------------
const dir = await Deno.makeTempDir({ prefix: "lmpipe-bench-launches-" });
async function trainLoopLaunches(family: string, precision: Precision): Promise<number> {
  const config = configOf(family);
  const T = config.contextLength as number, vocab = config.vocabSize as number;
  const model = createModel(config, 1);
  const tr = await WindowSampler.open(
    [await writeRandomShard(dir, "t_000001.bin", 20_000, 1, vocab)],
    T,
    vocab,
    1,
  );
  const va = await WindowSampler.open(
    [await writeRandomShard(dir, "v_000000.bin", 5_000, 2, vocab)],
    T,
    vocab,
    1,
    "validation",
  );
  const out = await Deno.makeTempDir({ dir });
  const perStep: number[] = [];
  let last = 0;
  const count = () => [...launches.values()].flatMap((m) => [...m.values()]).reduce((a, b) => a + b, 0);
  resetCounts();
  await trainLoop({
    model,
    train: tr,
    val: va,
    out,
    config: {},
    quiet: true,
    log: () => {
      const now = count();
      perStep.push(now - last);
      last = now;
    },
  }, benchTrainOptions({ batchSize: B, maxSteps: 3, precision, lr: 3e-4, minLr: 3e-5, decaySteps: 100 }));
  tr.close(), va.close(), model.dispose();
  return perStep[1]; // step 2: after the warm-up step, before the last one (which also evaluates)
}

// --- run --------------------------------------------------------------------------------------------
interface Row {
  model: string;
  precision: Precision;
  fused: boolean;
  byPhase: Record<Phase, number>;
  perProgram: Map<Phase, Map<string, number>>;
  submits: number;
  reads: number;
  ms: number;
  /** ms in forward + backward, check (with the read), optimizer. */
  msPhases: number[];
  trainLoop: number | null;
}
const rows: Row[] = [];

for (const family of models) {
  for (const precision of precisions) {
    for (const fused of [false, true]) {
      setFusedKernelsEnabled(fused);
      console.error(
        `${family}/${preset} ${precision} fused=${fused}: 1 + ${steps} steps of ${B} sequences ...`,
      );
      const config = configOf(family);
      const model = createModel(config, 1);
      const optimizer = new AdamW(model.params, { ...ADAMW_DEFAULTS, decays: (n) => model.decays(n) });
      const scaler = new LossScaler({ enabled: precision === "mixed", window: 2000 });
      const s: Setup = {
        model,
        optimizer,
        scaler,
        T: config.contextLength as number,
        rng: new Rng(5),
        precision,
      };
      await trainStep(s); // warm-up: compiles pipelines, uploads weights
      resetCounts();
      phaseMs.fwdBwd = phaseMs.check = phaseMs.optimizer = 0;
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) await trainStep(s);
      const ms = (performance.now() - t0) / steps;
      const msPhases = [phaseMs.fwdBwd / steps, phaseMs.check / steps, phaseMs.optimizer / steps];
      const byPhase = Object.fromEntries(
        [...PHASES, "other"].map((ph) => [ph, total(ph as Phase) / steps]),
      ) as Record<
        Phase,
        number
      >;
      const perProgram = new Map([...launches].map(([ph, m]) => [ph, new Map(m)]));
      const [sub, rd] = [submits / steps, reads / steps];
      optimizer.dispose(), model.dispose();
      const tl = crossCheck ? await trainLoopLaunches(family, precision) : null;
      rows.push({
        model: family,
        precision,
        fused,
        byPhase,
        perProgram,
        submits: sub,
        reads: rd,
        ms,
        msPhases,
        trainLoop: tl,
      });
    }
  }
}
setFusedKernelsEnabled(true);
await Deno.remove(dir, { recursive: true });

console.log(
  `webgpu on ${info.device}; preset ${preset}, batch ${B}; per step, mean of ${steps} steps after 1 warm-up\n`,
);
console.log(
  "Launches (compute dispatches), submits and host reads per step; ms per step and per phase, with a GPU",
);
console.log("sync after each phase (forward+backward / check incl. the one read / optimizer).\n");
console.log(
  "| model | precision | fused | forward | backward | check | optimizer | total | trainLoop total | submits | reads " +
    "| ms/step | ms fwd+bwd / check / optimizer |",
);
console.log("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rows) {
  const t = PHASES.reduce((a, ph) => a + r.byPhase[ph], 0) + r.byPhase.other;
  console.log(
    `| ${r.model} | ${r.precision} | ${r.fused ? "on" : "off"} | ${
      PHASES.map((ph) => r.byPhase[ph]).join(" | ")
    } | ` +
      `${t} | ${r.trainLoop ?? "-"} | ${r.submits} | ${r.reads} | ${r.ms.toFixed(0)} | ` +
      `${r.msPhases.map((x) => x.toFixed(0)).join(" / ")} |`,
  );
}
if (top > 0) {
  for (const r of rows) {
    console.log(
      `\n${r.model} ${r.precision} fused ${r.fused ? "on" : "off"}: most launched programs per step`,
    );
    for (const ph of PHASES) {
      const m = [...(r.perProgram.get(ph) ?? new Map<string, number>())].sort((a, b) => b[1] - a[1]).slice(
        0,
        top,
      );
      console.log(`  ${ph}: ${m.map(([n, c]) => `${n} ${c / steps}`).join(", ")}`);
    }
  }
}
