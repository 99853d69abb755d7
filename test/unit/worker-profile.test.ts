/**
 * Worker defaults and the opt-in GPU and spot profiles (effectiveWorker, buildWorkerPod): a job that
 * sets nothing gets a CPU worker with no node selector on any cluster; GPUs and spot are asked for.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { WorkerSpec } from '../../operator/api/training-job.ts';
import {
  buildCheckpointClaim,
  buildWorkerPod,
  effectiveWorker,
  type WorkerPodDefaults,
  type WorkerTemplateDefaults,
} from '../../operator/controller/pod-builder.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const images: WorkerPodDefaults = {
  workerImage: 'tensile-worker:1',
  workerGpuImage: 'tensile-worker:1-gpu',
  natsUrl: 'nats://nats:4222',
};

/** What the chart's values.yaml renders into its worker-defaults ConfigMap (test/unit/helm-chart.test.ts checks that). */
const chart: WorkerTemplateDefaults = {
  resources: { requests: { cpu: '500m', memory: '1Gi' }, limits: { memory: '4Gi' } },
  priorityClassName: 'tensile-training',
};
const GPU_TOL = { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' };
const SPOT_TOL = {
  key: 'karpenter.sh/capacity-type',
  operator: 'Equal',
  value: 'spot',
  effect: 'NoSchedule',
};
const SPOT_SELECTOR = { 'karpenter.sh/capacity-type': 'spot' };

interface Case {
  readonly name: string;
  readonly worker: Record<string, unknown>;
  readonly template: WorkerTemplateDefaults | undefined;
  readonly image: string;
  readonly gpu: string | undefined;
  readonly nodeSelector: Record<string, string> | undefined;
  readonly tolerations: readonly Record<string, unknown>[];
}

const cases: Case[] = [
  {
    name: 'nothing set, chart defaults: CPU, any node',
    worker: {},
    template: chart,
    image: 'tensile-worker:1',
    gpu: undefined,
    nodeSelector: undefined,
    tolerations: [],
  },
  {
    name: 'nothing set, no defaults file',
    worker: {},
    template: undefined,
    image: 'tensile-worker:1',
    gpu: undefined,
    nodeSelector: undefined,
    tolerations: [],
  },
  {
    name: 'gpus: 2 → requests = limits = 2, the GPU toleration, the GPU image',
    worker: { gpus: 2 },
    template: chart,
    image: 'tensile-worker:1-gpu',
    gpu: '2',
    nodeSelector: undefined,
    tolerations: [GPU_TOL],
  },
  {
    name: 'spot: true → the spot selector and toleration',
    worker: { spot: true },
    template: chart,
    image: 'tensile-worker:1',
    gpu: undefined,
    nodeSelector: SPOT_SELECTOR,
    tolerations: [SPOT_TOL],
  },
  {
    name: "spot with the job's own selector: merged, the job's keys win",
    worker: { spot: true, nodeSelector: { pool: 'ml', 'karpenter.sh/capacity-type': 'on-demand' } },
    template: chart,
    image: 'tensile-worker:1',
    gpu: undefined,
    nodeSelector: { pool: 'ml', 'karpenter.sh/capacity-type': 'on-demand' },
    tolerations: [SPOT_TOL],
  },
  {
    name: "a cluster's GKE spot profile, GPU and spot by default",
    worker: {},
    template: {
      ...chart,
      gpu: { default: 1 },
      spot: {
        default: true,
        nodeSelector: { 'cloud.google.com/gke-spot': 'true' },
        tolerations: [{ key: 'cloud.google.com/gke-spot', operator: 'Exists', effect: 'NoSchedule' }],
      },
    },
    image: 'tensile-worker:1-gpu',
    gpu: '1',
    nodeSelector: { 'cloud.google.com/gke-spot': 'true' },
    tolerations: [GPU_TOL, { key: 'cloud.google.com/gke-spot', operator: 'Exists', effect: 'NoSchedule' }],
  },
  {
    name: 'the job opts out of the cluster defaults: gpus 0, spot false',
    worker: { gpus: 0, spot: false },
    template: { ...chart, gpu: { default: 1 }, spot: { default: true } },
    image: 'tensile-worker:1',
    gpu: undefined,
    nodeSelector: undefined,
    tolerations: [],
  },
  {
    name: 'gpus: 0 drops a GPU from default resources',
    worker: { gpus: 0 },
    template: { resources: { limits: { memory: '8Gi', 'nvidia.com/gpu': 1 } } },
    image: 'tensile-worker:1',
    gpu: undefined,
    nodeSelector: undefined,
    tolerations: [],
  },
  {
    name: 'a GPU in resources still means the GPU toleration, not twice',
    worker: { resources: { limits: { 'nvidia.com/gpu': 1 } }, tolerations: [GPU_TOL], spot: true },
    template: chart,
    image: 'tensile-worker:1-gpu',
    gpu: '1',
    nodeSelector: SPOT_SELECTOR,
    tolerations: [GPU_TOL, SPOT_TOL],
  },
];

for (const c of cases) {
  test(c.name, () => {
    const pod = buildWorkerPod(ownedJob({ 'spec.worker': c.worker }), 0, {
      ...images,
      ...(c.template === undefined ? {} : { template: c.template }),
    });
    const container = pod.spec?.containers[0];
    assert.is(container?.image, c.image);
    assert.is(container?.resources?.limits?.['nvidia.com/gpu'], c.gpu);
    assert.is(container?.resources?.requests?.['nvidia.com/gpu'], c.gpu);
    assert.equal(pod.spec?.nodeSelector, c.nodeSelector);
    assert.equal(pod.spec?.tolerations ?? [], c.tolerations);
  });
}

test('the job’s resources win whole over the cluster default; gpus adds to them', () => {
  const worker = ownedJob({ 'spec.worker': { gpus: 1, resources: { requests: { cpu: '3' } } } }).spec.worker;
  const out: WorkerSpec = effectiveWorker(worker, chart);
  assert.equal(out.resources, {
    requests: { cpu: '3', 'nvidia.com/gpu': 1 },
    limits: { 'nvidia.com/gpu': 1 },
  });
  assert.equal(worker.resources, { requests: { cpu: '3' } }, 'the job itself is not changed');
});

test('the default checkpoint claim is ReadWriteOnce in the default class', () => {
  const claim = buildCheckpointClaim(ownedJob());
  assert.equal(claim?.spec?.accessModes, ['ReadWriteOnce']);
  assert.is(claim?.spec?.storageClassName, undefined);
});

const COLOCATE = {
  topologyKey: 'kubernetes.io/hostname',
  labelSelector: { matchLabels: { 'tensile.dev/job-name': 'job', 'tensile.dev/role': 'worker' } },
};
const affinityCases: [string, Record<string, unknown>, unknown][] = [
  [
    'one worker, ReadWriteOnce: no affinity',
    { 'spec.replicas': 1, 'spec.maxReplicas': 1, 'spec.minReplicas': 1 },
    undefined,
  ],
  [
    'several workers, ReadWriteOnce: co-located on one node',
    { 'spec.replicas': 2, 'spec.maxReplicas': 2, 'spec.minReplicas': 1 },
    { podAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [COLOCATE] } },
  ],
  [
    'several workers, ReadWriteMany: free to spread',
    {
      'spec.replicas': 2,
      'spec.maxReplicas': 2,
      'spec.minReplicas': 1,
      'spec.checkpoint.volume': {
        claimTemplate: { accessModes: ['ReadWriteMany'], storageClassName: 'efs' },
      },
    },
    undefined,
  ],
  [
    "the user's affinity is kept and the term added",
    {
      'spec.replicas': 2,
      'spec.maxReplicas': 2,
      'spec.minReplicas': 1,
      'spec.worker.affinity': {
        nodeAffinity: { x: 1 },
        podAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ topologyKey: 'zone' }] },
      },
    },
    {
      nodeAffinity: { x: 1 },
      podAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ topologyKey: 'zone' }, COLOCATE] },
    },
  ],
];
for (const [name, changes, expected] of affinityCases) {
  test(`checkpoint access mode and affinity: ${name}`, () => {
    assert.equal(buildWorkerPod(ownedJob(changes), 0, images).spec?.affinity, expected);
  });
}

test.run();
