// The step log of a resumed run. A run killed after its last checkpoint has logged steps that the
// resumed run replays; before appending, the log is cut back to the checkpoint's step (rewritten
// atomically), so every step appears in it once, as in a run that was never interrupted.
import { writeAtomic } from "./fs.ts";

/**
 * Keeps only the records of steps <= `step` in the JSON Lines step log at `path` (and drops a last
 * line cut short by a kill). Returns how many lines were dropped; a missing log is left missing.
 */
export async function truncateStepLog(path: string, step: number): Promise<number> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
  const lines = text.split("\n");
  const last = text.endsWith("\n") ? -1 : lines.length - 1; // no newline after it: cut short by a kill
  const kept: string[] = [];
  let dropped = 0;
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    let rec: { step?: unknown } | null = null;
    try {
      rec = JSON.parse(line);
    } catch { /* kept unless it is the cut-short last line */ }
    const past = rec !== null && typeof rec === "object" && typeof rec.step === "number" && rec.step > step;
    if (past || (rec === null && i === last)) dropped++;
    else kept.push(line);
  });
  if (dropped > 0) await writeAtomic(path, kept.map((l) => l + "\n").join(""));
  return dropped;
}
