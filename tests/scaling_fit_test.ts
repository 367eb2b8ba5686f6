// The compute scaling-law fit behind `study --sizes` (lib/scaling_fit.ts): it recovers known a, b, c from
// exact synthetic points, stays within its own error bars on noisy ones, and refuses inputs no law fits.
import assert from "node:assert/strict";
import { fitScalingLaw, predictLoss, predictLossStderr, type ScalingPoint } from "../lib/scaling_fit.ts";

const TRUE = { a: 40, b: 0.11, c: 1.8 };
const computes = [1e13, 4e13, 1.6e14, 6.4e14, 2.56e15, 1e16, 4e16, 1.6e17];

Deno.test("scaling fit: exact points give back a, b and c", () => {
  const fit = fitScalingLaw(computes.map((compute) => ({ compute, loss: predictLoss(TRUE, compute) })));
  assert.ok(Math.abs(fit.a / TRUE.a - 1) < 1e-5, `a ${fit.a}`);
  assert.ok(Math.abs(fit.b - TRUE.b) < 1e-7, `b ${fit.b}`);
  assert.ok(Math.abs(fit.c - TRUE.c) < 1e-6, `c ${fit.c}`);
  assert.ok(fit.rmsLogResidual < 1e-9);
  assert.equal(fit.points, computes.length);
});

Deno.test("scaling fit: noisy points land within a few standard errors and predict the next size", () => {
  // deterministic +-1% multiplicative noise
  const noise = [0.008, -0.011, 0.004, 0.009, -0.006, -0.01, 0.012, -0.003];
  const pts: ScalingPoint[] = computes.map((compute, i) => ({
    compute,
    loss: predictLoss(TRUE, compute) * (1 + noise[i]),
  }));
  const fit = fitScalingLaw(pts);
  assert.ok(fit.stderr, "standard errors with more than 3 points");
  for (const k of ["b", "c"] as const) {
    const z = Math.abs(fit[k] - TRUE[k]) / fit.stderr[k];
    assert.ok(z < 4, `${k}: ${fit[k]} +- ${fit.stderr[k]} vs ${TRUE[k]}`);
  }
  assert.ok(fit.rmsLogResidual > 0.003 && fit.rmsLogResidual < 0.02, `rms ${fit.rmsLogResidual}`);
  const next = 6.4e17;
  assert.ok(Math.abs(predictLoss(fit, next) / predictLoss(TRUE, next) - 1) < 0.03);
});

Deno.test("scaling fit: three points fit exactly and have no error bars", () => {
  const fit = fitScalingLaw(
    [1e14, 1e15, 1e16].map((compute) => ({ compute, loss: predictLoss(TRUE, compute) })),
  );
  assert.equal(fit.stderr, null);
  assert.ok(Math.abs(fit.c - TRUE.c) < 1e-4, `c ${fit.c}`);
});

Deno.test("scaling fit: inputs no law fits are clear errors", () => {
  assert.throws(
    () => fitScalingLaw([{ compute: 1, loss: 3 }, { compute: 2, loss: 2 }]),
    /needs points at 3 or more compute values \(got 2\)/,
  );
  assert.throws(
    () => fitScalingLaw([{ compute: 1, loss: 3 }, { compute: 1, loss: 2 }, { compute: 2, loss: 1 }]),
    /got 2/,
  );
  assert.throws(
    () => fitScalingLaw([{ compute: 1, loss: 3 }, { compute: 0, loss: 2 }, { compute: 3, loss: 1 }]),
    /point 1 has compute 0/,
  );
  assert.throws(
    () => fitScalingLaw([{ compute: 1, loss: 2 }, { compute: 2, loss: 3 }, { compute: 3, loss: 4 }]),
    /do not fall with compute/,
  );
});

Deno.test("scaling fit: the predicted loss's standard error (delta method over the covariance)", () => {
  // a hand-made fit: g = [a C^-b, -a C^-b ln C, 1] = [0.2, -0.2 ln 100, 1] at C = 100
  const fit = {
    a: 2,
    b: 0.5,
    c: 1,
    stderr: { a: 0.2, b: 0.02, c: 0.05 },
    covariance: [[0.01, 0.001, 0], [0.001, 0.0004, 0], [0, 0, 0.0025]],
    rmsLogResidual: 0.01,
    points: 5,
  };
  const g = [0.2, -0.2 * Math.log(100), 1];
  const want = Math.sqrt(
    g[0] * g[0] * 0.01 + 2 * g[0] * g[1] * 0.001 + g[1] * g[1] * 0.0004 + g[2] * g[2] * 0.0025,
  );
  assert.ok(Math.abs(predictLossStderr(fit, 100)! - want) < 1e-15);
  assert.equal(predictLossStderr({ ...fit, covariance: null }, 100), null);

  // on noisy points: the band holds the true law at the measured computes, and far out only c is left
  const noise = [0.008, -0.011, 0.004, 0.009, -0.006, -0.01, 0.012, -0.003];
  const real = fitScalingLaw(computes.map((compute, i) => ({
    compute,
    loss: predictLoss(TRUE, compute) * (1 + noise[i]),
  })));
  assert.ok(real.covariance);
  for (const c of computes) {
    const se = predictLossStderr(real, c)!;
    assert.ok(se > 0 && Math.abs(predictLoss(real, c) - predictLoss(TRUE, c)) < 3 * se, `C ${c}`);
  }
  assert.ok(Math.abs(predictLossStderr(real, 1e60)! / real.stderr!.c - 1) < 1e-3);
  assert.ok(Math.abs(Math.sqrt(real.covariance[1][1]) / real.stderr!.b - 1) < 1e-12);
});

Deno.test("scaling fit: the loss floor c stays at or above 0 where the points would pull it below", () => {
  // a pure power law bent the other way (losses falling faster than any a C^-b at large C) wants c < 0
  const pts = [1e9, 2e9, 4e9, 8e9].map((compute, i) => ({ compute, loss: [10.72, 10.63, 10.34, 10.01][i] }));
  const fit = fitScalingLaw(pts);
  assert.ok(fit.c >= 0 && fit.c < 10.01, `c ${fit.c}`);
  assert.ok(fit.a > 0 && fit.b > 0);
  for (const p of pts) assert.ok(Math.abs(predictLoss(fit, p.compute) / p.loss - 1) < 0.02);
});
