// A small streaming tar reader (and the writer the fixture generator uses). OpenWebText is a tar of
// xz files that are each a tar of .txt documents, so lmpipe reads tar from a stream, member by member,
// never seeking and never holding more than one member body chunk (or one small document) in memory.
// Handles ustar and old-style headers, GNU long names ('L') and pax extended headers ('x' path/size);
// skips directories, links and other special members; rejects what it cannot read, naming the member.
import { inputError } from "../errors.ts";
import { ByteReader } from "./byte_reader.ts";

const BLOCK = 512;
const dec = new TextDecoder();

export interface TarMember {
  /** Path inside the archive. */
  name: string;
  size: number;
  /** "file" for regular files; everything else is skipped by callers. */
  type: "file" | "dir" | "other";
  /** The whole body (for small members such as documents). Call at most once, or stream(). */
  bytes(): Promise<Uint8Array>;
  /** The body as a stream (for large members such as nested archives). */
  stream(): ReadableStream<Uint8Array>;
}

function cstr(b: Uint8Array, start: number, len: number): string {
  const s = b.subarray(start, start + len);
  const end = s.indexOf(0);
  return dec.decode(end === -1 ? s : s.subarray(0, end));
}

/**
 * Numeric header field: octal text, or GNU base-256 when the top bit of the first byte is set. NaN when
 * the field is not a number, negative, or larger than 2^53 (no real archive holds such a member).
 */
function numField(b: Uint8Array, start: number, len: number): number {
  if (b[start] & 0x80) {
    if (b[start] & 0x40) return NaN; // base-256 negative
    let v = b[start] & 0x3f;
    for (let i = 1; i < len; i++) v = v * 256 + b[start + i];
    return Number.isSafeInteger(v) ? v : NaN;
  }
  const s = cstr(b, start, len).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) return NaN;
  const v = parseInt(s, 8);
  return Number.isSafeInteger(v) ? v : NaN;
}

/** A header field as printable text for error messages (octal digits, or the base-256 bytes in hex). */
function rawField(b: Uint8Array, start: number, len: number): string {
  const f = b.subarray(start, start + len);
  if (f[0] & 0x80) return `base-256 0x${Array.from(f, (x) => x.toString(16).padStart(2, "0")).join("")}`;
  return JSON.stringify(cstr(b, start, len));
}

function checksumOk(h: Uint8Array): boolean {
  const stored = numField(h, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  return stored === sum;
}

/** Parses pax "len key=value\n" records; a string saying what is wrong when a record is malformed. */
function parsePax(body: Uint8Array): Record<string, string> | string {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < body.length) {
    if (body[off] === 0) break; // NUL padding after the last record
    const sp = body.indexOf(0x20, off);
    const lenText = dec.decode(body.subarray(off, sp === -1 ? body.length : sp));
    const len = Number(lenText);
    if (sp === -1 || !/^[0-9]+$/.test(lenText) || off + len > body.length || len <= sp - off + 1) {
      return `record length '${lenText.slice(0, 20)}' at byte ${off} of the pax header`;
    }
    const rec = body.subarray(sp + 1, off + len);
    if (rec[rec.length - 1] !== 10) {
      return `record at byte ${off} of the pax header does not end in a newline`;
    }
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) return `record at byte ${off} of the pax header has no key=value`;
    out[dec.decode(rec.subarray(0, eq))] = dec.decode(rec.subarray(eq + 1, rec.length - 1));
    off += len;
  }
  return out;
}

/**
 * Members of the tar archive in `stream`, in archive order. `what` names the archive in errors. A
 * member's body must be consumed (or ignored: the rest is skipped) before asking for the next member.
 */
export async function* readTar(stream: ReadableStream<Uint8Array>, what: string): AsyncGenerator<TarMember> {
  const r = new ByteReader(stream);
  let longName: string | null = null;
  let pax: Record<string, string> = {};
  let prevName = "(start of archive)";
  try {
    while (true) {
      const h = await r.exact(BLOCK);
      const at = r.position - h.length; // the header's offset, for messages
      if (h.length === 0) return; // end without the two zero blocks: tolerated (many writers omit them)
      if (h.length < BLOCK) throw inputError(`${what}: tar archive is truncated after member '${prevName}'`);
      if (h.every((x) => x === 0)) return; // end-of-archive marker
      if (!checksumOk(h)) {
        throw inputError(
          `${what}: corrupt tar header after member '${prevName}' (checksum mismatch at byte ${
            r.position - BLOCK
          }); ` +
            `the archive is damaged or not a tar file`,
        );
      }
      const typeflag = String.fromCharCode(h[156] || 48); // NUL = '0' (old regular file)
      const magic = cstr(h, 257, 6);
      let name = cstr(h, 0, 100);
      if (magic.startsWith("ustar")) {
        const prefix = cstr(h, 345, 155);
        if (prefix && magic === "ustar") name = `${prefix}/${name}`;
      }
      if (pax.path !== undefined) name = pax.path;
      if (longName !== null) name = longName;
      const bad = (field: string, value: string) =>
        inputError(
          `${what}: tar member '${name}' (after '${prevName}', header at byte ${at}): ` +
            `bad ${field} ${value}; the archive is damaged or not a tar file`,
        );
      let size = numField(h, 124, 12);
      if (!Number.isSafeInteger(size)) throw bad("size field", rawField(h, 124, 12));
      if (pax.size !== undefined) {
        // A decimal byte count; anything else (10.5, -5, 1e20) would desynchronise the reader.
        size = /^[0-9]{1,16}$/.test(pax.size) ? Number(pax.size) : NaN;
        if (!Number.isSafeInteger(size)) throw bad("pax size record", JSON.stringify(pax.size.slice(0, 40)));
      }
      if (name === "" && typeflag !== "x" && typeflag !== "g") throw bad("name field", "(empty)");
      const padded = Math.ceil(size / BLOCK) * BLOCK;

      // Meta members that describe the next one.
      if (typeflag === "L" || typeflag === "x" || typeflag === "g" || typeflag === "K") {
        if (size > 1 << 20) {
          throw inputError(
            `${what}: tar ${typeflag} header of ${size} bytes is implausible; archive corrupt`,
          );
        }
        const body = await r.exact(padded);
        if (body.length < padded) {
          throw inputError(`${what}: tar archive is truncated in a '${typeflag}' header`);
        }
        if (typeflag === "L") longName = cstr(body, 0, size);
        else if (typeflag === "x") {
          const parsed = parsePax(body.subarray(0, size));
          if (typeof parsed === "string") throw bad("pax header", parsed);
          pax = parsed;
        }
        continue; // 'g' (global pax) and 'K' (long link name) do not matter for reading files
      }
      longName = null;
      pax = {};
      prevName = name;

      const type = typeflag === "0" || typeflag === "7" ? "file" : typeflag === "5" ? "dir" : "other";
      const bodySize = type === "dir" ? 0 : size;
      let left = bodySize;
      let used = false;
      let inflight: Promise<void> | null = null;
      const truncated = () =>
        inputError(
          `${what}: tar archive is truncated inside member '${name}' (its header says ${bodySize} bytes)`,
        );
      const member: TarMember = {
        name,
        size: bodySize,
        type,
        bytes: async () => {
          if (used) throw new Error("tar member body already consumed");
          used = true;
          // Read piece by piece, so a header that claims more than the archive holds is reported as
          // truncated instead of allocating what it claims.
          const pieces: Uint8Array[] = [];
          while (left > 0) {
            const c = await r.chunk(Math.min(left, 1 << 20));
            if (c === null) throw truncated();
            pieces.push(c.slice());
            left -= c.length;
          }
          if (pieces.length === 1) return pieces[0];
          const b = new Uint8Array(bodySize);
          let o = 0;
          for (const p of pieces) b.set(p, o), o += p.length;
          return b;
        },
        stream: () => {
          if (used) throw new Error("tar member body already consumed");
          used = true;
          return new ReadableStream<Uint8Array>({
            pull: (c) => {
              if (left === 0) return c.close();
              inflight = (async () => {
                try {
                  const b = await r.chunk(Math.min(left, 1 << 16));
                  if (b === null) throw truncated();
                  left -= b.length;
                  c.enqueue(b.slice());
                } catch (err) {
                  try {
                    c.error(err);
                  } catch { /* the consumer cancelled the stream meanwhile */ }
                }
              })();
              return inflight;
            },
          }, { highWaterMark: 0 });
        },
      };
      yield member;
      // A read the consumer started (and then abandoned, e.g. by cancelling) finishes before skipping.
      if (inflight) await inflight;
      inflight = null;
      // Skip whatever the consumer left, plus the padding to the next block.
      const rest = left + (padded - bodySize);
      if ((await r.skip(rest)) < rest) {
        if (left > 0) throw truncated();
        // Missing padding at the very end is tolerated only if nothing follows.
      }
      left = 0;
    }
  } finally {
    await r.cancel();
  }
}

// ---- writing (used by scripts/make_fixtures.ts and tests) -------------------------------------------

function octal(b: Uint8Array, start: number, len: number, v: number): void {
  const s = v.toString(8).padStart(len - 1, "0");
  for (let i = 0; i < len - 1; i++) b[start + i] = s.charCodeAt(i);
  b[start + len - 1] = 0;
}

/** A ustar header for a regular file (names up to 100 bytes, fixed mtime for reproducible output). */
export function tarHeader(name: string, size: number, mtime = 0): Uint8Array {
  const h = new Uint8Array(BLOCK);
  const nb = new TextEncoder().encode(name);
  if (nb.length > 100) throw new RangeError(`tar name longer than 100 bytes: ${name}`);
  h.set(nb, 0);
  octal(h, 100, 8, 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, mtime);
  h[156] = 48; // '0' regular file
  h.set(new TextEncoder().encode("ustar\x0000"), 257);
  for (let i = 148; i < 156; i++) h[i] = 32;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i];
  octal(h, 148, 7, sum);
  h[155] = 32;
  return h;
}

/** A whole tar archive (in memory: for small fixture and test archives only). */
export function buildTar(files: { name: string; data: Uint8Array }[]): Uint8Array {
  let total = 2 * BLOCK;
  for (const f of files) total += BLOCK + Math.ceil(f.data.length / BLOCK) * BLOCK;
  const out = new Uint8Array(total);
  let off = 0;
  for (const f of files) {
    out.set(tarHeader(f.name, f.data.length), off);
    off += BLOCK;
    out.set(f.data, off);
    off += Math.ceil(f.data.length / BLOCK) * BLOCK;
  }
  return out;
}
