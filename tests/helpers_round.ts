// Bit-level reference roundings of float32 values to IEEE binary16 and to bfloat16 (round to nearest, ties to
// even), written independently of lib/precision.ts's arithmetic tricks: the references of
// tests/precision_test.ts and of the hand-rounded float64 model pieces in tests/pixel_test.ts.

// --- Reference: float32 -> binary16 bits (round to nearest, ties to even) -> float ----------------
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfBits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0); // inf / NaN
  const e = exp - 127 + 15; // binary16 biased exponent
  if (e >= 31) return sign | 0x7c00; // overflow
  if (e <= 0) {
    // subnormal (or zero): value = man' * 2^-24 with man' = full mantissa >> (14 - e)
    if (e < -10) return sign; // below half the smallest subnormal: zero
    man |= 0x800000;
    const shift = 14 - e; // 14..24
    let h = man >>> shift;
    const rem = man & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h += 1;
    return sign | h; // h == 0x400 carries into the smallest normal correctly
  }
  let h = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h += 1; // may carry into the exponent / to inf
  return sign | h;
}

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** x rounded to the nearest binary16 value, as a number. */
export const refHalf = (x: number) => halfToFloat(halfBits(x));

// --- Reference: float32 -> bfloat16 (the top 16 bits, round to nearest, ties to even) -> float ----------
/** x rounded to the nearest bfloat16 value, as a number. */
export function refBf16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if (((b >>> 23) & 0xff) === 0xff) return f32[0]; // inf / NaN stay
  const low = b & 0xffff, hi = b >>> 16;
  const up = low > 0x8000 || (low === 0x8000 && (hi & 1)) ? 1 : 0;
  u32[0] = ((hi + up) << 16) >>> 0; // a carry may reach the exponent, up to inf
  return f32[0];
}
