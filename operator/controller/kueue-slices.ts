/**
 * What a queued job's Workloads must become when the job is scaled (kubectl scale, a spec.replicas or
 * minReplicas edit), as a pure function of the job and its Workloads. Kueue's rules (KEP-77 and its job
 * framework):
 * - a Workload without a quota reservation is updated in place;
 * - an elastic job (annotation kueue.x-k8s.io/elastic-job: "true", Kueue's ElasticJobsViaWorkloadSlices
 *   gate) is scaled down in place, and scaled up by a new slice that names the admitted one it replaces:
 *   the workers keep running under the old slice until Kueue admits the new one and finishes the old;
 * - any other admitted job whose Workload no longer matches is stopped (its workers checkpoint) and
 *   queued again with a new Workload, as Kueue does for a batch Job without a matching Workload.
 */
import type { TrainingJob } from '../api/training-job.ts';
import {
  isElastic,
  POD_SET,
  REPLACEMENT_FOR_ANNOTATION,
  SLICE_NAME_ANNOTATION,
  type Workload,
  wantedCounts,
  workloadName,
} from './kueue.ts';

export type WorkloadAction =
  | { readonly kind: 'none' }
  | {
      readonly kind: 'create';
      readonly name: string;
      readonly replacementFor?: string;
      readonly sliceName?: string;
    }
  | {
      readonly kind: 'resize';
      readonly workload: Workload;
      readonly count: number;
      readonly minCount?: number;
    }
  | { readonly kind: 'finish'; readonly workload: Workload; readonly message: string }
  | { readonly kind: 'delete'; readonly workload: Workload };

export interface WorkloadPlan {
  /** The Workload whose admission the workers run under now (undefined: none yet). */
  readonly current: Workload | undefined;
  readonly action: WorkloadAction;
  /** Set when the job must stop its workers to be queued again: why, for its Suspended condition. */
  readonly requeue?: string;
}

const conditionTrue = (w: Workload, type: string) =>
  w.status?.conditions?.some((c) => c.type === type && c.status === 'True') ?? false;
const hasReservation = (w: Workload) => w.status?.admission != null;
const keyOf = (w: Workload) => `${w.metadata.namespace}/${w.metadata.name}`;
const podSet = (w: Workload) => w.spec.podSets.find((p) => p.name === POD_SET);
const time = (w: Workload) => new Date(w.metadata.creationTimestamp ?? 0).getTime();

/** Oldest first; a replacement sorts after the slice it replaces when both were created in one second. */
export function activeWorkloads(workloads: readonly Workload[]): Workload[] {
  return workloads
    .filter((w) => !conditionTrue(w, 'Finished'))
    .sort((a, b) => {
      const byTime = time(a) - time(b);
      if (byTime !== 0) return byTime;
      if (b.metadata.annotations?.[REPLACEMENT_FOR_ANNOTATION] === keyOf(a)) return -1;
      if (a.metadata.annotations?.[REPLACEMENT_FOR_ANNOTATION] === keyOf(b)) return 1;
      return a.metadata.name.localeCompare(b.metadata.name);
    });
}

/** A later Workload of the job: unique per spec generation, as Kueue names slices. */
export function nextWorkloadName(job: Pick<TrainingJob, 'metadata'>, existing: readonly Workload[]): string {
  const base = workloadName(job.metadata['name'] as string);
  if (existing.length === 0) return base;
  const generation = (job.metadata['generation'] as number | undefined) ?? existing.length;
  const name = `${base}-g${generation}`;
  return existing.some((w) => w.metadata.name === name) ? `${name}-${existing.length}` : name;
}

function matches(w: Workload, wanted: { count: number; minCount?: number }): boolean {
  const set = podSet(w);
  return set?.count === wanted.count && set.minCount === wanted.minCount;
}

export function planWorkloads(
  job: Pick<TrainingJob, 'metadata' | 'spec'> & { status?: { phase?: string } },
  workloads: readonly Workload[],
  workersLeft: number,
): WorkloadPlan {
  const active = activeWorkloads(workloads);
  const phase = job.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed')
    return { current: active.at(-1) ?? workloads.at(-1), action: { kind: 'none' } };
  const wanted = wantedCounts(job);
  const [old, next, ...extra] = active;
  if (old === undefined)
    return { current: undefined, action: { kind: 'create', name: nextWorkloadName(job, workloads) } };
  if (next === undefined) return oneWorkload(job, old, wanted, workloads, workersLeft);
  if (extra.length > 0)
    return {
      current: next,
      action: {
        kind: 'finish',
        workload: old,
        message: 'more than two workload slices: the oldest is out of sync',
      },
    };
  // Two slices: the new one waits for admission while the workers run under the old one.
  const replaces = next.metadata.annotations?.[REPLACEMENT_FOR_ANNOTATION] === keyOf(old);
  if ((hasReservation(next) && replaces) || !hasReservation(old) || conditionTrue(old, 'Evicted'))
    return {
      current: next,
      action: {
        kind: 'finish',
        workload: old,
        message: 'the workload slice is out of sync with its TrainingJob',
      },
    };
  if (!matches(next, wanted) && !hasReservation(next))
    return { current: old, action: { kind: 'resize', workload: next, ...wanted } };
  return { current: old, action: { kind: 'none' } };
}

function oneWorkload(
  job: Pick<TrainingJob, 'metadata' | 'spec'>,
  w: Workload,
  wanted: { count: number; minCount?: number },
  all: readonly Workload[],
  workersLeft: number,
): WorkloadPlan {
  if (matches(w, wanted)) return { current: w, action: { kind: 'none' } };
  if (!hasReservation(w)) return { current: w, action: { kind: 'resize', workload: w, ...wanted } };
  const count = podSet(w)?.count ?? 0;
  if (isElastic(job) && w.metadata.annotations?.[SLICE_NAME_ANNOTATION] !== undefined) {
    if (wanted.count < count) return { current: w, action: { kind: 'resize', workload: w, ...wanted } };
    if (wanted.count > count)
      return {
        current: w,
        action: {
          kind: 'create',
          name: nextWorkloadName(job, all),
          replacementFor: keyOf(w),
          sliceName: w.metadata.annotations[SLICE_NAME_ANNOTATION] ?? w.metadata.name,
        },
      };
  }
  // Admitted for other counts than the job now asks for: the workers checkpoint and go, then the old
  // Workload is deleted (handing its quota back) and a new one queued.
  const requeue = `the job now asks Kueue for ${describe(wanted)} instead of ${describe(podSet(w) ?? { count })}: its workers checkpoint and it is queued again with a new Workload (annotate kueue.x-k8s.io/elastic-job: "true" to rescale without stopping, with Kueue's ElasticJobsViaWorkloadSlices feature gate)`;
  return {
    current: w,
    requeue,
    action: workersLeft === 0 ? { kind: 'delete', workload: w } : { kind: 'none' },
  };
}

function describe(counts: { count: number; minCount?: number | undefined }): string {
  return counts.minCount === undefined
    ? `${counts.count} workers`
    : `${counts.count} workers (at least ${counts.minCount})`;
}
