/**
 * Kueue's contract for a job kind it does not know (an "external framework"), as pure functions: a job
 * labelled kueue.x-k8s.io/queue-name gets a Workload (one pod set `worker`: count = desired workers,
 * minCount = minReplicas for partial admission) and stays suspended until Kueue admits it; the admission
 * (its flavors' node labels and tolerations, its count) shapes the workers; when Kueue evicts it the job
 * suspends (workers checkpoint: progress is kept) and, once its workers are gone, hands the quota back.
 */
import type { V1Pod, V1Toleration } from '@kubernetes/client-node';
import { LABEL_JOB_NAME } from '../api/contract.ts';
import { API_GROUP_VERSION, desiredReplicas, KIND, type TrainingJob } from '../api/training-job.ts';
import { type OwnedJob, ownerReference } from './pod-builder.ts';

export const QUEUE_LABEL = 'kueue.x-k8s.io/queue-name';
export const KUEUE_GROUP = 'kueue.x-k8s.io';
export const KUEUE_VERSION = 'v1beta2';
export const POD_SET = 'worker';
/** Kueue's opt-in to elastic jobs (workload slices; its ElasticJobsViaWorkloadSlices feature gate). */
export const ELASTIC_ANNOTATION = 'kueue.x-k8s.io/elastic-job';
/** On a scale-up slice: `<namespace>/<name>` of the slice it replaces once admitted. */
export const REPLACEMENT_FOR_ANNOTATION = 'kueue.x-k8s.io/workload-slice-replacement-for';
/** On every slice: the name of the first one in the chain. */
export const SLICE_NAME_ANNOTATION = 'kueue.x-k8s.io/workload-slice-name';

export interface KueueCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface PodSetAssignment {
  name: string;
  flavors?: Record<string, string>;
  count?: number;
}

export interface Workload {
  apiVersion: string;
  kind: 'Workload';
  metadata: {
    name: string;
    namespace: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string | Date;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    ownerReferences?: unknown[];
  };
  spec: {
    queueName: string;
    podSets: {
      name: string;
      count: number;
      minCount?: number;
      template: { metadata?: unknown; spec: unknown };
    }[];
    priorityClassRef?: { group: string; kind: string; name: string };
    priority?: number;
  };
  status?: {
    conditions?: KueueCondition[];
    admission?: { clusterQueue: string; podSetAssignments: PodSetAssignment[] } | null;
    admissionChecks?: {
      podSetUpdates?: { name: string; nodeSelector?: Record<string, string>; tolerations?: V1Toleration[] }[];
    }[];
  };
}

export interface ResourceFlavor {
  metadata: { name: string };
  spec?: { nodeLabels?: Record<string, string>; tolerations?: V1Toleration[] };
}

export function queueNameOf(job: TrainingJob): string | undefined {
  const labels = job.metadata['labels'] as Record<string, string> | undefined;
  const name = labels?.[QUEUE_LABEL];
  return name === undefined || name === '' ? undefined : name;
}

/** Kueue's own naming for a job's workload: kind, name, and room left for its suffixes. */
export function workloadName(job: string): string {
  return `trainingjob-${job}`;
}

/** Whether the job asks Kueue to rescale it in place (workload slices) rather than re-queue it. */
export function isElastic(job: Pick<TrainingJob, 'metadata'>): boolean {
  const annotations = job.metadata['annotations'] as Record<string, string> | undefined;
  return annotations?.[ELASTIC_ANNOTATION] === 'true';
}

/** What the job asks Kueue for: a count, and a minimum where partial admission applies. */
export function wantedCounts(job: Pick<TrainingJob, 'metadata' | 'spec'>): {
  count: number;
  minCount?: number;
} {
  const count = desiredReplicas(job.spec);
  const min = Math.min(job.spec.minReplicas, count);
  // Kueue takes partial admission and elastic slices as exclusive on one job (KEP-77).
  return min < count && !isElastic(job) ? { count, minCount: min } : { count };
}

export interface WorkloadNaming {
  /** The workload's name (default: workloadName(job)). */
  readonly name?: string;
  /** A scale-up slice: the key (`namespace/name`) of the admitted slice it replaces. */
  readonly replacementFor?: string;
  /** The first slice of the chain (default: this one). */
  readonly sliceName?: string;
}

/**
 * The Workload of a queued job, from the pod the operator would create for it; `priority` is the value
 * of the pods' PriorityClass (Kueue's webhook fills it in for its own integrations, so we must).
 */
export function buildWorkload(
  job: OwnedJob,
  queueName: string,
  pod: V1Pod,
  priority?: number,
  naming: WorkloadNaming = {},
): Workload {
  const priorityClass = pod.spec?.priorityClassName;
  const { count, minCount } = wantedCounts(job);
  const name = naming.name ?? workloadName(job.metadata.name);
  const elastic = isElastic(job);
  return {
    apiVersion: `${KUEUE_GROUP}/${KUEUE_VERSION}`,
    kind: 'Workload',
    metadata: {
      name,
      namespace: job.metadata.namespace,
      labels: { [QUEUE_LABEL]: queueName, [LABEL_JOB_NAME]: job.metadata.name },
      ...(elastic
        ? {
            annotations: {
              [ELASTIC_ANNOTATION]: 'true',
              [SLICE_NAME_ANNOTATION]: naming.sliceName ?? name,
              ...(naming.replacementFor === undefined
                ? {}
                : { [REPLACEMENT_FOR_ANNOTATION]: naming.replacementFor }),
            },
          }
        : {}),
      ownerReferences: [ownerReference(job)],
    },
    spec: {
      queueName,
      podSets: [
        {
          name: POD_SET,
          count,
          ...(minCount === undefined ? {} : { minCount }),
          template: { metadata: { labels: pod.metadata?.labels ?? {} }, spec: pod.spec ?? {} },
        },
      ],
      ...(priorityClass === undefined || priority === undefined
        ? {}
        : {
            priorityClassRef: { group: 'scheduling.k8s.io', kind: 'PriorityClass', name: priorityClass },
            priority,
          }),
    },
  };
}

const isTrue = (w: Workload, type: string) =>
  w.status?.conditions?.some((c) => c.type === type && c.status === 'True') ?? false;

/** What Kueue lets the job do now. */
export type KueueGate =
  | {
      readonly admitted: false;
      readonly reason: 'QueuedByKueue' | 'EvictedByKueue';
      readonly message: string;
    }
  | {
      readonly admitted: true;
      readonly count: number;
      readonly nodeSelector: Record<string, string>;
      readonly tolerations: V1Toleration[];
    };

/** Names of the flavors the admission assigned to the worker pod set (to look up their node labels). */
export function assignedFlavors(workload: Workload | undefined): string[] {
  const assignment = workload?.status?.admission?.podSetAssignments.find((a) => a.name === POD_SET);
  return [...new Set(Object.values(assignment?.flavors ?? {}))];
}

export function kueueGate(workload: Workload | undefined, flavors: readonly ResourceFlavor[]): KueueGate {
  if (workload === undefined)
    return { admitted: false, reason: 'QueuedByKueue', message: 'creating the Kueue workload' };
  const admission = workload.status?.admission;
  const evicted = workload.status?.conditions?.find((c) => c.type === 'Evicted' && c.status === 'True');
  if (evicted !== undefined)
    return { admitted: false, reason: 'EvictedByKueue', message: `evicted by Kueue: ${evicted.message}` };
  if (admission == null || !isTrue(workload, 'Admitted'))
    return {
      admitted: false,
      reason: 'QueuedByKueue',
      message: `waiting in Kueue queue ${workload.spec.queueName}`,
    };
  const assignment = admission.podSetAssignments.find((a) => a.name === POD_SET);
  const nodeSelector: Record<string, string> = {};
  const tolerations: V1Toleration[] = [];
  for (const name of assignedFlavors(workload)) {
    const flavor = flavors.find((f) => f.metadata.name === name);
    Object.assign(nodeSelector, flavor?.spec?.nodeLabels);
    tolerations.push(...(flavor?.spec?.tolerations ?? []));
  }
  for (const check of workload.status?.admissionChecks ?? [])
    for (const update of check.podSetUpdates ?? [])
      if (update.name === POD_SET) {
        Object.assign(nodeSelector, update.nodeSelector);
        tolerations.push(...(update.tolerations ?? []));
      }
  // An elastic slice scaled down in place keeps its (immutable) admission: the pod set has the count.
  const asked = workload.spec.podSets.find((p) => p.name === POD_SET)?.count;
  const granted = assignment?.count ?? asked ?? 1;
  const count = Math.min(granted, asked ?? granted);
  return { admitted: true, count, nodeSelector, tolerations };
}

/** The job as its workers run under an admission: Kueue's node labels and tolerations added. */
export function withAdmission(job: OwnedJob, gate: KueueGate): OwnedJob {
  if (!gate.admitted || (Object.keys(gate.nodeSelector).length === 0 && gate.tolerations.length === 0))
    return job;
  const worker = job.spec.worker;
  return {
    ...job,
    spec: {
      ...job.spec,
      worker: {
        ...worker,
        nodeSelector: { ...worker.nodeSelector, ...gate.nodeSelector },
        tolerations: [
          ...(worker.tolerations ?? []),
          ...gate.tolerations.map((t) => ({
            ...(t.key === undefined ? {} : { key: t.key }),
            operator: t.operator === 'Exists' ? ('Exists' as const) : ('Equal' as const),
            ...(t.value === undefined ? {} : { value: t.value }),
            ...(t.effect === undefined
              ? {}
              : { effect: t.effect as 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute' }),
          })),
        ],
      },
    },
  };
}

function setCondition(conditions: readonly KueueCondition[], next: KueueCondition): KueueCondition[] {
  const old = conditions.find((c) => c.type === next.type);
  const kept =
    old !== undefined && old.status === next.status ? old.lastTransitionTime : next.lastTransitionTime;
  return [...conditions.filter((c) => c.type !== next.type), { ...next, lastTransitionTime: kept }];
}

/**
 * The status that hands an evicted workload's quota back once its workers are gone (what Kueue's own
 * job integrations do): no admission, QuotaReserved and Admitted False. Undefined when there is
 * nothing to hand back.
 */
export function releasedQuotaStatus(workload: Workload, now: Date): Workload['status'] | undefined {
  if (workload.status?.admission == null) return undefined;
  const time = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const generation = workload.metadata.generation;
  const base = {
    lastTransitionTime: time,
    ...(generation === undefined ? {} : { observedGeneration: generation }),
  };
  let conditions = setCondition(workload.status.conditions ?? [], {
    ...base,
    type: 'QuotaReserved',
    status: 'False',
    reason: 'Pending',
    message: 'the TrainingJob stopped its workers after the eviction',
  });
  conditions = setCondition(conditions, {
    ...base,
    type: 'Admitted',
    status: 'False',
    reason: 'NoReservation',
    message: 'the workload has no reservation',
  });
  return { ...workload.status, admission: null, conditions };
}

/** The status that tells Kueue the job is over, so its quota goes to the next workload. */
export function finishedStatus(
  workload: Workload,
  succeeded: boolean,
  message: string,
  now: Date,
  reason?: 'OutOfSync',
): Workload['status'] | undefined {
  if (isTrue(workload, 'Finished')) return undefined;
  const time = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    ...workload.status,
    conditions: setCondition(workload.status?.conditions ?? [], {
      type: 'Finished',
      status: 'True',
      reason: reason ?? (succeeded ? 'Succeeded' : 'Failed'),
      message: message === '' ? (succeeded ? 'TrainingJob succeeded' : 'TrainingJob failed') : message,
      lastTransitionTime: time,
    }),
  };
}
