// `lmpipe eval`: the validation cross-entropy of a checkpoint, as one JSON line on stdout: mean nats per
// token, perplexity, and bits per byte when the text's byte length is known (meta.json of the shards).
// Reads the val shards of a folder by offset, or a token stream on stdin (`--data -`).
import { basename } from "node:path";
import { EXIT, inputError, LmpipeError, usageError } from "../../lib/errors.ts";
import { bool, num, parseCount, parseFlags, str } from "../../lib/flags.ts";
import { fmtCount, info } from "../../lib/log.ts";
import { loadCheckpoint } from "../../lib/checkpoint.ts";
import { checkFiniteWeights } from "../../lib/checkpoint_check.ts";
import { VOCAB_SIZE } from "../../lib/tokenizer.ts";
import { ShardReader } from "../../lib/shard.ts";
import { type BackendName, initBackend } from "../../lib/tensor/backend.ts";
import { type Precision, PRECISIONS } from "../../lib/models/types.ts";
import { listShards } from "../../lib/shard_splits.ts";
import { loadFamilies, type PipelineEnv, stdoutWriter } from "../../lib/pipeline_env.ts";
import { modelFromCheckpoint } from "../../lib/checkpoint_model.ts";
import { type Score, scoreSource, type TokenSource } from "./score.ts";
import { parseTokenStream, readAll } from "../../lib/token_stream.ts";

const CMD = "eval";

const SPEC = {
  ckpt: { type: "string" },
  data: { type: "string", multiple: true },
  "max-tokens": { type: "string" },
  stride: { type: "string" },
  "batch-size": { type: "string" },
  precision: { type: "string" },
  backend: { type: "string" },
  pretty: { type: "boolean" },
} as const;

const HELP = `Usage: lmpipe eval --ckpt DIR --data PATH|- [options]

Mean next-token cross-entropy of a checkpoint over the validation shards of PATH (files named *val*;
or every given file when none is), or over a token stream on stdin with '--data -'. Prints one JSON
object on stdout: loss (nats/token), perplexity, bits_per_byte (only when meta.json records the text's
bytes and the whole split is scored), tokens, windows. Every token with a predecessor is scored once.

Options:
  --ckpt DIR          run folder from 'lmpipe train'                                       (required)
  --data PATH|-       shard folder or .bin file (repeatable), or - for a token stream on stdin (required)
  --max-tokens N      score at most N tokens, e.g. 100k                                    (default: all)
  --stride N          sliding windows advancing N tokens, scoring only each window's new tokens;
                      = context for non-overlapping windows                                (default: context)
  --batch-size N      windows per forward pass (non-overlapping windows)                   (default: 8)
  --precision P       fp32 | mixed (binary16 autocast) | bf16 (bfloat16 autocast)          (default: fp32)
  --backend NAME      auto | webgpu | tensorflow | wasm | cpu                              (default: auto)
  --pretty            indent the JSON                                                      (default: off)

Examples:
  lmpipe eval --ckpt runs/tiny --data data/fixture
  lmpipe tokenize < notes.txt --out - | lmpipe eval --ckpt runs/tiny --data -
`;

export async function run(argv: string[], env: PipelineEnv = {}): Promise<void> {
  const p = parseFlags(CMD, argv, SPEC);
  if (p.help) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) {
    throw usageError(`lmpipe eval: unexpected argument '${p.positionals[0]}'\nSee 'lmpipe eval --help'.`);
  }
  const dir = str(p, "ckpt");
  if (!dir) throw usageError("lmpipe eval: --ckpt DIR is required (a run folder from 'lmpipe train')");
  const data = p.values.data as string[] | undefined;
  if (!data?.length) throw usageError("lmpipe eval: --data PATH|- is required");
  if (data.includes("-") && data.length > 1) {
    throw usageError("lmpipe eval: --data - (stdin) cannot be combined with other --data");
  }
  const maxTokensRaw = str(p, "max-tokens");
  const maxTokens = maxTokensRaw === undefined ? Infinity : parseCount(CMD, "max-tokens", maxTokensRaw);
  if (maxTokens < 1) throw usageError("lmpipe eval: --max-tokens must be at least 1");
  const batchSize = num(p, CMD, "batch-size", 8, { min: 1, integer: true });
  const precision = str(p, "precision", "fp32") as Precision;
  if (!PRECISIONS.includes(precision)) {
    throw usageError(`lmpipe eval: --precision must be ${PRECISIONS.join(", ")}, got '${precision}'`);
  }

  const families = await loadFamilies(env);
  const ckpt = await loadCheckpoint(dir);
  checkFiniteWeights(ckpt.weights, dir);
  const backend = await initBackend(str(p, "backend", "auto") as BackendName, { quiet: true });
  const model = modelFromCheckpoint(families, ckpt.config, ckpt.weights, dir, CMD);
  const T = model.config.contextLength, vocab = model.config.vocabSize;
  const stride = num(p, CMD, "stride", T, { min: 1, integer: true });
  if (stride > T) throw usageError(`lmpipe eval: --stride ${stride} exceeds the model's context (${T})`);
  info(
    `eval: ${model.config.model} from ${dir} (step ${
      ckpt.state?.step ?? "?"
    }), backend ${backend.name} (${backend.device})`,
  );

  // --- the token sources
  const sources: { name: string; src: TokenSource; close?: () => void }[] = [];
  let bytes: number | null = null;
  if (data[0] === "-") {
    const tokens = parseTokenStream(await readAll(env.stdin ?? Deno.stdin.readable));
    if (tokens.length < 2) throw inputError("stdin: fewer than 2 tokens; nothing to score");
    sources.push({ name: "-", src: { length: tokens.length, read: (o, c) => tokens.subarray(o, o + c) } });
  } else {
    const splits = await listShards(data, CMD);
    const files = splits.val.length ? splits.val : splits.train;
    for (const f of files) {
      const r = await ShardReader.open(f);
      sources.push({
        name: f,
        src: { length: r.tokens, read: (o, c) => r.read(o, c) },
        close: () => r.close(),
      });
    }
    bytes = metaBytes(splits.meta, files);
  }
  try {
    const total: Score = { nats: 0, tokens: 0, windows: 0 };
    let available = 0;
    for (const { name, src } of sources) {
      available += Math.max(0, src.length - 1);
      const budget = maxTokens - total.tokens;
      if (budget <= 0) break;
      await checkIds(src, Math.min(vocab, VOCAB_SIZE), name, Math.min(src.length, budget + 1));
      const s = await scoreSource(
        model,
        src,
        { context: T, stride, batchSize, precision, maxTokens },
        budget,
      );
      total.nats += s.nats, total.tokens += s.tokens, total.windows += s.windows;
    }
    if (total.tokens === 0) {
      throw inputError(
        `${data.join(", ")}: no tokens to score (the data holds fewer than 2 tokens per source); ` +
          `give shards with data`,
      );
    }
    const loss = total.nats / total.tokens;
    if (!Number.isFinite(loss)) {
      throw new LmpipeError(
        `eval: the loss of ${dir} on this data is ${loss}: the model's outputs overflow ` +
          `(with --precision mixed or bf16, try fp32) or the checkpoint is damaged`,
        EXIT.training,
      );
    }
    const whole = total.tokens === available && sources.length > 0;
    const result: Record<string, unknown> = {
      loss,
      perplexity: Math.exp(loss),
      ...(bytes !== null && whole ? { bits_per_byte: total.nats / Math.LN2 / bytes } : {}),
      tokens: total.tokens,
      windows: total.windows,
      context: T,
      stride,
      model: model.config.model,
      step: ckpt.state?.step ?? null,
      ckpt: dir,
      data: data[0] === "-" ? "-" : sources.map((s) => basename(s.name)),
    };
    const bpb = typeof result.bits_per_byte === "number"
      ? `, ${result.bits_per_byte.toFixed(4)} bits/byte`
      : "";
    info(
      `eval: ${fmtCount(total.tokens)} tokens, loss ${loss.toFixed(4)}, perplexity ${
        Math.exp(loss).toFixed(2)
      }${bpb}`,
    );
    const text = bool(p, "pretty") ? JSON.stringify(result, null, 2) : JSON.stringify(result);
    await stdoutWriter(env)(new TextEncoder().encode(text + "\n"));
  } finally {
    for (const s of sources) s.close?.();
    model.dispose();
  }
}

/** Fails when a source holds an id the model cannot embed (checked window by window in big chunks). */
async function checkIds(src: TokenSource, vocab: number, name: string, limit: number): Promise<void> {
  if (vocab >= 65536) return;
  const CHUNK = 1 << 20;
  for (let off = 0; off < limit; off += CHUNK) {
    const ids = await src.read(off, Math.min(CHUNK, limit - off));
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] >= vocab) {
        throw inputError(
          `${name}: holds token id ${ids[i]} at token offset ${
            off + i
          }, outside the vocabulary (${vocab} ids); the data was made with another tokenizer or is damaged`,
        );
      }
    }
  }
}

/**
 * UTF-8 bytes of the text behind `files`, when meta.json records them: a per-shard map
 * (`shards: [{file|name|path, bytes}]`) or per-split totals (`splits: {val: {bytes}}`, `val_bytes`).
 */
export function metaBytes(meta: Record<string, unknown> | null, files: string[]): number | null {
  if (!meta) return null;
  const names = new Set(files.map((f) => basename(f)));
  if (Array.isArray(meta.shards)) {
    let sum = 0, found = 0;
    for (const s of meta.shards as Record<string, unknown>[]) {
      const n = [s.file, s.name, s.path].find((v) => typeof v === "string") as string | undefined;
      if (n && names.has(basename(n)) && typeof s.bytes === "number") sum += s.bytes, found++;
    }
    if (found === names.size) return sum;
  }
  const allVal = files.every((f) => /(^|[^a-z])val([^a-z]|$)/i.test(basename(f)));
  if (allVal) {
    const splits = meta.splits as Record<string, { bytes?: unknown }> | undefined;
    const v = splits?.val?.bytes ?? meta.val_bytes;
    if (typeof v === "number") return v;
  }
  return null;
}
