// A small seeded random number generator whose whole state is four 32-bit words, so training can save
// it in a checkpoint and a resumed run draws exactly the numbers the uninterrupted run would have.
// Algorithm: sfc32 (Chris Doty-Humphrey's small fast counting generator), seeded by splitmix32.

export interface RngState {
  /** The four state words (unsigned 32-bit). */
  s: [number, number, number, number];
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number | RngState) {
    if (typeof seed === "number") {
      // splitmix32 spreads any integer seed (even 0) over the four words
      let x = (Math.floor(seed) >>> 0) ^ 0x9e3779b9;
      const next = () => {
        x = (x + 0x9e3779b9) >>> 0;
        let z = x;
        z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
        z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
        return (z ^ (z >>> 16)) >>> 0;
      };
      this.a = next(), this.b = next(), this.c = next(), this.d = next();
      for (let i = 0; i < 12; i++) this.u32(); // leave the seeding neighbourhood
    } else {
      const s = seed.s;
      // Words in [-2^31, 2^32) are accepted: checkpoints written before lmpipe 0.1.0's fix could hold a
      // signed word, which is the same 32 bits.
      if (
        !Array.isArray(s) || s.length !== 4 ||
        s.some((v) => !Number.isInteger(v) || v < -0x80000000 || v > 0xffffffff)
      ) {
        throw new RangeError(`invalid RNG state ${JSON.stringify(seed)}: expected {s: [4 uint32]}`);
      }
      [this.a, this.b, this.c, this.d] = s.map((v) => v >>> 0);
    }
  }

  /** Next unsigned 32-bit integer. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = (this.b ^ (this.b >>> 9)) >>> 0; // ^ gives a signed int32; keep every word unsigned
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.u32() >>> 5, lo = this.u32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), without modulo bias (n up to 2^53). */
  int(n: number): number {
    if (!(n >= 1) || !Number.isInteger(n)) {
      throw new RangeError(`Rng.int: n must be a positive integer, got ${n}`);
    }
    if (n <= 0x100000000) {
      const limit = 0x100000000 - (0x100000000 % n);
      for (;;) {
        const x = this.u32();
        if (x < limit) return x % n;
      }
    }
    return Math.floor(this.next() * n);
  }

  state(): RngState {
    return { s: [this.a, this.b, this.c, this.d] };
  }
}
