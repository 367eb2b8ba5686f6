// Parallel GPT-2 encoding: a pool of Web Workers, each running lib/tokenizer.ts's encodeOrdinary, so
// tokenizing a corpus uses every core. Results always come back in input order, so the token stream is
// byte-identical for any worker count (0, 1, 2, ...).
//
// API (stable; the tokenize pipeline builds on it):
//
//   const pool = EncodePool.create(2);          // 2 worker threads; 0 = encode inline on this thread
//   const ids = await pool.encode(["doc one", "doc two"]);   // Uint16Array per doc, same order
//   for await (const ids of pool.encodeOrdered(docsIterable, { maxInFlightChars: 8 << 20 })) { ... }
//   pool.close();                                // terminates the workers; always call it (try/finally)
//
// - encode(docs, batchChars = 256 Ki) splits `docs` into batches of about `batchChars` characters,
//   spreads them over the workers (at most 2 batches posted per worker, the rest handed to whichever
//   worker finishes first) and resolves with one Uint16Array per document, in the order given. Several
//   encode() calls may be in flight at once; each resolves with its own documents. With 0 workers it encodes synchronously before returning.
// - Memory: text handed to encode() stays referenced until its promise settles; the caller bounds it
//   by how much it submits before awaiting (encodeOrdered does this for you).
// - encodeOrdered(source) streams: it pulls documents from a (sync or async) iterable, keeps at most
//   about `maxInFlightChars` characters of text submitted-but-not-yet-yielded (backpressure: it stops
//   pulling from `source` until the oldest batch is done), and yields one Uint16Array per document in
//   source order.
// - No special tokens are added: callers that want an EOT (50256) between documents add it themselves.
// - Token arrays come back through transferred ArrayBuffers (no copy); the arrays of one batch are
//   views into one shared buffer.
// - A failure inside a worker rejects the pending encodes with an Error; close() rejects anything still
//   pending. Using a closed pool throws.
import { encodeBatch } from "./tokenizer.ts";

/** Result message of lib/encode_worker.ts: all tokens of a batch, back to back, plus doc boundaries. */
export interface BatchResult {
  id: number;
  tokens?: Uint16Array; // concatenated tokens of every document in the batch
  offsets?: Uint32Array; // docs.length + 1 boundaries into `tokens`
  error?: string;
}

export interface OrderedOptions {
  /** Characters of text per worker message (default 256 Ki). */
  batchChars?: number;
  /** Upper bound on characters submitted but not yet yielded (default batchChars * 4 * max(1, workers)). */
  maxInFlightChars?: number;
}

interface Pending {
  resolve: (r: Uint16Array[]) => void;
  reject: (e: Error) => void;
  worker: number; // -1 while waiting in the queue
  docs: string[] | null; // until posted
}

// Batches posted to one worker at a time; the rest wait on this thread and go to whichever worker
// finishes first, so a batch that is slow to encode does not leave the other workers idle.
const POSTED_PER_WORKER = 2;

const DEFAULT_BATCH_CHARS = 256 * 1024;

/** Splits a batch result into one view per document. */
function splitBatch(tokens: Uint16Array, offsets: Uint32Array): Uint16Array[] {
  const out: Uint16Array[] = new Array(offsets.length - 1);
  for (let i = 0; i + 1 < offsets.length; i++) out[i] = tokens.subarray(offsets[i], offsets[i + 1]);
  return out;
}

export class EncodePool {
  readonly workers: number;
  #threads: Worker[] = [];
  #posted: number[] = []; // batches posted to each worker and not yet answered
  #queue: number[] = []; // ids of batches not yet posted, oldest first
  #pending = new Map<number, Pending>();
  #nextId = 0;
  #closed = false;

  private constructor(workers: number) {
    this.workers = workers;
    for (let w = 0; w < workers; w++) {
      const t = new Worker(new URL("./encode_worker.ts", import.meta.url).href, { type: "module" });
      t.onmessage = (e: MessageEvent<BatchResult>) => this.#onResult(e.data);
      t.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        this.#failWorker(w, new Error(`encode worker ${w} crashed: ${e.message}`));
      };
      this.#threads.push(t);
      this.#posted.push(0);
    }
  }

  /** A pool of `workers` threads (0 encodes on the calling thread, synchronously inside encode()). */
  static create(workers: number): EncodePool {
    if (!Number.isInteger(workers) || workers < 0) {
      throw new RangeError(`EncodePool.create: workers must be an integer >= 0, got ${workers}`);
    }
    return new EncodePool(workers);
  }

  /** Encodes documents; resolves with one Uint16Array per document, in input order. */
  encode(docs: string[], batchChars = DEFAULT_BATCH_CHARS): Promise<Uint16Array[]> {
    this.#checkOpen();
    const batches: Promise<Uint16Array[]>[] = [];
    let start = 0, chars = 0;
    for (let i = 0; i < docs.length; i++) {
      chars += docs[i].length;
      if (chars >= batchChars) {
        batches.push(this.#submit(docs.slice(start, i + 1)));
        start = i + 1, chars = 0;
      }
    }
    if (start < docs.length || batches.length === 0) batches.push(this.#submit(docs.slice(start)));
    if (batches.length === 1) return batches[0];
    return Promise.all(batches).then((parts) => parts.flat());
  }

  /** Streams documents through the pool with bounded memory; yields token arrays in source order. */
  async *encodeOrdered(
    source: Iterable<string> | AsyncIterable<string>,
    opts: OrderedOptions = {},
  ): AsyncGenerator<Uint16Array> {
    this.#checkOpen();
    const batchChars = opts.batchChars ?? DEFAULT_BATCH_CHARS;
    const maxInFlight = opts.maxInFlightChars ?? batchChars * 4 * Math.max(1, this.workers);
    const queue: { chars: number; result: Promise<Uint16Array[]> }[] = [];
    let inFlight = 0;
    let batch: string[] = [];
    let chars = 0;
    // Rejections are observed when the batch reaches the head of the queue; until then mark them handled
    // so a failing batch behind a slow one does not become an unhandled rejection.
    const enqueue = () => {
      const result = this.#submit(batch);
      result.catch(() => {});
      queue.push({ chars, result });
      inFlight += chars;
      batch = [], chars = 0;
    };
    for await (const doc of source) {
      batch.push(doc);
      chars += doc.length;
      if (chars >= batchChars) {
        enqueue();
        while (inFlight > maxInFlight && queue.length > 0) {
          const head = queue.shift()!;
          inFlight -= head.chars;
          yield* await head.result;
        }
      }
    }
    if (batch.length > 0) enqueue();
    while (queue.length > 0) {
      const head = queue.shift()!;
      inFlight -= head.chars;
      yield* await head.result;
    }
  }

  /** Terminates the workers. Pending encodes reject. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#threads) t.terminate();
    const err = new Error("EncodePool closed while encodes were pending");
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.#queue = [];
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("EncodePool is closed");
  }

  #submit(docs: string[]): Promise<Uint16Array[]> {
    this.#checkOpen();
    if (this.workers === 0) {
      try {
        const { tokens, offsets } = encodeBatch(docs);
        return Promise.resolve(splitBatch(tokens, offsets));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const id = this.#nextId++;
    const result = new Promise<Uint16Array[]>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, worker: -1, docs });
    });
    this.#queue.push(id);
    this.#dispatch();
    return result;
  }

  /** Posts queued batches to workers with room, least loaded first. */
  #dispatch(): void {
    while (this.#queue.length > 0) {
      let w = 0;
      for (let i = 1; i < this.workers; i++) if (this.#posted[i] < this.#posted[w]) w = i;
      if (this.#posted[w] >= POSTED_PER_WORKER) return;
      const id = this.#queue.shift()!;
      const p = this.#pending.get(id)!;
      p.worker = w;
      this.#posted[w]++;
      this.#threads[w].postMessage({ id, docs: p.docs });
      p.docs = null;
    }
  }

  #onResult(r: BatchResult): void {
    const p = this.#pending.get(r.id);
    if (!p) return;
    this.#pending.delete(r.id);
    this.#posted[p.worker]--;
    if (r.error !== undefined) p.reject(new Error(`encode worker ${p.worker}: ${r.error}`));
    else p.resolve(splitBatch(r.tokens!, r.offsets!));
    this.#dispatch();
  }

  #failWorker(_w: number, err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.close();
  }
}
