/** The leader's division of GPUs among goodput jobs (controller/goodput-shares.ts) and its use by plan. */
import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import { competingJobs, goodputShares, gpusPerWorker } from '../../operator/controller/goodput-shares.ts';
import { type PlanConfig, plan } from '../../operator/controller/plan.ts';
import { at, node, nodeMap, ownedJob, workerPod } from '../helpers/k8s-builders.ts';

const gpuNode = (name: string, gpus: number, o: Parameters<typeof node>[1] = {}): V1Node => {
  const n = node(name, o);
  return { ...n, status: { ...n.status, allocatable: { 'nvidia.com/gpu': String(gpus) } } };
};

const options = (goodput: number[]) =>
  goodput.map((g, i) => ({ replicas: i + 1, globalBatch: 128, goodput: g }));
const linear = options([100, 200, 300, 400, 500, 600, 700, 800]);
const flat = options([100, 110, 115, 118, 120, 121, 122, 122]);

const goodputJob = (
  name: string,
  created: number,
  status?: Partial<NonNullable<TrainingJobStatus['autoscaling']>>,
  o: Record<string, unknown> = {},
) => {
  const job = ownedJob(
    {
      'spec.replicas': 1,
      'spec.minReplicas': 1,
      'spec.maxReplicas': 8,
      'spec.worker.gpus': 1,
      'spec.autoscaling': { policy: 'goodput' },
      ...o,
    },
    status === undefined
      ? undefined
      : { autoscaling: { replicas: 1, specReplicas: 1, reason: '', ...status } },
    name,
  );
  job.metadata = { ...job.metadata, creationTimestamp: at(created).toISOString() } as typeof job.metadata;
  return job;
};

const podJob = (pod: V1Pod) => `default/${pod.metadata?.labels?.['tensile.dev/job-name']}`;
const withGpu = (pod: V1Pod, gpus: number): V1Pod => ({
  ...pod,
  spec: {
    ...pod.spec,
    containers: [{ name: 'worker', image: 'w', resources: { limits: { 'nvidia.com/gpu': String(gpus) } } }],
  },
});

test('gpusPerWorker and competingJobs: goodput jobs with GPUs, running, oldest first', () => {
  assert.is(gpusPerWorker(goodputJob('a', 0).spec), 1);
  assert.is(gpusPerWorker(goodputJob('a', 0, undefined, { 'spec.worker.gpus': 0 }).spec), 0);
  const jobs = [
    goodputJob('late', 20),
    goodputJob('early', 10),
    goodputJob('cpu', 0, undefined, { 'spec.worker.gpus': 0 }),
    goodputJob('none', 0, undefined, { 'spec.autoscaling': { policy: 'none' } }),
    goodputJob('suspended', 0, undefined, { 'spec.runPolicy.suspend': true }),
  ];
  assert.equal(
    competingJobs(jobs).map((j) => j.metadata.name),
    ['early', 'late'],
  );
});

test('goodputShares: table of clusters', () => {
  const table: {
    name: string;
    jobs: ReturnType<typeof goodputJob>[];
    nodes: V1Node[];
    pods?: V1Pod[];
    expected: Record<string, number>;
  }[] = [
    {
      name: 'one job alone decides alone',
      jobs: [goodputJob('a', 0, { options: linear })],
      nodes: [gpuNode('n0', 8)],
      expected: {},
    },
    {
      name: 'a job that scales and one that does not: the first gets the GPUs, the second its floor',
      jobs: [goodputJob('lin', 0, { options: linear }), goodputJob('flat', 10, { options: flat })],
      nodes: [gpuNode('n0', 4), gpuNode('n1', 4)],
      expected: { 'default/lin': 7, 'default/flat': 1 },
    },
    {
      name: 'a node that is going counts for nothing (spot notice)',
      jobs: [goodputJob('lin', 0, { options: linear }), goodputJob('flat', 10, { options: flat })],
      nodes: [
        gpuNode('n0', 4),
        gpuNode('n1', 4, { taints: [{ key: 'karpenter.sh/disrupted', effect: 'NoSchedule' }] }),
      ],
      expected: { 'default/lin': 3, 'default/flat': 1 },
    },
    {
      name: 'GPUs held by another job are not there to divide',
      jobs: [goodputJob('lin', 0, { options: linear }), goodputJob('flat', 10, { options: flat })],
      nodes: [gpuNode('n0', 8)],
      pods: [
        withGpu(workerPod(0, { node: 'n0' }, 'other'), 2),
        withGpu(workerPod(1, { node: 'n0' }, 'other'), 2),
      ],
      expected: { 'default/lin': 3, 'default/flat': 1 },
    },
    {
      name: 'a job not measured yet keeps what it runs',
      jobs: [goodputJob('lin', 0, { options: linear }), goodputJob('new', 10, { replicas: 3 })],
      nodes: [gpuNode('n0', 8)],
      expected: { 'default/lin': 5, 'default/new': 3 },
    },
  ];
  for (const c of table)
    assert.equal(
      Object.fromEntries(goodputShares(c.jobs, c.pods ?? [], podJob, nodeMap(...c.nodes))),
      c.expected,
      c.name,
    );
});

const config: PlanConfig = {
  workerImage: 'ghcr.io/tensile-dev/tensile-worker:test',
  workerGpuImage: 'ghcr.io/tensile-dev/tensile-worker:test-gpu',
  natsUrl: 'nats://nats:4222',
  failureBackoffSeconds: 10,
  maxFailureBackoffSeconds: 360,
};

test('plan: a goodput job above its share shrinks to it at once; within it, it grows as predicted', () => {
  const observations = (worldSize: number) => ({
    progress: {
      type: 'progress' as const,
      worker: 'job-worker-0',
      generation: 3,
      worldSize,
      step: 100,
      epoch: 0,
      loss: 1,
      samplesPerSecond: 100,
      goodput: { perWorkerBatch: 128 / worldSize, stepSeconds: 0.05 / worldSize, steps: 40 },
      time: at(0).toISOString(),
    },
  });
  const running = (n: number) => Array.from({ length: n }, (_, i) => workerPod(i));
  const job = (replicas: number) =>
    goodputJob(
      'job',
      0,
      { replicas, lastChangeTime: at(-5).toISOString() },
      { 'spec.autoscaling': { policy: 'goodput', minSteps: 10 } },
    );
  const over = plan({
    job: job(4),
    pods: running(4),
    nodes: nodeMap(node('node-0')),
    claimExists: false,
    now: at(0),
    config,
    observations: observations(4),
    share: 2,
  });
  assert.is(over.status.autoscaling?.replicas, 2, over.status.autoscaling?.reason);
  assert.match(over.status.autoscaling?.reason ?? '', /over its share of the cluster \(2\)/);
  assert.ok(over.events.some((e) => e.reason === 'GoodputRescale'));
  const alone = plan({
    job: job(4),
    pods: running(4),
    nodes: nodeMap(node('node-0')),
    claimExists: false,
    now: at(0),
    config,
    observations: observations(4),
  });
  assert.is(alone.status.autoscaling?.replicas, 4, alone.status.autoscaling?.reason);
});

test.run();
