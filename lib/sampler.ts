// Training and validation batches from token shards. A batch is B random windows of context+1 tokens,
// each read from its shard by offset (ShardReader), so shards of any size are never loaded whole. The
// shard of each window is chosen with probability proportional to its token count, the offset uniformly,
// both from the sampler's own seeded RNG, whose state is saved in checkpoints so a resumed run draws the
// same batches. Validation batches come from a fresh RNG with a fixed seed at every evaluation, so every
// evaluation of a run (and of a resumed run) scores the same windows.
import { inputError } from "./errors.ts";
import { Rng, type RngState } from "./rng.ts";
import { ShardReader } from "./shard.ts";

export interface Batch {
  /** Inputs, int32 [B*T] row-major. */
  x: Int32Array;
  /** Targets (inputs shifted by one), int32 [B*T]. */
  y: Int32Array;
  batchSize: number;
  context: number;
}

export interface SamplerState {
  rng: RngState;
}

/** Seed of the validation RNG (fixed: every evaluation sees the same windows). */
export const VAL_SEED = 0x5eed;

export class WindowSampler {
  private cumulative: number[];
  private total: number;
  rng: Rng;

  private constructor(
    readonly shards: ShardReader[],
    readonly context: number,
    readonly vocabSize: number,
    seed: number,
  ) {
    this.cumulative = [];
    let acc = 0;
    for (const s of shards) {
      acc += s.tokens >= context + 1 ? s.tokens : 0; // too-short shards are never drawn
      this.cumulative.push(acc);
    }
    this.total = acc;
    this.rng = new Rng(seed);
  }

  /**
   * Opens `paths` for windows of `context`+1 tokens. Fails before training when no shard is long
   * enough, or when a shard holds ids >= `vocabSize` in its first tokens (a shard of another vocabulary).
   */
  static async open(
    paths: string[],
    context: number,
    vocabSize: number,
    seed: number,
    what = "training",
  ): Promise<WindowSampler> {
    if (paths.length === 0) throw inputError(`no ${what} shards given`);
    const shards: ShardReader[] = [];
    try {
      for (const p of paths) shards.push(await ShardReader.open(p));
      for (const s of shards) await checkVocab(s, vocabSize);
    } catch (err) {
      for (const s of shards) s.close();
      throw err;
    }
    if (!shards.some((s) => s.tokens >= context + 1)) {
      const longest = Math.max(...shards.map((s) => s.tokens));
      for (const s of shards) s.close();
      throw inputError(
        `context ${context} is longer than every ${what} shard (longest: ${longest} tokens in ${paths.length} shard(s)); ` +
          `a window needs context+1 = ${
            context + 1
          } tokens. Use a shorter context (--set contextLength=N) or more data.`,
      );
    }
    return new WindowSampler(shards, context, vocabSize, seed);
  }

  get totalTokens(): number {
    return this.shards.reduce((a, s) => a + s.tokens, 0);
  }

  /** Draws one batch of `batchSize` windows (advances the RNG). */
  async next(batchSize: number, rng: Rng = this.rng): Promise<Batch> {
    const T = this.context;
    const x = new Int32Array(batchSize * T), y = new Int32Array(batchSize * T);
    for (let b = 0; b < batchSize; b++) {
      const { shard, offset } = this.pick(rng);
      const w = await shard.read(offset, T + 1);
      for (let t = 0; t < T; t++) {
        const a = w[t], c = w[t + 1];
        if (a >= this.vocabSize || c >= this.vocabSize) {
          throw inputError(
            `${shard.info.path}: token id ${Math.max(a, c)} near token ${
              offset + t
            } is outside the model's vocabulary ` +
              `(${this.vocabSize}); the shard was made with another tokenizer. Re-tokenize with 'lmpipe tokenize'.`,
          );
        }
        x[b * T + t] = a;
        y[b * T + t] = c;
      }
    }
    return { x, y, batchSize, context: T };
  }

  /**
   * Advances the RNG exactly as next(batchSize) would, without reading: a data-parallel rank skips the
   * micro-batches other ranks train on (lib/dist/), so every rank keeps the same data position.
   */
  skip(batchSize: number, rng: Rng = this.rng): void {
    for (let b = 0; b < batchSize; b++) this.pick(rng);
  }

  /** One window: its shard (chance proportional to its tokens) and start offset. */
  private pick(rng: Rng): { shard: ShardReader; offset: number } {
    const r = rng.int(this.total);
    let i = 0;
    while (this.cumulative[i] <= r) i++;
    const shard = this.shards[i];
    return { shard, offset: rng.int(shard.tokens - this.context) };
  }

  /** `count` validation batches from a fresh RNG seeded with VAL_SEED (the same every call). */
  async fixedBatches(count: number, batchSize: number): Promise<Batch[]> {
    const rng = new Rng(VAL_SEED);
    const out: Batch[] = [];
    for (let i = 0; i < count; i++) out.push(await this.next(batchSize, rng));
    return out;
  }

  state(): SamplerState {
    return { rng: this.rng.state() };
  }

  load(state: SamplerState): void {
    this.rng = new Rng(state.rng);
  }

  close(): void {
    for (const s of this.shards) s.close();
  }
}

/** Tokens scanned at the start of each shard for out-of-vocabulary ids. */
export const VOCAB_SCAN_TOKENS = 1 << 16;

/** Fails when the first tokens of shard `s` hold an id the model cannot embed. */
export async function checkVocab(s: ShardReader, vocabSize: number): Promise<void> {
  if (vocabSize >= 65536) return; // uint16 ids always fit
  const n = Math.min(s.tokens, VOCAB_SCAN_TOKENS);
  const ids = await s.read(0, n);
  for (let i = 0; i < n; i++) {
    if (ids[i] >= vocabSize) {
      throw inputError(
        `${s.info.path}: holds token id ${
          ids[i]
        } at token offset ${i}, outside the vocabulary (${vocabSize} ids): ` +
          `the shard was made with another tokenizer or is damaged. Re-tokenize with 'lmpipe tokenize'.`,
      );
    }
  }
}
