/** Kueue's external-framework contract as pure functions: the Workload, the gate, handing quota back. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  buildWorkload,
  finishedStatus,
  type KueueCondition,
  kueueGate,
  queueNameOf,
  releasedQuotaStatus,
  type Workload,
  withAdmission,
} from '../../operator/controller/kueue.ts';
import { buildWorkerPod } from '../../operator/controller/pod-builder.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const images = { workerImage: 'w:1', workerGpuImage: 'w:1-gpu', natsUrl: 'nats://n:4222' };
const queued = () =>
  ownedJob({
    'metadata.labels': { 'kueue.x-k8s.io/queue-name': 'team-a' },
    'spec.replicas': 4,
    'spec.minReplicas': 2,
    'spec.maxReplicas': 4,
    'spec.worker.resources': { requests: { cpu: '1' } },
  });
const cond = (type: string, status: 'True' | 'False', message = ''): KueueCondition => ({
  type,
  status,
  reason: 'R',
  message,
  lastTransitionTime: '2026-12-01T00:00:00Z',
});
const workload = (status?: Workload['status']): Workload => ({
  ...buildWorkload(queued(), 'team-a', buildWorkerPod(queued(), 0, images)),
  ...(status === undefined ? {} : { status }),
});
const admitted = (count: number, extra: KueueCondition[] = []): Workload =>
  workload({
    conditions: [cond('QuotaReserved', 'True'), cond('Admitted', 'True'), ...extra],
    admission: {
      clusterQueue: 'cq',
      podSetAssignments: [{ name: 'worker', flavors: { cpu: 'spot' }, count }],
    },
  });
const spot = {
  metadata: { name: 'spot' },
  spec: {
    nodeLabels: { 'instance-type': 'spot' },
    tolerations: [{ key: 'spot', operator: 'Exists', effect: 'NoSchedule' }],
  },
};

test('the workload: one pod set, count = replicas, minCount = minReplicas, owned by the job', () => {
  const w = workload();
  assert.is(queueNameOf(queued()), 'team-a');
  assert.is(queueNameOf(ownedJob()), undefined);
  assert.is(w.metadata.name, 'trainingjob-job');
  assert.is(w.spec.queueName, 'team-a');
  assert.equal(
    w.spec.podSets.map((p) => [p.name, p.count, p.minCount]),
    [['worker', 4, 2]],
  );
  assert.is((w.metadata.ownerReferences as { uid: string }[] | undefined)?.[0]?.uid, 'job-uid');
  const spec = w.spec.podSets[0]?.template.spec as { containers: { resources: unknown }[] };
  assert.equal(
    spec.containers[0]?.resources,
    { requests: { cpu: '1' } },
    'Kueue counts what the workers request',
  );
  const fixed = buildWorkload(
    ownedJob({ 'spec.replicas': 2, 'spec.minReplicas': 2 }),
    'q',
    buildWorkerPod(ownedJob(), 0, images),
  );
  assert.is(fixed.spec.podSets[0]?.minCount, undefined, 'no partial admission for a fixed size');
  assert.is(w.spec.priorityClassRef, undefined, 'no priority class, no priority');
  const prioritized = buildWorkload(
    queued(),
    'q',
    buildWorkerPod(queued(), 0, { ...images, template: { priorityClassName: 'tensile-training' } }),
    1000,
  );
  assert.equal(
    [prioritized.spec.priorityClassRef, prioritized.spec.priority],
    [{ group: 'scheduling.k8s.io', kind: 'PriorityClass', name: 'tensile-training' }, 1000],
  );
});

const gates: [string, Workload | undefined, unknown][] = [
  ['no workload yet: held', undefined, { admitted: false, reason: 'QueuedByKueue' }],
  [
    'pending in the queue: held',
    workload({ conditions: [cond('QuotaReserved', 'False')] }),
    { admitted: false, reason: 'QueuedByKueue' },
  ],
  [
    'quota reserved but not yet admitted (admission checks): held',
    workload({
      conditions: [cond('QuotaReserved', 'True')],
      admission: { clusterQueue: 'cq', podSetAssignments: [{ name: 'worker', count: 4 }] },
    }),
    { admitted: false, reason: 'QueuedByKueue' },
  ],
  ['admitted with 2 of 4 (partial admission)', admitted(2), { admitted: true, count: 2 }],
  [
    'evicted: held, and says why',
    admitted(2, [cond('Evicted', 'True', 'Preempted')]),
    { admitted: false, reason: 'EvictedByKueue' },
  ],
];
for (const [name, w, expected] of gates) {
  test(`gate: ${name}`, () => {
    const gate = kueueGate(w, [spot]);
    for (const [k, v] of Object.entries(expected as Record<string, unknown>))
      assert.equal((gate as unknown as Record<string, unknown>)[k], v, k);
  });
}

test("admission: the flavor's node labels and tolerations reach the worker pods", () => {
  const gate = kueueGate(admitted(3), [spot]);
  const pod = buildWorkerPod(withAdmission(queued(), gate), 0, images);
  assert.equal(pod.spec?.nodeSelector, { 'instance-type': 'spot' });
  assert.equal(pod.spec?.tolerations, [{ key: 'spot', operator: 'Exists', effect: 'NoSchedule' }]);
});

test('eviction: the quota goes back (no admission, QuotaReserved and Admitted False); once only', () => {
  const now = new Date('2026-12-01T10:00:00Z');
  const status = releasedQuotaStatus(admitted(2, [cond('Evicted', 'True')]), now);
  assert.is(status?.admission, null);
  const by = (type: string) => status?.conditions?.find((c) => c.type === type);
  assert.is(by('QuotaReserved')?.status, 'False');
  assert.is(by('Admitted')?.status, 'False');
  assert.is(by('Evicted')?.status, 'True', 'Kueue clears Evicted itself when it admits again');
  assert.is(releasedQuotaStatus({ ...workload(), status: { ...status, admission: null } }, now), undefined);
});

test('a finished job marks its workload Finished, once', () => {
  const now = new Date('2026-12-01T10:00:00Z');
  const status = finishedStatus(admitted(2), true, '', now);
  assert.is(status?.conditions?.find((c) => c.type === 'Finished')?.reason, 'Succeeded');
  assert.is(finishedStatus({ ...workload(), status: status ?? {} }, true, '', now), undefined);
});

test.run();
