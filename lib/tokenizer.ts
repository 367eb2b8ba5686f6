// GPT-2 BPE for lmpipe. The ranks come from js-tiktoken's bundled gpt2 table (nothing is downloaded);
// encoding follows encode_ordinary: a literal "<|endoftext|>" inside a document is ordinary text.
// (Initial version: delegates to js-tiktoken. To be replaced by the fast exact encoder.)
import { getEncoding } from "js-tiktoken";

export const EOT = 50256;
export const VOCAB_SIZE = 50257;
export const TOKENIZER_NAME = "gpt2";

const reference = getEncoding("gpt2");

/** Encodes one document to GPT-2 token ids, without special tokens. */
export function encodeOrdinary(text: string): Uint16Array {
  return Uint16Array.from(reference.encode(text, [], []));
}

/** Decodes ids to text (invalid UTF-8 across a cut becomes U+FFFD). */
export function decode(ids: ArrayLike<number>): string {
  return reference.decode(Array.from(ids));
}
