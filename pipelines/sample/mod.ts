// `lmpipe sample`: text from a checkpoint, streamed to stdout as it is generated. The prompt comes from
// --prompt or stdin (empty: start from the end-of-text token); prompts longer than the context keep
// their last `context` tokens, with a warning.
import { usageError } from "../../lib/errors.ts";
import { bool, num, parseFlags, str } from "../../lib/flags.ts";
import { info, warn } from "../../lib/log.ts";
import { loadCheckpoint } from "../../lib/checkpoint.ts";
import { checkFiniteWeights } from "../../lib/checkpoint_check.ts";
import { Rng } from "../../lib/rng.ts";
import { type BackendName, initBackend } from "../../lib/tensor/backend.ts";
import { decodeBytes, encodeOrdinary, EOT, VOCAB_SIZE } from "../../lib/tokenizer.ts";
import { readAll } from "../../lib/token_stream.ts";
import { loadFamilies, type PipelineEnv, stdoutWriter } from "../../lib/pipeline_env.ts";
import { modelFromCheckpoint } from "../../lib/checkpoint_model.ts";
import { cachedStepper, chooseToken, type SamplingOptions, topKNeed, uncachedStepper } from "./generate.ts";
import { topLine, topTokens } from "./top.ts";
import { type Precision, PRECISIONS } from "../../lib/models/types.ts";

const CMD = "sample";

const SPEC = {
  ckpt: { type: "string" },
  prompt: { type: "string" },
  "prompt-ids": { type: "string" },
  "max-new-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  top: { type: "string" },
  "num-samples": { type: "string" },
  seed: { type: "string" },
  format: { type: "string" },
  "no-cache": { type: "boolean" },
  precision: { type: "string" },
  backend: { type: "string" },
} as const;

const HELP = `Usage: lmpipe sample --ckpt DIR [--prompt TEXT] [options]

Generates text from a checkpoint and streams it to stdout. The prompt is --prompt, else stdin when it
is not a terminal; an empty prompt starts from the end-of-text token (${EOT}). A prompt longer than the
model's context keeps its last tokens (with a warning).

Options:
  --ckpt DIR            run folder from 'lmpipe train'                                   (required)
  --prompt TEXT         text to continue                                                 (default: stdin or empty)
  --prompt-ids IDS      token ids to continue instead, e.g. "198" or "464,3290"          (default: none)
  --max-new-tokens N    tokens to generate per sample                                    (default: 256)
  --temperature X       softmax temperature; 0 = always the most likely token            (default: 0.8)
  --top-k N             draw only from the N most likely tokens; 0 = all                 (default: 200)
  --top-p X             draw only from the smallest set with probability >= X; 1 = all  (default: 1.0)
  --top N               no sampling: print the N most likely next tokens after the prompt with their
                        probabilities, one per line as 'p:0.33, town' (--format jsonl: one JSON object)
  --num-samples N       independent samples                                              (default: 1)
  --seed N              seed of the draws (same seed, same text on a backend)            (default: 1337)
  --format F            text (prompt + continuation, streamed) | jsonl (one object per sample) |
                        tokens (generated ids, one line per sample)                      (default: text)
  --no-cache            recompute the whole window for every token instead of the key/value cache
  --precision P         fp32 | mixed | bf16: the forward pass as trained (docs/precision.md);
                        mixed and bf16 recompute the window per token (as --no-cache)    (default: fp32)
  --backend NAME        auto | webgpu | tensorflow | wasm | cpu                          (default: auto)

Example:
  lmpipe sample --ckpt runs/tiny --prompt "The meaning of life is" --max-new-tokens 50
`;

export async function run(argv: string[], env: PipelineEnv = {}): Promise<void> {
  const p = parseFlags(CMD, argv, SPEC);
  if (p.help) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) {
    throw usageError(`lmpipe sample: unexpected argument '${p.positionals[0]}'\nSee 'lmpipe sample --help'.`);
  }
  const dir = str(p, "ckpt");
  if (!dir) throw usageError("lmpipe sample: --ckpt DIR is required (a run folder from 'lmpipe train')");
  const maxNew = num(p, CMD, "max-new-tokens", 256, { min: 1, integer: true });
  const sampling: SamplingOptions = {
    temperature: num(p, CMD, "temperature", 0.8, { min: 0 }),
    topK: num(p, CMD, "top-k", 200, { min: 0, integer: true }),
    topP: num(p, CMD, "top-p", 1.0, { min: 0, max: 1 }),
    allowedVocab: VOCAB_SIZE,
  };
  if (sampling.topP === 0) throw usageError("lmpipe sample: --top-p must be above 0");
  const numSamples = num(p, CMD, "num-samples", 1, { min: 1, integer: true });
  const top = num(p, CMD, "top", 0, { min: 1, integer: true }); // 0: not asked for
  const seed = num(p, CMD, "seed", 1337, { min: 0, integer: true });
  const format = str(p, "format", "text");
  if (!["text", "jsonl", "tokens"].includes(format)) {
    throw usageError(`lmpipe sample: --format must be text, jsonl or tokens, got '${format}'`);
  }

  let prompt = str(p, "prompt");
  const idsFlag = str(p, "prompt-ids");
  let givenIds: number[] | null = null;
  if (idsFlag !== undefined) {
    if (prompt !== undefined) throw usageError("lmpipe sample: give --prompt or --prompt-ids, not both");
    givenIds = idsFlag.split(/[\s,]+/).filter((s) => s).map(Number);
    if (!givenIds.length || givenIds.some((n) => !Number.isInteger(n) || n < 0 || n >= VOCAB_SIZE)) {
      throw usageError(
        `lmpipe sample: --prompt-ids must be token ids in [0, ${VOCAB_SIZE}) separated by commas or spaces, got '${idsFlag}'`,
      );
    }
    prompt = new TextDecoder().decode(decodeBytes(givenIds));
  }
  if (prompt === undefined) {
    const stdin = env.stdin ?? (Deno.stdin.isTerminal() ? undefined : Deno.stdin.readable);
    prompt = stdin ? new TextDecoder().decode(await readAll(stdin)) : "";
  }

  const families = await loadFamilies(env);
  const ckpt = await loadCheckpoint(dir);
  checkFiniteWeights(ckpt.weights, dir);
  const backend = await initBackend(str(p, "backend", "auto") as BackendName, { quiet: true });
  const model = modelFromCheckpoint(families, ckpt.config, ckpt.weights, dir, CMD);
  const T = model.config.contextLength;
  sampling.allowedVocab = Math.min(VOCAB_SIZE, model.config.vocabSize);
  let promptIds = givenIds ?? (prompt === "" ? [EOT] : Array.from(encodeOrdinary(prompt)));
  const outside = promptIds.find((id) => id >= model.config.vocabSize);
  if (outside !== undefined) {
    throw usageError(
      `lmpipe sample: prompt token ${outside} is outside the model's vocabulary (${model.config.vocabSize})`,
    );
  }
  if (promptIds.length > T) {
    warn(
      `the prompt has ${promptIds.length} tokens, more than the model's context (${T}); using its last ${T} tokens`,
    );
    promptIds = promptIds.slice(-T);
  }
  const precision = (str(p, "precision") ?? "fp32") as Precision;
  if (!PRECISIONS.includes(precision)) {
    throw usageError(`lmpipe sample: --precision must be ${PRECISIONS.join(", ")}, got '${precision}'`);
  }
  // the key/value-cached decoding path runs in float32; mixed and bf16 take the recomputing one
  const cache = !bool(p, "no-cache") && precision === "fp32";
  info(
    `sample: ${model.config.model} from ${dir}, backend ${backend.name} (${backend.device}), ` +
      `${cache ? "key/value cache" : "no cache"}, ${precision}, prompt ${promptIds.length} tokens`,
  );

  const write = stdoutWriter(env);
  const enc = new TextEncoder();
  if (top > 0) {
    // --top N: the next-token distribution after the prompt instead of a sample
    const stepper = uncachedStepper(model, precision);
    try {
      const best = topTokens(await stepper.next(promptIds), top, sampling.allowedVocab);
      const texts = best.map((t) => new TextDecoder().decode(decodeBytes([t.id])));
      if (format === "jsonl") {
        const rec = {
          prompt,
          prompt_tokens: promptIds.length,
          top: best.map((t, i) => ({ token: t.id, text: texts[i], p: t.p })),
        };
        await write(enc.encode(JSON.stringify(rec) + "\n"));
      } else await write(enc.encode(best.map((t, i) => topLine(t, texts[i]) + "\n").join("")));
    } finally {
      stepper.dispose();
      model.dispose();
    }
    return;
  }
  const rng = new Rng(seed);
  try {
    for (let s = 0; s < numSamples; s++) {
      const stepper = cache
        ? cachedStepper(model, topKNeed(sampling, model.config.vocabSize))
        : uncachedStepper(model, precision);
      const tokens = [...promptIds];
      const generated: number[] = [];
      const utf8 = new TextDecoder("utf-8");
      let text = "";
      if (format === "text" && prompt !== "") {
        await write(enc.encode(utf8.decode(decodeBytes(promptIds), { stream: true })));
      }
      const t0 = performance.now();
      try {
        for (let i = 0; i < maxNew; i++) {
          const logits = await stepper.next(tokens);
          const id = chooseToken(logits, sampling, rng, stepper.blockMaxima?.());
          tokens.push(id), generated.push(id);
          if (format === "text") {
            const piece = utf8.decode(decodeBytes([id]), { stream: true }); // holds back a split character
            if (piece) await write(enc.encode(piece));
          } else if (format === "tokens") {
            await write(enc.encode((i ? " " : "") + id));
          } else {
            text += utf8.decode(decodeBytes([id]), { stream: true });
          }
        }
      } finally {
        stepper.dispose();
      }
      const tail = utf8.decode();
      const secs = (performance.now() - t0) / 1000;
      if (format === "text") await write(enc.encode(tail + (numSamples > 1 ? "\n---------------\n" : "\n")));
      else if (format === "tokens") await write(enc.encode("\n"));
      else {
        const rec = {
          sample: s,
          prompt,
          prompt_tokens: promptIds.length,
          text: text + tail,
          tokens: generated,
        };
        await write(enc.encode(JSON.stringify(rec) + "\n"));
      }
      info(
        `sample ${s + 1}/${numSamples}: ${maxNew} tokens in ${secs.toFixed(2)}s (${
          (maxNew / secs).toFixed(1)
        } tokens/s)`,
      );
    }
  } finally {
    model.dispose();
  }
}
