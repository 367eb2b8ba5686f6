// The GPT-2 vocabulary as flat typed arrays for lib/bpe.ts: token bytes, the token of each single
// byte, whole-piece lookup, and a pair table saying which token (if any) two adjacent tokens merge into.
// Built once per thread from js-tiktoken's bundled gpt2 ranks (nothing is downloaded), in ~0.1-0.2 s.
//
// In tiktoken a token's id is its merge rank, and two adjacent parts merge when the concatenation of
// their bytes is a token. Because a merged token's bytes can be split into two tokens in several ways
// (about 37k GPT-2 tokens have more than one split), the pair table holds every split (a, b) of every
// token t, so "pair (a, b) has rank t" is exactly "bytes(a) + bytes(b) is token t".
import gpt2 from "js-tiktoken/ranks/gpt2";

export const EOT = 50256;
export const VOCAB_SIZE = 50257;
const EOT_TEXT = "<|endoftext|>";

/** Bytes of token id are tokenBytes[tokenOffsets[id] .. tokenOffsets[id + 1]] (EOT included). */
export const tokenOffsets = new Uint32Array(VOCAB_SIZE + 1);
export let tokenBytes = new Uint8Array(0);
/** Token id of each single byte. */
export const byteToken = new Int32Array(256);
/** Longest token, in bytes; longer pieces cannot be a single token. */
export let maxTokenBytes = 0;

// Pair table: open addressing on Int32 keys (a << 16 | b), -1 = empty slot; value = merged token id.
const PAIR_BITS = 19;
const PAIR_MASK = (1 << PAIR_BITS) - 1;
const pairKeys = new Int32Array(1 << PAIR_BITS).fill(-1);
const pairVals = new Int32Array(1 << PAIR_BITS);

/** The token that adjacent tokens a and b merge into (= the merge's rank), or -1 if they do not. */
export function pairRank(a: number, b: number): number {
  const key = (a << 16) | b;
  let h = Math.imul(key, 0x9e3779b1) >>> (32 - PAIR_BITS);
  for (;;) {
    const k = pairKeys[h];
    if (k === key) return pairVals[h];
    if (k === -1) return -1;
    h = (h + 1) & PAIR_MASK;
  }
}

// Whole-token table: open addressing on a hash of the bytes, slot = token id or -1.
const WHOLE_BITS = 17;
const WHOLE_MASK = (1 << WHOLE_BITS) - 1;
const wholeSlots = new Int32Array(1 << WHOLE_BITS).fill(-1);

function hashBytes(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return Math.imul(h ^ (h >>> 15), 0x9e3779b1) >>> (32 - WHOLE_BITS);
}

/** The token whose bytes are exactly bytes[0, m), or -1. */
export function tokenOfByteSeq(bytes: Uint8Array, m: number): number {
  return tokenOfRange(bytes, 0, m);
}

function tokenOfRange(bytes: Uint8Array, start: number, end: number): number {
  const m = end - start;
  if (m > maxTokenBytes) return -1;
  let h = hashBytes(bytes, start, end);
  for (;;) {
    const id = wholeSlots[h];
    if (id < 0) return -1;
    const a = tokenOffsets[id];
    if (tokenOffsets[id + 1] - a === m) {
      let i = 0;
      while (i < m && tokenBytes[a + i] === bytes[start + i]) i++;
      if (i === m) return id;
    }
    h = (h + 1) & WHOLE_MASK;
  }
}

function insertPair(a: number, b: number, t: number): void {
  const key = (a << 16) | b;
  let h = Math.imul(key, 0x9e3779b1) >>> (32 - PAIR_BITS);
  while (pairKeys[h] !== -1 && pairKeys[h] !== key) h = (h + 1) & PAIR_MASK;
  pairKeys[h] = key;
  pairVals[h] = t;
}

function build(): void {
  // bpe_ranks: lines of "<tag> <first id> <base64 token> <base64 token> ...", ids consecutive.
  const texts: string[] = new Array(EOT);
  let total = 0;
  for (const line of gpt2.bpe_ranks.split("\n")) {
    if (!line) continue;
    const words = line.split(" ");
    const first = Number.parseInt(words[1], 10);
    for (let i = 2; i < words.length; i++) {
      const s = atob(words[i]);
      texts[first + i - 2] = s;
      total += s.length;
    }
  }
  for (let id = 0; id < EOT; id++) {
    if (texts[id] === undefined) throw new Error(`gpt2 ranks: token ${id} missing`);
  }
  tokenBytes = new Uint8Array(total + EOT_TEXT.length);
  let off = 0;
  byteToken.fill(-1);
  for (let id = 0; id < EOT; id++) {
    const s = texts[id];
    tokenOffsets[id] = off;
    for (let i = 0; i < s.length; i++) tokenBytes[off++] = s.charCodeAt(i);
    if (s.length === 1) byteToken[s.charCodeAt(0)] = id;
    if (s.length > maxTokenBytes) maxTokenBytes = s.length;
  }
  tokenOffsets[EOT] = off;
  for (let i = 0; i < EOT_TEXT.length; i++) tokenBytes[off++] = EOT_TEXT.charCodeAt(i);
  tokenOffsets[VOCAB_SIZE] = off;
  for (let id = 0; id < EOT; id++) {
    let h = hashBytes(tokenBytes, tokenOffsets[id], tokenOffsets[id + 1]);
    while (wholeSlots[h] >= 0) h = (h + 1) & WHOLE_MASK;
    wholeSlots[h] = id;
  }
  for (let b = 0; b < 256; b++) if (byteToken[b] < 0) throw new Error(`gpt2 ranks: byte ${b} has no token`);
  for (let t = 0; t < EOT; t++) {
    const start = tokenOffsets[t], end = tokenOffsets[t + 1];
    for (let k = start + 1; k < end; k++) {
      const a = tokenOfRange(tokenBytes, start, k);
      if (a < 0) continue;
      const b = tokenOfRange(tokenBytes, k, end);
      if (b >= 0) insertPair(a, b, t);
    }
  }
}

build();
