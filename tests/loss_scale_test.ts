// The dynamic loss scaler on its own: halve and skip on overflow, double after a window of clean steps,
// capped growth, disabled (fp32, bf16) behaviour, state round trip. The engine-level test (an injected
// overflow inside a training run) is in train_test.ts.
import assert from "node:assert/strict";
import { INIT_SCALE, LossScaler } from "../lib/loss_scale.ts";

Deno.test("loss scaler: starts at 65536, skips + halves on overflow, doubles after the window", () => {
  const s = new LossScaler({ enabled: true, window: 3 });
  assert.equal(s.scale, INIT_SCALE);
  assert.equal(s.update(true), false);
  assert.equal(s.update(false), true); // overflow: skip
  assert.equal(s.scale, 32768);
  assert.equal(s.cleanSteps, 0);
  assert.equal(s.update(true), false);
  assert.equal(s.update(true), false);
  assert.equal(s.scale, 32768);
  assert.equal(s.update(true), false); // third clean step in a row: grow
  assert.equal(s.scale, 65536);
  assert.equal(s.skippedSteps, 1);
  const restored = new LossScaler({ enabled: true, window: 3 });
  restored.load(s.state());
  assert.deepEqual(restored.state(), s.state());
});

Deno.test("loss scaler: growth is capped; repeated overflow collapses it", () => {
  const s = new LossScaler({ enabled: true, window: 1, maxScale: 2 ** 17 });
  for (let i = 0; i < 5; i++) s.update(true);
  assert.equal(s.scale, 2 ** 17);
  for (let i = 0; i < 60; i++) s.update(false);
  assert.ok(s.collapsed());
});

Deno.test("loss scaler disabled (fp32): scale 1, never skips", () => {
  const s = new LossScaler({ enabled: false });
  assert.equal(s.scale, 1);
  assert.equal(s.update(false), false);
  assert.equal(s.scale, 1);
  assert.ok(!s.collapsed());
});

Deno.test("loss scaler disabled (fp32, bf16) keeps scale 1 when it loads a mixed run's state", () => {
  const s = new LossScaler({ enabled: false });
  s.load({ scale: 65536, cleanSteps: 7, skippedSteps: 2 });
  assert.equal(s.scale, 1, "a resumed mixed run switched to fp32 or bf16 trains unscaled");
  assert.equal(s.skippedSteps, 2);
});
