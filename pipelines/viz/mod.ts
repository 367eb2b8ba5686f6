// `lmpipe viz`: pictures of what a trained model computes on a prompt. `attention` draws the causal
// attention matrix of every layer and head (query tokens in rows, key tokens in columns); `images` draws,
// for the image models, each position's activation image in every channel before and after the causal
// sharing. Models offer these through the optional hooks of probes.ts.
import { extname } from "node:path";
import { usageError } from "../../lib/errors.ts";
import { bool, num, parseFlags, str } from "../../lib/flags.ts";
import { info, warn } from "../../lib/log.ts";
import { loadCheckpoint } from "../../lib/checkpoint.ts";
import type { LanguageModel } from "../../lib/models/types.ts";
import { type GridSpec, renderGridRaster, renderGridSvg } from "../../lib/plot/heatmap.ts";
import { encodePng } from "../../lib/plot/png.ts";
import { writeAtomic } from "../../lib/fs.ts";
import { BACKEND_NAMES, type BackendName, initBackend, readData, tf } from "../../lib/tensor/backend.ts";
import { decode, encodeOrdinary, EOT } from "../../lib/tokenizer.ts";
import { loadFamilies } from "../../lib/pipeline_env.ts";
import { modelFromCheckpoint } from "../../lib/checkpoint_model.ts";
import { type ActivationImages, attentionGrid, imagesGrid, type LayerAttention } from "./grids.ts";
import { hasAttentionProbe, hasImageProbe } from "./probes.ts";

const HELP = `lmpipe viz: pictures of what a trained model computes on a prompt

Usage:
  lmpipe viz attention --ckpt DIR --prompt TEXT --out attn.png|attn.svg [options]
      the causal attention matrix of every layer and head as a heatmap grid, the prompt's tokens on
      both axes (query rows, key columns); for the image models also their image attention (pixel-attn)
  lmpipe viz images --ckpt DIR --prompt TEXT --out images.png|images.svg [options]
      image models only: each token position's activation image, every channel, before (the token's
      own image) and after the causal sharing (running sum or image attention); blue < 0 < red

Options:
  --ckpt DIR        run folder from 'lmpipe train'                                 (required)
  --prompt TEXT     the prompt; without it, read from stdin; empty: the end-of-text token
  --out FILE        .png or .svg picture to write ('-': SVG on stdout)              (required unless --json)
  --max-tokens N    keep only the last N tokens of a longer prompt                 (default: 24)
  --layers LIST     attention: only these layers, by index (e.g. 0,2)              (default: all)
  --backend NAME    auto | webgpu | tensorflow | wasm | cpu                          (default: cpu)
  --json            print the numbers behind the picture to stdout as JSON         (default: off)

Examples:
  lmpipe viz attention --ckpt runs/gpt --prompt "The cat sat on the mat" --out attn.png
  lmpipe viz images --ckpt runs/pixel-cumsum --prompt "The cat sat on the mat" --out images.png
`;

/** The prompt's tokens (cropped to the last `max`) and each token's text. */
export function promptTokens(prompt: string, max: number): { ids: number[]; texts: string[] } {
  let ids = prompt.length ? Array.from(encodeOrdinary(prompt)) : [EOT];
  if (ids.length > max) {
    warn(`viz: the prompt has ${ids.length} tokens; showing the last ${max} (--max-tokens)`);
    ids = ids.slice(-max);
  }
  return { ids, texts: ids.map((id) => decode([id])) };
}

/** Attention probabilities of every attention layer of `model` for `ids`, as host arrays. */
export async function attentionData(model: LanguageModel, ids: number[]): Promise<LayerAttention[]> {
  if (!hasAttentionProbe(model)) {
    throw usageError(`lmpipe viz attention: model '${model.config.model}' exposes no attention maps`);
  }
  const idx = tf.tensor2d([ids], [1, ids.length], "int32");
  const maps = model.attentionMaps(idx);
  idx.dispose();
  const out: LayerAttention[] = [];
  for (const m of maps) {
    const [B, H, T, Tk] = m.probs.shape;
    if (B !== 1 || T !== ids.length || Tk !== ids.length) {
      throw new Error(`${m.name}: attention shape [${m.probs.shape}] for a prompt of ${ids.length} tokens`);
    }
    out.push({ name: m.name, heads: H, T, probs: Float32Array.from(await readData(m.probs)) });
    m.probs.dispose();
  }
  return out;
}

/** Activation images before and after the causal sharing, as host arrays [T, C, H, W]. */
export async function imageData(model: LanguageModel, ids: number[]): Promise<ActivationImages> {
  if (!hasImageProbe(model)) {
    throw usageError(
      `lmpipe viz images: model '${model.config.model}' has no activation images; use an image model ` +
        `(pixel-cumsum, pixel-attn, pixel-attn-wide), or 'lmpipe viz attention' for gpt`,
    );
  }
  const idx = tf.tensor2d([ids], [1, ids.length], "int32");
  const { before, after, sharing } = model.activationImages(idx);
  idx.dispose();
  const [B, T, C, H, W] = before.shape;
  if (B !== 1 || T !== ids.length || after.shape.join() !== before.shape.join()) {
    throw new Error(
      `activation images of shapes [${before.shape}] and [${after.shape}] for ${ids.length} tokens`,
    );
  }
  const a: ActivationImages = {
    T,
    C,
    H,
    W,
    before: Float32Array.from(await readData(before)),
    after: Float32Array.from(await readData(after)),
    sharing,
  };
  before.dispose(), after.dispose();
  return a;
}

async function readPrompt(flag: string | undefined): Promise<string> {
  if (flag !== undefined) return flag;
  if (Deno.stdin.isTerminal()) {
    throw usageError(
      "lmpipe viz: give --prompt TEXT (or pipe the prompt on stdin)\nSee 'lmpipe viz --help'.",
    );
  }
  return (await new Response(Deno.stdin.readable).text()).replace(/\n$/, "");
}

export async function run(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (what === undefined || what === "-h" || what === "--help") {
    console.log(HELP);
    return;
  }
  if (what !== "attention" && what !== "images") {
    throw usageError(
      `lmpipe viz: unknown picture '${what}'; choose attention or images\nSee 'lmpipe viz --help'.`,
    );
  }
  const p = parseFlags(`viz ${what}`, rest, {
    ckpt: { type: "string" },
    prompt: { type: "string" },
    out: { type: "string", short: "o" },
    "max-tokens": { type: "string" },
    layers: { type: "string" },
    backend: { type: "string" },
    json: { type: "boolean" },
  });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const ckpt = str(p, "ckpt");
  if (!ckpt) {
    throw usageError(`lmpipe viz ${what}: --ckpt DIR is required (a run folder from 'lmpipe train')`);
  }
  const out = str(p, "out");
  const json = bool(p, "json");
  if (!out && !json) throw usageError(`lmpipe viz ${what}: give --out FILE (.png or .svg) or --json`);
  const ext = out === "-" ? ".svg" : out ? extname(out).toLowerCase() : "";
  if (out && ext !== ".png" && ext !== ".svg") {
    throw usageError(
      `lmpipe viz ${what}: --out '${out}' must end in .png or .svg (or be '-' for SVG on stdout)`,
    );
  }
  if (out === "-" && json) {
    throw usageError(`lmpipe viz ${what}: --out - and --json both write to stdout; pick one`);
  }
  const backend = str(p, "backend", "cpu") as BackendName;
  if (!BACKEND_NAMES.includes(backend)) {
    throw usageError(`lmpipe viz: --backend must be one of ${BACKEND_NAMES.join(", ")}`);
  }
  const maxTokens = num(p, `viz ${what}`, "max-tokens", 24, { min: 1, max: 4096, integer: true });
  const layers = str(p, "layers")?.split(",").map((s) => {
    const v = Number(s.trim());
    if (!Number.isInteger(v) || v < 0) {
      throw usageError(`lmpipe viz attention: --layers must list layer indexes like 0,2; got '${s}'`);
    }
    return v;
  });
  const prompt = await readPrompt(str(p, "prompt"));

  await initBackend(backend, { quiet: json || out === "-" });
  const loaded = await loadCheckpoint(ckpt);
  const model = modelFromCheckpoint(
    await loadFamilies({}),
    loaded.config,
    loaded.weights,
    ckpt,
    `viz ${what}`,
  );
  try {
    const { ids, texts } = promptTokens(prompt, Math.min(maxTokens, model.config.contextLength));
    const name = `${model.config.model}${model.config.preset ? ` (${model.config.preset})` : ""}`;
    let grid: GridSpec;
    let data: unknown;
    if (what === "attention") {
      let maps = await attentionData(model, ids);
      if (layers) {
        const bad = layers.find((l) => l >= maps.length);
        if (bad !== undefined) {
          throw usageError(
            `lmpipe viz attention: --layers ${bad}: the model has ${maps.length} attention layers (0..${
              maps.length - 1
            })`,
          );
        }
        maps = layers.map((l) => maps[l]);
      }
      grid = attentionGrid(texts, maps, `attention of ${name} in ${ckpt}`);
      data = {
        tokens: ids,
        texts,
        layers: maps.map((m) => ({
          name: m.name,
          heads: m.heads,
          probs: nest(m.probs, [m.heads, m.T, m.T]),
        })),
      };
    } else {
      const a = await imageData(model, ids);
      grid = imagesGrid(texts, a, `activation images of ${name} in ${ckpt}`);
      const shape = [a.T, a.C, a.H, a.W];
      data = {
        tokens: ids,
        texts,
        sharing: a.sharing,
        shape,
        before: nest(a.before, shape),
        after: nest(a.after, shape),
      };
    }
    if (out) {
      await writeAtomic(out, ext === ".svg" ? renderGridSvg(grid) : encodePng(renderGridRaster(grid)));
      if (out !== "-") info(`viz ${what}: wrote ${out} (${ids.length} tokens)`);
    }
    if (json) console.log(JSON.stringify(data));
  } finally {
    model.dispose();
  }
}

/** A flat array as nested arrays of the given shape (for JSON output), values rounded to 6 digits. */
function nest(a: Float32Array, shape: number[]): unknown {
  if (shape.length === 1) return Array.from(a, (v) => Number(v.toPrecision(6)));
  const n = shape.slice(1).reduce((x, y) => x * y, 1);
  return Array.from({ length: shape[0] }, (_, i) => nest(a.subarray(i * n, (i + 1) * n), shape.slice(1)));
}
