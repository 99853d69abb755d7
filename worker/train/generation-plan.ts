/**
 * The plan of one generation, on every rank, from what its world agreed (rendezvous/agreement.ts) and
 * from the state every rank received from the world's source, never from the rank's own spec: its
 * batches and learning rate (design 4.5), the settings it evaluates, checkpoints and stops by, and the
 * spec change it takes up, if any. Pure, so equal inputs give every rank the same plan.
 */
import type { OptimizerSpec } from '../../operator/api/training-job.ts';
import { type Agreement, changedSettings, type Settings } from '../rendezvous/agreement.ts';
import { type PolicyState, policyState, scaleAt, worldShape } from '../rescale/policy.ts';
import { adascaleOf, type World } from './policy.ts';

/** A spec change a generation takes up: from and to which revision, and which settings differ. */
export interface SpecChange {
  readonly from: number;
  readonly to: number;
  readonly changed: readonly (keyof Settings)[];
}

export interface GenerationPlan {
  readonly world: World;
  readonly policy: PolicyState;
  readonly agreement: Agreement;
  readonly globalBatch: number;
  /** Undefined when the generation runs the settings of the one before (or is the first). */
  readonly change: SpecChange | undefined;
}

export interface GenerationInput {
  readonly agreement: Agreement;
  /** Each rank's batch as the world decided it; undefined to derive them from the agreement. */
  readonly batches: readonly number[] | undefined;
  /** Immutable, hence the same on every rank that joined. */
  readonly optimizer: OptimizerSpec;
  readonly generation: number;
  readonly rank: number;
  readonly size: number;
  /** The step the world starts from (the source's, after the state broadcast). */
  readonly step: number;
  /** The state's policy and agreement of the generation before, undefined for the first. */
  readonly previous: { readonly policy: PolicyState; readonly agreement: Agreement | undefined } | undefined;
}

function validBatches(batches: readonly number[] | undefined, size: number): batches is readonly number[] {
  return (
    batches !== undefined && batches.length === size && batches.every((b) => Number.isInteger(b) && b >= 1)
  );
}

export function planGeneration(input: GenerationInput): GenerationPlan {
  const { agreement, size, step } = input;
  const batch = agreement.settings.batch;
  const perWorker = validBatches(input.batches, size)
    ? [...input.batches]
    : worldShape(batch, agreement.batchReplicas, size, step, undefined).perWorker;
  const { globalBatch, state } = policyState(batch, perWorker, step, input.previous?.policy);
  const before = input.previous?.agreement;
  const changed = before === undefined ? [] : changedSettings(before.settings, agreement.settings);
  return {
    world: {
      generation: input.generation,
      rank: input.rank,
      size,
      perWorker,
      learningRate: input.optimizer.learningRate * scaleAt(state, step),
      ...(batch.policy === 'adascale' ? { adascale: adascaleOf(batch, state.scale) } : {}),
    },
    policy: state,
    agreement,
    globalBatch,
    change:
      before === undefined || (before.revision === agreement.revision && changed.length === 0)
        ? undefined
        : { from: before.revision, to: agreement.revision, changed },
  };
}
