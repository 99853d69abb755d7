/** Builders of Kubernetes objects for table tests of the operator's pure functions. */
import type { V1Node, V1Pod, V1Taint } from '@kubernetes/client-node';
import {
  FINALIZER_ACCOUNTING,
  LABEL_JOB_NAME,
  LABEL_REPLICA_INDEX,
  LABEL_ROLE,
} from '../../operator/api/contract.ts';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import type { OwnedJob } from '../../operator/controller/pod-builder.ts';
import { ANNOTATION_LEAVE_REQUESTED } from '../../operator/controller/pods.ts';
import { type Manifest, setPath, validManifest } from './job-builder.ts';

export const T0 = new Date('2026-11-21T12:00:00Z');
export const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

export function ownedJob(
  changes: Record<string, unknown> = {},
  status?: TrainingJobStatus,
  name = 'job',
): OwnedJob {
  const manifest: Manifest = validManifest(name);
  for (const [path, value] of Object.entries(changes)) setPath(manifest, path, value);
  const result = validateTrainingJob(manifest);
  if (!result.ok)
    throw new Error(`invalid test job: ${result.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`);
  const job = result.job as OwnedJob;
  job.metadata = {
    ...job.metadata,
    uid: 'job-uid',
    namespace: 'default',
    generation: 1,
  } as OwnedJob['metadata'];
  if (status !== undefined) job.status = status;
  return job;
}

export interface PodOptions {
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  ready?: boolean;
  node?: string;
  created?: number;
  deleting?: boolean;
  finalizer?: boolean;
  leave?: string;
  exitCode?: number;
  finishedAt?: number;
  /** When a terminated container started (seconds from T0, like finishedAt); left out by default. */
  startedAt?: number;
  reason?: string;
  disruption?: string;
  uid?: string;
}

export function workerPod(index: number, o: PodOptions = {}, job = 'job'): V1Pod {
  const phase = o.phase ?? 'Running';
  const name = `${job}-worker-${index}`;
  const terminated =
    phase === 'Succeeded' || phase === 'Failed'
      ? {
          exitCode: o.exitCode ?? (phase === 'Succeeded' ? 0 : 1),
          reason: phase === 'Succeeded' ? 'Completed' : 'Error',
          finishedAt: at(o.finishedAt ?? 0),
          ...(o.startedAt === undefined ? {} : { startedAt: at(o.startedAt) }),
        }
      : undefined;
  return {
    metadata: {
      name,
      namespace: 'default',
      uid: o.uid ?? `uid-${name}`,
      labels: { [LABEL_JOB_NAME]: job, [LABEL_ROLE]: 'worker', [LABEL_REPLICA_INDEX]: String(index) },
      creationTimestamp: at(o.created ?? -600),
      ...(o.deleting ? { deletionTimestamp: at(0) } : {}),
      ...(o.finalizer === false ? {} : { finalizers: [FINALIZER_ACCOUNTING] }),
      ...(o.leave === undefined ? {} : { annotations: { [ANNOTATION_LEAVE_REQUESTED]: o.leave } }),
    },
    spec: {
      containers: [{ name: 'worker', image: 'w' }],
      ...(phase === 'Pending' && o.node === undefined ? {} : { nodeName: o.node ?? 'node-0' }),
    },
    status: {
      phase,
      ...(o.reason === undefined ? {} : { reason: o.reason }),
      conditions: [
        { type: 'Ready', status: (o.ready ?? phase === 'Running') ? 'True' : 'False' },
        ...(o.disruption === undefined
          ? []
          : [{ type: 'DisruptionTarget', status: 'True', reason: o.disruption }]),
      ],
      ...(terminated === undefined
        ? {}
        : {
            containerStatuses: [
              {
                name: 'worker',
                image: 'w',
                imageID: '',
                ready: false,
                restartCount: 0,
                state: { terminated },
              },
            ],
          }),
    },
  } as V1Pod;
}

export function node(
  name: string,
  o: { ready?: boolean | 'Unknown'; taints?: V1Taint[]; unschedulable?: boolean } = {},
): V1Node {
  const ready =
    o.ready === undefined ? 'True' : o.ready === 'Unknown' ? 'Unknown' : o.ready ? 'True' : 'False';
  return {
    metadata: { name },
    spec: {
      ...(o.taints === undefined ? {} : { taints: o.taints }),
      ...(o.unschedulable ? { unschedulable: true } : {}),
    },
    status: { conditions: [{ type: 'Ready', status: ready }] },
  } as V1Node;
}

export function nodeMap(...nodes: V1Node[]): Map<string, V1Node> {
  return new Map(nodes.map((n) => [n.metadata?.name ?? '', n]));
}
