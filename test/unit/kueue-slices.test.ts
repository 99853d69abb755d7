/** What a scaled job's Kueue Workloads become: resized, a new slice, the old slice finished, or re-queued. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildWorkload, type KueueCondition, type Workload } from '../../operator/controller/kueue.ts';
import { activeWorkloads, planWorkloads } from '../../operator/controller/kueue-slices.ts';
import { buildWorkerPod } from '../../operator/controller/pod-builder.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const images = { workerImage: 'w:1', workerGpuImage: 'w:1-gpu', natsUrl: 'nats://n:4222' };
const job = (replicas: number, elastic: boolean, generation = 1) => {
  const j = ownedJob({
    'metadata.labels': { 'kueue.x-k8s.io/queue-name': 'q' },
    ...(elastic ? { 'metadata.annotations': { 'kueue.x-k8s.io/elastic-job': 'true' } } : {}),
    'spec.replicas': replicas,
    'spec.minReplicas': 1,
    'spec.maxReplicas': 8,
  });
  j.metadata = { ...j.metadata, generation } as typeof j.metadata;
  return j;
};
const cond = (type: string): KueueCondition => ({
  type,
  status: 'True',
  reason: 'R',
  message: '',
  lastTransitionTime: '2026-12-01T00:00:00Z',
});
/** The workload job(replicas) gets, as Kueue left it: pending, admitted, or finished. */
const wl = (
  replicas: number,
  elastic: boolean,
  state: 'pending' | 'admitted' | 'finished',
  naming: { name?: string; replacementFor?: string; created?: string } = {},
): Workload => {
  const j = job(replicas, elastic);
  const w = buildWorkload(j, 'q', buildWorkerPod(j, 0, images), undefined, naming);
  w.metadata.creationTimestamp = naming.created ?? '2026-12-01T00:00:00Z';
  if (state !== 'pending')
    w.status = {
      conditions: [
        cond('QuotaReserved'),
        cond('Admitted'),
        ...(state === 'finished' ? [cond('Finished')] : []),
      ],
      admission: { clusterQueue: 'cq', podSetAssignments: [{ name: 'worker', count: replicas }] },
    };
  return w;
};

test('no workload: the first one, named as before', () => {
  const p = planWorkloads(job(2, false), [], 0);
  assert.equal(p.action, { kind: 'create', name: 'trainingjob-job' });
  assert.is(p.current, undefined);
});

test('a pending workload follows the job in place, elastic or not', () => {
  for (const elastic of [false, true]) {
    const w = wl(2, elastic, 'pending');
    const p = planWorkloads(job(3, elastic), [w], 0);
    assert.equal(p.action, { kind: 'resize', workload: w, count: 3, ...(elastic ? {} : { minCount: 1 }) });
  }
});

test('partial admission for a plain job, none for an elastic one (Kueue takes them as exclusive)', () => {
  assert.is(wl(4, false, 'pending').spec.podSets[0]?.minCount, 1);
  const elastic = wl(4, true, 'pending');
  assert.is(elastic.spec.podSets[0]?.minCount, undefined);
  assert.equal(elastic.metadata.annotations, {
    'kueue.x-k8s.io/elastic-job': 'true',
    'kueue.x-k8s.io/workload-slice-name': 'trainingjob-job',
  });
  assert.is(elastic.metadata.labels?.['tensile.dev/job-name'], 'job');
});

test('elastic, admitted, scaled up: a new slice replacing the admitted one; workers stay on the old', () => {
  const old = wl(2, true, 'admitted');
  const p = planWorkloads(job(3, true, 4), [old], 2);
  assert.equal(p.action, {
    kind: 'create',
    name: 'trainingjob-job-g4',
    replacementFor: 'default/trainingjob-job',
    sliceName: 'trainingjob-job',
  });
  assert.is(p.current, old);
  assert.is(p.requeue, undefined, 'no stop');
});

test('elastic, admitted, scaled down: resized in place, no stop', () => {
  const old = wl(3, true, 'admitted');
  const p = planWorkloads(job(1, true, 5), [old], 3);
  assert.equal(p.action, { kind: 'resize', workload: old, count: 1 });
  assert.is(p.requeue, undefined);
});

test('two slices: the old one runs until the new is admitted, then the old is finished', () => {
  const old = wl(2, true, 'admitted', { created: '2026-12-01T00:00:00Z' });
  const pending = wl(3, true, 'pending', {
    name: 'trainingjob-job-g4',
    replacementFor: 'default/trainingjob-job',
    created: '2026-12-01T00:00:00Z',
  });
  assert.equal(
    activeWorkloads([pending, old]).map((w) => w.metadata.name),
    ['trainingjob-job', 'trainingjob-job-g4'],
    'the replacement sorts after the slice it replaces, even within one second',
  );
  const waiting = planWorkloads(job(3, true, 4), [pending, old], 2);
  assert.equal([waiting.current, waiting.action], [old, { kind: 'none' }]);
  const resized = planWorkloads(job(4, true, 5), [old, pending], 2);
  assert.equal(resized.action, { kind: 'resize', workload: pending, count: 4 }, 'the pending slice follows');
  const admitted = wl(3, true, 'admitted', {
    name: 'trainingjob-job-g4',
    replacementFor: 'default/trainingjob-job',
  });
  const done = planWorkloads(job(3, true, 4), [old, admitted], 2);
  assert.is(done.current, admitted);
  assert.is(done.action.kind, 'finish');
  assert.is(done.action.kind === 'finish' ? done.action.workload : undefined, old);
  // Kueue finished the old one itself: only the new one is active, and it matches.
  const after = planWorkloads(job(3, true, 4), [wl(2, true, 'finished'), admitted], 3);
  assert.equal([after.current, after.action], [admitted, { kind: 'none' }]);
});

test('not elastic, admitted, scaled: workers stop, then the workload is deleted and a new one queued', () => {
  const old = wl(4, false, 'admitted');
  const stopping = planWorkloads(job(3, false, 2), [old], 2);
  assert.equal(stopping.action, { kind: 'none' }, 'the old admission stays until the workers are gone');
  assert.match(stopping.requeue ?? '', /3 workers \(at least 1\) instead of 4 workers/);
  assert.match(stopping.requeue ?? '', /kueue\.x-k8s\.io\/elastic-job/);
  assert.equal(planWorkloads(job(3, false, 2), [old], 0).action, { kind: 'delete', workload: old });
  assert.equal(planWorkloads(job(3, false, 2), [], 0).action, { kind: 'create', name: 'trainingjob-job' });
  assert.equal(
    planWorkloads(job(4, false, 2), [old], 2),
    { current: old, action: { kind: 'none' } },
    'matching: nothing to do',
  );
});

test('a finished job leaves its workloads as they are', () => {
  const j = job(3, true);
  j.status = { phase: 'Succeeded' };
  const old = wl(2, true, 'admitted');
  assert.equal(planWorkloads(j, [old], 0), { current: old, action: { kind: 'none' } });
});

test.run();
