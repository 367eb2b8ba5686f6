// lmpipe's entry point: finds the subcommand, loads only its module (so `tokenize` never pays for
// TensorFlow.js start-up), runs it, and turns every failure into a message and a meaningful exit code.
import { asOutOfMemory, EXIT, LmpipeError } from "./lib/errors.ts";
import { clearProgress } from "./lib/log.ts";
import { VERSION } from "./lib/version.ts";

/** Every subcommand: its one-line summary and the module that implements it. */
const COMMANDS: Record<
  string,
  { summary: string; load: () => Promise<{ run(argv: string[]): Promise<void> }> }
> = {
  tokenize: {
    summary: "stream text (OpenWebText, JSONL, .txt, stdin) through GPT-2 BPE into token shards",
    load: () => import("./pipelines/tokenize/mod.ts"),
  },
  inspect: {
    summary: "check a token shard or shard folder and show what it holds",
    load: () => import("./pipelines/inspect/mod.ts"),
  },
  detokenize: {
    summary: "turn a token shard or stream back into text on stdout",
    load: () => import("./pipelines/detokenize/mod.ts"),
  },
  train: {
    summary: "train a model on token shards (resumable checkpoints, mixed precision, JSON step log)",
    load: () => import("./pipelines/train/mod.ts"),
  },
  eval: {
    summary: "validation loss, perplexity and bits per byte of a checkpoint (shards or stdin)",
    load: () => import("./pipelines/eval/mod.ts"),
  },
  sample: {
    summary: "generate text from a checkpoint, streamed to stdout",
    load: () => import("./pipelines/sample/mod.ts"),
  },
  plot: {
    summary: "draw loss curves of runs (SVG, PNG, or Unicode on the terminal)",
    load: () => import("./pipelines/plot/mod.ts"),
  },
  viz: {
    summary: "pictures of a model's insides: attention maps, image-model activations",
    load: () => import("./pipelines/viz/mod.ts"),
  },
  study: {
    summary: "train models or variants at equal time or tokens (and across sizes) and report them",
    load: () => import("./pipelines/study/mod.ts"),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `lmpipe ${VERSION}: train and study small language models from the shell

Usage: lmpipe <command> [options]

Commands:
${lines.join("\n")}

Options:
  -h, --help     show this help, or a command's help with 'lmpipe <command> --help'
  -V, --version  print the version

Exit codes: 0 ok, 1 internal error, 2 usage error, 3 bad input data, 4 output problem,
            5 training diverged, 6 out of memory, 130 interrupted.
Example:
  lmpipe tokenize fixtures/corpus --out data/fixture && lmpipe inspect data/fixture
`;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "-h" || cmd === "--help" || cmd === "help") {
    const target = cmd === "help" ? rest[0] : undefined;
    if (target && COMMANDS[target]) return main([target, "--help"]);
    console.log(usage());
    return cmd === undefined ? EXIT.usage : EXIT.ok;
  }
  if (cmd === "-V" || cmd === "--version") {
    console.log(`lmpipe ${VERSION}`);
    return EXIT.ok;
  }
  const entry = COMMANDS[cmd];
  if (!entry) {
    console.error(`lmpipe: unknown command '${cmd}'. Commands: ${Object.keys(COMMANDS).join(", ")}.`);
    console.error("See 'lmpipe --help'.");
    return EXIT.usage;
  }
  try {
    const mod = await entry.load();
    await mod.run(rest);
    return EXIT.ok;
  } catch (err) {
    clearProgress();
    if (err instanceof LmpipeError) {
      console.error(`error: ${err.message}`);
      return err.exitCode;
    }
    if (err instanceof Deno.errors.BrokenPipe) return EXIT.ok; // `lmpipe ... | head` is not a failure
    const oom = asOutOfMemory(err);
    if (oom) {
      console.error(`lmpipe ${cmd}: ${oom.message}`);
      return oom.exitCode;
    }
    console.error(`lmpipe ${cmd}: internal error (please report it):`);
    console.error(err instanceof Error ? err.stack ?? err.message : String(err));
    return EXIT.internal;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
