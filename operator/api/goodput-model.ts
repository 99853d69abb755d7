/**
 * The goodput model of Pollux (Qiao et al., OSDI 2021): goodput = throughput × statistical efficiency.
 * Throughput comes from a step-time model fitted to the steps a job ran; efficiency from the gradient
 * noise scale the workers measure. Pure: the operator and `tensile run` feed it what the workers
 * reported and carry its choice out.
 */

/** What a world of `replicas` workers at `perWorkerBatch` samples each took per step, on average. */
export interface ThroughputSample {
  readonly replicas: number;
  readonly perWorkerBatch: number;
  readonly stepSeconds: number;
  /** Steps the mean is over: its weight in the fit. */
  readonly steps: number;
}

/**
 * Step time t(N, b) = fixed + perSample·b + perReplica·(N − 1): compute grows with the per-worker
 * batch, synchronisation with the ring's length (zero for a world of one).
 */
export interface ThroughputModel {
  readonly fixedSeconds: number;
  readonly perSampleSeconds: number;
  readonly perReplicaSeconds: number;
  /** The largest world measured: how far the model is trusted (see `explorationFactor`). */
  readonly maxObservedReplicas: number;
  /** Whether worlds of different sizes were measured (else perReplicaSeconds is the optimistic 0). */
  readonly replicasIdentified: boolean;
}

/**
 * Each coefficient is pulled towards 0 by a small ridge term, so a term the samples cannot tell
 * apart stays 0: with one world size measured, synchronisation is free (optimistic, so the policy
 * explores a bigger world, which `explorationFactor` bounds); with one batch measured, the time is
 * all per-sample (so a bigger batch buys no throughput until it is measured). The fixed term is
 * pulled hardest, which is what decides the second case.
 */
const RIDGE = [1e-3, 1e-7, 1e-7] as const;

/** Least squares with coefficients ≥ 0 (every subset of free coefficients tried: there are 3). */
export function fitThroughput(samples: readonly ThroughputSample[]): ThroughputModel | undefined {
  const usable = samples.filter(
    (s) => s.steps > 0 && s.stepSeconds > 0 && s.replicas >= 1 && s.perWorkerBatch > 0,
  );
  if (usable.length === 0) return undefined;
  const rows = usable.map((s) => ({
    x: [1, s.perWorkerBatch, s.replicas - 1] as const,
    y: s.stepSeconds,
    w: Math.sqrt(s.steps),
  }));
  const totalWeight = rows.reduce((a, r) => a + r.w, 0);
  // Ridge in units of each feature's own scale, so the pull does not depend on the batch's size.
  const scale = [0, 1, 2].map((j) =>
    Math.max(1, rows.reduce((a, r) => a + r.w * (r.x[j] as number) ** 2, 0) / totalWeight),
  );
  const lambda = RIDGE.map((l, j) => l * totalWeight * (scale[j] as number));
  let best: { theta: number[]; loss: number } | undefined;
  for (let mask = 1; mask < 8; mask++) {
    const free = [0, 1, 2].filter((j) => (mask >> j) & 1);
    const theta = solveRestricted(rows, lambda, free);
    if (theta === undefined || theta.some((t) => t < 0)) continue;
    const loss = objective(rows, lambda, theta);
    if (best === undefined || loss < best.loss) best = { theta, loss };
  }
  if (best === undefined) return undefined;
  const [fixed, perSample, perReplica] = best.theta as [number, number, number];
  return {
    fixedSeconds: fixed,
    perSampleSeconds: perSample,
    perReplicaSeconds: perReplica,
    maxObservedReplicas: Math.max(...usable.map((s) => s.replicas)),
    replicasIdentified: new Set(usable.map((s) => s.replicas)).size > 1,
  };
}

interface Row {
  readonly x: readonly [number, number, number];
  readonly y: number;
  readonly w: number;
}

function objective(rows: readonly Row[], lambda: readonly number[], theta: readonly number[]): number {
  let loss = 0;
  for (const r of rows) {
    const e = r.y - r.x.reduce((a, x, j) => a + x * (theta[j] as number), 0);
    loss += r.w * e * e;
  }
  return loss + theta.reduce((a, t, j) => a + (lambda[j] as number) * t * t, 0);
}

/** The ridge normal equations over the `free` coefficients, the others held at 0. */
function solveRestricted(
  rows: readonly Row[],
  lambda: readonly number[],
  free: readonly number[],
): number[] | undefined {
  const k = free.length;
  const a = free.map((i) =>
    free.map(
      (j) =>
        rows.reduce((s, r) => s + r.w * (r.x[i] as number) * (r.x[j] as number), 0) +
        (i === j ? (lambda[i] as number) : 0),
    ),
  );
  const b = free.map((i) => rows.reduce((s, r) => s + r.w * (r.x[i] as number) * r.y, 0));
  const solved = solveLinear(a, b);
  if (solved === undefined || solved.length !== k) return undefined;
  const theta = [0, 0, 0];
  free.forEach((j, n) => {
    theta[j] = solved[n] as number;
  });
  return theta;
}

/** Gaussian elimination with partial pivoting; undefined for a singular system. */
export function solveLinear(
  matrix: readonly (readonly number[])[],
  rhs: readonly number[],
): number[] | undefined {
  const n = rhs.length;
  const m = matrix.map((row, i) => [...row, rhs[i] as number]);
  for (let c = 0; c < n; c++) {
    let pivot = c;
    for (let r = c + 1; r < n; r++)
      if (Math.abs(m[r]?.[c] as number) > Math.abs(m[pivot]?.[c] as number)) pivot = r;
    const p = m[pivot] as number[];
    if (Math.abs(p[c] as number) < 1e-300) return undefined;
    [m[c], m[pivot]] = [p, m[c] as number[]];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const row = m[r] as number[];
      const f = (row[c] as number) / (p[c] as number);
      for (let j = c; j <= n; j++) row[j] = (row[j] as number) - f * (p[j] as number);
    }
  }
  return m.map((row, i) => (row[n] as number) / (row[i] as number));
}

export function predictStepSeconds(model: ThroughputModel, replicas: number, perWorkerBatch: number): number {
  return (
    model.fixedSeconds +
    model.perSampleSeconds * perWorkerBatch +
    model.perReplicaSeconds * Math.max(0, replicas - 1)
  );
}

/** Samples per second of a world of `replicas` at a global batch of `globalBatch`. */
export function predictThroughput(model: ThroughputModel, replicas: number, globalBatch: number): number {
  const seconds = predictStepSeconds(model, replicas, globalBatch / replicas);
  return seconds > 0 ? globalBatch / seconds : 0;
}

/**
 * The gradient noise scale φ = tr(Σ)/‖G‖² in samples (McCandlish et al. 2018), from AdaScale's
 * statistics: σ² the variance of a gradient over `baseBatch` samples (so tr(Σ) = σ²·baseBatch) and
 * μ² the squared norm of the true gradient. Undefined when nothing was measured.
 */
export function gradientNoiseScale(
  statistics: { readonly sigma2: number; readonly mu2: number } | undefined,
  baseBatch: number,
): number | undefined {
  if (statistics === undefined || !(statistics.sigma2 >= 0) || !(statistics.mu2 >= 0)) return undefined;
  const mu2 = Math.max(statistics.mu2, 1e-12 * Math.max(statistics.sigma2, 1e-30));
  return (statistics.sigma2 * baseBatch) / mu2;
}

/**
 * Pollux's statistical efficiency of a batch M against the base batch M₀: (φ + M₀)/(φ + M), the
 * progress one sample at M makes relative to one at M₀. With no noise scale measured, 1: batch size
 * then costs nothing and goodput is throughput.
 */
export function statisticalEfficiency(
  noiseScale: number | undefined,
  batch: number,
  baseBatch: number,
): number {
  if (noiseScale === undefined) return 1;
  return (noiseScale + baseBatch) / (noiseScale + batch);
}
