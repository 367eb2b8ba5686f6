// GPT-2 BPE for lmpipe: the public tokenizer API. The ranks come from js-tiktoken's bundled gpt2 table
// (nothing is downloaded); encoding follows tiktoken's encode_ordinary: a literal "<|endoftext|>" inside a
// document is ordinary text. The encoder itself (lib/bpe.ts) is a fast exact reimplementation, tested
// id-for-id against js-tiktoken and tiktoken (tests/tokenizer_test.ts).
import { EOT, tokenBytes, tokenOffsets, VOCAB_SIZE } from "./bpe_tables.ts";
export { encodeBatch, encodeOrdinary } from "./bpe.ts";
export { EOT, VOCAB_SIZE };

export const TOKENIZER_NAME = "gpt2";

/** The bytes of a token sequence (EOT decodes to the text "<|endoftext|>"); throws on ids outside the vocabulary. */
export function decodeBytes(ids: ArrayLike<number>): Uint8Array {
  let total = 0;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!(id >= 0 && id < VOCAB_SIZE && Number.isInteger(id))) {
      throw new RangeError(
        `decode: token id ${id} at index ${i} is outside the GPT-2 vocabulary [0, ${VOCAB_SIZE})`,
      );
    }
    total += tokenOffsets[id + 1] - tokenOffsets[id];
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (let i = 0; i < ids.length; i++) {
    const a = tokenOffsets[ids[i]], b = tokenOffsets[ids[i] + 1];
    if (b - a === 1) out[o++] = tokenBytes[a];
    else {
      out.set(tokenBytes.subarray(a, b), o);
      o += b - a;
    }
  }
  return out;
}

const utf8Decoder = new TextDecoder("utf-8");

/** Decodes ids to text (bytes that are not valid UTF-8, e.g. a character cut in two, become U+FFFD). */
export function decode(ids: ArrayLike<number>): string {
  return utf8Decoder.decode(decodeBytes(ids));
}
