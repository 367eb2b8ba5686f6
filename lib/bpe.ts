// Fast exact GPT-2 encoder (encode_ordinary semantics), the engine behind lib/tokenizer.ts.
//
// Three parts (throughput against tiktoken and js-tiktoken in bench/RESULTS.md):
// 1. A hand-written pre-tokenizer equivalent to GPT-2's split regex
//      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//    scanning UTF-16 code units with a 64K-entry class table (letter / number / whitespace / other, built
//    from the same \p{L}, \p{N}, \s regex classes at startup; astral code points are classified by regex
//    and memoised). Lone surrogates are "other", as in the regex, and become U+FFFD bytes, as with
//    TextEncoder in js-tiktoken.
// 2. A piece cache keyed by the piece's UTF-16 code units (hashed in place, no string is created):
//    most pieces of real text repeat, and a hit is a hash, a compare and a copy of the cached ids.
//    When it fills up it is simply cleared.
// 3. Byte-pair merging on token ids with a pair table (lib/bpe_tables.ts), always merging the pair of
//    lowest rank, leftmost first, like tiktoken. Short pieces use a simple array scan; long ones a binary
//    heap over a linked list of parts, so a 100k-byte piece takes O(n log n) instead of O(n^2).
import { byteToken, pairRank, tokenOfByteSeq } from "./bpe_tables.ts";

// ---- character classes -------------------------------------------------------------------------
const OTHER = 0, LETTER = 1, NUMBER = 2, SPACE = 3, HIGH = 4; // HIGH: high surrogate, look at the next unit
const charClass = new Uint8Array(65536);
{
  const isSpace = /^\s$/u, isLetter = /^\p{L}$/u, isNumber = /^\p{N}$/u;
  for (let c = 0; c < 65536; c++) {
    if (c >= 0xd800 && c <= 0xdfff) {
      charClass[c] = c <= 0xdbff ? HIGH : OTHER;
      continue;
    }
    const s = String.fromCharCode(c);
    charClass[c] = isSpace.test(s) ? SPACE : isLetter.test(s) ? LETTER : isNumber.test(s) ? NUMBER : OTHER;
  }
}
const astralClasses = new Map<number, number>();
const isLetterU = /^\p{L}$/u, isNumberU = /^\p{N}$/u;
function astralClass(cp: number): number {
  let k = astralClasses.get(cp);
  if (k === undefined) {
    const s = String.fromCodePoint(cp);
    k = isLetterU.test(s) ? LETTER : isNumberU.test(s) ? NUMBER : OTHER; // no astral whitespace exists
    astralClasses.set(cp, k);
  }
  return k;
}

/** Class of the code point at p (p < n); a surrogate pair's class is its code point's. */
function classAt(text: string, p: number, n: number): number {
  const c = text.charCodeAt(p);
  const k = charClass[c];
  if (k !== HIGH) return k;
  if (p + 1 < n) {
    const d = text.charCodeAt(p + 1);
    if ((d & 0xfc00) === 0xdc00) return astralClass(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
  }
  return OTHER;
}

/** End of the run of code points of class `kind` starting at p. */
function runEnd(text: string, p: number, n: number, kind: number): number {
  while (p < n) {
    const c = text.charCodeAt(p);
    const k = charClass[c];
    if (k === kind) {
      p++;
      continue;
    }
    if (k !== HIGH) return p;
    if (p + 1 < n) {
      const d = text.charCodeAt(p + 1);
      if ((d & 0xfc00) === 0xdc00) {
        if (astralClass(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000) !== kind) return p;
        p += 2;
        continue;
      }
    }
    if (kind !== OTHER) return p; // lone high surrogate: "other"
    p++;
  }
  return p;
}

/** End of the pre-tokenizer piece that starts at i (i < n), following the GPT-2 regex's alternatives. */
export function pieceEnd(text: string, i: number, n: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x27 && i + 1 < n) { // 's 't 're 've 'm 'll 'd (lowercase only)
    const d = text.charCodeAt(i + 1);
    if (d === 0x73 || d === 0x74 || d === 0x6d || d === 0x64) return i + 2;
    if (i + 2 < n) {
      const e = text.charCodeAt(i + 2);
      if (((d === 0x72 || d === 0x76) && e === 0x65) || (d === 0x6c && e === 0x6c)) return i + 3;
    }
  }
  if (c === 0x20 && i + 1 < n) { // " ?X+" with X the class of the next code point, unless it is space
    const k2 = classAt(text, i + 1, n);
    if (k2 !== SPACE) return runEnd(text, i + 1, n, k2);
  }
  const k = classAt(text, i, n);
  if (k !== SPACE) return runEnd(text, i, n, k);
  // \s+(?!\S) then \s+: a whitespace run keeps its last char for the next piece when a non-space follows.
  const j = runEnd(text, i, n, SPACE);
  return j === n || j - i === 1 ? j : j - 1;
}

// ---- output buffer ---------------------------------------------------------------------------------
let out = new Uint16Array(1 << 16);
let outLen = 0;
function ensureOut(extra: number): void {
  if (outLen + extra <= out.length) return;
  let cap = out.length * 2;
  while (cap < outLen + extra) cap *= 2;
  const bigger = new Uint16Array(cap);
  bigger.set(out.subarray(0, outLen));
  out = bigger;
}

// ---- piece cache ---------------------------------------------------------------------------------
const CACHE_BITS = 18;
const CACHE_SLOTS = 1 << CACHE_BITS;
const CACHE_MASK = CACHE_SLOTS - 1;
const CACHE_MAX_ENTRIES = CACHE_SLOTS >> 1;
const CACHE_MAX_PIECE = 64; // code units; longer pieces are encoded every time
const slotHash = new Int32Array(CACHE_SLOTS);
const slotLen = new Uint8Array(CACHE_SLOTS); // 0 = empty
const slotChars = new Int32Array(CACHE_SLOTS); // offset into charPool
const slotToks = new Int32Array(CACHE_SLOTS); // offset into tokPool
const slotTokLen = new Uint8Array(CACHE_SLOTS);
const charPool = new Uint16Array(CACHE_MAX_ENTRIES * 8);
const tokPool = new Uint16Array(CACHE_MAX_ENTRIES * 4);
let cacheEntries = 0, charUsed = 0, tokUsed = 0;

function clearCache(): void {
  slotLen.fill(0);
  cacheEntries = charUsed = tokUsed = 0;
}

// ---- byte-pair merge -------------------------------------------------------------------------------
let bytes = new Uint8Array(1024);
let ids = new Int32Array(1024);
let ranks = new Int32Array(1024);
const NONE = 0x7fffffff;

/** UTF-8 bytes of text[start, end) into `bytes` (lone surrogates as U+FFFD); returns the count. */
function utf8(text: string, start: number, end: number): number {
  if (bytes.length < (end - start) * 3) bytes = new Uint8Array((end - start) * 3);
  let m = 0;
  for (let p = start; p < end; p++) {
    let c = text.charCodeAt(p);
    if (c < 0x80) {
      bytes[m++] = c;
    } else if (c < 0x800) {
      bytes[m++] = 0xc0 | (c >> 6);
      bytes[m++] = 0x80 | (c & 63);
    } else {
      if ((c & 0xf800) === 0xd800) {
        const d = p + 1 < end ? text.charCodeAt(p + 1) : 0;
        if (c <= 0xdbff && (d & 0xfc00) === 0xdc00) {
          c = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
          p++;
          bytes[m++] = 0xf0 | (c >> 18);
          bytes[m++] = 0x80 | ((c >> 12) & 63);
          bytes[m++] = 0x80 | ((c >> 6) & 63);
          bytes[m++] = 0x80 | (c & 63);
          continue;
        }
        c = 0xfffd;
      }
      bytes[m++] = 0xe0 | (c >> 12);
      bytes[m++] = 0x80 | ((c >> 6) & 63);
      bytes[m++] = 0x80 | (c & 63);
    }
  }
  return m;
}

/** Merges `bytes[0, m)` by scanning for the lowest-ranked pair each step (fast for short pieces). */
function mergeSmall(m: number): void {
  for (let i = 0; i < m; i++) ids[i] = byteToken[bytes[i]];
  for (let i = 0; i + 1 < m; i++) {
    const r = pairRank(ids[i], ids[i + 1]);
    ranks[i] = r < 0 ? NONE : r;
  }
  let n = m;
  while (n > 1) {
    let best = NONE, at = -1;
    for (let i = 0; i + 1 < n; i++) if (ranks[i] < best) best = ranks[i], at = i;
    if (at < 0) break;
    ids[at] = best;
    for (let j = at + 1; j + 1 < n; j++) ids[j] = ids[j + 1], ranks[j] = ranks[j + 1];
    n--;
    if (at + 1 < n) {
      const r = pairRank(ids[at], ids[at + 1]);
      ranks[at] = r < 0 ? NONE : r;
    } else ranks[at] = NONE;
    if (at > 0) {
      const r = pairRank(ids[at - 1], ids[at]);
      ranks[at - 1] = r < 0 ? NONE : r;
    }
  }
  ensureOut(n);
  for (let i = 0; i < n; i++) out[outLen++] = ids[i];
}

// Heap merge state, indexed by the byte offset where a part starts.
let nxt = new Int32Array(0), prv = new Int32Array(0);
let heap = new Float64Array(0);
const SPLIT = 4294967296; // heap key = rank * 2^32 + start: lowest rank first, then leftmost

/** Same merges as mergeSmall, in O(m log m): a min-heap of (rank, start) over a linked list of parts. */
function mergeLarge(m: number): void {
  if (nxt.length < m) {
    nxt = new Int32Array(m), prv = new Int32Array(m);
    ids = new Int32Array(m), ranks = new Int32Array(m);
    heap = new Float64Array(3 * m);
  }
  let size = 0;
  const push = (key: number) => {
    let i = size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent] <= key) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = key;
  };
  for (let i = 0; i < m; i++) {
    ids[i] = byteToken[bytes[i]];
    nxt[i] = i + 1;
    prv[i] = i - 1;
  }
  for (let i = 0; i + 1 < m; i++) {
    const r = pairRank(ids[i], ids[i + 1]);
    ranks[i] = r < 0 ? NONE : r;
    if (r >= 0) push(r * SPLIT + i);
  }
  ranks[m - 1] = NONE;
  while (size > 0) {
    const top = heap[0];
    const last = heap[--size];
    let i = 0;
    for (;;) { // sift `last` down from the root
      let child = 2 * i + 1;
      if (child >= size) break;
      if (child + 1 < size && heap[child + 1] < heap[child]) child++;
      if (heap[child] >= last) break;
      heap[i] = heap[child];
      i = child;
    }
    heap[i] = last;
    const rank = Math.floor(top / SPLIT);
    const p = top - rank * SPLIT;
    if (ids[p] < 0 || ranks[p] !== rank) continue; // stale: the part or its right neighbour changed
    const q = nxt[p];
    ids[p] = rank;
    ids[q] = -1;
    const after = nxt[q];
    nxt[p] = after;
    if (after < m) {
      prv[after] = p;
      const r = pairRank(rank, ids[after]);
      ranks[p] = r < 0 ? NONE : r;
      if (r >= 0) push(r * SPLIT + p);
    } else ranks[p] = NONE;
    const before = prv[p];
    if (before >= 0) {
      const r = pairRank(ids[before], rank);
      ranks[before] = r < 0 ? NONE : r;
      if (r >= 0) push(r * SPLIT + before);
    }
  }
  ensureOut(m);
  for (let p = 0; p < m; p = nxt[p]) out[outLen++] = ids[p];
}

// Bytes. Both paths give the same merges; the scan has less set-up, the heap bounds long pieces. Not tuned:
// on the busy 2-core VM the two could not be told apart between 16 and 96 bytes.
const SMALL_PIECE = 48;

/** Appends the tokens of text[start, end) (one pre-tokenizer piece) to `out`. */
function encodePiece(text: string, start: number, end: number): void {
  const m = utf8(text, start, end);
  if (m === 1) {
    ensureOut(1);
    out[outLen++] = byteToken[bytes[0]];
    return;
  }
  const whole = tokenOfByteSeq(bytes, m);
  if (whole >= 0) {
    ensureOut(1);
    out[outLen++] = whole;
    return;
  }
  if (ids.length < m) ids = new Int32Array(m), ranks = new Int32Array(m);
  if (m <= SMALL_PIECE) mergeSmall(m);
  else mergeLarge(m);
}

/** Appends the tokens of `text` to the output buffer, using and filling the piece cache. */
function encodeAppend(text: string): void {
  const n = text.length;
  let i = 0;
  while (i < n) {
    const end = pieceEnd(text, i, n);
    const len = end - i;
    if (len > CACHE_MAX_PIECE) {
      encodePiece(text, i, end);
      i = end;
      continue;
    }
    let h = 0x811c9dc5;
    for (let p = i; p < end; p++) h = Math.imul(h ^ text.charCodeAt(p), 0x01000193);
    h ^= h >>> 15;
    let s = Math.imul(h, 0x9e3779b1) >>> (32 - CACHE_BITS);
    let hit = false;
    for (;;) {
      const sl = slotLen[s];
      if (sl === 0) break;
      if (sl === len && slotHash[s] === h) {
        const co = slotChars[s];
        let q = 0;
        while (q < len && charPool[co + q] === text.charCodeAt(i + q)) q++;
        if (q === len) {
          hit = true;
          break;
        }
      }
      s = (s + 1) & CACHE_MASK;
    }
    if (hit) {
      const tl = slotTokLen[s], to = slotToks[s];
      ensureOut(tl);
      if (tl === 1) out[outLen++] = tokPool[to];
      else for (let q = 0; q < tl; q++) out[outLen++] = tokPool[to + q];
      i = end;
      continue;
    }
    const before = outLen;
    encodePiece(text, i, end);
    const tl = outLen - before;
    if (
      cacheEntries >= CACHE_MAX_ENTRIES || charUsed + len > charPool.length || tokUsed + tl > tokPool.length
    ) {
      clearCache();
      s = Math.imul(h, 0x9e3779b1) >>> (32 - CACHE_BITS);
    }
    if (tl < 256) {
      slotHash[s] = h;
      slotLen[s] = len;
      slotChars[s] = charUsed;
      slotToks[s] = tokUsed;
      slotTokLen[s] = tl;
      for (let q = 0; q < len; q++) charPool[charUsed++] = text.charCodeAt(i + q);
      for (let q = 0; q < tl; q++) tokPool[tokUsed++] = out[before + q];
      cacheEntries++;
    }
    i = end;
  }
}

/** GPT-2 token ids of `text` (a literal "<|endoftext|>" is ordinary text). */
export function encodeOrdinary(text: string): Uint16Array {
  outLen = 0;
  encodeAppend(text);
  return out.slice(0, outLen);
}

/** Encodes several documents into one buffer: doc i is tokens[offsets[i], offsets[i + 1]). */
export function encodeBatch(docs: readonly string[]): { tokens: Uint16Array; offsets: Uint32Array } {
  const offsets = new Uint32Array(docs.length + 1);
  outLen = 0;
  for (let d = 0; d < docs.length; d++) {
    encodeAppend(docs[d]);
    offsets[d + 1] = outLen;
  }
  return { tokens: out.slice(0, outLen), offsets };
}

/** Empties the piece cache (tests use it to exercise the uncached path). */
export function clearPieceCache(): void {
  clearCache();
}
