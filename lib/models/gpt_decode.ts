// A cached decoding step of gpt on the wasm backend as direct kernel calls, for `lmpipe sample`. One
// token of a small model is ~170 TF.js ops through decodeStep, each costing more engine time than
// arithmetic, plus a concat of every key/value cache and a tensor per intermediate. Here the step runs
// lmpipe's wasm kernels (LayerNorm, GELU, kernels.wat's matrix-vector products) or OpenBLAS's sgemv
// (lib/tensor/ops/gemv/wasm.ts) straight on the weights where TF.js keeps them on the wasm heap, with
// the key/value cache and every intermediate preallocated once per decode, and returns the logits as a
// view of the heap: no tensor is made per token. The arithmetic is decodeStep's in float32 (the same
// LayerNorm and GELU kernels; the matrix-vector sums and the softmax's division in another order), so
// the logits agree with it to float32 rounding and a seed draws the same tokens (tests/gpt_decode_test.ts). The kernel-choice rule's "cachedDecode" row turns it on and off
// (LMPIPE_WASM_DECODE=0); Gpt.startDecode falls back to decodeStep's op chain for what this does not
// cover (gpt_decode's unsupported()). A sampler that draws from the top k says so (TopKNeed): then the
// head is first read as 16-bit integers and only the rows that can be among the top k in float32
// (gpt_decode_head.ts; the "decodeHead" row of the rule, LMPIPE_DECODE_INT16_HEAD=0 to turn it off).
import { tf } from "../tensor/backend.ts";
import { usageError } from "../errors.ts";
import { GELU_C, GELU_K } from "../tensor/kernel_names.ts";
import { type AnyBackend, offsetOf } from "../tensor/wasm/kernels.ts";
import { headRow, HeapView, linearRow } from "../tensor/ops/gemv/wasm.ts";
import type { DecodeState, ModelConfig, TopKNeed } from "./types.ts";
import { Int16Head } from "./gpt_decode_head.ts";
import { kernelFor } from "../tensor/kernel_choice.ts";
import { TOP_K_BLOCK } from "../top_k.ts";
import { LAYER_NORM_EPS } from "../tensor/ops/layer_norm/mod.ts";
import { variantOf } from "./variants.ts";

/** What the step reads of a gpt config (gpt.ts GptConfig; gpt.ts imports this file, so not the type). */
export interface DecodeConfig extends ModelConfig {
  nLayer: number;
  nHead: number;
  nEmbd: number;
  /** The head is the token embedding (else lm_head.weight). */
  tie: boolean;
}

/**
 * Why the wasm step cannot run a decode of `config` for `batch` sequences, or null when it can: GPT-2's
 * block (LayerNorm, GELU MLP in either form, fused q/k/v, learned positions, one key/value head per query head,
 * no qkv_act or attn_extra), one sequence, a width that is a multiple of 4 (the LayerNorm kernel's).
 */
export function unsupported(config: DecodeConfig, batch: number): string | null {
  const v = variantOf(config);
  if (batch !== 1) return "batch > 1";
  if (config.nEmbd % 4 !== 0) return "nEmbd not a multiple of 4";
  if (v.norm !== "layernorm" || v.mlp !== "gelu") return "not GPT-2's LayerNorm + GELU MLP";
  if (v.qkv !== "fused" || v.pos !== "learned") return "not fused q/k/v with learned positions";
  if (v.qkv_act !== "none" || v.attn_extra !== "none") return "qkv_act or attn_extra";
  if (v.kv_heads !== 0 && v.kv_heads !== config.nHead) return "grouped key/value heads";
  return null;
}

/** The regions of a step's scratch memory: each is one vector of the step. */
type Region =
  | "x"
  | "a"
  | "qkv"
  | "att"
  | "out"
  | "fc"
  | "act"
  | "stats"
  | "probs"
  | "rowMax"
  | "rowSum"
  | "logits"
  | "maxima";

/** A block's linears and norms, by their parameter names' middle parts (gpt.ts's header). */
const BLOCK_LAYERS = {
  ln1: "ln_1",
  attn: "attn.c_attn",
  attnProj: "attn.c_proj",
  ln2: "ln_2",
  fc: "mlp.c_fc",
  mlpProj: "mlp.c_proj",
} as const;

/** Byte offsets of one layer's weight and bias (-1: no bias). */
interface LayerOffsets {
  w: number;
  b: number;
}

/** Byte offsets of one block's weights. */
type BlockOffsets = Record<keyof typeof BLOCK_LAYERS, LayerOffsets>;

/**
 * One batch-1 decode of a gpt model on the wasm heap. The weights' offsets are taken once: the
 * parameters must not be reassigned while it lives (sampling does not train).
 */
export class WasmGptDecoder implements DecodeState {
  /** Positions consumed so far. */
  length = 0;
  readonly #heap: HeapView;
  readonly #c: DecodeConfig;
  /** GELU's exact (erf) form, else its tanh approximation (the config's `gelu`). */
  readonly #exactGelu: boolean;
  readonly #blocks: BlockOffsets[];
  readonly #wte: number;
  readonly #wpe: number;
  readonly #head: number;
  readonly #lnF: LayerOffsets;
  /** The key/value cache, [layer][k, v][T, C] (the preallocated positions of every layer). */
  readonly #cache: tf.Tensor;
  /** Every intermediate of a step, regions of one tensor (offsets below). */
  readonly #scratch: tf.Tensor;
  readonly #at: Record<Region, number>;
  /** The head as 16-bit integers, built at the first step that needs only the top k (null: not yet). */
  #int16: Int16Head | null = null;
  /** The ids the last step computed where it left -Infinity elsewhere (null: it computed all). */
  #computed: number[] | null = null;

  constructor(params: Map<string, tf.Variable>, config: DecodeConfig) {
    const backend: AnyBackend = tf.backend();
    this.#heap = new HeapView(backend);
    this.#c = config;
    this.#exactGelu = variantOf(config).gelu === "exact";
    const C = config.nEmbd, T = config.contextLength, V = config.vocabSize;
    const at = (name: string) => {
      const p = params.get(name);
      if (!p) throw new Error(`${config.model} wasm decode: no parameter '${name}'`);
      return offsetOf(backend, p);
    };
    const maybe = (name: string) => params.has(name) ? at(name) : -1;
    const layer = (name: string): LayerOffsets => ({ w: at(name + ".weight"), b: maybe(name + ".bias") });
    this.#blocks = Array.from({ length: config.nLayer }, (_, i) =>
      Object.fromEntries(
        Object.entries(BLOCK_LAYERS).map(([k, name]) => [k, layer(`transformer.h.${i}.${name}`)]),
      ) as BlockOffsets);
    this.#wte = at("transformer.wte.weight");
    this.#wpe = at("transformer.wpe.weight");
    this.#head = config.tie ? this.#wte : at("lm_head.weight");
    this.#lnF = layer("transformer.ln_f");
    // regions of the scratch tensor, in floats, each a multiple of 4 (16-byte aligned vectors)
    const round4 = (n: number) => Math.ceil(n / 4) * 4;
    const sizes = {
      x: C,
      a: C,
      qkv: 3 * C,
      att: C,
      out: C,
      fc: 4 * C,
      act: 4 * C,
      stats: 4,
      probs: config.nHead * T,
      rowMax: config.nHead,
      rowSum: config.nHead,
      logits: V,
      maxima: Math.ceil(V / TOP_K_BLOCK),
    };
    let total = 0;
    const floats: Record<string, number> = {};
    for (const [k, n] of Object.entries(sizes)) floats[k] = total, total += round4(n);
    this.#cache = tf.keep(tf.zeros([config.nLayer * 2 * T * C]));
    this.#scratch = tf.keep(tf.zeros([total]));
    const base = offsetOf(backend, this.#scratch);
    this.#at = Object.fromEntries(Object.entries(floats).map(([k, f]) => [k, base + 4 * f])) as Record<
      Region,
      number
    >;
  }

  /**
   * Feeds `token` at the next position and returns the logits [vocabSize] for the one after: a view
   * of the heap, valid until the next step or dispose(). With `need`, ids that cannot be among its
   * top k may be -Infinity (the others are exactly as without it).
   */
  stepOnHost(token: number, need?: TopKNeed): Float32Array {
    const c = this.#c, C = c.nEmbd, T = c.contextLength, V = c.vocabSize, pos = this.length;
    if (pos >= T) {
      throw usageError(
        `${c.model}.decodeStep: the context (${T} positions) is full; start a new decode with the last positions`,
      );
    }
    if (!Number.isInteger(token) || token < 0 || token >= V) {
      throw new Error(`${c.model}.decodeStep: token ${token} is outside the vocabulary [0, ${V})`);
    }
    const heap = this.#heap, k = heap.kernels, at = this.#at;
    let f = heap.f32;
    const x = at.x >> 2, out = at.out >> 2;
    for (let i = 0, e = (this.#wte >> 2) + token * C, p = (this.#wpe >> 2) + pos * C; i < C; i++) {
      f[x + i] = f[e + i] + f[p + i];
    }
    const cache = offsetOf(heap.backend, this.#cache);
    for (let l = 0; l < c.nLayer; l++) {
      const b = this.#blocks[l];
      const kCache = cache + 4 * (2 * l) * T * C, vCache = kCache + 4 * T * C;
      this.#norm(b.ln1);
      linearRow(heap, at.a, b.attn.w, b.attn.b, at.qkv, C, 3 * C);
      f = heap.f32; // BLAS does not grow the heap, but keep the rule simple: renew after calls out
      f.copyWithin((kCache >> 2) + pos * C, (at.qkv >> 2) + C, (at.qkv >> 2) + 2 * C);
      f.copyWithin((vCache >> 2) + pos * C, (at.qkv >> 2) + 2 * C, (at.qkv >> 2) + 3 * C);
      this.#attend(kCache, vCache, pos + 1);
      linearRow(heap, at.att, b.attnProj.w, b.attnProj.b, at.out, C, C);
      f = heap.f32;
      for (let i = 0; i < C; i++) f[x + i] += f[out + i];
      this.#norm(b.ln2);
      linearRow(heap, at.a, b.fc.w, b.fc.b, at.fc, C, 4 * C);
      // the GELU kernels' jobs (ops/gelu/wasm.ts), in their order: tanh or erf into act, then act
      if (this.#exactGelu) k.erf(at.fc, at.act, 0, 4 * C, Math.SQRT1_2);
      else {
        k.gelu_inner(at.fc, at.act, 0, 4 * C, GELU_C, GELU_K);
        k.tanh(at.act, at.act, 0, 4 * C);
      }
      k.gelu_out(at.fc, at.act, at.act, 0, 4 * C);
      linearRow(heap, at.act, b.mlpProj.w, b.mlpProj.b, at.out, 4 * C, C);
      f = heap.f32;
      for (let i = 0; i < C; i++) f[x + i] += f[out + i];
    }
    this.#norm(this.#lnF);
    const ids = need ? this.#candidates(need) : null;
    f = heap.f32;
    const logits = at.logits >> 2;
    if (ids === null) {
      headRow(heap, this.#head, at.a, at.logits, V, C);
      this.#computed = null;
    } else {
      // -Infinity where the last step wrote (everywhere after a whole head), then the candidates' runs
      // of consecutive rows by the whole head's kernel: bit for bit its values
      if (this.#computed === null) f.fill(-Infinity, logits, logits + V);
      else for (const i of this.#computed) f[logits + i] = -Infinity;
      for (let j = 0; j < ids.length;) {
        let e = j + 1;
        while (e < ids.length && ids[e] === ids[e - 1] + 1) e++;
        k.gemv_rows(this.#head, C, at.a, at.logits, ids[j], ids[e - 1] + 1, C);
        j = e;
      }
      this.#computed = ids;
    }
    k.block_max(at.logits, at.maxima, V); // where the sampler's top-k search starts (~5 us)
    this.length = pos + 1;
    return heap.f32.subarray(logits, logits + V);
  }

  /** The ids that can be among `need`'s top k, by the integer head; null: compute the whole head. */
  #candidates(need: TopKNeed): number[] | null {
    const c = this.#c, V = c.vocabSize, C = c.nEmbd, n = Math.min(need.n, V);
    if (!(need.k >= 1 && need.k < n) || C % 8 !== 0 || kernelFor("decodeHead", "wasm", V * C) !== "int16") {
      return null;
    }
    this.#int16 ??= new Int16Head(this.#heap, this.#head, V, C);
    return this.#int16.usable() ? this.#int16.candidates(this.#at.a, need.k, n) : null;
  }

  /** Starts over at position 0, keeping the key/value cache's memory and the integer head. */
  reset(): void {
    this.length = 0;
  }

  /**
   * The maxima of the last logits' blocks of TOP_K_BLOCK (lib/top_k.ts blockMaxima over all
   * vocabSize values), a view valid until the next step: chooseToken skips its own pass with them.
   */
  blockMaxima(): Float32Array {
    const m = this.#at.maxima >> 2;
    return this.#heap.f32.subarray(m, m + Math.ceil(this.#c.vocabSize / TOP_K_BLOCK));
  }

  /** a = LayerNorm(x) with a norm's weight and bias (-1: none), by the LayerNorm kernel decodeStep uses. */
  #norm({ w, b }: LayerOffsets) {
    const at = this.#at;
    this.#heap.kernels.layernorm_fwd(
      at.x,
      w,
      Math.max(b, 0),
      at.a,
      at.stats,
      at.stats + 4,
      0,
      1,
      this.#c.nEmbd,
      LAYER_NORM_EPS,
      b >= 0 ? 1 : 0,
    );
  }

  /**
   * att = softmax(q k^T / sqrt(D)) v per head over the `n` cached positions: q scaled first as the op
   * chain does (lib/tensor/ops/attention/mod.ts), scores and weighted sums by the gemv kernels on the
   * cache's rows (stride C), the softmax's exponentials and sums by the softmax_rows kernel, the division
   * applied to each head's D outputs instead of its n weights.
   */
  #attend(kCache: number, vCache: number, n: number) {
    const c = this.#c, C = c.nEmbd, H = c.nHead, D = C / H, at = this.#at, k = this.#heap.kernels;
    const f = this.#heap.f32, q = at.qkv >> 2;
    const scale = Math.fround(1 / Math.sqrt(D));
    for (let i = 0; i < C; i++) f[q + i] *= scale;
    // the heads' scores as rows [H, n], one softmax_rows call (the loss's SIMD exp) for all of them:
    // e = exp(s - max) in place, the row sums; each head's output is then sum_j e_j v_j / sum
    for (let h = 0; h < H; h++) {
      k.gemv_rows(kCache + 4 * h * D, C, at.qkv + 4 * h * D, at.probs + 4 * h * n, 0, n, D);
    }
    k.softmax_rows(at.probs, at.probs, at.rowMax, at.rowSum, 0, H, n, 1);
    const sums = at.rowSum >> 2, att = at.att >> 2;
    for (let h = 0; h < H; h++) {
      k.gemv_cols(vCache + 4 * h * D, C, at.probs + 4 * h * n, 0, at.att + 4 * h * D, n, 0, D, 0);
      const inv = 1 / f[sums + h];
      for (let i = att + h * D; i < att + (h + 1) * D; i++) f[i] *= inv;
    }
  }

  dispose(): void {
    this.#cache.dispose();
    this.#scratch.dispose();
    this.#int16?.dispose();
  }
}
