// Model specs and sizes of `lmpipe study --models/--sizes`: the grammar, the run folder each (spec, size)
// trains in, and the check of every combination against its family before any training starts.
//
//   LIST := ITEM ( "," ITEM )*          ITEM := NAME ( ":" KEY "=" VALUE )*
//
// For --models, NAME is a model family (gpt, pixel-attn, ...) and the pairs are its config fields, passed to
// `lmpipe train` as --set KEY=VALUE (any key the family knows, so new options need no change here):
// 'gpt,gpt:pos=rope,gpt:pos=rope:qkv=separate,pixel-attn'. For --sizes, NAME is a preset (tiny, small, ...)
// and the pairs change it for every model: 'tiny,small,tiny:nLayer=4'. A pair's value is JSON when it
// parses (4, true, [1,2]), else the text.
import { usageError } from "../../lib/errors.ts";
import { configFromFlags } from "../../lib/models/config.ts";
import { familyNames, getFamily } from "../../lib/models/registry.ts";

/** One item of a --models or --sizes list. */
export interface Spec {
  /** The item as written, trimmed (the label reports use). */
  text: string;
  /** Family (--models) or preset (--sizes). */
  name: string;
  /** KEY=VALUE pairs, in the order written. */
  sets: string[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const KEY = /^[A-Za-z_][A-Za-z0-9_.]*$/;

/** Parses a --models or --sizes list; `flag` names the flag in errors. */
export function parseSpecList(flag: string, list: string): Spec[] {
  const items = list.split(",").map((s) => s.trim());
  if (items.every((s) => s === "")) throw usageError(`lmpipe study: --${flag} is empty`);
  const specs = items.map((text, i) => {
    if (text === "") throw usageError(`lmpipe study: --${flag} has an empty item (position ${i + 1})`);
    const [name, ...pairs] = text.split(":").map((s) => s.trim());
    if (!NAME.test(name)) {
      const hint = name.includes("=")
        ? `; several keys on one model are joined with ':', e.g. '${items[i - 1] ?? "gpt:pos=rope"}:${text}'`
        : "";
      throw usageError(`lmpipe study: --${flag} item '${text}' does not start with a name${hint}`);
    }
    const sets = pairs.map((pair) => {
      const eq = pair.indexOf("=");
      const key = pair.slice(0, eq).trim(), value = pair.slice(eq + 1).trim();
      if (eq <= 0 || !KEY.test(key) || value === "") {
        throw usageError(
          `lmpipe study: --${flag} item '${text}': '${pair}' is not KEY=VALUE (e.g. ${name}:nLayer=4)`,
        );
      }
      return `${key}=${value}`;
    });
    const keys = sets.map((s) => s.slice(0, s.indexOf("=")));
    const twice = keys.find((k, j) => keys.indexOf(k) !== j);
    if (twice) throw usageError(`lmpipe study: --${flag} item '${text}' sets '${twice}' twice`);
    return { text: [name, ...sets].join(":"), name, sets };
  });
  const names = specs.map(specFolder);
  const dup = names.findIndex((n, j) => names.indexOf(n) !== j);
  if (dup >= 0) {
    throw usageError(
      `lmpipe study: --${flag} lists '${specs[dup].text}' twice (keys in any order are one spec)`,
    );
  }
  return specs;
}

/** A key or value as folder-name text: letters, digits, '.', '_' and '-' kept, anything else %XX (UTF-8). */
function folderText(s: string): string {
  return Array.from(new TextEncoder().encode(s), (b) => {
    const c = String.fromCharCode(b);
    return /[A-Za-z0-9._-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }).join("");
}

/**
 * The folder name of a spec: its name, then '+KEY=VALUE' per pair in key order ('gpt:qkv=separate:pos=rope'
 * -> 'gpt+pos=rope+qkv=separate'); safe on every file system, one folder per distinct spec.
 */
export function specFolder(spec: Spec): string {
  const pairs = [...spec.sets].sort().map((kv) => {
    const eq = kv.indexOf("=");
    return `+${folderText(kv.slice(0, eq))}=${folderText(kv.slice(eq + 1))}`;
  });
  return folderText(spec.name) + pairs.join("");
}

/** The run folder of a model at a size: the spec's folder, then '@' and the size's ('gpt+pos=rope@small'). */
export function runFolder(model: Spec, size: Spec | null): string {
  return size ? `${specFolder(model)}@${specFolder(size)}` : specFolder(model);
}

/**
 * The study-size preset: `study` for gpt (the study's control, bias=False) and the image models, gpt2 for
 * llama (which has no study preset); gpt2 given for an image model means its study preset.
 */
export function presetFor(model: string, preset: string): string {
  const gptLike = model === "gpt" || model === "llama";
  if (preset === "study" && model === "llama") return "gpt2";
  if (preset === "gpt2" && !gptLike) return "study";
  return preset;
}

/** The --set flags a run of `model` at `size` trains with: the size's pairs, then the model's. */
export function runSets(model: Spec, size: Spec): string[] {
  return [...size.sets, ...model.sets];
}

/**
 * Checks every model at every size against its family (known family, preset, keys and values), so a typo
 * fails before the first model trains instead of after an hour. Errors name the spec and the size.
 */
export async function checkSpecs(models: Spec[], sizes: Spec[]): Promise<void> {
  for (const m of models) {
    if (!familyNames().includes(m.name)) {
      throw usageError(
        `lmpipe study: unknown model '${m.name}' in '${m.text}'; choose from ${familyNames().join(", ")}`,
      );
    }
    for (const s of sizes) {
      try {
        await configFromFlags(
          getFamily(m.name),
          presetFor(m.name, s.name),
          undefined,
          runSets(m, s),
          "study",
        );
      } catch (err) {
        const why = (err as Error).message.replace(/^lmpipe study: /, "");
        throw usageError(`lmpipe study: model '${m.text}' at size '${s.text}': ${why}`);
      }
    }
  }
}
