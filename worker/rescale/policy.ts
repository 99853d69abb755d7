/**
 * Rescaling batch size and learning rate when the number of workers changes (design 4.5). Pure:
 * `worldShape` decides the per-worker batches and the target learning rate of a new world;
 * `learningRateAt` gives the rate to use at a step (warm-up after a change); `adascaleGain` is the
 * AdaScale gain from per-worker gradient statistics (Johnson et al. 2020).
 */
import { z } from 'zod';
import { type BatchSpec, RESCALE_POLICIES, type RescalePolicy } from '../../operator/api/training-job.ts';

export interface PolicyState {
  readonly policy: RescalePolicy;
  /** The learning-rate multiplier the world aims at (B/B_base, its square root, or 1). */
  readonly targetScale: number;
  /** The multiplier in effect when this world started: warm-up goes from it to the target. */
  readonly fromScale: number;
  readonly warmupStart: number;
  readonly warmupSteps: number;
  /** AdaScale: S = B / B_base, the bound of the gain. */
  readonly scale: number;
}

export const PolicyStateSchema = z.object({
  policy: z.enum(RESCALE_POLICIES),
  targetScale: z.number().positive(),
  fromScale: z.number().positive(),
  warmupStart: z.int().min(0),
  warmupSteps: z.int().min(0),
  scale: z.number().positive(),
}) satisfies z.ZodType<PolicyState>;

export interface WorldShape {
  /** Batch of each rank, in rank order; their sum is the global batch. */
  readonly perWorker: number[];
  readonly globalBatch: number;
  readonly state: PolicyState;
}

/** Splits `total` into `parts` integers that differ by at most one, larger ones first. */
export function splitEvenly(total: number, parts: number): number[] {
  if (parts < 1) throw new RangeError(`cannot split among ${parts} workers`);
  const base = Math.floor(total / parts);
  const extra = total % parts;
  return Array.from({ length: parts }, (_, i) => base + (i < extra ? 1 : 0));
}

/** The per-worker batch of the size-independent policies: explicit, or the base batch over the initial replicas. */
export function perWorkerBatch(batch: BatchSpec, initialReplicas: number): number {
  return batch.perWorker ?? Math.max(1, Math.ceil(batch.global / Math.max(1, initialReplicas)));
}

/**
 * Shape of a world of `workers` ranks starting at `step`. `previous` is the policy state of the world
 * before (undefined for the first world), so a warm-up starts from the rate that was in effect.
 */
export function worldShape(
  batch: BatchSpec,
  initialReplicas: number,
  workers: number,
  step: number,
  previous: PolicyState | undefined,
): WorldShape {
  const perWorker =
    batch.policy === 'fixedGlobalBatch'
      ? splitEvenly(batch.global, workers)
      : Array.from({ length: workers }, () => perWorkerBatch(batch, initialReplicas));
  return { perWorker, ...policyState(batch, perWorker, step, previous) };
}

/**
 * The policy state of a world whose ranks have batches `perWorker` (as its rendezvous decided them),
 * starting at `step`; `previous` is the state of the world before, if any.
 */
export function policyState(
  batch: BatchSpec,
  perWorker: readonly number[],
  step: number,
  previous: PolicyState | undefined,
): { globalBatch: number; state: PolicyState } {
  const globalBatch = perWorker.reduce((a, b) => a + b, 0);
  const ratio = globalBatch / batch.global;
  const targetScale = batch.policy === 'linear' ? ratio : batch.policy === 'sqrt' ? Math.sqrt(ratio) : 1;
  const fromScale = previous === undefined ? targetScale : scaleAt(previous, step);
  const warm =
    (batch.policy === 'linear' || batch.policy === 'sqrt') &&
    previous !== undefined &&
    fromScale !== targetScale;
  return {
    globalBatch,
    state: {
      policy: batch.policy,
      targetScale,
      fromScale: warm ? fromScale : targetScale,
      warmupStart: step,
      warmupSteps: warm ? batch.warmupSteps : 0,
      scale: ratio,
    },
  };
}

/** The multiplier of the base learning rate at `step`: linear warm-up from the old to the new target. */
export function scaleAt(state: PolicyState, step: number): number {
  if (state.warmupSteps <= 0 || step >= state.warmupStart + state.warmupSteps) return state.targetScale;
  const t = Math.max(0, step - state.warmupStart) / state.warmupSteps;
  return state.fromScale + (state.targetScale - state.fromScale) * t;
}

/**
 * AdaScale gain r = (σ² + μ²) / (σ²/S + μ²), clamped to [1, S], where σ² is the gradient variance of a
 * base-size batch and μ² the squared norm of the true gradient. Both are estimated each step from the
 * N per-worker gradients (batch b each) carried in the same all-reduce: their spread gives the variance
 * of a b-sample gradient, σ_b² = N/(N−1)·(mean‖g_i‖² − ‖ḡ‖²), scaled to the base batch by b/B_base;
 * μ² = ‖ḡ‖² − σ_b²/N. With one worker (no spread to measure) the gain is 1.
 */
export function adascaleGain(
  perWorkerSquaredNorms: readonly number[],
  meanGradientSquaredNorm: number,
  perWorkerBatch: number,
  baseBatch: number,
  scale: number,
): number {
  const n = perWorkerSquaredNorms.length;
  if (n < 2 || scale <= 1) return 1;
  const meanOfNorms = perWorkerSquaredNorms.reduce((a, b) => a + b, 0) / n;
  const workerVariance = Math.max(0, ((meanOfNorms - meanGradientSquaredNorm) * n) / (n - 1));
  const mu2 = Math.max(1e-12, meanGradientSquaredNorm - workerVariance / n);
  const sigma2 = (workerVariance * perWorkerBatch) / baseBatch;
  const gain = (sigma2 + mu2) / (sigma2 / scale + mu2);
  return Math.min(scale, Math.max(1, gain));
}

/** Micro-batches of a rank's share when it exceeds the per-worker limit (gradient accumulation). */
export function microBatches(share: number, maxPerWorker: number | undefined): number[] {
  if (maxPerWorker === undefined || share <= maxPerWorker) return share > 0 ? [share] : [];
  return splitEvenly(share, Math.ceil(share / maxPerWorker));
}
