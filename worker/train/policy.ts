/**
 * Pure decisions of the training loop: the world of one generation (per-worker batches and learning
 * rate, design 4.5), the learning-rate schedule, when to evaluate, checkpoint and stop.
 */
import type {
  BatchSpec,
  CheckpointSpec,
  OptimizerSpec,
  TrainingJobSpec,
} from '../../operator/api/training-job.ts';
import { adascaleSmoothing, type PolicyState, scaleAt, worldShape } from '../rescale/policy.ts';
import { rampedBatches } from '../rescale/ramp-up.ts';

export type { PolicyState } from '../rescale/policy.ts';

type StoppingSpecValue = TrainingJobSpec['stopping'];

/** The world a step runs in: an input of every step, because the elastic runtime changes it. */
export interface World {
  /** Rendezvous round; a restart from a checkpoint is a new one. */
  readonly generation: number;
  readonly rank: number;
  readonly size: number;
  /** b_i of each rank, in rank order; the global batch is their sum. */
  readonly perWorker: readonly number[];
  /** The learning rate of the step (policy scale, warm-up and schedule applied). */
  readonly learningRate: number;
  /** AdaScale only: the base batch, S = B / B_base and θ, for the gain computed each step. */
  readonly adascale?: { readonly baseBatch: number; readonly scale: number; readonly smoothing: number };
  /**
   * Goodput autoscaling: carry each rank's gradient norm in the all-reduce (as AdaScale does) so that
   * the gradient noise scale is measured whatever the rescale policy.
   */
  readonly measureNoise?: boolean;
}

export interface GenerationRecord {
  readonly generation: number;
  readonly worldSize: number;
  readonly globalBatch: number;
  readonly learningRate: number;
  readonly firstStep: number;
}

/**
 * The world of one generation: per-worker batches and the policy state (worker/rescale/policy.ts
 * decides both; design 4.5). `previous` is the policy state of the world before, if any.
 */
export function worldFor(
  spec: { batch: BatchSpec; optimizer: OptimizerSpec; replicas: number },
  generation: number,
  rank: number,
  size: number,
  step: number,
  previous: PolicyState | undefined,
): { world: World; policy: PolicyState } {
  const shape = worldShape(spec.batch, spec.replicas, size, step, previous);
  return {
    world: {
      generation,
      rank,
      size,
      perWorker: shape.perWorker,
      learningRate: spec.optimizer.learningRate * scaleAt(shape.state, step),
      ...(spec.batch.policy === 'adascale' ? { adascale: adascaleOf(spec.batch, shape.state.scale) } : {}),
    },
    policy: shape.state,
  };
}

/** What a step of an AdaScale world needs for its gain. */
export function adascaleOf(batch: BatchSpec, scale: number): NonNullable<World['adascale']> {
  return { baseBatch: batch.global, scale, smoothing: adascaleSmoothing(batch.adascaleSmoothing, scale) };
}

/** Where a run stands, for the rate of its next step. */
export interface ScheduleClock {
  /** Steps taken. */
  readonly step: number;
  /** Scale-invariant iterations taken (AdaScale: the sum of the gains; otherwise the steps). */
  readonly progress: number;
  /** Samples committed, and the size of the training set. */
  readonly samples: number;
  readonly trainSamples: number;
  /** The global batch of the next step. */
  readonly globalBatch: number;
}

/** The clock of a training state before its next step of `globalBatch` samples. */
export function scheduleClock(
  state: { step: number; progress?: number | undefined; samples: number; dataset: { trainSamples: number } },
  globalBatch: number,
): ScheduleClock {
  return {
    step: state.step,
    progress: state.progress ?? state.step,
    samples: state.samples,
    trainSamples: state.dataset.trainSamples,
    globalBatch,
  };
}

/**
 * The initial warm-up's factor for the next step (Goyal et al. 2017): linear from `startFactor` to 1
 * over the first `steps` scale-invariant iterations or the first `epochs` of samples. Counted at the
 * end of the next step, so even a start factor of 0 never gives a step of rate 0. Derived from the
 * state every rank holds, never stored.
 */
export function initialWarmupFactor(warmup: OptimizerSpec['warmup'], clock: ScheduleClock): number {
  if (warmup === undefined) return 1;
  const done =
    warmup.steps !== undefined
      ? (clock.progress + 1) / warmup.steps
      : (clock.samples + clock.globalBatch) / ((warmup.epochs ?? 1) * clock.trainSamples);
  return done >= 1 ? 1 : warmup.startFactor + (1 - warmup.startFactor) * done;
}

/**
 * The learning rate of the next step: the policy's scale (with the warm-up after a rescale) and the
 * initial warm-up on lr_base, then the schedule over scale-invariant iterations.
 */
export function learningRateAt(
  optimizer: OptimizerSpec,
  policy: PolicyState,
  clock: ScheduleClock,
  totalSteps: number,
): number {
  const base =
    optimizer.learningRate * scaleAt(policy, clock.step) * initialWarmupFactor(optimizer.warmup, clock);
  return scheduledLearningRate(optimizer, base, clock.progress, totalSteps);
}

/** How the policy scales the rate for a batch `fraction` of the world's full one (during the ramp-up). */
function rampRateFactor(policy: BatchSpec['policy'], fraction: number): number {
  if (policy === 'linear') return fraction;
  if (policy === 'sqrt') return Math.sqrt(fraction);
  return 1;
}

/**
 * The world of the next step, from the generation's: the ramp-up's batches (a function of the samples
 * committed), the rate (policy, warm-ups, schedule, and the policy's scaling for a ramped batch) and
 * AdaScale's S for the batch actually taken. Every input is agreed, so every rank gets the same.
 */
export function stepWorld(
  optimizer: OptimizerSpec,
  batch: BatchSpec,
  generationWorld: World,
  state: {
    step: number;
    progress?: number | undefined;
    samples: number;
    policy: PolicyState;
    dataset: { trainSamples: number };
  },
  totalSteps: number,
): World {
  const ramp = rampedBatches(batch, generationWorld.perWorker, state.samples, state.dataset.trainSamples);
  const globalBatch = ramp.perWorker.reduce((a, b) => a + b, 0);
  const rate = learningRateAt(optimizer, state.policy, scheduleClock(state, globalBatch), totalSteps);
  const adascale = generationWorld.adascale;
  return {
    ...generationWorld,
    perWorker: ramp.perWorker,
    learningRate: rate * rampRateFactor(batch.policy, ramp.fraction),
    ...(adascale === undefined ? {} : { adascale: { ...adascale, scale: adascale.scale * ramp.fraction } }),
  };
}

/** Steps the run is expected to take (for the cosine schedule and progress): epochs or steps, whichever ends first. */
export function plannedSteps(stopping: StoppingSpecValue, trainSamples: number, globalBatch: number): number {
  const byEpochs =
    stopping.epochs === undefined
      ? Number.POSITIVE_INFINITY
      : stopping.epochs * Math.ceil(trainSamples / globalBatch);
  const bySteps = stopping.steps ?? Number.POSITIVE_INFINITY;
  const planned = Math.min(byEpochs, bySteps);
  return Number.isFinite(planned) ? planned : 1;
}

/** The learning rate after `step` (scale-invariant) iterations under the schedule, from the world's base rate. */
export function scheduledLearningRate(
  optimizer: OptimizerSpec,
  base: number,
  step: number,
  totalSteps: number,
): number {
  const s = optimizer.schedule;
  switch (s.type) {
    case 'constant':
      return base;
    case 'step':
      return base * (s.decayRate ?? 1) ** Math.floor(step / (s.decaySteps ?? 1));
    case 'exponential':
      return base * (s.decayRate ?? 1) ** (step / (s.decaySteps ?? 1));
    case 'cosine': {
      const progress = Math.min(1, step / Math.max(1, totalSteps));
      const floor = Math.min(s.minLearningRate, base);
      return floor + (base - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
    }
  }
}

export interface EvalResult {
  readonly step: number;
  readonly epoch: number;
  readonly loss: number;
  readonly accuracy: number;
  readonly samples: number;
}

/** Why training ends after `step` (completed steps) and `epoch` (completed epochs), or undefined. */
export function stopReason(
  stopping: StoppingSpecValue,
  progress: { step: number; epoch: number; progress?: number | undefined },
  lastEval: EvalResult | null,
): string | undefined {
  if (stopping.epochs !== undefined && progress.epoch >= stopping.epochs)
    return `completed ${stopping.epochs} epochs`;
  // In scale-invariant iterations: AdaScale's steps count by their gain (Johnson et al. 2020).
  if (stopping.steps !== undefined && (progress.progress ?? progress.step) >= stopping.steps)
    return `completed ${stopping.steps} steps`;
  if (
    stopping.targetAccuracy !== undefined &&
    lastEval !== null &&
    lastEval.step === progress.step &&
    lastEval.accuracy >= stopping.targetAccuracy
  ) {
    return `reached accuracy ${lastEval.accuracy.toFixed(4)} ≥ target ${stopping.targetAccuracy}`;
  }
  return undefined;
}

/** Evaluate after this step? Every intervalSteps, at the end of each epoch, and at the end of the run. */
export function evaluationDue(
  intervalSteps: number,
  step: number,
  endedEpoch: boolean,
  ending: boolean,
): boolean {
  return ending || endedEpoch || step % intervalSteps === 0;
}

export interface CheckpointClock {
  readonly step: number;
  /** Step and time (ms) of the last checkpoint written or restored. */
  readonly lastStep: number;
  readonly lastTime: number;
  readonly now: number;
}

/**
 * Checkpoint after this step? When a multiple of intervalSteps was crossed since the last one (so a
 * checkpoint delayed by a busy writer does not shift the ones after it), or intervalSeconds passed.
 */
export function checkpointDue(
  spec: Pick<CheckpointSpec, 'intervalSteps' | 'intervalSeconds'>,
  clock: CheckpointClock,
): boolean {
  if (clock.step <= clock.lastStep) return false;
  if (
    spec.intervalSteps !== undefined &&
    Math.floor(clock.step / spec.intervalSteps) > Math.floor(clock.lastStep / spec.intervalSteps)
  )
    return true;
  return spec.intervalSeconds !== undefined && clock.now - clock.lastTime >= spec.intervalSeconds * 1000;
}
