// `lmpipe detokenize`: token shards or a token stream back to text on stdout. It streams: tokens are read
// in chunks and their bytes written as they come, so a UTF-8 character split across tokens (or chunks)
// is rejoined byte for byte, and memory does not depend on the shard size.
import { inputError } from "../../lib/errors.ts";
import { parseFlags, str } from "../../lib/flags.ts";
import { decodeU16, probeShard, readFull, readTokenStream } from "../../lib/shard.ts";
import { listDataset } from "../../lib/dataset.ts";
import { writeAll } from "../../lib/fs.ts";
import { decodeBytes, EOT, VOCAB_SIZE } from "../../lib/tokenizer.ts";

const CMD = "detokenize";

const HELP = `lmpipe detokenize PATH|- ... [options]

Writes the text behind GPT-2 token ids to stdout. PATH is a shard (llm.c or nanoGPT headerless), a
shard folder (its train shards, then its val shards, in name order), or - for a token stream on stdin
(llm.c shards back to back, as 'lmpipe tokenize --out -' writes, or raw uint16). The output is the
exact bytes of the tokens; only the end-of-text token ${EOT} is treated specially.

Options:
  --doc-sep SEP   what to write between documents, in place of each EOT: a literal with \\n \\t escapes,
                  or 'blank' for an empty line (\\n\\n). An EOT at the very end writes nothing.
                  (default: the text <|endoftext|>, at every EOT, as tiktoken's decode does)
  -h, --help      show this help

Example:
  lmpipe detokenize fixtures/shards/val_000000.bin --doc-sep '\\n----\\n' | head -20
`;

export async function run(
  argv: string[],
  env: { stdin?: ReadableStream<Uint8Array>; stdout?: (b: Uint8Array) => Promise<void> } = {},
): Promise<void> {
  const p = parseFlags(CMD, argv, { "doc-sep": { type: "string" } });
  if (p.help) {
    console.log(HELP);
    return;
  }
  const inputs = p.positionals.length ? p.positionals : ["-"];
  const sepRaw = str(p, "doc-sep");
  const sep = sepRaw === undefined ? null : new TextEncoder().encode(
    sepRaw === "blank"
      ? "\n\n"
      : sepRaw.replace(/\\([ntr\\])/g, (_, c) => ({ n: "\n", t: "\t", r: "\r", "\\": "\\" })[c as "n"]),
  );
  const out = env.stdout ?? ((b: Uint8Array) => writeAll(Deno.stdout, b));
  let pendingSep = false; // an EOT seen: write the separator once more tokens follow
  let position = 0;

  const emit = async (ids: Uint16Array, what: string) => {
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] >= VOCAB_SIZE) {
        throw inputError(
          `${what}: token id ${ids[i]} at token ${
            position + i
          } is outside the GPT-2 vocabulary; not GPT-2 tokens or corrupt`,
        );
      }
    }
    if (sep === null) {
      await out(decodeBytes(ids));
    } else {
      // Split at EOTs: text runs are decoded as they are, each EOT becomes a pending separator.
      let start = 0;
      for (let i = 0; i <= ids.length; i++) {
        if (i < ids.length && ids[i] !== EOT) continue;
        if (i > start) {
          if (pendingSep) await out(sep), pendingSep = false;
          await out(decodeBytes(ids.subarray(start, i)));
        }
        if (i < ids.length) {
          if (pendingSep) await out(sep); // an empty document between two EOTs
          pendingSep = true;
        }
        start = i + 1;
      }
    }
    position += ids.length;
  };

  for (const input of inputs) {
    if (input === "-") {
      for await (const ids of readTokenStream(env.stdin ?? Deno.stdin.readable, "stdin")) {
        await emit(ids, "stdin");
      }
      continue;
    }
    const st = await Deno.stat(input).catch(() => null);
    let files = [input];
    if (st?.isDirectory) {
      const ds = await listDataset([input]);
      files = [...ds.train, ...ds.val];
    }
    for (const f of files) {
      const info = await probeShard(f);
      const file = await Deno.open(f);
      try {
        const CH = 1 << 18;
        for (let off = 0; off < info.tokens; off += CH) {
          const n = Math.min(CH, info.tokens - off);
          const b = new Uint8Array(n * 2);
          await readFull(file, b, info.dataOffset + off * 2, f);
          await emit(decodeU16(b), f);
        }
      } finally {
        file.close();
      }
    }
  }
}
