// The input checks every model family makes, with the same messages: tokens are int32 [B, T] within the
// context, targets match them, and a decoding step gets one int32 token per sequence while the context
// has room. Errors name the model and the method (`gpt.loss: ...`); too many positions is a usage error.
import type { tf } from "../tensor/backend.ts";
import { usageError } from "../errors.ts";
import type { ModelConfig } from "./types.ts";

/** Throws unless `idx` is int32 [B, T] with T within the context of `config`. */
export function checkTokens(config: ModelConfig, idx: tf.Tensor, what: string): void {
  if (idx.rank !== 2 || idx.dtype !== "int32") {
    throw new Error(`${config.model}.${what}: expected int32 [B, T] tokens, got ${idx.dtype} [${idx.shape}]`);
  }
  if ((idx.shape[1] ?? 0) > config.contextLength) {
    throw usageError(
      `${config.model}.${what}: ${idx.shape[1]} positions exceed the context length ${config.contextLength}`,
    );
  }
}

/** checkTokens for `loss`, and targets int32 of idx's shape. */
export function checkLossInputs(config: ModelConfig, idx: tf.Tensor, targets: tf.Tensor): void {
  checkTokens(config, idx, "loss");
  if (targets.dtype !== "int32" || targets.shape.join() !== idx.shape.join()) {
    throw new Error(
      `${config.model}.loss: targets must be int32 [${idx.shape}], got ${targets.dtype} [${targets.shape}]`,
    );
  }
}

/** Throws unless `tokens` is int32 [batch] and a decode at position `length` still fits the context. */
export function checkDecodeStep(config: ModelConfig, batch: number, length: number, tokens: tf.Tensor): void {
  if (tokens.rank !== 1 || tokens.shape[0] !== batch || tokens.dtype !== "int32") {
    throw new Error(
      `${config.model}.decodeStep: expected int32 [${batch}] tokens, got ${tokens.dtype} [${tokens.shape}]`,
    );
  }
  if (length >= config.contextLength) {
    throw usageError(
      `${config.model}.decodeStep: the context (${config.contextLength} positions) is full; start a new decode with the last positions`,
    );
  }
}
