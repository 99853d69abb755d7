import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  autoscale,
  batchRuleOf,
  currentGlobalBatch,
  foldObservation,
  type Observation,
} from '../../operator/api/autoscaling.ts';
import type { ProgressMessage } from '../../operator/api/contract.ts';
import type { AutoscalingStatus, TrainingJobStatus } from '../../operator/api/training-job.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { type PlanConfig, plan } from '../../operator/controller/plan.ts';
import { validManifest } from '../helpers/job-builder.ts';
import { at, node, nodeMap, ownedJob, workerPod } from '../helpers/k8s-builders.ts';

const config: PlanConfig = {
  workerImage: 'ghcr.io/tensile-dev/tensile-worker:test',
  workerGpuImage: 'ghcr.io/tensile-dev/tensile-worker:test-gpu',
  natsUrl: 'nats://nats:4222',
  failureBackoffSeconds: 10,
  maxFailureBackoffSeconds: 360,
};

const goodputJob = (o: Record<string, unknown> = {}, status?: TrainingJobStatus) =>
  ownedJob(
    {
      'spec.replicas': 1,
      'spec.minReplicas': 1,
      'spec.maxReplicas': 4,
      'spec.autoscaling': { policy: 'goodput', minIntervalSeconds: 30, minSteps: 10 },
      ...o,
    },
    status,
  );

const report = (
  worldSize: number,
  stepSeconds: number,
  steps = 40,
  generation = worldSize,
  perWorkerBatch = 128 / worldSize,
): Pick<ProgressMessage, 'generation' | 'worldSize' | 'goodput'> => ({
  generation,
  worldSize,
  goodput: { perWorkerBatch, stepSeconds, steps },
});

test('spec.autoscaling: defaults, and goodput needs a range to choose in (named field, the fix)', () => {
  const plain = ownedJob({});
  assert.equal(plain.spec.autoscaling, {
    policy: 'none',
    minIntervalSeconds: 60,
    threshold: 0.05,
    explorationFactor: 2,
    minSteps: 20,
  });
  const manifest = validManifest('job') as { spec: Record<string, unknown> };
  manifest.spec.autoscaling = { policy: 'goodput' };
  delete manifest.spec.maxReplicas;
  const refused = validateTrainingJob(manifest);
  assert.not.ok(refused.ok);
  if (!refused.ok) {
    const problem = refused.problems.find((p) => p.path.includes('autoscaling'));
    assert.ok(problem !== undefined, JSON.stringify(refused.problems));
    assert.match(problem?.message ?? '', /maxReplicas greater than minReplicas/);
  }
  manifest.spec.autoscaling = { policy: 'pollux' };
  const unknown = validateTrainingJob(manifest);
  assert.not.ok(unknown.ok);
  if (!unknown.ok) assert.match(JSON.stringify(unknown.problems), /none|goodput/);
});

test('foldObservation: one per world shape; a world replaces itself, a newer one once measured', () => {
  const table: [string, Observation[], ReturnType<typeof report>, number[]][] = [
    ['first', [], report(1, 0.02, 30, 1), [0.02]],
    ['same world, more steps: replaces', [obs(1, 0.02, 30, 1)], report(1, 0.03, 60, 1), [0.03]],
    ['newer world, too few steps: kept', [obs(1, 0.02, 30, 1)], report(1, 0.05, 5, 3), [0.02]],
    ['newer world, measured: replaces', [obs(1, 0.02, 30, 1)], report(1, 0.05, 25, 3), [0.05]],
    ['another shape: added, sorted by workers', [obs(2, 0.02, 30, 2)], report(1, 0.03, 30, 3), [0.03, 0.02]],
  ];
  for (const [name, held, r, expected] of table)
    assert.equal(
      foldObservation(held, r, 20).map((o) => o.stepSeconds),
      expected,
      name,
    );
  assert.equal(foldObservation([obs(1, 0.02, 30, 1)], { generation: 2, worldSize: 1 }, 20).length, 1);
});

function obs(replicas: number, stepSeconds: number, steps: number, generation: number): Observation {
  return { replicas, perWorkerBatch: 128 / replicas, stepSeconds, steps, generation };
}

test('batchRuleOf follows the rescale policy', () => {
  assert.equal(batchRuleOf(goodputJob().spec), { kind: 'fixed', global: 128 });
  assert.equal(
    batchRuleOf(goodputJob({ 'spec.batch': { global: 128, policy: 'linear', perWorker: 32 } }).spec),
    { kind: 'perWorker', perWorker: 32 },
  );
});

const bounded = (o: Record<string, unknown> = {}) =>
  goodputJob({
    'spec.batch': { global: 128, policy: 'adascale' },
    'spec.autoscaling': {
      policy: 'goodput',
      minIntervalSeconds: 30,
      minSteps: 10,
      minGlobalBatch: 64,
      maxGlobalBatch: 1024,
    },
    ...o,
  }).spec;

test('spec.autoscaling batch bounds: a range rule; refused without goodput, apart, reversed or with fixedGlobalBatch', () => {
  assert.equal(batchRuleOf(bounded()), { kind: 'range', min: 64, max: 1024 });
  const refusedFor = (autoscaling: Record<string, unknown>, batch: Record<string, unknown>) => {
    const manifest = validManifest('job') as { spec: Record<string, unknown> };
    manifest.spec = { ...manifest.spec, replicas: 1, minReplicas: 1, maxReplicas: 4, autoscaling, batch };
    const result = validateTrainingJob(manifest);
    return result.ok ? '' : JSON.stringify(result.problems);
  };
  const goodput = { policy: 'goodput', minGlobalBatch: 64, maxGlobalBatch: 1024 };
  assert.is(refusedFor(goodput, { global: 128, policy: 'adascale' }), '');
  assert.match(refusedFor({ policy: 'goodput', minGlobalBatch: 64 }, { policy: 'adascale' }), /go together/);
  assert.match(
    refusedFor({ ...goodput, minGlobalBatch: 2048 }, { policy: 'adascale' }),
    /minGlobalBatch must be at most maxGlobalBatch/,
  );
  assert.match(
    refusedFor({ ...goodput, policy: 'none' }, { policy: 'adascale' }),
    /need autoscaling.policy goodput/,
  );
  assert.match(
    refusedFor(goodput, { global: 128, policy: 'fixedGlobalBatch' }),
    /learning rate follows the batch/,
  );
});

test('autoscale with batch bounds: the batch stays until measured apart, then a choice gets a revision', () => {
  const spec = bounded({ 'spec.maxReplicas': 2 });
  // One batch measured: what is fixed and what per sample is a guess, so the batch stays.
  const first = autoscale({
    spec,
    status: undefined,
    report: report(1, 0.05, 40, 1, 128),
    pending: 0,
    now: at(0),
  });
  assert.is(first.replicas, 2, first.status.reason);
  assert.match(first.status.reason, /1 → 2 worker\(s\), global batch 128:/);
  assert.is(first.status.chosenBatch, undefined);
  // Two at 64 each take nearly as long as one at 128: the step is mostly fixed, a larger batch is
  // nearly free throughput (no noise scale measured: efficiency 1).
  const measured = report(2, 0.045, 40, 2, 64);
  const second = autoscale({ spec, status: first.status, report: measured, pending: 0, now: at(60) });
  assert.is(second.event?.reason, 'GoodputRescale', second.status.reason);
  assert.equal(second.status.chosenBatch, { globalBatch: 1024, revision: 1 });
  assert.match(second.status.reason, /global batch 128 → 1024/);
  // The same report again: a hold keeps the choice and its revision.
  const again = autoscale({ spec, status: second.status, report: measured, pending: 0, now: at(200) });
  assert.equal(again.status.chosenBatch, second.status.chosenBatch);
  assert.is(again.event, undefined, again.status.reason);
  // A job without bounds never chooses one.
  const plain = autoscale({
    spec: goodputJob().spec,
    status: undefined,
    report: report(1, 0.05),
    pending: 0,
    now: at(0),
  });
  assert.is(plain.status.chosenBatch, undefined);
});

test('currentGlobalBatch: the choice, else what the world measured, else the policy in bounds', () => {
  const spec = bounded();
  const chosen = { replicas: 2, specReplicas: 1, reason: '', chosenBatch: { globalBatch: 512, revision: 3 } };
  assert.is(currentGlobalBatch(spec, chosen, undefined, 2), 512);
  assert.is(currentGlobalBatch(spec, undefined, report(2, 0.05, 40, 2, 100), 2), 200);
  assert.is(currentGlobalBatch(spec, undefined, undefined, 1), 128);
  assert.is(currentGlobalBatch(goodputJob().spec, undefined, undefined, 1), undefined);
});

test('autoscale: from minReplicas, a compute-bound world grows; the decision is in status and an event', () => {
  const spec = goodputJob().spec;
  const first = autoscale({ spec, status: undefined, report: report(1, 0.05), pending: 0, now: at(0) });
  assert.is(first.replicas, 2);
  assert.is(first.event?.reason, 'GoodputRescale');
  assert.match(
    first.event?.message ?? '',
    /1 → 2 worker\(s\), global batch 128: goodput 2560 → 51(19|20) \(\+100 %\)/,
  );
  assert.is(first.status.replicas, 2);
  assert.is(first.status.specReplicas, 1);
  assert.is(first.status.lastChangeTime, at(0).toISOString());
  assert.is(first.status.changes, 1);
  assert.equal(
    first.status.options?.map((o) => o.replicas),
    [1, 2],
  );
  // Same report again: waits for the new world's step times; nothing changes, no event.
  const waiting = autoscale({ spec, status: first.status, report: report(1, 0.05), pending: 0, now: at(5) });
  assert.is(waiting.replicas, 2);
  assert.is(waiting.event, undefined);
  assert.match(waiting.status.reason, /waiting for step times of 2/);
  // Two workers measured, as fast per sample (no synchronisation cost): grows again, after the interval.
  const early = autoscale({ spec, status: first.status, report: report(2, 0.025), pending: 0, now: at(10) });
  assert.is(early.replicas, 2);
  assert.is(early.retryAtMs, at(30).getTime());
  const later = autoscale({ spec, status: early.status, report: report(2, 0.025), pending: 0, now: at(31) });
  assert.is(later.replicas, 4);
  assert.ok(later.status.model !== undefined);
});

test('autoscale: synchronisation that eats the gain keeps it where it is; pending workers hold growth', () => {
  const spec = goodputJob().spec;
  const one = autoscale({ spec, status: undefined, report: report(1, 0.05), pending: 0, now: at(0) });
  // Two workers take longer per step than one: synchronisation costs more than the halved batch saves.
  const two = autoscale({ spec, status: one.status, report: report(2, 0.06), pending: 0, now: at(100) });
  assert.is(two.replicas, 1, two.status.reason);
  assert.is(two.event?.reason, 'GoodputRescale');
  const held = autoscale({ spec, status: undefined, report: report(1, 0.05), pending: 1, now: at(0) });
  assert.is(held.replicas, 1);
  assert.is(held.event, undefined);
});

test('autoscale: a user scale wins, and the interval counts from it', () => {
  const before = goodputJob().spec;
  const decided = autoscale({
    spec: before,
    status: undefined,
    report: report(1, 0.05),
    pending: 0,
    now: at(0),
  });
  assert.is(decided.replicas, 2);
  const scaled = goodputJob({ 'spec.replicas': 3 }).spec;
  const after = autoscale({
    spec: scaled,
    status: decided.status,
    report: report(2, 0.025),
    pending: 0,
    now: at(100),
  });
  assert.is(after.replicas, 3);
  assert.is(after.event?.reason, 'ScaleOverride');
  assert.is(after.status.specReplicas, 3);
  assert.is(after.status.lastChangeTime, at(100).toISOString());
});

const runningStatus = (autoscaling?: AutoscalingStatus): TrainingJobStatus => ({
  phase: 'Running',
  startTime: '2026-11-21T11:50:00Z',
  ...(autoscaling === undefined ? {} : { autoscaling }),
});

const progress = (worldSize: number, stepSeconds: number): ProgressMessage => ({
  type: 'progress',
  worker: 'job-worker-0',
  generation: worldSize,
  worldSize,
  step: 500,
  epoch: 0,
  loss: 0.5,
  samplesPerSecond: 1000,
  goodput: { perWorkerBatch: 128 / worldSize, stepSeconds, steps: 50 },
  time: '2026-11-21T11:59:58Z',
});

test('plan: the goodput policy sets the desired count; pods follow, the decision is recorded', () => {
  const nodes = nodeMap(node('node-0'), node('node-1'));
  const grow = plan({
    job: goodputJob({}, runningStatus()),
    pods: [workerPod(0)],
    nodes,
    claimExists: true,
    now: at(0),
    config,
    observations: { progress: progress(1, 0.05) },
  });
  assert.equal(
    grow.createPods.map((p) => p.metadata?.name),
    ['job-worker-1'],
  );
  assert.is(grow.status.autoscaling?.replicas, 2);
  assert.ok(grow.events.some((e) => e.reason === 'GoodputRescale' && /1 → 2/.test(e.message)));
  // The next pass on the status it wrote: the new pod is pending, nothing more is asked for.
  const next = plan({
    job: goodputJob({}, grow.status),
    pods: [workerPod(0), workerPod(1, { phase: 'Pending' })],
    nodes,
    claimExists: true,
    now: at(1),
    config,
    observations: { progress: progress(1, 0.05) },
  });
  assert.equal(next.createPods, []);
  assert.equal(next.deletePods, []);
  assert.not.ok(next.events.some((e) => e.reason === 'GoodputRescale'));
  // Measured at 2 with a synchronisation cost that eats the gain: back to 1, after the interval.
  const shrink = plan({
    job: goodputJob({}, next.status),
    pods: [workerPod(0), workerPod(1)],
    nodes,
    claimExists: true,
    now: at(60),
    config,
    observations: { progress: progress(2, 0.06) },
  });
  assert.equal(
    shrink.deletePods.map((d) => d.name),
    ['job-worker-1'],
  );
  assert.is(shrink.status.autoscaling?.replicas, 1);
});

test('plan: a worker on a going node holds growth (spot-aware); its replacement is still made', () => {
  const p = plan({
    job: goodputJob({}, runningStatus()),
    pods: [workerPod(0, { node: 'node-1' })],
    nodes: nodeMap(node('node-1', { taints: [{ key: 'karpenter.sh/disrupted', effect: 'NoSchedule' }] })),
    claimExists: true,
    now: at(0),
    config,
    observations: { progress: progress(1, 0.05) },
  });
  assert.is(p.status.autoscaling?.replicas, 1, p.status.autoscaling?.reason);
  assert.not.ok(p.events.some((e) => e.reason === 'GoodputRescale'));
  assert.equal(
    p.createPods.map((c) => c.metadata?.name),
    ['job-worker-1'],
    'the leaving worker is replaced, no more',
  );
});

test('plan: policy none leaves the count to spec.replicas and writes no autoscaling status', () => {
  const p = plan({
    job: ownedJob({ 'spec.replicas': 1, 'spec.maxReplicas': 4 }, runningStatus()),
    pods: [workerPod(0)],
    nodes: nodeMap(node('node-0')),
    claimExists: true,
    now: at(0),
    config,
    observations: { progress: progress(1, 0.05) },
  });
  assert.equal(p.createPods, []);
  assert.is(p.status.autoscaling, undefined);
});

test.run();
