// Building hand-made tar archives in tests: block padding, joining parts, and the header checksum after
// a test edits a header field.

/** `b` padded with zeros to whole 512-byte blocks. */
export function pad(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(b.length / 512) * 512);
  out.set(b);
  return out;
}

/** The parts back to back. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
}

/** Recomputes a tar header's checksum field (after editing the header). */
export function fixChecksum(h: Uint8Array): void {
  for (let i = 148; i < 156; i++) h[i] = 32;
  let sum = 0;
  for (const b of h) sum += b;
  const s = sum.toString(8).padStart(6, "0");
  for (let i = 0; i < 6; i++) h[148 + i] = s.charCodeAt(i);
  h[154] = 0;
  h[155] = 32;
}
