// What every pipeline (train, eval, sample, viz, ...) takes from its caller besides flags: the model
// families and the I/O streams. The CLI uses the defaults; tests pass their own (a small family, a
// captured stdout) to run a pipeline in-process.
import { usageError } from "./errors.ts";
import type { ModelFamily } from "./models/types.ts";

export type Families = Record<string, ModelFamily>;

/** Hooks for running a pipeline in-process (tests); the CLI uses the defaults. */
export interface PipelineEnv {
  /** Model families by name (default: lib/models/registry.ts). */
  families?: Families;
  /** Where data output goes (default: Deno.stdout). */
  stdout?: (bytes: Uint8Array) => Promise<void>;
  /** Where `-` reads from (default: Deno.stdin). */
  stdin?: ReadableStream<Uint8Array>;
  /** train: listen for SIGINT/SIGTERM (default true). */
  signals?: boolean;
}

/** The model families by name: the test's (env.families) or every family of lib/models/registry.ts. */
export async function loadFamilies(env: PipelineEnv): Promise<Families> {
  if (env.families) return env.families;
  const { FAMILIES } = await import("./models/registry.ts");
  return Object.fromEntries(FAMILIES.map((f) => [f.name, f]));
}

/** Writes all of `bytes` to the pipeline's stdout (env.stdout in tests). */
export function stdoutWriter(env: PipelineEnv): (bytes: Uint8Array) => Promise<void> {
  if (env.stdout) return env.stdout;
  return async (bytes) => {
    let off = 0;
    while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
  };
}

/** The family called `name`, or a usage error naming the command and the known families. */
export function familyOf(families: Families, name: string, cmd: string): ModelFamily {
  const f = families[name];
  if (!f) {
    throw usageError(
      `lmpipe ${cmd}: unknown model '${name}'; choose from ${Object.keys(families).join(", ")}`,
    );
  }
  return f;
}
