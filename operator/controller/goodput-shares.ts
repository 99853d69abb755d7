/**
 * The cluster view of goodput autoscaling: when several `policy: goodput` jobs that use GPUs compete
 * for the GPUs of the cluster, the leader divides them (operator/api/goodput-cluster.ts
 * `clusterShares`, by each job's predicted options in status) and each job's decision stays within
 * its share (plan.ts passes it to `autoscale` as the capacity). Pure: the jobs, their pods and the
 * nodes in, the shares out.
 *
 * Capacity is the allocatable GPUs of Ready nodes that are not going (a node with a disruption taint
 * or a spot notice counts as gone, so no job grows onto it), less the GPUs other TrainingJobs' workers
 * hold there. Jobs are divided in workers of the largest per-worker GPU count among them (one kind of
 * worker is the common case; mixed sizes are divided conservatively).
 */
import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { clusterShares } from '../api/goodput-cluster.ts';
import { elasticRange, type TrainingJob } from '../api/training-job.ts';
import { GPU_RESOURCE } from '../api/worker-defaults.ts';
import { nodeHealth } from './nodes.ts';

/** A job gets at least this fraction of its goodput at an even split of the GPUs, if it fits. */
export const FAIRNESS_FLOOR = 0.5;

export type ShareJob = Pick<TrainingJob, 'metadata' | 'spec' | 'status'>;

const TERMINAL = new Set(['Succeeded', 'Failed', 'Suspended']);

function quantity(q: string | number | undefined): number {
  const n = typeof q === 'number' ? q : Number(q ?? 0);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** GPUs one worker of the job asks for (spec.worker.gpus, else its nvidia.com/gpu resources). */
export function gpusPerWorker(spec: TrainingJob['spec']): number {
  const { requests, limits } = spec.worker.resources;
  return spec.worker.gpus ?? (quantity(limits?.[GPU_RESOURCE]) || quantity(requests?.[GPU_RESOURCE]));
}

function podGpus(pod: V1Pod): number {
  return (pod.spec?.containers ?? []).reduce(
    (sum, c) =>
      sum +
      (quantity(c.resources?.limits?.[GPU_RESOURCE]) || quantity(c.resources?.requests?.[GPU_RESOURCE])),
    0,
  );
}

const created = (job: ShareJob) => {
  const t = (job.metadata as { creationTimestamp?: unknown }).creationTimestamp;
  return t instanceof Date ? t.toISOString() : String(t ?? '');
};

const keyOf = (job: ShareJob) => `${job.metadata.namespace ?? 'default'}/${job.metadata.name}`;

/** The goodput jobs that compete for GPUs now, oldest first (the first to wait least). */
export function competingJobs(jobs: readonly ShareJob[]): ShareJob[] {
  return jobs
    .filter(
      (j) =>
        j.spec.autoscaling.policy === 'goodput' &&
        !j.spec.runPolicy.suspend &&
        !TERMINAL.has(j.status?.phase ?? '') &&
        gpusPerWorker(j.spec) > 0,
    )
    .sort((a, b) => created(a).localeCompare(created(b)) || keyOf(a).localeCompare(keyOf(b)));
}

/**
 * Each competing job's share in workers, by "namespace/name"; a job not in the map decides alone.
 * `pods` are the operator's worker pods (of every job), `podJob` names the job of one.
 */
export function goodputShares(
  jobs: readonly ShareJob[],
  pods: readonly V1Pod[],
  podJob: (pod: V1Pod) => string | undefined,
  nodes: ReadonlyMap<string, V1Node>,
): Map<string, number> {
  const competing = competingJobs(jobs);
  if (competing.length < 2) return new Map();
  const ready = [...nodes.values()].filter((n) => nodeHealth(n).state === 'ready');
  const total = ready.reduce((sum, n) => sum + quantity(n.status?.allocatable?.[GPU_RESOURCE]), 0);
  const readyNames = new Set(ready.map((n) => n.metadata?.name));
  const ours = new Set(competing.map(keyOf));
  const held = pods
    .filter((p) => readyNames.has(p.spec?.nodeName) && !ours.has(podJob(p) ?? ''))
    .filter((p) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed')
    .reduce((sum, p) => sum + podGpus(p), 0);
  const perWorker = Math.max(...competing.map((j) => gpusPerWorker(j.spec)));
  const capacity = Math.floor(Math.max(0, total - held) / perWorker);
  const shares = clusterShares(
    competing.map((j) => {
      const { min, max } = elasticRange(j.spec);
      return {
        id: keyOf(j),
        min,
        max,
        current: j.status?.autoscaling?.replicas ?? j.spec.replicas,
        options: j.status?.autoscaling?.options ?? [],
      };
    }),
    capacity,
    { fairnessFloor: FAIRNESS_FLOOR },
  );
  return shares;
}
