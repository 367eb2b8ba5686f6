// Worker side of lib/encode_pool.ts: receives a batch of documents, encodes each with GPT-2 BPE
// (encode_ordinary semantics) and sends back all tokens in one transferred buffer plus the boundaries.
/// <reference lib="deno.worker" />
import type { BatchResult } from "./encode_pool.ts";
import { encodeBatch } from "./tokenizer.ts";

self.onmessage = (e: MessageEvent<{ id: number; docs: string[] }>) => {
  const { id, docs } = e.data;
  let msg: BatchResult;
  try {
    const { tokens, offsets } = encodeBatch(docs);
    msg = { id, tokens, offsets };
    self.postMessage(msg, { transfer: [tokens.buffer as ArrayBuffer, offsets.buffer as ArrayBuffer] });
  } catch (err) {
    msg = { id, error: err instanceof Error ? err.stack ?? err.message : String(err) };
    self.postMessage(msg);
  }
};
