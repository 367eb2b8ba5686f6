// lib/rng.ts: the generator's state survives a JSON round trip (as in a checkpoint) and the restored
// generator continues the same sequence; every saved word is an unsigned 32-bit integer.
import assert from "node:assert/strict";
import { Rng } from "../lib/rng.ts";

Deno.test("state words stay unsigned 32-bit through many draws", () => {
  const rng = new Rng(1234);
  for (let i = 0; i < 10_000; i++) {
    rng.u32();
    for (const w of rng.state().s) {
      assert.ok(Number.isInteger(w) && w >= 0 && w <= 0xffffffff, `word ${w} at draw ${i}`);
    }
  }
});

Deno.test("a restored state continues the same sequence (JSON round trip, as in a checkpoint)", () => {
  const a = new Rng(7);
  for (let i = 0; i < 1000; i++) a.next();
  const b = new Rng(JSON.parse(JSON.stringify(a.state())));
  for (let i = 0; i < 1000; i++) assert.equal(b.int(50304), a.int(50304));
});

Deno.test("a signed word from an older checkpoint is the same 32 bits; garbage is refused", () => {
  const a = new Rng(99);
  for (let i = 0; i < 37; i++) a.u32();
  const signed = a.state().s.map((w) => w | 0) as [number, number, number, number];
  const b = new Rng({ s: signed });
  for (let i = 0; i < 100; i++) assert.equal(b.u32(), a.u32());
  assert.throws(
    () => new Rng({ s: [1, 2, 3] as unknown as [number, number, number, number] }),
    /invalid RNG state/,
  );
  assert.throws(() => new Rng({ s: [1, 2, 3, 2 ** 32] }), /invalid RNG state/);
  assert.throws(() => new Rng({ s: [1, 2, 3, 0.5] }), /invalid RNG state/);
});
