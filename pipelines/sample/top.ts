// `lmpipe sample --top N`: instead of sampling, the N most likely next tokens after the prompt with
// their probabilities (softmax at temperature 1 over the tokenizer's vocabulary), one per line as
// `p:0.33, town`, so several models can be compared on the same prompt.

export interface TopToken {
  id: number;
  p: number;
}

/** The `n` most likely ids of one row of logits (ids below `allowedVocab` only), most likely first. */
export function topTokens(logits: Float32Array, n: number, allowedVocab: number): TopToken[] {
  const V = Math.min(logits.length, allowedVocab);
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[i] - max);
  const ids = Array.from({ length: V }, (_, i) => i);
  ids.sort((a, b) => logits[b] - logits[a] || a - b);
  return ids.slice(0, Math.min(n, V)).map((id) => ({ id, p: Math.exp(logits[id] - max) / sum }));
}

/** A probability for a line: two decimals, or two significant digits below 0.01. */
export function fmtProb(p: number): string {
  return p >= 0.01 ? p.toFixed(2) : p.toPrecision(2);
}

/** One line `p:0.33, town`: the token's text as is, with newlines and tabs shown as \n and \t. */
export function topLine(t: TopToken, text: string): string {
  return `p:${fmtProb(t.p)},${text.replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r")}`;
}
