// `lmpipe train`: builds a model from a preset and overrides, finds the shards, checks everything that
// can be checked before the first step (data splits, vocabulary, context, output folder), then hands
// over to the engine (lib/train_loop.ts). --resume continues a run from its checkpoint.
import { join } from "node:path";
import { EXIT, inputError, LmpipeError, outputError, usageError } from "../../lib/errors.ts";
import { bool, num, parseCount, type Parsed, parseDuration, parseFlags, str } from "../../lib/flags.ts";
import { fmtCount, fmtDuration, info, warn } from "../../lib/log.ts";
import { truncateStepLog } from "../../lib/step_log.ts";
import { lockRunFolder } from "../../lib/run_lock.ts";
import { pathExists, writeAllSync, writeFailure } from "../../lib/fs.ts";
import {
  CONFIG_FILE,
  hasCheckpoint,
  loadCheckpoint,
  MODEL_FILE,
  OPTIMIZER_FILE,
  removeStaleTmps,
  STATE_FILE,
} from "../../lib/checkpoint.ts";
import { WindowSampler } from "../../lib/sampler.ts";
import { batchLosses, type StepLog, trainLoop, type TrainOptions } from "../../lib/train_loop.ts";
import { type DistRun, startDist } from "../../lib/dist/mod.ts";
import { reportRankDevice } from "../../lib/dist/gpu.ts";
import { GRAD_REDUCES, type GradReduce } from "../../lib/dist/half_reduce.ts";
import { type BackendName, getGpuAdapter, initBackend, isSoftwareAdapter } from "../../lib/tensor/backend.ts";
import {
  type AutoBatchResult,
  findBatchSize,
  fmtMiB,
  type MemoryLimit,
  parseMemorySize,
  resolveMemoryLimit,
} from "../../lib/batch_size.ts";
import { wasmHeapBytes } from "../../lib/tensor/memory.ts";
import { EOT, TOKENIZER_NAME, VOCAB_SIZE } from "../../lib/tokenizer.ts";
import { type ModelConfig, type Precision, PRECISIONS } from "../../lib/models/types.ts";
import { VERSION } from "../../lib/version.ts";
import { listShards, metaTokenizer, metaVocab } from "../../lib/shard_splits.ts";
import {
  type Families,
  familyOf,
  loadFamilies,
  type PipelineEnv,
  stdoutWriter,
} from "../../lib/pipeline_env.ts";
import { loadWeights } from "../../lib/checkpoint_model.ts";
import { configFromFlags } from "../../lib/models/config.ts";
import { DECAY_PARAMS, type DecayParams, SCHEDULE_NAMES, type ScheduleName } from "../../lib/optim.ts";
import { presetTraining } from "../../lib/preset_training.ts";
import { rampStart } from "../../lib/batch_ramp.ts";
import { validateStored } from "../../lib/checkpoint_check.ts";
import { dryRun } from "./dry_run.ts";

const CMD = "train";

const SPEC = {
  model: { type: "string" },
  preset: { type: "string" },
  config: { type: "string" },
  set: { type: "string", multiple: true },
  data: { type: "string", multiple: true },
  backend: { type: "string" },
  "batch-size": { type: "string" },
  "memory-limit": { type: "string" },
  "grad-accum": { type: "string" },
  lr: { type: "string" },
  "min-lr": { type: "string" },
  warmup: { type: "string" },
  "decay-steps": { type: "string" },
  "lr-schedule": { type: "string" },
  schedule: { type: "string" },
  "batch-ramp": { type: "string" },
  "weight-decay": { type: "string" },
  "decay-params": { type: "string" },
  beta1: { type: "string" },
  beta2: { type: "string" },
  "adam-eps": { type: "string" },
  "grad-clip": { type: "string" },
  "max-steps": { type: "string" },
  "max-time": { type: "string" },
  "max-tokens": { type: "string" },
  precision: { type: "string" },
  "scale-window": { type: "string" },
  out: { type: "string" },
  "ckpt-every": { type: "string" },
  "eval-every": { type: "string" },
  "eval-iters": { type: "string" },
  resume: { type: "boolean" },
  force: { type: "boolean" },
  log: { type: "string" },
  json: { type: "boolean" },
  seed: { type: "string" },
  dist: { type: "string" },
  "grad-reduce": { type: "string" },
  "dry-run": { type: "boolean" },
} as const;

const HELP =
  `Usage: lmpipe train --data PATH... --out DIR (--max-steps N | --max-time DUR | --max-tokens N) [options]

Trains a model on token shards from 'lmpipe tokenize' and keeps a resumable checkpoint in --out:
model.safetensors, optimizer.safetensors, config.json, state.json (and log.jsonl by default).

Model:
  --model NAME         gpt | llama | pixel-cumsum | pixel-attn | pixel-attn-wide             (default: gpt)
  --preset NAME        tiny | small, plus gpt2 (gpt, llama) or study (gpt, pixel-*); study also
                       trains as the study's code did (docs/pixel.md): its AdamW settings per
                       model, lr 6e-4, warm-up 2000, cosine to 6e-5 at step 600000, clip 1.0  (default: tiny)
  --config FILE        JSON object of config fields (or a run's config.json) over the preset (default: none)
  --set KEY=VALUE      override one config field, repeatable, e.g. --set nLayer=4             (default: none)
                       architecture options (docs/variants.md): norm=layernorm|rmsnorm,
                       mlp=gelu|swiglu|geglu, pos=learned|sinusoidal|rope|alibi|none,
                       qkv=fused|separate, qkv_act=none|gelu, attn_extra=none|linear, kv_heads=N,
                       gelu=tanh|exact, bias=true|false, tie=true|false (gpt, llama; the image
                       models' warm-up blocks take all but tie); config.json records them for eval,
                       sample and viz. Image models (docs/pixel.md): map_norm, final_norm, head_bias,
                       map_bias=true|false, and for pixel-cumsum mix=cumsum|window, mapping=dot|softmax
Data:
  --data PATH          shard folder or .bin file, repeatable; files named *val* are validation (required)
Optimisation:
  --batch-size N|auto  sequences per micro-batch; auto: run trial steps before training and take the
                       largest size whose peak memory fits --memory-limit (any size up to 16, then
                       multiples of 8); it is printed and stored in config.json              (default: 8)
  --memory-limit SIZE  with --batch-size auto: what a step may use, e.g. 8GiB, 6GB, 512MiB; counted as
                       GPU buffers TF.js holds (webgpu) or live tensor bytes (others). Also read from
                       $LMPIPE_MEMORY_LIMIT. (default: wasm 2.5GiB, its heap holding at most 4 GiB;
                       webgpu 90% of nvidia-smi's memory.total, else required; cpu 75% of available RAM)
  --grad-accum N       micro-batches per step                                                (default: 1)
  --lr X               peak learning rate                                                    (default: 6e-4)
  --min-lr X           final learning rate                                                   (default: lr/10)
  --warmup N           warm-up steps                     (default: 2000, or a tenth of the decay steps if less)
  --decay-steps N      step where the decay reaches --min-lr
                       (default: --max-steps, or the steps --max-tokens takes if fewer; with only
                       --max-time, estimated from the first steps' speed)
  --lr-schedule NAME   cosine: linear warm-up lr*(s+1)/(warmup+1), then cosine down to --min-lr at
                       --decay-steps; onecycle: cosine rise from lr/25 to lr over the warm-up, then
                       cosine down to --min-lr; constant: the linear warm-up, then lr to the end
                       (--schedule is the older spelling)                                   (default: cosine)
  --batch-ramp N       grow the micro-batch over the first N training tokens (50k, 2M, 1G): from
                       ceil(B/8) sequences linearly to B = --batch-size (auto included), i.e.
                       ceil(B/8) + floor((B - ceil(B/8)) * seen / N); --grad-accum stays, tokens in
                       the log count what was trained; resumes continue the same curve   (default: 0, off)
  --weight-decay X     AdamW decoupled weight decay on matrices and embeddings               (default: 0.1)
  --decay-params WHICH matrices: decay matrices and embeddings only (nanoGPT); all: every parameter,
                       biases and norms too (torch.optim.AdamW(model.parameters()))    (default: matrices)
  --beta1 X, --beta2 X AdamW's moment decay rates                              (default: 0.9 and 0.95)
  --adam-eps X         AdamW's epsilon                                                       (default: 1e-8)
  --grad-clip X        clip the global gradient norm to X; 0 disables                        (default: 1.0)
  --precision P        fp32 | mixed (fp16 autocast: matMul/conv operands, weights and outputs
                       rounded to binary16, fp32 norms/softmax/loss/master weights, dynamic
                       loss scale) | bf16 (the same places rounded to bfloat16, no loss
                       scale); both emulated in float32 (docs/precision.md)       (default: fp32)
  --scale-window N     clean steps before the loss scale doubles (mixed)                     (default: 2000)
Budget and output:
  --max-steps N        stop after N optimiser steps                                          (default: none)
  --max-time DUR       stop after this wall-clock time, e.g. 90s, 10m, 2h, 1h30m             (default: none)
  --max-tokens N       stop at the first step that brings the training tokens seen to N or more,
                       e.g. 500k, 20M (equal-data comparisons)                               (default: none)
  --out DIR            run folder (checkpoint, config, log)                                  (required)
  --ckpt-every N       save every N steps (also at the end and on SIGINT/SIGTERM); 0 = end only (default: 1000)
  --eval-every N       validation loss every N steps (and at the end); 0 = end only          (default: 200)
  --eval-iters N       validation batches per evaluation (same batches every time)           (default: 20)
  --resume             continue the run in --out from its checkpoint                         (default: off)
  --force              overwrite a run already in --out                                      (default: off)
  --log FILE           one JSON object per step (appended on --resume)                       (default: OUT/log.jsonl)
  --json               also print those JSON lines to stdout                                 (default: off)
  --backend NAME       auto | webgpu | tensorflow | wasm | cpu                               (default: auto)
  --seed N             seed for the weights and the data order                               (default: 1337)
  --dry-run            resolve the config, build the model, print its parameters per module (the
                       first part of their names: transformer, map, cnn, lm_head, ...) and the
                       memory of one training step (measured as --batch-size auto does, on made-up
                       tokens, as long as a training step takes; with auto, the search itself),
                       then exit 0. Reads no --data, writes no --out, needs no budget; --json
                       prints one JSON object {"params":{"total","by_module"},"memory":...}  (default: off)
  --dist MODE          auto: data-parallel over MPI when started by mpirun/srun with more than one
                       process; mpi: always; none: never. Each rank trains on every N-th of the
                       --grad-accum micro-batches (N must divide it), so any rank count trains the
                       same model as one process; rank 0 writes the run (docs/distributed.md)  (default: auto)
  --grad-reduce F      how ranks sum gradients: f32 (MPI_Allreduce, exact); bf16 or fp16: each
                       rank's sum rounded to 16 bits (nearest even), added in float32 in rank order,
                       the total rounded again: half the bytes, every rank the same bits. fp16 needs
                       --precision mixed (its loss scale; an overflow skips the step). One process
                       sums nothing and keeps float32; stored in config.json for --resume (default: f32)

Log fields: step, loss, lr, grad_norm, loss_scale, skipped, tokens (seen so far), tokens_per_s,
ms_per_step, elapsed_s, batch_size, peak_bytes (the step's peak backend memory, as --memory-limit
counts it), and val_loss on evaluation steps. Exit codes: 5 when the loss turns NaN in fp32
(the last good checkpoint is kept), 6 when the backend runs out of memory (try a smaller --batch-size
or --batch-size auto), 130 after SIGINT/SIGTERM (a checkpoint is saved first).

Example:
  lmpipe train --data data/fixture --preset tiny --max-time 1m --out runs/tiny
`;

/** Training options as stored in config.json (and restored on --resume). */
interface StoredTraining extends TrainOptions {
  backend: string;
  /** --grad-reduce: how data-parallel ranks sum gradients (absent in runs before it existed: f32). */
  gradReduce: GradReduce;
  data: string[];
  /** How --batch-size auto chose batchSize (absent for an explicit size). */
  batchSizeAuto?: AutoBatchRecord;
}

/** config.json's record of a --batch-size auto search. */
interface AutoBatchRecord {
  memoryLimitBytes: number;
  memoryLimitSource: string;
  peakBytes: number;
  baseBytes: number;
  bytesPerSequence: number;
  capped: boolean;
  trials: { batchSize: number; peakBytes: number | null }[];
}

export async function run(argv: string[], env: PipelineEnv = {}): Promise<void> {
  const p = parseFlags(CMD, argv, SPEC);
  if (p.help) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) {
    throw usageError(`lmpipe train: unexpected argument '${p.positionals[0]}'\nSee 'lmpipe train --help'.`);
  }
  const families = await loadFamilies(env);
  // Before anything is written: whether this process is one rank of a data-parallel job.
  const dist = startDist(str(p, "dist"), CMD, batchLosses, 2);
  try {
    await train(p, argv, env, families, dist);
    dist?.mpi.finalize(); // every rank gets here at the same step
  } catch (err) {
    if (err instanceof LmpipeError && err.exitCode === EXIT.interrupted) dist?.mpi.finalize(); // a stop all ranks agreed on
    throw err;
  }
}

async function train(
  p: Parsed,
  argv: string[],
  env: PipelineEnv,
  families: Families,
  dist: DistRun | null,
): Promise<void> {
  if (bool(p, "dry-run")) return await dryRunFromFlags(p, env, families);
  const writer = !dist || dist.dp.writer;
  const out = str(p, "out");
  if (!out) {
    throw usageError("lmpipe train: --out DIR is required (the run folder)\nSee 'lmpipe train --help'.");
  }
  const resume = bool(p, "resume"), force = bool(p, "force");
  if (resume && force) {
    throw usageError("lmpipe train: --resume and --force contradict each other; choose one");
  }

  // --- the output folder: writable, and no run silently overwritten
  await ensureWritable(out);
  // rank 0 alone writes the folder, so it alone holds the lock (the other ranks share its run)
  const lock = writer ? await lockRunFolder(out, ["lmpipe", CMD, ...argv].join(" ")) : null;
  try {
    await trainLocked(p, out, resume, force, families, env, dist, writer);
  } finally {
    lock?.release();
  }
}

async function trainLocked(
  p: Parsed,
  out: string,
  resume: boolean,
  force: boolean,
  families: Families,
  env: PipelineEnv,
  dist: DistRun | null,
  writer: boolean,
): Promise<void> {
  const existing = await hasCheckpoint(out) || await pathExists(join(out, MODEL_FILE));
  if (existing && !resume && !force) {
    throw outputError(
      `lmpipe train: ${out} already holds a run. Continue it with --resume, overwrite it with --force, or choose another --out.`,
    );
  }
  if (resume && !(await hasCheckpoint(out))) {
    throw usageError(
      `lmpipe train: --resume: ${out} holds no checkpoint (no ${STATE_FILE}); start without --resume`,
    );
  }
  const ckpt = resume ? await loadCheckpoint(out, { optimizer: true }) : undefined;
  await removeStaleTmps(out).catch(() => {}); // saves that died half-written (this process holds the lock)

  // --- model config
  let modelConfig: ModelConfig;
  const stored = ckpt?.config.training as Partial<StoredTraining> | undefined;
  if (ckpt) {
    modelConfig = ckpt.config.model as ModelConfig;
    const m = str(p, "model"), pr = str(p, "preset");
    if ((m && m !== modelConfig.model) || (pr && modelConfig.preset && pr !== modelConfig.preset)) {
      throw usageError(
        `lmpipe train: --resume: the run in ${out} is ${modelConfig.model}/${modelConfig.preset}, not ${
          m ?? modelConfig.model
        }/${pr ?? modelConfig.preset}`,
      );
    }
    if (str(p, "config") || (p.values.set as string[] | undefined)?.length) {
      throw usageError(
        "lmpipe train: --resume keeps the run's model config; drop --config/--set (or start a new run)",
      );
    }
    validateStored(familyOf(families, modelConfig.model, CMD), modelConfig, join(out, "config.json"));
  } else {
    const family = familyOf(families, str(p, "model", "gpt"), CMD);
    modelConfig = await configFromFlags(
      family,
      str(p, "preset", "tiny"),
      str(p, "config"),
      (p.values.set as string[]) ?? [],
      CMD,
    );
  }
  const family = familyOf(families, modelConfig.model, CMD);

  // --- training options: defaults (a new run's preset may bring its own: lib/preset_training.ts), then
  // what the run stored (on --resume), then explicit flags
  const o = trainingOptions(p, stored, ckpt ? {} : presetTraining(modelConfig.model, modelConfig.preset));
  if (dist && o.gradAccum % dist.mpi.size !== 0) {
    throw usageError(
      `lmpipe train: --grad-accum ${o.gradAccum} micro-batches per step cannot be split over ${dist.mpi.size} ranks; ` +
        `use a multiple of ${dist.mpi.size} (e.g. --grad-accum ${
          dist.mpi.size * Math.max(1, Math.round(o.gradAccum / dist.mpi.size))
        }), ` +
        `or as many ranks as divide it.`,
    );
  }
  checkGradReduce(p, o, dist);
  const autoBatch = o.batchSize === 0;
  const memoryLimitFlag = str(p, "memory-limit");
  if (memoryLimitFlag !== undefined && !autoBatch) {
    throw usageError("lmpipe train: --memory-limit only applies to --batch-size auto");
  }
  if (memoryLimitFlag !== undefined) parseMemorySize(CMD, "--memory-limit", memoryLimitFlag); // fail early
  const dataPaths = (p.values.data as string[] | undefined) ?? stored?.data;
  if (!dataPaths?.length) {
    throw usageError("lmpipe train: --data PATH is required (a shard folder or .bin file)");
  }

  // --- data: splits, vocabulary, context
  const splits = await listShards(dataPaths, CMD);
  if (splits.val.length === 0) {
    throw inputError(
      `lmpipe train: no validation shard in --data ${
        dataPaths.join(" ")
      } (a file named like val.bin or *_val_*.bin). ` +
        `Tokenize with a validation split, or pass a val shard as another --data.`,
    );
  }
  if (splits.train.length === 0) {
    throw inputError(`lmpipe train: no training shards in --data ${dataPaths.join(" ")} (only validation)`);
  }
  const vocab = modelConfig.vocabSize;
  const mv = metaVocab(splits.meta), mt = metaTokenizer(splits.meta);
  if (mt !== null && mt !== TOKENIZER_NAME) {
    throw inputError(
      `${splits.metaPath}: shards were made with tokenizer '${mt}', lmpipe models use '${TOKENIZER_NAME}'. Re-tokenize.`,
    );
  }
  if (mv !== null && mv > vocab) {
    throw inputError(
      `${splits.metaPath}: the shards' vocabulary has ${mv} ids but the model embeds ${vocab}: shards of another vocabulary. ` +
        `Re-tokenize with 'lmpipe tokenize' or set --set vocabSize=${mv}.`,
    );
  }
  const T = modelConfig.contextLength;
  const dataVocab = Math.min(vocab, VOCAB_SIZE); // ids past GPT-2's 50257 are padding rows, never data
  const trainData = await WindowSampler.open(splits.train, T, dataVocab, o.seed, "training");
  const valData = await WindowSampler.open(splits.val, T, dataVocab, o.seed, "validation");

  // --- backend and model
  const backend = await initBackend(o.backend as BackendName, { quiet: true, threads: dist?.threads });
  const model = family.create(modelConfig, o.seed);
  if (ckpt) loadWeights(model, ckpt.weights, out);
  if (dist) {
    reportRankDevice(dist, backend);
    await dist.dp.broadcastParams(model.params); // one set of weights on every rank
  }
  info(
    `model: ${modelConfig.model}/${modelConfig.preset ?? "custom"}, ${
      fmtCount(model.paramCount())
    } parameters, ` +
      `${fmtCount(model.flopsPerToken())} FLOPs/token (train), context ${T}, vocab ${vocab}`,
  );
  info(`backend: ${backend.name} (${backend.device})`);
  if (autoBatch) {
    const adapter = backend.name === "webgpu" ? await getGpuAdapter() : null;
    const software = adapter ? isSoftwareAdapter(adapter) : false;
    const limit = await resolveMemoryLimit(CMD, { name: backend.name, software }, {
      flag: memoryLimitFlag,
      env: Deno.env.get("LMPIPE_MEMORY_LIMIT"),
    });
    info(`batch size auto: memory limit ${fmtMiB(limit.bytes)} (${limit.source}); trial steps follow`);
    const found = await findBatchSize(model, {
      limitBytes: limit.bytes,
      precision: o.precision,
      gradAccum: o.gradAccum,
      weightDecay: o.weightDecay,
      log: info,
    });
    o.batchSize = dist ? await dist.dp.min(found.batchSize, "--batch-size auto") : found.batchSize;
    o.batchSizeAuto = autoRecord(found, limit);
    const heap = wasmHeapBytes();
    info(
      `batch size auto: ${o.batchSize} (step peak ${fmtMiB(found.peakBytes)} of ${fmtMiB(limit.bytes)}; ` +
        `about ${fmtMiB(found.baseBytes)} + ${fmtMiB(found.bytesPerSequence)} per sequence` +
        (heap !== null ? `; wasm heap now ${fmtMiB(heap)}` : "") + ")" +
        (found.capped ? "; capped at the largest size searched" : "") +
        (!found.converged ? "; the search ran out of trials, a larger size may fit" : ""),
    );
  }
  info(
    `data: ${splits.train.length} training shard(s), ${fmtCount(trainData.totalTokens)} tokens; ` +
      `${splits.val.length} validation shard(s), ${fmtCount(valData.totalTokens)} tokens`,
  );
  const tokPerStep = o.batchSize * T * o.gradAccum;
  info(
    `training: ${o.batchSize} x ${T} tokens x ${o.gradAccum} accumulation = ${
      fmtCount(tokPerStep)
    } tokens/step, ` +
      (dist
        ? `${o.gradAccum / dist.mpi.size} micro-batch(es) on each of ${dist.mpi.size} ranks, ` +
          (dist.dp.gradReduce !== "f32" && dist.mpi.size > 1 ? `gradients summed in ${o.gradReduce}, ` : "")
        : "") +
      (o.batchRamp
        ? `batch ramp from ${rampStart(o.batchSize)} to ${o.batchSize} sequences over ${
          fmtCount(o.batchRamp)
        } tokens, `
        : "") +
      `${o.precision}, AdamW betas ${o.beta1}/${o.beta2} eps ${o.eps} decay ${o.weightDecay} on ${
        o.decayParams === "all" ? "every parameter" : "matrices"
      }, ${o.schedule} lr ${o.lr}` +
      (o.schedule === "constant" ? "" : ` -> ${Number(o.minLr.toPrecision(6))}`) +
      (o.maxSteps !== null ? `, ${o.maxSteps} steps` : "") +
      (o.maxTimeS !== null ? `, ${fmtDuration(o.maxTimeS)}` : "") +
      (o.maxTokens ? `, ${fmtCount(o.maxTokens)} tokens` : "") +
      (ckpt ? `; resuming at step ${ckpt.state!.step}` : ""),
  );
  if (ckpt?.state) {
    const before = (ckpt.state.sampler as { shards?: { path: string; tokens: number }[] })?.shards ?? [];
    const now = trainData.shards.map((s) => `${s.info.path}:${s.tokens}`).join(",");
    if (before.length && before.map((s) => `${s.path}:${s.tokens}`).join(",") !== now) {
      warn(
        "the training shards differ from the checkpoint's: the resumed run will not repeat the data order exactly",
      );
    }
  }

  // --- logs
  const logPath = str(p, "log") ?? join(out, "log.jsonl");
  let logFile: Deno.FsFile | null = null; // rank 0 alone writes the log
  if (writer && ckpt?.state) {
    const dropped = await truncateStepLog(logPath, ckpt.state.step);
    if (dropped) {
      info(`log: dropped ${dropped} line(s) past the checkpoint's step ${ckpt.state.step} from ${logPath}`);
    }
  }
  try {
    if (writer) {
      logFile = await Deno.open(logPath, { write: true, create: true, append: resume, truncate: !resume });
    }
  } catch (err) {
    throw outputError(`lmpipe train: cannot write --log ${logPath} (${(err as Error).message})`);
  }
  const enc = new TextEncoder();
  const write = stdoutWriter(env);
  let pending: Promise<void> = Promise.resolve();
  const json = bool(p, "json");
  const log = (rec: StepLog) => {
    const line = enc.encode(JSON.stringify(rec) + "\n");
    try {
      writeAllSync(logFile!, line);
    } catch (err) {
      throw writeFailure(
        logPath,
        err,
        `Training stopped at step ${rec.step}; checkpoints already saved in ${out} are kept (resume with --resume).`,
      );
    }
    if (json) pending = pending.then(() => write(line));
  };

  if (force && existing && writer) {
    for (const f of [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE, STATE_FILE]) {
      await Deno.remove(join(out, f)).catch(() => {});
    }
  }
  const config = {
    model: modelConfig,
    tokenizer: { name: TOKENIZER_NAME, vocab_size: VOCAB_SIZE, eot: EOT },
    training: { ...o, data: dataPaths } satisfies StoredTraining,
    // what the model costs, as printed at start (FLOPs/token: forward + backward, nanoGPT's estimate)
    stats: { params: model.paramCount(), flops_per_token: model.flopsPerToken() },
    lmpipe: VERSION,
  };
  try {
    const result = await trainLoop({
      model,
      train: trainData,
      val: valData,
      out,
      config,
      resume: ckpt,
      log: writer ? log : undefined,
      handleSignals: env.signals ?? true,
      quiet: !writer,
      dist: dist?.dp,
    }, o);
    info(
      `done: ${result.steps} steps, ${fmtCount(result.tokensSeen)} tokens, ${
        fmtDuration(result.elapsedS)
      }; ` +
        `loss ${result.lastLoss?.toFixed(4) ?? "?"}, val ${result.lastValLoss?.toFixed(4) ?? "?"}; ` +
        (result.steps > 0 ? `peak memory ${fmtMiB(result.peakBytes)}; ` : "") + `checkpoint in ${out}`,
    );
  } finally {
    await pending;
    logFile?.close();
    trainData.close();
    valData.close();
    model.dispose();
  }
}

/** --dry-run: the model and training flags as a run would resolve them, then dry_run.ts. */
async function dryRunFromFlags(p: Parsed, env: PipelineEnv, families: Families): Promise<void> {
  if (bool(p, "resume")) {
    throw usageError("lmpipe train: --dry-run describes a new run; drop --resume (or --dry-run)");
  }
  const family = familyOf(families, str(p, "model", "gpt"), CMD);
  const config = await configFromFlags(
    family,
    str(p, "preset", "tiny"),
    str(p, "config"),
    (p.values.set as string[]) ?? [],
    CMD,
  );
  const o = trainingOptions(p, undefined, presetTraining(config.model, config.preset), false);
  const memoryLimitFlag = str(p, "memory-limit");
  if (memoryLimitFlag !== undefined && o.batchSize !== 0) {
    throw usageError("lmpipe train: --memory-limit only applies to --batch-size auto");
  }
  if (memoryLimitFlag !== undefined) parseMemorySize(CMD, "--memory-limit", memoryLimitFlag);
  await dryRun({
    family,
    config,
    backend: o.backend,
    batchSize: o.batchSize,
    gradAccum: o.gradAccum,
    precision: o.precision,
    weightDecay: o.weightDecay,
    seed: o.seed,
    memoryLimitFlag,
    json: bool(p, "json"),
  }, env);
}

/**
 * Training options from the flags over `stored` (a resumed run) or over the preset's training defaults;
 * `needBudget` false for --dry-run.
 */
function trainingOptions(
  p: Parsed,
  stored: Partial<StoredTraining> | undefined,
  preset: Partial<TrainOptions>,
  needBudget = true,
): StoredTraining {
  const given = (name: string) => p.values[name] !== undefined;
  const pick = <K extends keyof StoredTraining>(
    flag: string,
    key: K,
    dflt: StoredTraining[K],
    parse: () => StoredTraining[K],
  ) =>
    given(flag)
      ? parse()
      : stored && key in stored
      ? stored[key] as StoredTraining[K]
      : key in preset
      ? (preset as Partial<StoredTraining>)[key] as StoredTraining[K]
      : dflt;
  const beta = (flag: string) => () => {
    const v = num(p, CMD, flag, 0, { min: 0 });
    if (!(v < 1)) throw usageError(`lmpipe train: --${flag} must be at least 0 and below 1, got ${v}`);
    return v;
  };
  const int = (flag: string, min: number) => () => num(p, CMD, flag, 0, { min, integer: true });
  const real = (flag: string, min: number) => () => num(p, CMD, flag, 0, { min });
  const lr = pick("lr", "lr", 6e-4, real("lr", 0));
  if (given("lr-schedule") && given("schedule")) {
    throw usageError("lmpipe train: --schedule is the older spelling of --lr-schedule; give one of them");
  }
  const scheduleFlag = given("schedule") ? "schedule" : "lr-schedule";
  const schedule = pick(scheduleFlag, "schedule", "cosine", () => {
    const s = str(p, scheduleFlag)!;
    if (!(SCHEDULE_NAMES as readonly string[]).includes(s)) {
      throw usageError(
        `lmpipe train: --${scheduleFlag} must be ${SCHEDULE_NAMES.join(", ")}, got '${s}'`,
      );
    }
    return s as ScheduleName;
  });
  const precision = pick("precision", "precision", "fp32", () => {
    const s = str(p, "precision")!;
    if (!(PRECISIONS as readonly string[]).includes(s)) {
      throw usageError(`lmpipe train: --precision must be ${PRECISIONS.join(", ")}, got '${s}'`);
    }
    return s as Precision;
  });
  const batchFlag = str(p, "batch-size");
  const auto = batchFlag?.trim() === "auto";
  const o: StoredTraining = {
    batchSize: auto ? 0 : pick("batch-size", "batchSize", 8, () => {
      if (!/^\s*\d+\s*$/.test(batchFlag!) || Number(batchFlag) < 1) {
        throw usageError(
          `lmpipe train: --batch-size must be a whole number >= 1 or 'auto', got '${batchFlag}'`,
        );
      }
      return Number(batchFlag);
    }),
    batchRamp: pick("batch-ramp", "batchRamp", 0, () => parseCount(CMD, "batch-ramp", str(p, "batch-ramp")!)),
    gradAccum: pick("grad-accum", "gradAccum", 1, int("grad-accum", 1)),
    lr,
    minLr: given("min-lr")
      ? real("min-lr", 0)()
      : given("lr") || stored?.minLr === undefined
      ? (!given("lr") && preset.minLr !== undefined ? preset.minLr : lr / 10)
      : stored.minLr,
    warmup: pick("warmup", "warmup", null, int("warmup", 0)),
    decaySteps: pick("decay-steps", "decaySteps", null, int("decay-steps", 1)),
    schedule,
    weightDecay: pick("weight-decay", "weightDecay", 0.1, real("weight-decay", 0)),
    // a stored run without the AdamW fields trained with nanoGPT's values, the defaults here
    decayParams: pick("decay-params", "decayParams", "matrices", () => {
      const s = str(p, "decay-params")!;
      if (!(DECAY_PARAMS as readonly string[]).includes(s)) {
        throw usageError(`lmpipe train: --decay-params must be ${DECAY_PARAMS.join(" or ")}, got '${s}'`);
      }
      return s as DecayParams;
    }),
    beta1: pick("beta1", "beta1", 0.9, beta("beta1")),
    beta2: pick("beta2", "beta2", 0.95, beta("beta2")),
    eps: pick("adam-eps", "eps", 1e-8, () => {
      const v = num(p, CMD, "adam-eps", 0, { min: 0 });
      if (!(v > 0)) throw usageError(`lmpipe train: --adam-eps must be above 0, got ${v}`);
      return v;
    }),
    gradClip: pick("grad-clip", "gradClip", 1.0, real("grad-clip", 0)),
    maxSteps: pick("max-steps", "maxSteps", null, int("max-steps", 1)),
    maxTimeS: pick("max-time", "maxTimeS", null, () => parseDuration(CMD, "max-time", str(p, "max-time")!)),
    maxTokens: pick("max-tokens", "maxTokens", null, () => {
      const n = parseCount(CMD, "max-tokens", str(p, "max-tokens")!);
      if (n < 1) throw usageError(`lmpipe train: --max-tokens must be at least 1, got ${n}`);
      return n;
    }),
    precision,
    scaleWindow: pick("scale-window", "scaleWindow", 2000, int("scale-window", 1)),
    ckptEvery: pick("ckpt-every", "ckptEvery", 1000, int("ckpt-every", 0)),
    evalEvery: pick("eval-every", "evalEvery", 200, int("eval-every", 0)),
    evalIters: pick("eval-iters", "evalIters", 20, int("eval-iters", 1)),
    seed: pick("seed", "seed", 1337, int("seed", 0)),
    backend: pick("backend", "backend", "auto", () => str(p, "backend")!),
    gradReduce: pick("grad-reduce", "gradReduce", "f32", () => {
      const s = str(p, "grad-reduce")!;
      if (!(GRAD_REDUCES as readonly string[]).includes(s)) {
        throw usageError(`lmpipe train: --grad-reduce must be ${GRAD_REDUCES.join(", ")}, got '${s}'`);
      }
      return s as GradReduce;
    }),
    data: stored?.data ?? [],
  };
  // an explicit size replaces a stored search; --batch-size auto makes a new one
  if (stored?.batchSizeAuto && !given("batch-size")) o.batchSizeAuto = stored.batchSizeAuto;
  if (needBudget && o.maxSteps === null && o.maxTimeS === null && (o.maxTokens ?? null) === null) {
    throw usageError(
      "lmpipe train: give a budget: --max-steps N, --max-time DUR (e.g. --max-time 10m) and/or --max-tokens N",
    );
  }
  if (o.minLr > o.lr) throw usageError(`lmpipe train: --min-lr ${o.minLr} is above --lr ${o.lr}`);
  return o;
}

/**
 * --grad-reduce against the rest of the run: fp16 needs mixed precision's loss scale; given with --dist
 * none it contradicts itself; without ranks it is noted and does nothing. Sets it on the ranks.
 */
function checkGradReduce(p: Parsed, o: StoredTraining, dist: DistRun | null): void {
  if (o.gradReduce === "fp16" && o.precision !== "mixed") {
    throw usageError(
      `lmpipe train: --grad-reduce fp16 needs --precision mixed: its loss scale keeps the gradients inside ` +
        `float16's range (unscaled, gradients below 6e-8 become 0, and an overflow has no step to skip). ` +
        `Use --grad-reduce bf16 with --precision ${o.precision}.`,
    );
  }
  if (dist) return dist.dp.setGradReduce(o.gradReduce);
  if (o.gradReduce === "f32" || p.values["grad-reduce"] === undefined) return;
  if (str(p, "dist") === "none") {
    throw usageError(
      `lmpipe train: --grad-reduce ${o.gradReduce} sets how MPI ranks sum their gradients, and --dist none ` +
        `runs no ranks; drop one of them`,
    );
  }
  info(
    `--grad-reduce ${o.gradReduce}: one process sums no gradients between ranks, so they stay float32 ` +
      `(the setting is kept in config.json for a resume on several ranks)`,
  );
}

function autoRecord(r: AutoBatchResult, limit: MemoryLimit): AutoBatchRecord {
  return {
    memoryLimitBytes: limit.bytes,
    memoryLimitSource: limit.source,
    peakBytes: r.peakBytes,
    baseBytes: r.baseBytes,
    bytesPerSequence: r.bytesPerSequence,
    capped: r.capped,
    trials: r.trials.map((t) => ({ batchSize: t.batchSize, peakBytes: t.peakBytes })),
  };
}

/** Creates `dir` if needed and proves a file can be written there, before any training starts. */
async function ensureWritable(dir: string): Promise<void> {
  const probe = join(dir, `.lmpipe-write-test-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`);
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  } catch (err) {
    throw outputError(
      `lmpipe train: cannot write to --out ${dir} (${(err as Error).message}); choose a writable folder.`,
    );
  }
}
