// The train/validation decision for one document: a seeded 53-bit hash of its text compared with
// --val-fraction. It depends on nothing but the text and the seed, so worker count, input order and
// --part partitioning cannot change which split a document lands in (and duplicates stay together).

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A number in [0, 1) from the text's UTF-16 code units and the seed. */
export function docHash(text: string, seed: number): number {
  let a = fmix32(0x9e3779b9 ^ seed) ^ text.length;
  let b = fmix32(0x7f4a7c15 + seed) ^ Math.imul(text.length, 0x27d4eb2f);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995) + 0x6b43a9b5;
  }
  a = fmix32(a ^ (b >>> 7));
  b = fmix32(b ^ a);
  return ((b >>> 11) * 4294967296 + a) / 9007199254740992; // 21 + 32 = 53 bits
}

export function isVal(text: string, seed: number, valFraction: number): boolean {
  return valFraction > 0 && docHash(text, seed) < valFraction;
}
