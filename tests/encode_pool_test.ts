// EncodePool: the same tokens in the same order for any worker count, empty documents, streaming with
// bounded in-flight text, and clean shutdown (Deno's sanitizers fail a test that leaks a worker).
import assert from "node:assert/strict";
import { EncodePool } from "../lib/encode_pool.ts";
import { encodeOrdinary } from "../lib/tokenizer.ts";

/** Varied documents, some empty, some long, deterministic. */
function makeDocs(count: number): string[] {
  const words = [
    "the",
    "Über",
    "naïve",
    "数据",
    "🙂",
    "'s",
    "can't",
    "  ",
    "\n",
    "42",
    "=====",
    "<|endoftext|>",
  ];
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const docs: string[] = [];
  for (let d = 0; d < count; d++) {
    const len = d % 7 === 0 ? 0 : Math.floor(rand() * (d % 11 === 0 ? 3000 : 60));
    const parts: string[] = [];
    for (let w = 0; w < len; w++) parts.push(words[Math.floor(rand() * words.length)]);
    docs.push(parts.join(rand() < 0.5 ? " " : ""));
  }
  return docs;
}

const docs = makeDocs(300);
const expected = docs.map((d) => Array.from(encodeOrdinary(d)));

function same(got: Uint16Array[], what: string): void {
  assert.equal(got.length, expected.length, `${what}: document count`);
  for (let i = 0; i < got.length; i++) assert.deepEqual(Array.from(got[i]), expected[i], `${what}: doc ${i}`);
}

for (const workers of [0, 1, 2, 3]) {
  Deno.test(`encode: ${workers} workers give the single-thread tokens in input order`, async () => {
    const pool = EncodePool.create(workers);
    try {
      same(await pool.encode(docs, 2000), `encode, ${workers} workers`); // small batches: many messages
      same(await pool.encode(docs), `encode one batch, ${workers} workers`);
    } finally {
      pool.close();
    }
  });
}

Deno.test("encode: empty input and empty documents", async () => {
  const pool = EncodePool.create(2);
  try {
    assert.deepEqual(await pool.encode([]), []);
    const got = await pool.encode(["", "", "a"]);
    assert.deepEqual(got.map((a) => Array.from(a)), [[], [], [64]]);
  } finally {
    pool.close();
  }
});

Deno.test("encode: concurrent calls each get their own documents", async () => {
  const pool = EncodePool.create(2);
  try {
    const half = docs.length >> 1;
    const [a, b] = await Promise.all([
      pool.encode(docs.slice(0, half), 500),
      pool.encode(docs.slice(half), 700),
    ]);
    same([...a, ...b], "two concurrent encodes");
  } finally {
    pool.close();
  }
});

Deno.test("encodeOrdered: streams in source order with bounded in-flight text", async () => {
  for (const workers of [0, 2]) {
    const pool = EncodePool.create(workers);
    let pulled = 0, yielded = 0, maxAhead = 0;
    const source = async function* () {
      for (const d of docs) {
        pulled++;
        maxAhead = Math.max(maxAhead, pulled - yielded);
        yield d;
      }
    };
    try {
      const got: Uint16Array[] = [];
      for await (const ids of pool.encodeOrdered(source(), { batchChars: 1000, maxInFlightChars: 4000 })) {
        got.push(ids);
        yielded++;
      }
      same(got, `encodeOrdered, ${workers} workers`);
      // In flight <= 4000 chars plus one batch; docs average ~100 chars here, so far fewer than all 300.
      assert.ok(maxAhead < 150, `pulled ${maxAhead} documents ahead of the consumer`);
    } finally {
      pool.close();
    }
  }
});

Deno.test("close: pending encodes reject, a closed pool refuses work", async () => {
  const pool = EncodePool.create(1);
  const pending = pool.encode(docs);
  pool.close();
  await assert.rejects(pending, /closed/);
  assert.throws(() => pool.encode(["x"]), /closed/);
  pool.close(); // twice is fine
});

Deno.test("create: rejects a bad worker count", () => {
  assert.throws(() => EncodePool.create(-1), RangeError);
  assert.throws(() => EncodePool.create(1.5), RangeError);
});
