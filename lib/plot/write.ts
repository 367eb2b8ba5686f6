// Writes picture files atomically (a temporary file in the same folder, then a rename), so a reader
// never sees half a PNG or SVG, and turns file-system failures into output errors naming the path.
import { dirname } from "node:path";
import { outputError } from "../errors.ts";

export async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  if (path === "-") {
    await Deno.stdout.write(bytes).then(async (n) => {
      let off = n;
      while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
    });
    return;
  }
  const dir = dirname(path);
  const tmp = `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (err) {
    try {
      await Deno.remove(tmp);
    } catch { /* nothing to clean */ }
    throw outputError(
      `${path}: cannot write (${
        err instanceof Error ? err.message : err
      }); check the folder exists and is writable.`,
    );
  }
}
