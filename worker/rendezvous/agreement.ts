/**
 * The spec values every rank of a world must agree on, decided once, by the rendezvous, for the whole
 * world. Pods embed the spec as it was when they were created, so after `kubectl scale` or a spec edit
 * the workers of one job hold different specs; if each rank derived its batch, learning rate,
 * evaluation or stopping points from its own, they would train on overlapping shares, mix evaluation
 * sums into gradient sums and stop at different steps.
 *
 * Each worker offers its spec in its member record: a revision (the TrainingJob's metadata.generation,
 * which rises with every spec change), a digest of the immutable parts (model, dataset, optimizer) and
 * the mutable settings. The proposer of a world writes an `Agreement` into it: the settings of the
 * newest revision among the previous world and the members (never older than the previous world's),
 * so a newer spec brought by any member takes effect at that generation boundary for every rank at
 * once, and survivors keep it in every later world. Ranks then use the world's settings, never their
 * own; a rank whose immutable parts differ refuses to join.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { batchBounds } from '../../operator/api/goodput-policy.ts';
import {
  AutoscalingSpecSchema,
  BalancingSpecSchema,
  BatchSpecSchema,
  CommunicationSpecSchema,
  EvaluationSpecSchema,
  elasticRange,
  StoppingSpecSchema,
  type TrainingJobSpec,
} from '../../operator/api/training-job.ts';
import { boundedWorldShape, PolicyStateSchema, worldShape } from '../rescale/policy.ts';
import type { ProposedWorld, WorldRecord } from './decide.ts';

const positiveInt = z.int().min(1);

/** The mutable spec fields that change what the ranks of a world compute. */
export const SettingsSchema = z.object({
  replicas: positiveInt,
  minReplicas: positiveInt,
  maxReplicas: positiveInt.optional(),
  batch: BatchSpecSchema,
  /** Absent in the records of earlier versions: an even split. */
  balancing: BalancingSpecSchema.optional(),
  /** Absent in the records of earlier versions: no autoscaling (goodput changes what a step carries). */
  autoscaling: AutoscalingSpecSchema.optional(),
  stopping: StoppingSpecSchema,
  evaluation: EvaluationSpecSchema,
  /** Absent in worlds of earlier versions: no compression, a step is one all-reduce. */
  communication: CommunicationSpecSchema.optional(),
  checkpoint: z.object({
    intervalSteps: positiveInt.optional(),
    intervalSeconds: positiveInt.optional(),
    keep: positiveInt,
  }),
});
export type Settings = z.output<typeof SettingsSchema>;

/** In the order changes are reported. */
export const SETTING_FIELDS = [
  'replicas',
  'minReplicas',
  'maxReplicas',
  'batch',
  'balancing',
  'autoscaling',
  'stopping',
  'evaluation',
  'communication',
  'checkpoint',
] as const satisfies readonly (keyof Settings)[];

export const IMMUTABLE_FIELDS = ['model', 'dataset', 'optimizer'] as const;
type ImmutableField = (typeof IMMUTABLE_FIELDS)[number];

/** What a worker brings: its spec revision, its immutable parts' digests and its settings. */
export const SpecOfferSchema = z.object({
  revision: z.int().min(0),
  identity: z.object({ model: z.string(), dataset: z.string(), optimizer: z.string() }),
  settings: SettingsSchema,
});
export type SpecOffer = z.output<typeof SpecOfferSchema>;

/** What a world decided: the offer it follows, and the replicas its default per-worker batch divides. */
export const AgreementSchema = SpecOfferSchema.extend({
  /**
   * linear, sqrt and adascale without batch.perWorker: b = global / these replicas. Fixed when the
   * batch settings were taken up, so a scale (a new `replicas`) changes N, not b.
   */
  batchReplicas: positiveInt,
});
export type Agreement = z.output<typeof AgreementSchema>;

/** JSON with keys sorted: the same value always gives the same text. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function digest(value: unknown): string {
  return createHash('sha256').update(canonical(value)).digest('hex').slice(0, 16);
}

/** This worker's offer, from its spec and the revision the operator gave it. */
export function specOffer(spec: TrainingJobSpec, revision: number): SpecOffer {
  return {
    revision,
    identity: {
      model: digest(spec.model),
      dataset: digest(spec.dataset),
      optimizer: digest(spec.optimizer),
    },
    settings: {
      replicas: spec.replicas,
      minReplicas: spec.minReplicas,
      ...(spec.maxReplicas === undefined ? {} : { maxReplicas: spec.maxReplicas }),
      batch: spec.batch,
      balancing: spec.balancing,
      autoscaling: spec.autoscaling,
      stopping: spec.stopping,
      evaluation: spec.evaluation,
      communication: spec.communication,
      checkpoint: {
        ...(spec.checkpoint.intervalSteps === undefined
          ? {}
          : { intervalSteps: spec.checkpoint.intervalSteps }),
        ...(spec.checkpoint.intervalSeconds === undefined
          ? {}
          : { intervalSeconds: spec.checkpoint.intervalSeconds }),
        keep: spec.checkpoint.keep,
      },
    },
  };
}

/** The agreement of a world that only ever has this worker (no rendezvous). */
export function soleAgreement(offer: SpecOffer): Agreement {
  return { ...offer, batchReplicas: offer.settings.replicas };
}

function sameIdentity(a: SpecOffer['identity'], b: SpecOffer['identity']): boolean {
  return IMMUTABLE_FIELDS.every((f) => a[f] === b[f]);
}

/** The immutable fields in which `offer` differs from `agreement` (empty when it may join). */
export function immutableMismatch(agreement: Agreement, offer: SpecOffer): ImmutableField[] {
  return IMMUTABLE_FIELDS.filter((f) => agreement.identity[f] !== offer.identity[f]);
}

/** The settings fields that differ between two agreements or offers, in SETTING_FIELDS order. */
export function changedSettings(before: Settings, after: Settings): (keyof Settings)[] {
  return SETTING_FIELDS.filter((f) => canonical(before[f]) !== canonical(after[f]));
}

function basisOf(settings: Settings): unknown {
  const { policy, global, perWorker } = settings.batch;
  return { policy, global, perWorker };
}

/** Newest revision first; equal revisions by their text, so every proposer picks the same one. */
function newest(offers: readonly SpecOffer[]): SpecOffer | undefined {
  let best: SpecOffer | undefined;
  for (const offer of offers) {
    if (
      best === undefined ||
      offer.revision > best.revision ||
      (offer.revision === best.revision && canonical(offer) < canonical(best))
    )
      best = offer;
  }
  return best;
}

/**
 * The agreement of the next world, from the previous world's and the offers of its members
 * (undefined when there is neither: workers of a version that offers nothing). The previous world
 * fixes the immutable parts; offers of other ones are ignored here (their workers refuse to join).
 * A newer revision's settings replace the previous ones; the batch basis moves only when the settings
 * that define the per-worker batch (policy, global, perWorker) changed.
 */
export function agree(previous: Agreement | undefined, offers: readonly SpecOffer[]): Agreement | undefined {
  const identity = previous?.identity ?? newest(offers)?.identity;
  if (identity === undefined) return previous;
  const candidate = newest(offers.filter((o) => sameIdentity(o.identity, identity)));
  if (candidate === undefined || (previous !== undefined && previous.revision >= candidate.revision))
    return previous;
  const keepBasis =
    previous !== undefined &&
    canonical(basisOf(previous.settings)) === canonical(basisOf(candidate.settings));
  return {
    ...candidate,
    batchReplicas: keepBasis ? previous.batchReplicas : candidate.settings.replicas,
  };
}

/**
 * What a proposer writes into a world besides its members: the agreement, each rank's batch and the
 * policy state the world starts from (design 4.5). `learningRate` is lr_base (optimizer, immutable);
 * `own` is the proposer's offer, used only when neither the previous world nor any member has one.
 */
export function shapeWorld(
  proposal: ProposedWorld,
  previous: WorldRecord | undefined,
  offers: readonly SpecOffer[],
  own: SpecOffer,
  learningRate: number,
  chosenBatch?: number,
): Pick<WorldRecord, 'members' | 'globalBatch' | 'learningRate' | 'policy' | 'agreement'> {
  const agreement = agree(previous?.agreement, offers) ?? soleAgreement(own);
  const before = PolicyStateSchema.safeParse(previous?.policy);
  const args = [
    agreement.settings.batch,
    agreement.batchReplicas,
    proposal.members.length,
    proposal.startStep,
    before.success ? before.data : undefined,
  ] as const;
  const bounds = agreement.settings.autoscaling && batchBounds(agreement.settings.autoscaling);
  const shape = bounds ? boundedWorldShape(...args, bounds, chosenBatch) : worldShape(...args);
  return {
    members: proposal.members.map((m, i) => ({ ...m, batch: shape.perWorker[i] ?? 1 })),
    globalBatch: shape.globalBatch,
    learningRate: learningRate * shape.state.targetScale,
    policy: { ...(previous?.policy ?? {}), ...shape.state },
    agreement,
  };
}

/**
 * The rendezvous range this worker decides with: its own, unless the current world follows a newer
 * spec revision than its own (a scale it was created before), whose range then wins, so that old and
 * new members do not propose worlds of different sizes in turn.
 */
export function rendezvousRange(
  own: { readonly minReplicas: number; readonly maxReplicas: number },
  offer: SpecOffer | undefined,
  agreement: Agreement | undefined,
): { minReplicas: number; maxReplicas: number } {
  if (agreement === undefined || (offer !== undefined && offer.revision >= agreement.revision))
    return { minReplicas: own.minReplicas, maxReplicas: own.maxReplicas };
  const range = elasticRange(agreement.settings);
  return { minReplicas: range.min, maxReplicas: range.max };
}
