// Run folders and the safetensors format. A checkpoint is four files in the run folder:
//   model.safetensors      the weights by the model's parameter names (Hugging Face safetensors, F32)
//   optimizer.safetensors  AdamW moments `exp_avg.<param>` and `exp_avg_sq.<param>`
//   config.json            model config, tokenizer, training options
//   state.json             step, loss scale, RNG and sampler state, time and tokens: the commit marker
// Saving writes everything into `ckpt.tmp-<id>/` inside the run folder (state.json last), then removes the
// old state.json, renames the data files in and renames state.json last. A save killed while writing
// leaves the previous checkpoint intact; one killed during the renames is finished (rolled forward) by
// the next load, because the temp folder then holds a complete state.json. Every file carries the
// checkpoint id, so files of two different saves are never mixed silently.
import { join } from "node:path";
import { checkConfigJson, checkStateJson } from "./checkpoint_check.ts";
import { inputError, outputError } from "./errors.ts";
import { pathExists, writeAll, writeFailure } from "./fs.ts";
import { readData, tf } from "./tensor/backend.ts";

export const MODEL_FILE = "model.safetensors";
export const OPTIMIZER_FILE = "optimizer.safetensors";
export const CONFIG_FILE = "config.json";
export const STATE_FILE = "state.json";
const TMP_PREFIX = "ckpt.tmp-";

// ------------------------------------------------------------------------------------------------
// safetensors: 8-byte little-endian header length N, N bytes of JSON header (padded with spaces so the
// data starts 8-byte aligned), then the raw little-endian tensor bytes. The header maps each tensor
// name to {dtype, shape, data_offsets: [begin, end)} relative to the data start, plus "__metadata__"
// (string to string).

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, HostTensor>;
  metadata: Record<string, string>;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function buildHeader(
  entries: { name: string; shape: number[] }[],
  metadata: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const { name, shape } of entries) {
    if (name === "__metadata__") throw new Error("a tensor may not be named __metadata__");
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] } satisfies HeaderEntry;
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

function f32Bytes(a: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const out = new Uint8Array(a.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) v.setFloat32(4 * i, a[i], true);
  return out;
}

/** Encodes host tensors as one safetensors byte array (small files, tests). */
export function encodeSafetensors(
  tensors: Map<string, HostTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const entries = [...tensors].map(([name, t]) => ({ name, shape: t.shape }));
  const header = buildHeader(entries, metadata);
  let total = header.length;
  for (const t of tensors.values()) total += t.data.byteLength;
  const out = new Uint8Array(total);
  out.set(header);
  let off = header.length;
  for (const t of tensors.values()) {
    out.set(f32Bytes(t.data), off);
    off += t.data.byteLength;
  }
  return out;
}

/** Writes device tensors to a safetensors file, one tensor at a time (never two copies of the model). */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, tf.Tensor>,
  metadata: Record<string, string> = {},
): Promise<void> {
  const entries = [...tensors].map(([name, t]) => {
    if (t.dtype !== "float32") throw new Error(`${name}: only float32 tensors are saved, got ${t.dtype}`);
    return { name, shape: t.shape };
  });
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, buildHeader(entries, metadata));
    for (const t of tensors.values()) await writeAll(file, f32Bytes(await readData(t) as Float32Array));
    await file.sync();
  } finally {
    file.close();
  }
}

/** Parses safetensors bytes (F32 tensors only; `path` names the file in errors). */
export function decodeSafetensors(bytes: Uint8Array, path: string): SafetensorsFile {
  const bad = (why: string) =>
    inputError(`${path}: not a valid safetensors file (${why}); re-save the checkpoint.`);
  if (bytes.length < 8) throw bad("shorter than 8 bytes");
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (n > bytes.length - 8 || n > 100_000_000) throw bad(`header length ${n} exceeds the file`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  } catch {
    throw bad("header is not JSON");
  }
  const dataStart = 8 + n;
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  const tensors = new Map<string, HostTensor>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const e = raw as HeaderEntry;
    if (e.dtype !== "F32") throw bad(`tensor '${name}' has dtype ${e.dtype}; lmpipe reads F32`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    const [b, end] = e.data_offsets;
    if (end - b !== 4 * count || dataStart + end > bytes.length) {
      throw bad(`tensor '${name}' offsets out of range`);
    }
    const data = new Float32Array(count);
    const view = new DataView(bytes.buffer, bytes.byteOffset + dataStart + b, end - b);
    if (LITTLE_ENDIAN) data.set(new Float32Array(bytes.slice(dataStart + b, dataStart + end).buffer));
    else for (let i = 0; i < count; i++) data[i] = view.getFloat32(4 * i, true);
    tensors.set(name, { shape: e.shape, data });
  }
  return { tensors, metadata };
}

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw inputError(`${path}: cannot read (${(err as Error).message})`);
  }
  return decodeSafetensors(bytes, path);
}

// ------------------------------------------------------------------------------------------------
// Run folder checkpoints.

/** Everything that makes a run resumable besides the tensors (state.json). */
export interface TrainState {
  /** Optimiser steps taken (including skipped ones). */
  step: number;
  /** AdamW updates applied (skipped steps excluded). */
  optimizerStep: number;
  lossScale: { scale: number; cleanSteps: number; skippedSteps: number };
  rng: { s: [number, number, number, number] };
  sampler: unknown;
  elapsedS: number;
  tokensSeen: number;
  lastLoss?: number;
  /** The schedule's resolved shape (kept on resume). */
  schedule?: { warmup: number; decaySteps: number };
}

export interface StateFile extends TrainState {
  format: "lmpipe-checkpoint";
  version: 1;
  /** Random id shared by all files of this save. */
  id: string;
  savedAt: string;
}

export interface SaveInput {
  params: Map<string, tf.Tensor>;
  optimizer?: Map<string, tf.Tensor>;
  config: Record<string, unknown>;
  state: TrainState;
}

export interface LoadedCheckpoint {
  dir: string;
  config: Record<string, unknown>;
  state: StateFile | null;
  weights: Map<string, HostTensor>;
  optimizer: Map<string, HostTensor> | null;
}

/** Test hook: throws after the named stage of a save to simulate a crash there. */
export type CrashPoint = "tmp-written" | "marker-removed" | "model-renamed";

async function writeTextSynced(path: string, text: string): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeAll(f, new TextEncoder().encode(text));
    await f.sync();
  } finally {
    f.close();
  }
}

/** Saves a checkpoint into run folder `dir` atomically (see the top of this file). */
export async function saveCheckpoint(
  dir: string,
  input: SaveInput,
  crashAt?: CrashPoint,
): Promise<StateFile> {
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  const tmp = join(dir, TMP_PREFIX + id);
  try {
    await Deno.mkdir(tmp, { recursive: true });
  } catch (err) {
    throw outputError(
      `${dir}: cannot write a checkpoint (${(err as Error).message}); choose a writable --out.`,
    );
  }
  let markerRemoved = false;
  try {
    return await writeAndCommit(dir, tmp, id, input, crashAt, () => markerRemoved = true);
  } catch (err) {
    if (crashAt || markerRemoved) throw err; // simulated crashes; a commit the next load rolls forward
    // Nothing of this save reached the run folder: drop the temp folder and say what is intact.
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    const prev = await Deno.readTextFile(join(dir, STATE_FILE)).then((t) => JSON.parse(t).step).catch(() =>
      null
    );
    throw writeFailure(
      tmp,
      err,
      `The checkpoint of step ${input.state.step} was not saved; ` +
        (typeof prev === "number"
          ? `the last complete one (step ${prev}) in ${dir} is kept and resumes with --resume.`
          : `${dir} holds no earlier checkpoint.`),
    );
  }
}

async function writeAndCommit(
  dir: string,
  tmp: string,
  id: string,
  input: SaveInput,
  crashAt: CrashPoint | undefined,
  onMarkerRemoved: () => void,
): Promise<StateFile> {
  const meta = { format: "pt", lmpipe_checkpoint_id: id, step: String(input.state.step) };
  await writeSafetensors(join(tmp, MODEL_FILE), input.params, meta);
  if (input.optimizer) await writeSafetensors(join(tmp, OPTIMIZER_FILE), input.optimizer, meta);
  await writeTextSynced(
    join(tmp, CONFIG_FILE),
    JSON.stringify({ ...input.config, checkpoint_id: id }, null, 2) + "\n",
  );
  const state: StateFile = {
    format: "lmpipe-checkpoint",
    version: 1,
    id,
    savedAt: new Date().toISOString(),
    ...input.state,
  };
  await writeTextSynced(join(tmp, STATE_FILE), JSON.stringify(state, null, 2) + "\n");
  if (crashAt === "tmp-written") throw new Error("simulated crash: temp checkpoint written");
  onMarkerRemoved();
  await Deno.remove(join(dir, STATE_FILE)).catch(() => {});
  if (crashAt === "marker-removed") throw new Error("simulated crash: marker removed");
  await commitTmp(dir, tmp, crashAt);
  await removeStaleTmps(dir);
  return state;
}

/** Moves a complete temp checkpoint's files into `dir`, state.json last, and removes the temp folder. */
async function commitTmp(dir: string, tmp: string, crashAt?: CrashPoint): Promise<void> {
  for (const name of [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE]) {
    if (await pathExists(join(tmp, name))) await Deno.rename(join(tmp, name), join(dir, name));
    if (name === MODEL_FILE && crashAt === "model-renamed") throw new Error("simulated crash: model renamed");
  }
  await Deno.rename(join(tmp, STATE_FILE), join(dir, STATE_FILE));
  await Deno.remove(tmp, { recursive: true });
}

/**
 * Removes leftover temp folders of saves that died while writing (only by the process that owns the
 * run folder: another one's save may be in progress).
 */
export async function removeStaleTmps(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory && e.name.startsWith(TMP_PREFIX)) {
      await Deno.remove(join(dir, e.name), { recursive: true }).catch(() => {});
    }
  }
}

/**
 * Finishes a save that was interrupted during its renames: when `dir` has no state.json but a temp
 * folder holds a complete one, its remaining files are moved in. Returns whether anything was done.
 */
export async function recoverCheckpoint(dir: string): Promise<boolean> {
  if (await pathExists(join(dir, STATE_FILE))) return false;
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return false;
  }
  for (const e of entries) {
    if (!e.isDirectory || !e.name.startsWith(TMP_PREFIX)) continue;
    const tmp = join(dir, e.name);
    if (!(await pathExists(join(tmp, STATE_FILE)))) continue;
    await commitTmp(dir, tmp);
    return true;
  }
  return false;
}

/** Whether `dir` holds a training checkpoint (state.json, possibly after finishing an interrupted save). */
export async function hasCheckpoint(dir: string): Promise<boolean> {
  await recoverCheckpoint(dir).catch(() => false);
  return await pathExists(join(dir, STATE_FILE));
}

/** Loads a checkpoint. `optimizer: true` also loads the moments (resume); eval/sample skip them. */
export async function loadCheckpoint(
  dir: string,
  opts: { optimizer?: boolean } = {},
): Promise<LoadedCheckpoint> {
  await recoverCheckpoint(dir).catch(() => false);
  const modelPath = join(dir, MODEL_FILE),
    configPath = join(dir, CONFIG_FILE),
    statePath = join(dir, STATE_FILE);
  if (!(await pathExists(modelPath)) || !(await pathExists(configPath))) {
    throw inputError(
      `${dir}: not a checkpoint folder (needs ${MODEL_FILE} and ${CONFIG_FILE}). Give the --out folder of 'lmpipe train'.`,
    );
  }
  let config: unknown;
  try {
    config = JSON.parse(await Deno.readTextFile(configPath));
  } catch (err) {
    throw inputError(`${configPath}: not valid JSON (${(err as Error).message})`);
  }
  checkConfigJson(config, configPath);
  let state: StateFile | null = null;
  if (await pathExists(statePath)) {
    let raw: unknown;
    try {
      raw = JSON.parse(await Deno.readTextFile(statePath));
    } catch (err) {
      throw inputError(`${statePath}: not valid JSON (${(err as Error).message})`);
    }
    checkStateJson(raw, statePath);
    state = raw as unknown as StateFile;
  }
  const model = await readSafetensors(modelPath);
  const check = (what: string, fileId: unknown) => {
    if (state && fileId !== undefined && fileId !== state.id) {
      throw inputError(
        `${dir}: ${what} belongs to checkpoint ${fileId} but state.json to ${state.id}: the folder mixes two saves. ` +
          `Restore the folder from a backup or retrain.`,
      );
    }
  };
  check(MODEL_FILE, model.metadata.lmpipe_checkpoint_id);
  check(CONFIG_FILE, config.checkpoint_id);
  let optimizer: Map<string, HostTensor> | null = null;
  if (opts.optimizer) {
    if (!state) {
      throw inputError(`${dir}: has no ${STATE_FILE}, so the run cannot be resumed (weights only).`);
    }
    const opt = await readSafetensors(join(dir, OPTIMIZER_FILE));
    check(OPTIMIZER_FILE, opt.metadata.lmpipe_checkpoint_id);
    optimizer = opt.tensors;
  }
  return { dir, config, state, weights: model.tensors, optimizer };
}
