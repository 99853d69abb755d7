/**
 * Heterogeneity-aware batch sizes (design 7, balancing). A synchronous step lasts as long as its
 * slowest rank takes to reach the all-reduce: with b_i samples at s_i seconds per sample and u_i
 * seconds of work per step that does not grow with the batch (the optimizer's update of the previous
 * step and the step's bookkeeping, done by every rank at its own speed), about max_i (u_i + b_i·s_i).
 * Giving each rank the b_i that makes u_i + b_i·s_i the same for all makes every rank arrive
 * together, and the world runs at the sum of the ranks' throughputs instead of N times the slowest
 * one's.
 *
 * Pure: every rank feeds these functions the same inputs (the per-rank times travel in the step's
 * all-reduce, so every rank reads the same reduced values, and the estimates are part of the training
 * state that is broadcast and checkpointed), hence every rank takes the same decision at the same
 * step, without any message of its own. The global batch B never changes here, so the rescale
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
  /** The newest compute seconds per sample (at most RECENT), whose median feeds the average. */
  readonly recent: readonly number[];
  /** Moving average of the seconds this worker waited in the all-reduce per step. */
  readonly waitSeconds: number;
  /**
   * Moving average of the seconds per step that do not grow with its batch: from the end of an
   * all-reduce to the next compute, the optimizer's update of the whole model and the step's
   * bookkeeping, which every rank does at its own speed (evaluations and snapshots not counted).
   */
  readonly updateSeconds: number;
  /** The step since which it has been below the straggler threshold, or null. */
  readonly slowSince: number | null;
}

export const WorkerEstimateSchema = z.object({
  worker: z.string(),
  secondsPerSample: z.number().min(0),
  steps: z.int().min(0),
  // Absent in the state of earlier versions.
  recent: z.array(z.number().min(0)).readonly().default([]),
  waitSeconds: z.number().min(0),
  // Absent in the state of earlier versions: their estimates had no fixed part.
  updateSeconds: z.number().min(0).default(0),
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
  /** Each rank's update seconds of the step before (0: not measured); absent: none measured. */
  readonly updateSeconds?: readonly number[];
}

/**
 * The compute time per sample that feeds the average is the median of the newest RECENT steps: a
 * stall of one step (a page-fault storm, a collection, a neighbour's burst, a CFS period that ran
 * out) is not in it at all, as long as fewer than half of the window stalled.
 */
export const RECENT = 5;

/**
 * And a figure further than this factor from the estimate moves it as if it were at this factor, so
 * that even a run of stalls moves it by at most (1 − smoothing) of the factor per step, while a
 * lasting change is still followed within a few time constants (a halving of speed at once, a
 * slow-down to 0.2 in about 17 steps at smoothing 0.9).
 */
export const OUTLIER_FACTOR = 2;

/** `sample` pulled into [estimate / OUTLIER_FACTOR, estimate · OUTLIER_FACTOR]. */
export function winsorize(estimate: number, sample: number): number {
  if (!(estimate > 0)) return sample;
  return Math.min(estimate * OUTLIER_FACTOR, Math.max(estimate / OUTLIER_FACTOR, sample));
}

/**
 * One figure's next estimate after `counted` earlier samples of it (the first step of a worker is
 * not counted: it compiles kernels and warms caches). Within the warm-up the plain mean of the
 * samples so far, so that the first plan rests on every warm-up step rather than on the last one;
 * then a moving average of winsorized samples, so that one odd step cannot move a plan.
 */
export function smoothed(
  estimate: number,
  sample: number,
  counted: number,
  smoothing: number,
  warmupSteps: number,
): number {
  if (counted <= 0) return sample;
  if (counted < warmupSteps) return estimate + (sample - estimate) / (counted + 1);
  return smoothing * estimate + (1 - smoothing) * winsorize(estimate, sample);
}

/** The newest RECENT values after `sample`, and their median (the mean of the middle two). */
export function slide(recent: readonly number[], sample: number): { recent: number[]; median: number } {
  const next = [...recent, sample].slice(-RECENT);
  return { recent: next, median: median(next) };
}

/**
 * The estimates after a step: each member's averages fold in this step's figures (see `smoothed`;
 * compute through the median of the newest steps, see RECENT); estimates of workers gone from the
 * world are dropped. A worker's first measured step only starts its estimate and is replaced by the
 * second.
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
    const update = times.updateSeconds?.[rank] ?? 0;
    if (batch <= 0 || !(compute > 0)) return before ?? unmeasured(worker);
    const current = compute / batch;
    if (before === undefined || before.steps === 0)
      return {
        ...unmeasured(worker),
        secondsPerSample: current,
        steps: 1,
        waitSeconds: wait,
        updateSeconds: update,
      };
    // Samples counted so far: the first step is not one of them (nor in the window).
    const counted = before.steps - 1;
    const next = (old: number, sample: number) => smoothed(old, sample, counted, smoothing, warmupSteps);
    const window = slide(counted === 0 ? [] : before.recent, current);
    return {
      ...before,
      // Within the warm-up the median of the window itself: a mean of the first, short windows'
      // medians would keep a stall of the second step.
      secondsPerSample: counted < warmupSteps ? window.median : next(before.secondsPerSample, window.median),
      steps: before.steps + 1,
      recent: window.recent,
      waitSeconds: next(before.waitSeconds, wait),
      // An update not measured (the first step of a world) keeps the estimate.
      updateSeconds:
        update <= 0
          ? before.updateSeconds
          : before.updateSeconds > 0
            ? next(before.updateSeconds, update)
            : update,
    };
  });
}

function unmeasured(worker: string): WorkerEstimate {
  return {
    worker,
    secondsPerSample: 0,
    steps: 0,
    recent: [],
    waitSeconds: 0,
    updateSeconds: 0,
    slowSince: null,
  };
}

/**
 * Splits `total` among ranks in proportion to `weights` (largest remainder, ties to the lower rank).
 * With `offsets` (seconds of fixed work per rank, `weights` being samples per second) each rank gets
 * weight_i · (T − offset_i), T the common finishing time that uses up `total`: a rank with more fixed
 * work gets that much less. A rank whose share would fall below `floor` gets `floor` and the rest is
 * split among the others, as long as the total allows every rank that much.
 */
export function proportionalSplit(
  total: number,
  weights: readonly number[],
  floor = 1,
  offsets: readonly number[] = [],
): number[] {
  const n = weights.length;
  if (n === 0) throw new RangeError('cannot split among 0 workers');
  const min = Math.max(0, Math.min(floor, Math.floor(total / n)));
  const pinned = new Set<number>();
  let shares: number[] = [];
  // Each pass pins at least one more rank to the floor, or ends: at most n passes.
  for (let pass = 0; pass <= n; pass++) {
    shares = freeShares(total - min * pinned.size, weights, offsets, pinned).map((s, i) =>
      pinned.has(i) ? min : s,
    );
    const below = shares.findIndex((s, i) => !pinned.has(i) && s < min);
    if (below < 0) break;
    shares.forEach((s, i) => {
      if (!pinned.has(i) && s < min) pinned.add(i);
    });
  }
  return largestRemainder(total, shares);
}

/** The real-valued shares of `rest` among the ranks not pinned (see proportionalSplit). */
function freeShares(
  rest: number,
  weights: readonly number[],
  offsets: readonly number[],
  pinned: ReadonlySet<number>,
): number[] {
  const free = weights.map((w, i) => (pinned.has(i) ? 0 : Math.max(0, w)));
  const sum = free.reduce((a, b) => a + b, 0);
  const open = weights.length - pinned.size;
  if (!(sum > 0)) return weights.map((_, i) => (pinned.has(i) ? 0 : rest / Math.max(1, open)));
  const offset = (i: number) => Math.max(0, offsets[i] ?? 0);
  // Σ w_i (T − u_i) = rest over the free ranks.
  const finish = (rest + free.reduce((a, w, i) => a + w * offset(i), 0)) / sum;
  return free.map((w, i) => (pinned.has(i) ? 0 : w * (finish - offset(i))));
}

/** Integer shares summing to `total`: floors, then the largest remainders (ties to the lower rank). */
function largestRemainder(total: number, shares: readonly number[]): number[] {
  const split = shares.map((s) => Math.max(0, Math.floor(s)));
  let left = total - split.reduce((a, b) => a + b, 0);
  const order = shares.map((s, i) => ({ i, r: s - Math.floor(s) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left <= 0) break;
    split[i] = (split[i] as number) + 1;
    left--;
  }
  return split;
}

/** The step time a split predicts: the last rank to reach the all-reduce, max u_i + b_i·s_i. */
export function predictedStepSeconds(
  perWorker: readonly number[],
  secondsPerSample: readonly number[],
  updateSeconds: readonly number[] = [],
): number {
  return perWorker.reduce(
    (worst, b, i) => Math.max(worst, (updateSeconds[i] ?? 0) + b * (secondsPerSample[i] ?? 0)),
    0,
  );
}

/**
 * Seconds per sample and update seconds of each member, or undefined when one of them is not
 * measured enough yet.
 */
export function measured(
  estimates: readonly WorkerEstimate[],
  members: readonly string[],
  warmupSteps: number,
): { seconds: number[]; updates: number[] } | undefined {
  const byWorker = new Map(estimates.map((e) => [e.worker, e]));
  const seconds: number[] = [];
  const updates: number[] = [];
  for (const member of members) {
    const e = byWorker.get(member);
    if (e === undefined || e.steps < warmupSteps || !(e.secondsPerSample > 0)) return undefined;
    seconds.push(e.secondsPerSample);
    updates.push(e.updateSeconds);
  }
  return { seconds, updates };
}

/** Re-plans within a generation at most every minIntervalSteps · 2^k after k of them (k ≤ this). */
export const MAX_BACKOFF_DOUBLINGS = 4;

/**
 * Steps that must pass after the last plan before the next one within a generation: the interval
 * doubles with each drift re-plan of the generation, so estimates that keep wandering (noise, a
 * neighbour that comes and goes) cost at most a handful of re-plans, and a new generation, whose
 * boundary re-plans for free anyway, starts over.
 */
export function replanInterval(minIntervalSteps: number, driftPlans: number): number {
  return minIntervalSteps * 2 ** Math.min(MAX_BACKOFF_DOUBLINGS, Math.max(0, driftPlans));
}

export interface PlanInput {
  readonly spec: BalancingSpec;
  readonly members: readonly string[];
  /** The split in effect (the policy's at a generation boundary). */
  readonly current: readonly number[];
  readonly estimates: readonly WorkerEstimate[];
  readonly step: number;
  readonly lastPlanStep: number;
  /** Drift re-plans already made in this generation (absent: none). */
  readonly driftPlans?: number;
  /** A generation boundary: a new split costs nothing there, so no hysteresis applies. */
  readonly boundary: boolean;
}

/**
 * The split the next step should use, or undefined to keep the current one. Even mode and a world of
 * one never change it; proportional waits for every member to be measured, re-plans within a
 * generation only after `replanInterval` steps and only when the gain beats `driftThreshold` (so
 * noise does not churn the split), and at a generation boundary whenever the split differs.
 */
export function planBalance(
  input: PlanInput,
): { perWorker: number[]; predictedBefore: number; predicted: number } | undefined {
  const { spec, current, members } = input;
  if (spec.mode !== 'proportional' || members.length < 2 || current.length !== members.length)
    return undefined;
  const interval = replanInterval(spec.minIntervalSteps, input.driftPlans ?? 0);
  if (!input.boundary && input.step - input.lastPlanStep < interval) return undefined;
  const times = measured(input.estimates, members, spec.warmupSteps);
  if (times === undefined) return undefined;
  const total = current.reduce((a, b) => a + b, 0);
  const floor = Math.max(1, Math.floor((spec.minShare * total) / members.length));
  const target = proportionalSplit(
    total,
    times.seconds.map((s) => 1 / s),
    floor,
    times.updates,
  );
  if (target.every((b, i) => b === current[i])) return undefined;
  const predictedBefore = predictedStepSeconds(current, times.seconds, times.updates);
  const predicted = predictedStepSeconds(target, times.seconds, times.updates);
  const gain = predictedBefore > 0 ? 1 - predicted / predictedBefore : 0;
  if (!input.boundary && gain < spec.driftThreshold) return undefined;
  return { perWorker: target, predictedBefore, predicted };
}

/** Drift re-plans of `generation` among the recorded plans. */
export function driftPlansIn(plans: readonly BalancePlan[], generation: number): number {
  return plans.filter((p) => p.generation === generation && p.reason === 'drift').length;
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
