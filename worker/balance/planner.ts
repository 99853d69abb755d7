/**
 * Heterogeneity-aware batch sizes (design 7, balancing). A synchronous step lasts as long as its
 * slowest rank's compute: with b_i samples at s_i seconds per sample, about max_i b_i·s_i. Giving
 * each rank b_i ∝ 1/s_i makes every rank finish together and the world runs at the sum of the ranks'
 * throughputs instead of N times the slowest one's.
 *
 * Pure: every rank feeds these functions the same inputs (the per-rank compute times travel in the
 * step's all-reduce, so every rank reads the same reduced values, and the estimates are part of the
 * training state that is broadcast and checkpointed), hence every rank takes the same decision at the
 * same step, without any message of its own. The global batch B never changes here, so the rescale
 * policy's learning rate and the sampler's exactly-once cursor are untouched; only how B is cut.
 */
import { z } from 'zod';
import type { BalancingSpec } from '../../operator/api/training-job.ts';

/** Per-worker estimates, keyed by worker id so that they survive a change of ranks. */
export interface WorkerEstimate {
  readonly worker: string;
  /** Moving average of compute seconds per sample (forward, backward, batch preparation). */
  readonly secondsPerSample: number;
  /** Steps measured. */
  readonly steps: number;
  /** Moving average of the seconds this worker waited in the all-reduce per step. */
  readonly waitSeconds: number;
  /** The step since which it has been below the straggler threshold, or null. */
  readonly slowSince: number | null;
}

export const WorkerEstimateSchema = z.object({
  worker: z.string(),
  secondsPerSample: z.number().min(0),
  steps: z.int().min(0),
  waitSeconds: z.number().min(0),
  slowSince: z.int().min(0).nullable(),
});

/** A change of the split: recorded in the state (the last few) and emitted as an event. */
export interface BalancePlan {
  readonly step: number;
  readonly generation: number;
  readonly perWorker: readonly number[];
  /** Predicted step seconds of the split before and of this one. */
  readonly predictedBefore: number;
  readonly predicted: number;
  readonly reason: 'generation' | 'drift';
}

export const BalancePlanSchema = z.object({
  step: z.int().min(0),
  generation: z.int().min(0),
  perWorker: z.array(z.int().min(1)).readonly(),
  predictedBefore: z.number().min(0),
  predicted: z.number().min(0),
  reason: z.enum(['generation', 'drift']),
});

export interface BalanceState {
  readonly estimates: readonly WorkerEstimate[];
  /** The split in effect, in rank order of the current generation; absent: the policy's own split. */
  readonly perWorker?: readonly number[] | undefined;
  /** The step of the last change of the split. */
  readonly lastPlanStep: number;
  /** The newest changes, oldest first (at most PLAN_HISTORY). */
  readonly plans: readonly BalancePlan[];
}

export const BalanceStateSchema = z.object({
  estimates: z.array(WorkerEstimateSchema).readonly(),
  perWorker: z.array(z.int().min(1)).readonly().optional(),
  lastPlanStep: z.int().min(0),
  plans: z.array(BalancePlanSchema).readonly(),
}) satisfies z.ZodType<BalanceState>;

export const PLAN_HISTORY = 50;

export const EMPTY_BALANCE: BalanceState = { estimates: [], lastPlanStep: 0, plans: [] };

/** What one step measured on every rank, in rank order (from the reduced buffer). */
export interface StepTimes {
  readonly members: readonly string[];
  readonly perWorker: readonly number[];
  readonly computeSeconds: readonly number[];
  readonly waitSeconds: readonly number[];
}

/**
 * The estimates after a step: each member's moving averages fold in this step's figures; estimates of
 * workers gone from the world are dropped. During the first `warmupSteps` of a worker the latest
 * figure replaces the estimate instead (no bias towards 0, and the slow first steps of a process,
 * compiling kernels and warming caches, leave no trace).
 */
export function observe(
  estimates: readonly WorkerEstimate[],
  times: StepTimes,
  smoothing: number,
  warmupSteps = 1,
): WorkerEstimate[] {
  const byWorker = new Map(estimates.map((e) => [e.worker, e]));
  return times.members.map((worker, rank) => {
    const before = byWorker.get(worker);
    const batch = times.perWorker[rank] ?? 0;
    const compute = times.computeSeconds[rank] ?? 0;
    const wait = times.waitSeconds[rank] ?? 0;
    if (batch <= 0 || !(compute > 0))
      return before ?? { worker, secondsPerSample: 0, steps: 0, waitSeconds: 0, slowSince: null };
    const current = compute / batch;
    if (before === undefined || before.steps === 0)
      return { worker, secondsPerSample: current, steps: 1, waitSeconds: wait, slowSince: null };
    if (before.steps < warmupSteps)
      return { ...before, secondsPerSample: current, steps: before.steps + 1, waitSeconds: wait };
    return {
      worker,
      secondsPerSample: smoothing * before.secondsPerSample + (1 - smoothing) * current,
      steps: before.steps + 1,
      waitSeconds: smoothing * before.waitSeconds + (1 - smoothing) * wait,
      slowSince: before.slowSince,
    };
  });
}

/**
 * Splits `total` among ranks in proportion to `weights` (largest remainder, ties to the lower rank).
 * A rank whose share would fall below `floor` gets `floor` and the rest is split among the others,
 * as long as the total allows every rank that much.
 */
export function proportionalSplit(total: number, weights: readonly number[], floor = 1): number[] {
  const n = weights.length;
  if (n === 0) throw new RangeError('cannot split among 0 workers');
  const min = Math.max(0, Math.min(floor, Math.floor(total / n)));
  const pinned = new Set<number>();
  let shares: number[] = [];
  // Each pass pins at least one more rank to the floor, or ends: at most n passes.
  for (let pass = 0; pass <= n; pass++) {
    const free = weights.map((w, i) => (pinned.has(i) ? 0 : Math.max(0, w)));
    const sum = free.reduce((a, b) => a + b, 0);
    const rest = total - min * pinned.size;
    const open = n - pinned.size;
    shares = weights.map((_, i) =>
      pinned.has(i) ? min : sum > 0 ? ((free[i] as number) * rest) / sum : rest / Math.max(1, open),
    );
    const below = shares.findIndex((s, i) => !pinned.has(i) && s < min);
    if (below < 0) break;
    shares.forEach((s, i) => {
      if (!pinned.has(i) && s < min) pinned.add(i);
    });
  }
  const split = shares.map((s) => Math.floor(s));
  let left = total - split.reduce((a, b) => a + b, 0);
  const order = shares.map((s, i) => ({ i, r: s - Math.floor(s) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left <= 0) break;
    split[i] = (split[i] as number) + 1;
    left--;
  }
  return split;
}

/** The step time a split predicts: the slowest rank's compute. */
export function predictedStepSeconds(
  perWorker: readonly number[],
  secondsPerSample: readonly number[],
): number {
  return perWorker.reduce((worst, b, i) => Math.max(worst, b * (secondsPerSample[i] ?? 0)), 0);
}

/** Seconds per sample of each member, or undefined when one of them is not measured enough yet. */
export function measured(
  estimates: readonly WorkerEstimate[],
  members: readonly string[],
  warmupSteps: number,
): number[] | undefined {
  const byWorker = new Map(estimates.map((e) => [e.worker, e]));
  const seconds: number[] = [];
  for (const member of members) {
    const e = byWorker.get(member);
    if (e === undefined || e.steps < warmupSteps || !(e.secondsPerSample > 0)) return undefined;
    seconds.push(e.secondsPerSample);
  }
  return seconds;
}

export interface PlanInput {
  readonly spec: BalancingSpec;
  readonly members: readonly string[];
  /** The split in effect (the policy's at a generation boundary). */
  readonly current: readonly number[];
  readonly estimates: readonly WorkerEstimate[];
  readonly step: number;
  readonly lastPlanStep: number;
  /** A generation boundary: a new split costs nothing there, so no hysteresis applies. */
  readonly boundary: boolean;
}

/**
 * The split the next step should use, or undefined to keep the current one. Even mode and a world of
 * one never change it; proportional waits for every member to be measured, re-plans within a
 * generation at most every `minIntervalSteps` and only when the gain beats `driftThreshold` (so noise
 * does not churn the split), and at a generation boundary whenever the split differs.
 */
export function planBalance(
  input: PlanInput,
): { perWorker: number[]; predictedBefore: number; predicted: number } | undefined {
  const { spec, current, members } = input;
  if (spec.mode !== 'proportional' || members.length < 2 || current.length !== members.length)
    return undefined;
  if (!input.boundary && input.step - input.lastPlanStep < spec.minIntervalSteps) return undefined;
  const seconds = measured(input.estimates, members, spec.warmupSteps);
  if (seconds === undefined) return undefined;
  const total = current.reduce((a, b) => a + b, 0);
  const floor = Math.max(1, Math.floor((spec.minShare * total) / members.length));
  const target = proportionalSplit(
    total,
    seconds.map((s) => 1 / s),
    floor,
  );
  if (target.every((b, i) => b === current[i])) return undefined;
  const predictedBefore = predictedStepSeconds(current, seconds);
  const predicted = predictedStepSeconds(target, seconds);
  const gain = predictedBefore > 0 ? 1 - predicted / predictedBefore : 0;
  if (!input.boundary && gain < spec.driftThreshold) return undefined;
  return { perWorker: target, predictedBefore, predicted };
}

/** The median of positive values (the mean of the middle two for an even count); 0 for none. */
export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => v > 0).sort((a, b) => a - b);
  if (sorted.length === 0) return 0;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * Marks the members whose throughput (1 / seconds per sample) is below `stragglerThreshold` of the
 * median with the step they fell below it, and clears the mark of those back above. Returns the
 * estimates and the members slow for at least `stragglerSteps` (persistent stragglers).
 */
export function stragglers(
  estimates: readonly WorkerEstimate[],
  spec: BalancingSpec,
  step: number,
): { estimates: WorkerEstimate[]; persistent: string[] } {
  const ready = estimates.filter((e) => e.steps >= spec.warmupSteps && e.secondsPerSample > 0);
  const mid = median(ready.map((e) => 1 / e.secondsPerSample));
  const persistent: string[] = [];
  const next = estimates.map((e) => {
    const counted = ready.length >= 2 && ready.includes(e);
    const slow = counted && 1 / e.secondsPerSample < spec.stragglerThreshold * mid;
    const slowSince = slow ? (e.slowSince ?? step) : null;
    if (slowSince !== null && step - slowSince >= spec.stragglerSteps) persistent.push(e.worker);
    return slowSince === e.slowSince ? e : { ...e, slowSince };
  });
  return { estimates: next, persistent };
}

/** Keeps the newest PLAN_HISTORY plans. */
export function withPlan(plans: readonly BalancePlan[], plan: BalancePlan): BalancePlan[] {
  return [...plans, plan].slice(-PLAN_HISTORY);
}
