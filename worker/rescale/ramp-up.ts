/**
 * Batch-size warm-up (`spec.batch.rampUp`), stepwise as Megatron-LM's `rampup_batch_size`: the
 * global batch starts at `start` and grows by `increment` at evenly spaced points until it reaches
 * `global` after `samples` samples (or `epochs` epochs). The stage is a pure function of the samples
 * committed and the world's agreed settings, both of which every rank holds after the state
 * broadcast, so it is derived at every step and never stored; the elastic sampler takes each step's
 * batches as they come, so exactly-once per epoch holds across every stage.
 */
import type { BatchSpec } from '../../operator/api/training-job.ts';
import { splitEvenly } from './policy.ts';

export type RampUp = NonNullable<BatchSpec['rampUp']>;

/** The global batch after `samples` committed samples: start + increment per stage, at most `global`. */
export function rampUpBatch(ramp: RampUp, global: number, samples: number, trainSamples: number): number {
  if (ramp.start >= global) return global;
  const stages = Math.ceil((global - ramp.start) / ramp.increment);
  const length = ramp.samples ?? (ramp.epochs ?? 1) * trainSamples;
  const stage = Math.floor((samples * stages) / Math.max(1, length));
  return Math.min(global, ramp.start + stage * ramp.increment);
}

/**
 * The batches of a step of a world whose full batches are `perWorker`: during the ramp the world's
 * global batch shrinks by the ramp's fraction of `batch.global` (never below one sample per rank),
 * split evenly. `fraction` is the step's global batch over the world's full one, for the rate.
 */
export function rampedBatches(
  batch: BatchSpec,
  perWorker: readonly number[],
  samples: number,
  trainSamples: number,
): { perWorker: readonly number[]; fraction: number } {
  if (batch.rampUp === undefined) return { perWorker, fraction: 1 };
  const ramped = rampUpBatch(batch.rampUp, batch.global, samples, trainSamples);
  if (ramped >= batch.global) return { perWorker, fraction: 1 };
  const full = perWorker.reduce((a, b) => a + b, 0);
  const total = Math.max(perWorker.length, Math.ceil((full * ramped) / batch.global));
  return { perWorker: splitEvenly(total, perWorker.length), fraction: total / full };
}
