/**
 * `spec.autoscaling.policy: goodput` between the workers' reports and the desired worker count: folds
 * each progress report's step time into the observations kept in status, fits the model, decides, and
 * says what status and which event record the decision. Pure, for the operator's plan and `tensile run`.
 *
 * A user's scale wins: `status.autoscaling.specReplicas` remembers spec.replicas when the policy last
 * decided; a different spec.replicas (kubectl scale, an HPA, an edit) is taken as the new count, and
 * the minimum interval counts from it before the policy moves it again.
 */
import type { ProgressMessage } from './contract.ts';
import { fitThroughput, type ThroughputSample } from './goodput-model.ts';
import {
  type BatchRule,
  batchBounds,
  clampBatch,
  decideGoodput,
  type GoodputDecision,
  notableOptions,
} from './goodput-policy.ts';
import {
  type AutoscalingStatus,
  desiredReplicas,
  elasticRange,
  type TrainingJobSpec,
} from './training-job.ts';

export type Observation = NonNullable<AutoscalingStatus['observations']>[number];

/** Observations kept: one per (workers, per-worker batch); the oldest worlds go first. */
export const MAX_OBSERVATIONS = 32;

/** What a progress report adds: its world's step time replaces that of an older world of the same shape. */
export function foldObservation(
  observations: readonly Observation[],
  report: Pick<ProgressMessage, 'generation' | 'worldSize' | 'goodput'>,
  minSteps: number,
): Observation[] {
  const g = report.goodput;
  if (g === undefined || report.worldSize < 1) return [...observations];
  const next: Observation = {
    replicas: report.worldSize,
    perWorkerBatch: Math.round(g.perWorkerBatch * 100) / 100,
    stepSeconds: g.stepSeconds,
    steps: g.steps,
    generation: report.generation,
  };
  const same = (o: Observation) =>
    o.replicas === next.replicas && Math.abs(o.perWorkerBatch - next.perWorkerBatch) < 0.5;
  const held = observations.find(same);
  // The same world's report is cumulative: it replaces. A newer world's replaces once it is measured.
  const replaces =
    held === undefined ||
    held.generation === next.generation ||
    (next.generation > held.generation && next.steps >= minSteps);
  if (!replaces) return [...observations];
  return [...observations.filter((o) => !same(o)), next]
    .sort((a, b) => b.generation - a.generation)
    .slice(0, MAX_OBSERVATIONS)
    .sort((a, b) => a.replicas - b.replicas || a.perWorkerBatch - b.perWorkerBatch);
}

/** The global batch a world of N trains at: chosen in the autoscaling bounds, else the rescale policy's. */
export function batchRuleOf(spec: TrainingJobSpec): BatchRule {
  const bounds = batchBounds(spec.autoscaling);
  if (bounds !== undefined) return { kind: 'range', ...bounds };
  const batch = spec.batch;
  if (batch.policy === 'fixedGlobalBatch') return { kind: 'fixed', global: batch.global };
  return {
    kind: 'perWorker',
    perWorker: batch.perWorker ?? Math.max(1, Math.floor(batch.global / spec.replicas)),
  };
}

export interface AutoscaleInput {
  readonly spec: TrainingJobSpec;
  readonly status: AutoscalingStatus | undefined;
  /** The newest progress report of the job, if any. */
  readonly report: Pick<ProgressMessage, 'generation' | 'worldSize' | 'goodput'> | undefined;
  /** Workers asked for that are not running yet. */
  readonly pending: number;
  readonly capacity?: number;
  readonly now: Date;
}

export interface AutoscaleResult {
  /** The desired worker count. */
  readonly replicas: number;
  readonly status: AutoscalingStatus;
  /** A change of the count, worth an Event: why, with the predicted goodput of the options. */
  readonly event:
    | { readonly reason: 'GoodputRescale' | 'ScaleOverride'; readonly message: string }
    | undefined;
  readonly decision: GoodputDecision;
  /** When to look again (the minimum interval ends), if that is what holds a change back. */
  readonly retryAtMs: number | undefined;
}

const round4 = (x: number) => Number(x.toPrecision(4));

export function autoscale(input: AutoscaleInput): AutoscaleResult {
  const { spec, status, now } = input;
  const settings = spec.autoscaling;
  const nowMs = now.getTime();
  const { min, max } = elasticRange(spec);
  const overridden = status !== undefined && status.specReplicas !== spec.replicas;
  const current = status === undefined || overridden ? desiredReplicas(spec) : status.replicas;
  const lastChangeTime = overridden ? now.toISOString() : status?.lastChangeTime;
  const observations = foldObservation(
    status?.observations ?? [],
    input.report ?? { generation: 0, worldSize: 0 },
    settings.minSteps,
  );
  const noiseScale = input.report?.goodput?.noiseScale ?? status?.noiseScale;
  const samples: ThroughputSample[] = observations.filter((o) => o.steps >= settings.minSteps);
  const model = fitThroughput(samples);
  const currentBatch = currentGlobalBatch(spec, status, input.report, current);
  const decision = decideGoodput({
    current,
    min,
    max,
    baseBatch: spec.batch.global,
    batch: batchRuleOf(spec),
    model,
    samples,
    noiseScale,
    settings,
    lastChangeMs: lastChangeTime === undefined ? undefined : Date.parse(lastChangeTime),
    nowMs,
    pending: input.pending,
    ...(input.capacity === undefined ? {} : { capacity: input.capacity }),
    ...(currentBatch === undefined ? {} : { currentBatch }),
  });
  const batchChanged =
    currentBatch !== undefined &&
    decision.changed &&
    decision.globalBatch !== undefined &&
    decision.globalBatch !== currentBatch;
  const changed = (decision.changed && decision.replicas !== current) || batchChanged;
  const chosenBatch = batchChanged
    ? { globalBatch: decision.globalBatch as number, revision: (status?.chosenBatch?.revision ?? 0) + 1 }
    : status?.chosenBatch;
  const changes = (status?.changes ?? 0) + (changed ? 1 : 0);
  const next: AutoscalingStatus = {
    replicas: decision.replicas,
    specReplicas: spec.replicas,
    ...(changes === 0 ? {} : { changes }),
    ...(changed
      ? { lastChangeTime: now.toISOString() }
      : lastChangeTime === undefined
        ? {}
        : { lastChangeTime }),
    ...(decision.globalBatch === undefined ? {} : { globalBatch: decision.globalBatch }),
    ...(chosenBatch === undefined ? {} : { chosenBatch }),
    reason: decision.reason,
    ...(noiseScale === undefined ? {} : { noiseScale: round4(noiseScale) }),
    ...(model === undefined
      ? {}
      : {
          model: {
            fixedSeconds: round4(model.fixedSeconds),
            perSampleSeconds: round4(model.perSampleSeconds),
            perReplicaSeconds: round4(model.perReplicaSeconds),
          },
        }),
    ...(decision.options.length === 0
      ? {}
      : {
          options: notableOptions(decision.options, decision.replicas, 64).map((o) => ({
            replicas: o.replicas,
            globalBatch: o.globalBatch,
            goodput: round4(o.goodput),
          })),
        }),
    ...(observations.length === 0 ? {} : { observations }),
  };
  const event = changed
    ? { reason: 'GoodputRescale' as const, message: decision.reason }
    : overridden
      ? {
          reason: 'ScaleOverride' as const,
          message: `spec.replicas set to ${spec.replicas}: the goodput policy starts from it (no change before ${settings.minIntervalSeconds}s)`,
        }
      : undefined;
  return { replicas: decision.replicas, status: next, event, decision, retryAtMs: decision.retryAtMs };
}

/**
 * With batch bounds, the global batch the job trains at: the one chosen last (the workers take it up
 * at their next world), else what the current world measured, else the rescale policy's in bounds.
 * Undefined without bounds: the rule gives the batch of every size.
 */
export function currentGlobalBatch(
  spec: TrainingJobSpec,
  status: AutoscalingStatus | undefined,
  report: AutoscaleInput['report'],
  current: number,
): number | undefined {
  const bounds = batchBounds(spec.autoscaling);
  if (bounds === undefined) return undefined;
  if (status?.chosenBatch !== undefined) return clampBatch(status.chosenBatch.globalBatch, current, bounds);
  const measured = report?.goodput;
  if (measured !== undefined && report?.worldSize === current)
    return clampBatch(measured.perWorkerBatch * current, current, bounds);
  const perWorker = spec.batch.perWorker ?? Math.max(1, Math.ceil(spec.batch.global / spec.replicas));
  return clampBatch(perWorker * current, current, bounds);
}
