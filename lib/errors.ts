// Errors a user can act on. Every failure lmpipe reports on purpose is a LmpipeError: it carries
// the exit code that says what kind of failure it was, and a message naming the file, the place and the fix.

/** Exit codes, stable so that batch jobs and shell scripts can branch on them. */
export const EXIT = {
  ok: 0,
  internal: 1, // a bug or an unexpected failure: the message and stack are printed
  usage: 2, // bad flags or arguments
  input: 3, // unreadable, corrupt or empty input data
  output: 4, // output exists, is unwritable, or the disk is full
  training: 5, // training diverged (NaN/inf loss in fp32)
  memory: 6, // out of memory on the tensor backend: a smaller batch or model may fit
  interrupted: 130, // SIGINT/SIGTERM, after saving what could be saved
} as const;

export class LmpipeError extends Error {
  constructor(message: string, readonly exitCode: number = EXIT.internal) {
    super(message);
    this.name = "LmpipeError";
  }
}

export function usageError(message: string): LmpipeError {
  return new LmpipeError(message, EXIT.usage);
}

export function inputError(message: string): LmpipeError {
  return new LmpipeError(message, EXIT.input);
}

export function outputError(message: string): LmpipeError {
  return new LmpipeError(message, EXIT.output);
}

/** What to try when a model does not fit in the backend's memory. */
export const OUT_OF_MEMORY_HINT =
  "use a smaller --batch-size (with --grad-accum to keep the tokens per step), --batch-size auto, a smaller " +
  "model or context, or another --backend";

/**
 * A failed allocation that no lmpipe check caught first (a JS array buffer on the cpu backend, a GPU
 * buffer), as an error with the memory exit code; null when `err` is something else.
 */
export function asOutOfMemory(err: unknown): LmpipeError | null {
  if (!(err instanceof Error)) return null;
  if (
    err instanceof RangeError && /Array buffer allocation failed/.test(err.message) ||
    err.name === "GpuOutOfMemory"
  ) {
    return new LmpipeError(`out of memory (${err.message}): ${OUT_OF_MEMORY_HINT}`, EXIT.memory);
  }
  return null;
}
