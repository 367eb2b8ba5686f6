// Fits a compute scaling law L(C) = a * C^-b + c to (compute, loss) points of one model family, so that
// `study --sizes` can say whether a variant's advantage grows or shrinks with compute. The fit minimises
// squared residuals in log space, r = log L - log(a C^-b + c): losses of different sizes then weigh alike,
// whatever their magnitude. For each trial c the model is a straight line in log-log space, so a profile
// over c (closed-form a, b for each c) finds the basin, and Levenberg-Marquardt over (log a, b, c) polishes
// it; the standard errors come from the Gauss-Newton covariance s^2 (J^T J)^-1 with s^2 = RSS / (n - 3).

/** One point of a family: compute spent (FLOPs, or any positive measure) and the loss reached. */
export interface ScalingPoint {
  compute: number;
  loss: number;
}

/** The fitted law and how well it is determined. */
export interface ScalingFit {
  a: number;
  b: number;
  c: number;
  /** Standard errors of a, b, c; null when there are only 3 points (an exact fit has no residual). */
  stderr: { a: number; b: number; c: number } | null;
  /**
   * Covariance of the fitted (log a, b, c), s^2 (J^T J)^-1 (null with the standard errors): what the
   * uncertainty of a predicted loss needs, since the three estimates are strongly correlated.
   */
  covariance: number[][] | null;
  /** Root mean square of the log-space residuals. */
  rmsLogResidual: number;
  points: number;
}

/** L(C) under a fitted law. */
export function predictLoss(fit: Pick<ScalingFit, "a" | "b" | "c">, compute: number): number {
  return fit.a * Math.pow(compute, -fit.b) + fit.c;
}

/**
 * Standard error of the fitted law's loss at `compute` (delta method: g^T Cov g with g the gradient of
 * a C^-b + c in (log a, b, c)); null when the fit has no covariance (3 points).
 */
export function predictLossStderr(fit: ScalingFit, compute: number): number | null {
  if (!fit.covariance) return null;
  const power = fit.a * Math.pow(compute, -fit.b);
  const g = [power, -power * Math.log(compute), 1];
  let v = 0;
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) v += g[i] * fit.covariance[i][j] * g[j];
  return Math.sqrt(Math.max(0, v));
}

/** Least-squares line y = p + q x; returns p, q and the residual sum of squares. */
function line(x: number[], y: number[]): { p: number; q: number; rss: number } {
  const n = x.length;
  const mx = x.reduce((s, v) => s + v, 0) / n, my = y.reduce((s, v) => s + v, 0) / n;
  let sxx = 0, sxy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (x[i] - mx) ** 2;
    sxy += (x[i] - mx) * (y[i] - my);
  }
  const q = sxx > 0 ? sxy / sxx : 0, p = my - q * mx;
  let rss = 0;
  for (let i = 0; i < n; i++) rss += (y[i] - p - q * x[i]) ** 2;
  return { p, q, rss };
}

/** Log-space residuals of (log a, b, c) and their Jacobian rows. */
function residuals(theta: number[], lx: number[], ly: number[]): { r: number[]; J: number[][] } | null {
  const [alpha, b, c] = theta;
  const r: number[] = [], J: number[][] = [];
  for (let i = 0; i < lx.length; i++) {
    const power = Math.exp(alpha - b * lx[i]); // a C^-b
    const f = power + c;
    if (!(f > 0) || !Number.isFinite(f)) return null;
    r.push(ly[i] - Math.log(f));
    J.push([-power / f, (power * lx[i]) / f, -1 / f]);
  }
  return { r, J };
}

/** Solves the 3x3 system A x = y by Gaussian elimination with partial pivoting; null if singular. */
function solve3(A: number[][], y: number[]): number[] | null {
  const m = A.map((row, i) => [...row, y[i]]);
  for (let k = 0; k < 3; k++) {
    let piv = k;
    for (let i = k + 1; i < 3; i++) if (Math.abs(m[i][k]) > Math.abs(m[piv][k])) piv = i;
    if (!(Math.abs(m[piv][k]) > 1e-300)) return null;
    [m[k], m[piv]] = [m[piv], m[k]];
    for (let i = k + 1; i < 3; i++) {
      const f = m[i][k] / m[k][k];
      for (let j = k; j < 4; j++) m[i][j] -= f * m[k][j];
    }
  }
  const x = [0, 0, 0];
  for (let k = 2; k >= 0; k--) {
    let s = m[k][3];
    for (let j = k + 1; j < 3; j++) s -= m[k][j] * x[j];
    x[k] = s / m[k][k];
  }
  return x;
}

function normalEquations(J: number[][], r: number[], damping: number): { A: number[][]; g: number[] } {
  const A = [[0, 0, 0], [0, 0, 0], [0, 0, 0]], g = [0, 0, 0];
  for (let i = 0; i < r.length; i++) {
    for (let p = 0; p < 3; p++) {
      g[p] -= J[i][p] * r[i];
      for (let q = 0; q < 3; q++) A[p][q] += J[i][p] * J[i][q];
    }
  }
  for (let p = 0; p < 3; p++) A[p][p] *= 1 + damping;
  return { A, g };
}

const sumSquares = (r: number[]) => r.reduce((s, v) => s + v * v, 0);

/**
 * Fits L(C) = a C^-b + c (a > 0, 0 <= c < min L: a loss floor is never negative) to at least 3 points with
 * distinct compute. Points far from the floor may put c at 0; its standard error then says how loosely
 * the data hold it.
 *
 * @example
 * const fit = fitScalingLaw([{ compute: 1e15, loss: 4.1 }, { compute: 1e16, loss: 3.6 }, { compute: 1e17, loss: 3.3 }]);
 * predictLoss(fit, 1e18); // the extrapolated loss
 */
export function fitScalingLaw(points: ScalingPoint[]): ScalingFit {
  for (const [i, p] of points.entries()) {
    if (!(p.compute > 0) || !Number.isFinite(p.compute) || !(p.loss > 0) || !Number.isFinite(p.loss)) {
      throw new RangeError(
        `scaling fit: point ${i} has compute ${p.compute} and loss ${p.loss}; both must be finite and > 0`,
      );
    }
  }
  const distinct = new Set(points.map((p) => p.compute)).size;
  if (distinct < 3) {
    throw new RangeError(
      `scaling fit: a * C^-b + c has 3 parameters and needs points at 3 or more compute values (got ${distinct})`,
    );
  }
  const lx = points.map((p) => Math.log(p.compute)), ly = points.map((p) => Math.log(p.loss));
  const minLoss = Math.min(...points.map((p) => p.loss));

  // Profile over c in [0, minLoss): for each c, log(L - c) = log a - b log C is a straight line.
  let best = { theta: [0, 0, 0], rss: Infinity };
  const trial = (c: number) => {
    const fit = line(lx, points.map((p) => Math.log(p.loss - c)));
    const theta = [fit.p, -fit.q, c];
    const res = residuals(theta, lx, ly);
    if (res && fit.q < 0) {
      const rss = sumSquares(res.r);
      if (rss < best.rss) best = { theta, rss };
    }
  };
  const GRID = 200;
  for (let k = 0; k < GRID; k++) trial(minLoss * (1 - Math.pow(1 - k / GRID, 3))); // denser near minLoss
  if (!Number.isFinite(best.rss)) {
    throw new RangeError(
      "scaling fit: the losses do not fall with compute, so no a * C^-b + c (b > 0) fits them",
    );
  }

  // Levenberg-Marquardt from the profile's best point.
  let theta = best.theta, rss = best.rss, damping = 1e-3;
  for (let iter = 0; iter < 200 && rss > 0; iter++) {
    const { r, J } = residuals(theta, lx, ly)!;
    const { A, g } = normalEquations(J, r, damping);
    const step = solve3(A, g);
    const next = step && theta.map((t, i) => t + step[i]);
    const res = next && next[2] < minLoss && next[2] >= 0 ? residuals(next, lx, ly) : null;
    const nextRss = res ? sumSquares(res.r) : Infinity;
    if (nextRss < rss) {
      const gain = rss - nextRss;
      theta = next!;
      rss = nextRss;
      damping = Math.max(damping / 3, 1e-12);
      if (gain <= 1e-15 * Math.max(rss, 1e-300)) break;
    } else {
      damping *= 4;
      if (damping > 1e12) break;
    }
  }

  const n = points.length;
  let stderr: ScalingFit["stderr"] = null, covariance: number[][] | null = null;
  if (n > 3) {
    const { J } = residuals(theta, lx, ly)!;
    const { A } = normalEquations(J, new Array(n).fill(0), 0);
    const s2 = rss / (n - 3);
    const cov = [0, 1, 2].map((k) => solve3(A, [0, 1, 2].map((j) => (j === k ? 1 : 0))));
    if (cov.every((col) => col !== null)) {
      covariance = cov.map((col) => col!.map((v) => s2 * v)); // (J^T J)^-1 is symmetric: columns = rows
      const a = Math.exp(theta[0]);
      stderr = {
        a: a * Math.sqrt(Math.max(0, s2 * cov[0]![0])), // delta method for a = e^alpha
        b: Math.sqrt(Math.max(0, s2 * cov[1]![1])),
        c: Math.sqrt(Math.max(0, s2 * cov[2]![2])),
      };
    }
  }
  return {
    a: Math.exp(theta[0]),
    b: theta[1],
    c: theta[2],
    stderr,
    covariance,
    rmsLogResidual: Math.sqrt(rss / n),
    points: n,
  };
}
