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
