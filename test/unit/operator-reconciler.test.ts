/**
 * The reconciler's writes against an in-memory API server that behaves like the real one where it
 * matters here: a status patch carrying a stale resourceVersion is refused with 409 Conflict, one
 * without a resourceVersion is applied unconditionally (a merge patch).
 */
import type { KubernetesObject, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ControlMessage } from '../../operator/api/contract.ts';
import { KubeApiError } from '../../operator/api/kube-errors.ts';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import type { EventRecorder } from '../../operator/controller/events.ts';
import type { KubeClient } from '../../operator/controller/kube.ts';
import type { ResourceFlavor, Workload } from '../../operator/controller/kueue.ts';
import { OperatorMetrics } from '../../operator/controller/metrics.ts';
import type { JobEventRecord, PlanConfig } from '../../operator/controller/plan.ts';
import {
  JobReconciler,
  type ReconcileResult,
  type ReconcilerDeps,
} from '../../operator/controller/reconciler.ts';
import { silentLogger } from '../../worker/log.ts';
import { node, nodeMap, ownedJob, T0, workerPod } from '../helpers/k8s-builders.ts';

const config: PlanConfig = {
  workerImage: 'ghcr.io/tensile-dev/tensile-worker:test',
  workerGpuImage: 'ghcr.io/tensile-dev/tensile-worker:test-gpu',
  natsUrl: 'nats://nats:4222',
  failureBackoffSeconds: 10,
  maxFailureBackoffSeconds: 360,
};

interface StatusWrite {
  readonly resourceVersion: string;
  readonly status: TrainingJobStatus;
}

/** One TrainingJob and its pods as the API server holds them; the informer cache is always fresh. */
class FakeApiServer {
  resourceVersion = 7;
  status: TrainingJobStatus;
  pods: V1Pod[];
  readonly writes: StatusWrite[] = [];
  readonly events: JobEventRecord[] = [];
  readonly published: ControlMessage[] = [];
  private statusWritten!: () => void;
  /** Resolves once a status patch was applied: a create answered after it is a late 422. */
  readonly firstStatusWrite = new Promise<void>((resolve) => {
    this.statusWritten = resolve;
  });

  constructor(
    private readonly raw: KubernetesObject,
    status: TrainingJobStatus,
    pods: V1Pod[],
    private readonly rejectPods: boolean,
  ) {
    this.status = structuredClone(status);
    const owner = { apiVersion: 'tensile.dev/v1alpha1', kind: 'TrainingJob', name: 'job', uid: 'job-uid' };
    this.pods = pods.map((p) => ({ ...p, metadata: { ...p.metadata, ownerReferences: [owner] } }));
  }

  job(): KubernetesObject {
    return {
      ...structuredClone(this.raw),
      metadata: { ...structuredClone(this.raw.metadata), resourceVersion: String(this.resourceVersion) },
      status: structuredClone(this.status),
    } as KubernetesObject;
  }

  kube(): KubeClient {
    const fake = {
      createPod: async (_namespace: string, pod: V1Pod): Promise<'created' | 'exists'> => {
        if (!this.rejectPods) {
          this.pods.push(pod);
          return 'created';
        }
        await this.firstStatusWrite;
        throw new KubeApiError(
          `create pod ${pod.metadata?.name}: 422 Invalid: spec.containers[0].resources.requests: Invalid value`,
          422,
          'Invalid',
        );
      },
      deletePod: async (_namespace: string, name: string) => {
        this.pods = this.pods.filter((p) => p.metadata?.name !== name);
      },
      releasePod: async (_namespace: string, pod: V1Pod) => {
        const held = this.pods.find((p) => p.metadata?.name === pod.metadata?.name);
        if (held?.metadata !== undefined) held.metadata.finalizers = [];
      },
      markLeaving: async () => undefined,
      createClaim: async () => undefined,
      deleteJob: async () => undefined,
      patchStatus: async (
        _namespace: string,
        _name: string,
        resourceVersion: string,
        previous: TrainingJobStatus | undefined,
        next: TrainingJobStatus,
      ) => {
        this.writes.push({ resourceVersion, status: structuredClone(next) });
        if (resourceVersion !== '' && resourceVersion !== String(this.resourceVersion))
          throw new KubeApiError('patch status: 409 Conflict', 409, 'Conflict');
        const merged: Record<string, unknown> = { ...this.status, ...next };
        for (const key of Object.keys(previous ?? {})) if (!(key in next)) delete merged[key];
        this.status = merged as TrainingJobStatus;
        this.resourceVersion++;
        this.statusWritten();
      },
    };
    return fake as unknown as KubeClient;
  }

  recorder(): EventRecorder {
    const fake = {
      record: async (_job: unknown, event: JobEventRecord) => {
        this.events.push(event);
      },
    };
    return fake as unknown as EventRecorder;
  }
}

/** Reconciles until the reconciler asks for nothing more soon (at most `passes` times). */
async function settle(reconciler: JobReconciler, passes = 6): Promise<ReconcileResult[]> {
  const results: ReconcileResult[] = [];
  for (let i = 0; i < passes; i++) {
    const result = await reconciler.reconcile('default', 'job');
    results.push(result);
    if (result.kind !== 'requeue' || result.afterMs > 1000) break;
  }
  return results;
}

function reconcilerFor(
  server: FakeApiServer,
  kueue?: ReconcilerDeps['kueue'],
  workloadsWatched?: () => boolean,
): JobReconciler {
  return new JobReconciler({
    ...(kueue === undefined ? {} : { kueue }),
    ...(workloadsWatched === undefined ? {} : { workloadsWatched }),
    kube: server.kube(),
    getJob: () => server.job(),
    podsOf: () => server.pods,
    nodes: () => nodeMap(node('node-0'), node('node-1')),
    publisher: { publish: (_namespace, _job, _uid, message) => server.published.push(message) },
    events: server.recorder(),
    metrics: new OperatorMetrics(),
    config,
    log: silentLogger(),
    now: () => T0,
  });
}

const running: TrainingJobStatus = {
  phase: 'Running',
  startTime: '2026-11-21T11:50:00Z',
  restarts: 1,
  preemptions: 2,
  conditions: [
    {
      type: 'Created',
      status: 'True',
      reason: 'JobCreated',
      message: '',
      lastTransitionTime: '2026-11-21T11:50:00Z',
    },
  ],
};

test('a late 422 on a replacement pod fails the job without rolling back the preemption it counted', async () => {
  const job = ownedJob({ 'spec.replicas': 2 });
  const server = new FakeApiServer(
    job as KubernetesObject,
    running,
    // worker-1 was deleted by someone else: a preemption, and a replacement is created in the same pass.
    [workerPod(0), workerPod(1, { deleting: true })],
    true,
  );
  await settle(reconcilerFor(server));
  assert.is(server.status.phase, 'Failed');
  assert.is(server.status.conditions?.find((c) => c.type === 'Failed')?.reason, 'InvalidSpec');
  assert.match(server.status.message ?? '', 'worker pod rejected');
  assert.is(server.status.preemptions, 3, 'the preemption counted in the same pass stays counted');
  assert.is(server.status.restarts, 1);
  assert.ok(server.writes.length >= 2, 'the count, then the failure');
  for (const write of server.writes)
    assert.is.not(write.resourceVersion, '', 'every status write carries the resourceVersion it read');
  assert.ok(server.events.some((e) => e.reason === 'InvalidSpec'));
});

test('an invalid spec is written with the resourceVersion of the pass, once', async () => {
  const job = ownedJob({ 'spec.replicas': 2 });
  const raw = { ...job, spec: { ...job.spec, replicas: -1 } } as unknown as KubernetesObject;
  const server = new FakeApiServer(raw, running, [], false);
  const reconciler = reconcilerFor(server);
  const [first] = await settle(reconciler);
  assert.is(first?.kind, 'terminal');
  assert.is(server.writes.length, 1);
  assert.is(server.writes[0]?.resourceVersion, '7');
  assert.is(server.status.phase, 'Failed');
  assert.is(server.status.conditions?.find((c) => c.type === 'Failed')?.reason, 'InvalidSpec');
  assert.is(server.status.preemptions, 2);
  assert.is(server.status.completionTime, '2026-11-21T12:00:00Z');
  // Again on the failed job: nothing to write, no new event.
  const events = server.events.length;
  await reconciler.reconcile('default', 'job');
  assert.is(server.writes.length, 1);
  assert.is(server.events.length, events);
});

/** Kueue's objects as the API server holds them; a status write at a stale resourceVersion conflicts. */
class FakeKueue {
  workload: Workload | undefined;
  resourceVersion = 1;
  readonly flavors = new Map<string, ResourceFlavor>([
    ['training', { metadata: { name: 'training' }, spec: { nodeLabels: { pool: 'training' } } }],
  ]);
  client(): NonNullable<ReconcilerDeps['kueue']> {
    return {
      listWorkloads: async () =>
        this.workload === undefined
          ? []
          : [
              {
                ...structuredClone(this.workload),
                metadata: { ...this.workload.metadata, resourceVersion: String(this.resourceVersion) },
              },
            ],
      createWorkload: async (w: Workload) => {
        this.workload ??= structuredClone(w);
      },
      resizeWorkload: async () => {
        throw new Error('not expected here');
      },
      deleteWorkload: async () => {
        this.workload = undefined;
      },
      getFlavor: async (name: string) => this.flavors.get(name),
      priorityOf: async () => undefined,
      patchWorkloadStatus: async (w: Workload, status: NonNullable<Workload['status']>) => {
        if (w.metadata.resourceVersion !== String(this.resourceVersion))
          throw new KubeApiError('patch workload status: 409 Conflict', 409, 'Conflict');
        if (this.workload !== undefined) this.workload.status = structuredClone(status);
        this.resourceVersion++;
      },
    };
  }
  /** What Kueue's scheduler writes. */
  set(status: Workload['status']): void {
    if (this.workload !== undefined) this.workload.status = status;
    this.resourceVersion++;
  }
}

const kcond = (type: string, status: 'True' | 'False') => ({
  type,
  status,
  reason: 'R',
  message: type,
  lastTransitionTime: '2026-11-21T11:00:00Z',
});

test('Kueue: held until admitted, admitted count and flavor on the pods, evicted, quota handed back', async () => {
  const job = ownedJob({
    'metadata.labels': { 'kueue.x-k8s.io/queue-name': 'team-a' },
    'spec.replicas': 4,
    'spec.minReplicas': 2,
    'spec.maxReplicas': 4,
  });
  const server = new FakeApiServer(job as KubernetesObject, {}, [], false);
  const kueue = new FakeKueue();
  const reconciler = reconcilerFor(server, kueue.client());
  const first = await reconciler.reconcile('default', 'job');
  assert.equal(first, { kind: 'requeue', afterMs: 1000 }, 'without a Workload watch a queued job polls');
  const watched = reconcilerFor(server, kueue.client(), () => true);
  assert.equal(
    await watched.reconcile('default', 'job'),
    { kind: 'done' },
    'with the watch up, a change of the Workload requeues it: no poll',
  );
  assert.equal(
    kueue.workload?.spec.podSets.map((p) => [p.count, p.minCount]),
    [[4, 2]],
  );
  assert.equal(server.pods, [], 'no worker before admission');
  assert.is(server.status.conditions?.find((c) => c.type === 'Suspended')?.reason, 'QueuedByKueue');

  kueue.set({
    conditions: [kcond('QuotaReserved', 'True'), kcond('Admitted', 'True')],
    admission: {
      clusterQueue: 'cq',
      podSetAssignments: [{ name: 'worker', flavors: { cpu: 'training' }, count: 2 }],
    },
  });
  await reconciler.reconcile('default', 'job');
  assert.equal(
    server.pods.map((p) => [p.metadata?.name, p.spec?.nodeSelector]),
    [
      ['job-worker-0', { pool: 'training' }],
      ['job-worker-1', { pool: 'training' }],
    ],
  );

  kueue.set({
    ...kueue.workload?.status,
    conditions: [...(kueue.workload?.status?.conditions ?? []), kcond('Evicted', 'True')],
  });
  await reconciler.reconcile('default', 'job');
  assert.equal(server.pods, [], 'the workers are stopped');
  assert.ok(
    server.published.some((m) => m.type === 'checkpoint'),
    'after a checkpoint request',
  );
  assert.is.not(kueue.workload?.status?.admission, null, 'the quota is kept while workers were still there');
  await reconciler.reconcile('default', 'job');
  assert.is(kueue.workload?.status?.admission, null, 'then handed back');
  assert.is(kueue.workload?.status?.conditions?.find((c) => c.type === 'QuotaReserved')?.status, 'False');
  assert.is(server.status.conditions?.find((c) => c.type === 'Suspended')?.reason, 'EvictedByKueue');
});

test.run();
