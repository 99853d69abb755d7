/**
 * Rescaling batch size and learning rate when the number of workers changes (design 4.5). Pure:
 * `worldShape` decides the per-worker batches and the target learning rate of a new world;
 * `scaleAt` gives the multiplier at a step (warm-up after a rescale); `gainOf` is the AdaScale gain
 * from smoothed per-worker gradient statistics (Johnson et al. 2020).
 */
import { z } from 'zod';
import { clampBatch } from '../../operator/api/goodput-policy.ts';
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
  /** Ranks of the world (absent in checkpoints of earlier versions): a change of it is a rescale. */
  readonly workers?: number | undefined;
}

export const PolicyStateSchema = z.object({
  policy: z.enum(RESCALE_POLICIES),
  targetScale: z.number().positive(),
  fromScale: z.number().positive(),
  warmupStart: z.int().min(0),
  warmupSteps: z.int().min(0),
  scale: z.number().positive(),
  workers: z.int().min(1).optional(),
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
 * The shape of a world whose global batch the goodput policy chooses in `bounds`: the operator's
 * `chosen` batch, else the policy's for this size, clamped to the bounds (at least a sample a rank)
 * and split evenly. The learning rate follows the batch as the rescale policy says.
 */
export function boundedWorldShape(
  batch: BatchSpec,
  initialReplicas: number,
  workers: number,
  step: number,
  previous: PolicyState | undefined,
  bounds: { readonly min: number; readonly max: number },
  chosen: number | undefined,
): WorldShape {
  const wanted = chosen ?? worldShape(batch, initialReplicas, workers, step, previous).globalBatch;
  const perWorker = splitEvenly(clampBatch(wanted, workers, bounds), workers);
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
  const fromScale = rescaleWarmupFrom(batch, previous, perWorker.length, ratio, targetScale, step);
  const warm = fromScale !== undefined && batch.warmupSteps > 0;
  return {
    globalBatch,
    state: {
      policy: batch.policy,
      targetScale,
      fromScale: warm ? fromScale : targetScale,
      warmupStart: step,
      warmupSteps: warm ? batch.warmupSteps : 0,
      scale: ratio,
      workers: perWorker.length,
    },
  };
}

/**
 * Where the warm-up after a rescale starts, or undefined for none. Every policy warms up: from the
 * multiplier in effect when it differs from the new target (linear, sqrt, or a restart in the middle
 * of a warm-up), else from `warmupStartFactor` of the target, so a world of new ranks (fresh batch-norm statistics, AdaScale's
 * gain re-estimated) can ease in even when the rate stays. A restart of the same world is no rescale.
 */
function rescaleWarmupFrom(
  batch: BatchSpec,
  previous: PolicyState | undefined,
  workers: number,
  ratio: number,
  targetScale: number,
  step: number,
): number | undefined {
  if (previous === undefined) return undefined;
  const current = scaleAt(previous, step);
  if (current !== targetScale) return current;
  const rescaled =
    previous.scale !== ratio || (previous.workers !== undefined && previous.workers !== workers);
  if (!rescaled) return undefined;
  const from = targetScale * batch.warmupStartFactor;
  return from === targetScale ? undefined : from;
}

/** The multiplier of the base learning rate at `step`: linear warm-up from the old to the new target. */
export function scaleAt(state: PolicyState, step: number): number {
  if (state.warmupSteps <= 0 || step >= state.warmupStart + state.warmupSteps) return state.targetScale;
  const t = Math.max(0, step - state.warmupStart) / state.warmupSteps;
  return state.fromScale + (state.targetScale - state.fromScale) * t;
}

/** AdaScale's estimates for a batch of B_base: σ² the gradient variance, μ² the squared norm of the true gradient. */
export interface GradientStatistics {
  readonly sigma2: number;
  readonly mu2: number;
}

/**
 * This step's σ² and μ², from the N per-worker gradients (batch b each) carried in the same
 * all-reduce: their spread gives the variance of a b-sample gradient,
 * σ_b² = N/(N−1)·(mean‖g_i‖² − ‖ḡ‖²), scaled to the base batch by b/B_base; μ² = ‖ḡ‖² − σ_b²/N.
 * Undefined with one worker: there is no spread to measure.
 */
export function gradientStatistics(
  perWorkerSquaredNorms: readonly number[],
  meanGradientSquaredNorm: number,
  perWorkerBatch: number,
  baseBatch: number,
): GradientStatistics | undefined {
  const n = perWorkerSquaredNorms.length;
  if (n < 2) return undefined;
  const meanOfNorms = perWorkerSquaredNorms.reduce((a, b) => a + b, 0) / n;
  const workerVariance = Math.max(0, ((meanOfNorms - meanGradientSquaredNorm) * n) / (n - 1));
  return {
    sigma2: (workerVariance * perWorkerBatch) / baseBatch,
    mu2: Math.max(0, meanGradientSquaredNorm - workerVariance / n),
  };
}

/**
 * The averaging factor θ of the moving averages of σ² and μ²: the spec's, else max(1 − S/1000, 0)
 * as in AdaScale's reference implementation (fairscale), so larger scales, whose single estimates
 * are less noisy per step taken, average over fewer steps.
 */
export function adascaleSmoothing(smoothing: number | undefined, scale: number): number {
  return smoothing ?? Math.max(0, 1 - scale / 1000);
}

/** Moving averages θ·previous + (1 − θ)·current; the first estimate starts them (no bias towards 0). */
export function smoothStatistics(
  previous: GradientStatistics | undefined,
  current: GradientStatistics | undefined,
  smoothing: number,
): GradientStatistics | undefined {
  if (current === undefined) return previous;
  if (previous === undefined) return current;
  return {
    sigma2: smoothing * previous.sigma2 + (1 - smoothing) * current.sigma2,
    mu2: smoothing * previous.mu2 + (1 - smoothing) * current.mu2,
  };
}

/** The gain r = (σ² + μ²) / (σ²/S + μ²) of (smoothed) statistics, clamped to [1, S]; 1 without any. */
export function gainOf(statistics: GradientStatistics | undefined, scale: number): number {
  if (statistics === undefined || scale <= 1) return 1;
  const mu2 = Math.max(1e-12, statistics.mu2);
  const gain = (statistics.sigma2 + mu2) / (statistics.sigma2 / scale + mu2);
  return Math.min(scale, Math.max(1, gain));
}

/** The gain of one step's statistics alone (Johnson et al. 2020, without the moving averages). */
export function adascaleGain(
  perWorkerSquaredNorms: readonly number[],
  meanGradientSquaredNorm: number,
  perWorkerBatch: number,
  baseBatch: number,
  scale: number,
): number {
  return gainOf(
    gradientStatistics(perWorkerSquaredNorms, meanGradientSquaredNorm, perWorkerBatch, baseBatch),
    scale,
  );
}

/** Micro-batches of a rank's share when it exceeds the per-worker limit (gradient accumulation). */
export function microBatches(share: number, maxPerWorker: number | undefined): number[] {
  if (maxPerWorker === undefined || share <= maxPerWorker) return share > 0 ? [share] : [];
  return splitEvenly(share, Math.ceil(share / maxPerWorker));
}
