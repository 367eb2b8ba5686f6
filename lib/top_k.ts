// The top-k candidates of a row of logits for `lmpipe sample` without sorting the vocabulary: with the
// output head down to well under a millisecond a token (lib/models/gpt_decode.ts), three passes over 50,257
// logits on the host became a third of a token's time. One pass takes the maxima of blocks of 16 logits
// (or the wasm decoding step hands them over, computed by a SIMD kernel: kernels.wat block_max);
// the k-th largest block maximum bounds the k-th largest logit from below (k blocks each hold a value at
// least that large), so only the few blocks reaching it are searched for the exact k-th largest.

/** Logits per block of the first pass. */
export const TOP_K_BLOCK = 16;

/**
 * The largest of each block of TOP_K_BLOCK values of values[0 .. n-1] (the last block may be shorter),
 * NaN skipped (-Infinity for a block of NaN). lib/models/gpt_decode.ts computes the same on the wasm heap.
 */
export function blockMaxima(values: Float32Array, n: number): Float32Array {
  const blocks = Math.ceil(n / TOP_K_BLOCK);
  const maxima = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    let m = -Infinity;
    for (let i = b * TOP_K_BLOCK, end = Math.min(n, i + TOP_K_BLOCK); i < end; i++) {
      if (values[i] > m) m = values[i];
    }
    maxima[b] = m;
  }
  return maxima;
}

/**
 * The k-th largest of values[0 .. n-1] (ties counted, as the k-th from the top of a sorted copy), by a
 * k-sized min-heap: one pass where almost every value fails a single comparison with the heap's root,
 * instead of sorting all 50,257 logits per token (about 7 ms). NaN is skipped.
 */
export function kthLargest(values: Float32Array, n: number, k: number): number {
  const heap = new Float32Array(k);
  let size = 0;
  const siftDown = () => {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < size && heap[l] < heap[m]) m = l;
      if (r < size && heap[r] < heap[m]) m = r;
      if (m === i) return;
      const t = heap[i];
      heap[i] = heap[m], heap[m] = t, i = m;
    }
  };
  for (let j = 0; j < n; j++) {
    const v = values[j];
    if (size < k) {
      if (v !== v) continue; // NaN
      let i = size++; // sift up
      heap[i] = v;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p] <= heap[i]) break;
        const t = heap[p];
        heap[p] = heap[i], heap[i] = t, i = p;
      }
    } else if (v > heap[0]) {
      heap[0] = v;
      siftDown();
    }
  }
  return size < k ? -Infinity : heap[0];
}

/**
 * The maxima to search values[0 .. n-1] by: `maxima` when the caller has them (computed over n or more
 * values: a padded last block is redone over the values below n), else blockMaxima's.
 */
function maximaBelow(values: Float32Array, n: number, maxima?: Float32Array): Float32Array {
  const blocks = Math.ceil(n / TOP_K_BLOCK);
  if (!maxima) return blockMaxima(values, n);
  if (n % TOP_K_BLOCK === 0) return maxima;
  const own = maxima.slice(0, blocks);
  own[blocks - 1] = blockMaxima(values.subarray((blocks - 1) * TOP_K_BLOCK, n), n % TOP_K_BLOCK)[0];
  return own;
}

/**
 * The k-th largest of values[0 .. n-1] (ties counted, as kthLargest), 1 <= k <= n, searching only the
 * blocks that can hold it: the k-th largest block maximum is at most the k-th largest value (k blocks each
 * hold a value at least that large). `maxima`: the blockMaxima of exactly values[0 .. n-1].
 */
export function kthLargestByBlocks(values: Float32Array, n: number, k: number, maxima: Float32Array): number {
  const blocks = Math.ceil(n / TOP_K_BLOCK);
  // -Infinity with fewer than k blocks: then every value is searched
  const bound = k <= blocks ? kthLargest(maxima, blocks, k) : -Infinity;
  const near: number[] = [];
  for (let b = 0; b < blocks; b++) {
    if (!(maxima[b] >= bound)) continue;
    for (let i = b * TOP_K_BLOCK, end = Math.min(n, i + TOP_K_BLOCK); i < end; i++) {
      if (values[i] >= bound) near.push(values[i]);
    }
  }
  return kthLargest(Float32Array.from(near), near.length, k);
}

/**
 * The ids, ascending, of values[0 .. n-1] at or above `threshold` (NaN never), looking only into the
 * blocks whose maximum reaches it. `maxima`: the blockMaxima of exactly values[0 .. n-1].
 */
export function idsAtLeast(
  values: Float32Array,
  n: number,
  threshold: number,
  maxima: Float32Array,
): number[] {
  const ids: number[] = [];
  for (let b = 0, blocks = Math.ceil(n / TOP_K_BLOCK); b < blocks; b++) {
    if (!(maxima[b] >= threshold)) continue;
    for (let i = b * TOP_K_BLOCK, end = Math.min(n, i + TOP_K_BLOCK); i < end; i++) {
      if (values[i] >= threshold) ids.push(i);
    }
  }
  return ids;
}

/**
 * The ids, ascending, of the values of values[0 .. n-1] at or above the k-th largest (ties counted, as
 * kthLargest: so possibly more than k), 1 <= k <= n. NaN is never a candidate. `maxima`: the values'
 * blockMaxima when the caller has them already (computed over n or more values).
 *
 * @example
 * topKIds(Float32Array.from([3, 1, 4, 1, 5]), 5, 2); // [2, 4]
 */
export function topKIds(values: Float32Array, n: number, k: number, maxima?: Float32Array): number[] {
  const own = maximaBelow(values, n, maxima); // resolved once for both searches
  return idsAtLeast(values, n, kthLargestByBlocks(values, n, k, own), own);
}
