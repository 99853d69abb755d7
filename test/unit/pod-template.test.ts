/**
 * spec.worker.podTemplate merged into the worker pod (mergePodTemplate through buildWorkerPod): what a
 * Kubeflow replica template holds comes through; what Tensile owns is refused, naming the field.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isTerminal } from '../../operator/api/errors.ts';
import {
  buildWorkerPod,
  type WorkerPodDefaults,
  workerPodProblems,
} from '../../operator/controller/pod-builder.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const defaults: WorkerPodDefaults = {
  workerImage: 'tensile-worker:1',
  workerGpuImage: 'tensile-worker:1-gpu',
  natsUrl: 'nats://nats:4222',
  template: { imagePullSecrets: [{ name: 'cluster-regcred' }] },
};
const pod = (changes: Record<string, unknown>) => buildWorkerPod(ownedJob(changes), 0, defaults);
const worker = (p: ReturnType<typeof pod>) => p.spec?.containers.find((c) => c.name === 'worker');

test('no template: the pod Tensile builds, with the cluster pull secrets', () => {
  const p = pod({});
  assert.equal(p.spec?.imagePullSecrets, [{ name: 'cluster-regcred' }]);
  assert.equal(p.spec?.restartPolicy, 'Never');
  assert.equal(
    p.spec?.containers.map((c) => c.name),
    ['worker'],
  );
});

test('a full template: volumes, mounts, fsGroup, pull secrets, scheduler, spread, sidecar, init, labels', () => {
  const p = pod({
    'spec.worker.podTemplate': {
      metadata: { labels: { team: 'ml' }, annotations: { 'example.com/cost': 'a' } },
      spec: {
        securityContext: { fsGroup: 2000, runAsNonRoot: true },
        schedulerName: 'volcano',
        imagePullSecrets: [{ name: 'regcred' }, { name: 'cluster-regcred' }],
        topologySpreadConstraints: [{ maxSkew: 1, topologyKey: 'zone', whenUnsatisfiable: 'ScheduleAnyway' }],
        volumes: [{ name: 'cache', emptyDir: {} }],
        initContainers: [{ name: 'fetch', image: 'busybox' }],
        containers: [
          {
            name: 'worker',
            volumeMounts: [{ name: 'cache', mountPath: '/cache' }],
            env: [{ name: 'HF_HOME', value: '/cache' }],
            securityContext: { allowPrivilegeEscalation: false },
          },
          { name: 'log-shipper', image: 'fluent-bit' },
        ],
        restartPolicy: 'Never',
      },
    },
  });
  const spec = p.spec;
  assert.equal(spec?.securityContext, { fsGroup: 2000, runAsNonRoot: true });
  assert.is(spec?.schedulerName, 'volcano');
  assert.equal(spec?.imagePullSecrets, [{ name: 'cluster-regcred' }, { name: 'regcred' }]);
  assert.is(spec?.topologySpreadConstraints?.[0]?.topologyKey, 'zone');
  assert.equal(
    spec?.volumes?.map((v) => v.name),
    ['checkpoints', 'cache'],
  );
  assert.equal(
    spec?.containers.map((c) => c.name),
    ['worker', 'log-shipper'],
  );
  assert.equal(
    spec?.initContainers?.map((c) => c.name),
    ['fetch'],
  );
  const w = worker(p);
  assert.equal(
    w?.volumeMounts?.map((m) => m.mountPath),
    ['/checkpoints', '/cache'],
  );
  assert.ok(
    w?.env?.some((e) => e.name === 'TENSILE_JOB_NAME'),
    'the contract variables stay',
  );
  assert.ok(w?.env?.some((e) => e.name === 'HF_HOME'));
  assert.equal(w?.securityContext, { allowPrivilegeEscalation: false });
  assert.is(w?.image, 'tensile-worker:1');
  assert.is(p.metadata?.labels?.['team'], 'ml');
  assert.is(p.metadata?.labels?.['tensile.dev/job-name'], 'job');
  assert.is(p.metadata?.annotations?.['example.com/cost'], 'a');
});

test('fields spec.worker leaves to the cluster defaults come from the template', () => {
  const p = buildWorkerPod(
    ownedJob({
      'spec.worker.spot': true,
      'spec.worker.podTemplate': {
        spec: {
          nodeSelector: { pool: 'ml' },
          priorityClassName: 'batch-low',
          containers: [{ name: 'worker', image: 'my/worker:2', args: ['worker', '--verbose'] }],
        },
      },
    }),
    0,
    { ...defaults, template: { priorityClassName: 'tensile-training' } },
  );
  assert.equal(p.spec?.nodeSelector, { 'karpenter.sh/capacity-type': 'spot', pool: 'ml' });
  assert.is(p.spec?.priorityClassName, 'batch-low');
  assert.is(worker(p)?.image, 'my/worker:2');
  assert.equal(worker(p)?.args, ['worker', '--verbose']);
});

test("a template affinity keeps Tensile's co-location on a ReadWriteOnce claim", () => {
  const p = pod({
    'spec.replicas': 2,
    'spec.maxReplicas': 2,
    'spec.worker.podTemplate': { spec: { affinity: { nodeAffinity: { a: 1 } } } },
  });
  assert.equal((p.spec?.affinity ?? {}) as Record<string, unknown>, {
    nodeAffinity: { a: 1 },
    podAffinity: p.spec?.affinity?.podAffinity,
  });
  assert.is(p.spec?.affinity?.podAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.length, 1);
});

test('sharedMemory: a memory-backed /dev/shm', () => {
  const p = pod({ 'spec.worker.sharedMemory': '2Gi' });
  assert.equal(
    p.spec?.volumes?.find((v) => v.name === 'dshm'),
    { name: 'dshm', emptyDir: { medium: 'Memory', sizeLimit: '2Gi' } },
  );
  assert.ok(worker(p)?.volumeMounts?.some((m) => m.mountPath === '/dev/shm'));
});

const refused: [string, Record<string, unknown>, RegExp][] = [
  [
    'restartPolicy Always',
    { spec: { restartPolicy: 'Always' } },
    /podTemplate\.spec\.restartPolicy: must be Never/,
  ],
  ['nodeName', { spec: { nodeName: 'n1' } }, /podTemplate\.spec\.nodeName: Tensile sets it/],
  [
    'terminationGracePeriodSeconds',
    { spec: { terminationGracePeriodSeconds: 5 } },
    /terminationGracePeriodSeconds: Tensile sets it \(set spec\.worker\.terminationGracePeriodSeconds instead/,
  ],
  [
    "a volume named like Tensile's",
    { spec: { volumes: [{ name: 'checkpoints', emptyDir: {} }] } },
    /podTemplate\.spec\.volumes\[0\]: name checkpoints is one of Tensile's volumes/,
  ],
  [
    "a mount over Tensile's",
    { spec: { containers: [{ name: 'worker', volumeMounts: [{ name: 'x', mountPath: '/checkpoints' }] }] } },
    /containers\[worker\]\.volumeMounts\[0\]: \/checkpoints is where Tensile mounts/,
  ],
  [
    'a TENSILE_ variable',
    { spec: { containers: [{ name: 'worker', env: [{ name: 'TENSILE_NATS_URL', value: 'x' }] }] } },
    /containers\[worker\]\.env\[0\]: TENSILE_NATS_URL is set by the operator/,
  ],
  [
    'container resources',
    { spec: { containers: [{ name: 'worker', resources: { limits: { cpu: 1 } } }] } },
    /containers\[worker\]\.resources: set spec\.worker\.resources/,
  ],
  [
    'a tensile.dev/ label',
    { metadata: { labels: { 'tensile.dev/role': 'x' } } },
    /metadata\.labels\.tensile\.dev\/role/,
  ],
  [
    'volumes not a list',
    { spec: { volumes: 'cache' } },
    /podTemplate\.spec\.volumes: expected a list of objects/,
  ],
  [
    'two sidecars of one name',
    { spec: { containers: [{ name: 'a' }, { name: 'a' }] } },
    /podTemplate\.spec\.containers\[1\]: name a is taken/,
  ],
];

for (const [name, template, message] of refused) {
  test(`refused: ${name}`, () => {
    const job = ownedJob({ 'spec.worker.podTemplate': template });
    assert.match(workerPodProblems(job, defaults).join('\n'), message);
    try {
      buildWorkerPod(job, 0, defaults);
      assert.unreachable('buildWorkerPod must throw');
    } catch (error) {
      assert.ok(isTerminal(error), String(error));
      assert.match(String(error), message);
    }
  });
}

const twice: [string, Record<string, unknown>, Record<string, unknown>][] = [
  ['nodeSelector', { nodeSelector: { a: 'b' } }, { nodeSelector: { c: 'd' } }],
  ['serviceAccountName', { serviceAccountName: 'a' }, { serviceAccountName: 'b' }],
];
for (const [field, worker, spec] of twice) {
  test(`refused: ${field} in spec.worker and in the template`, () => {
    const job = ownedJob({ 'spec.worker': { ...worker, podTemplate: { spec } } });
    assert.match(
      workerPodProblems(job, defaults).join('\n'),
      `spec.worker.podTemplate.spec.${field}: set it in spec.worker.${field} or here, not both`,
    );
  });
}

test('refused: image in the template and in spec.worker', () => {
  const job = ownedJob({
    'spec.worker': {
      image: 'a:1',
      podTemplate: { spec: { containers: [{ name: 'worker', image: 'b:1' }] } },
    },
  });
  assert.match(
    workerPodProblems(job, defaults).join('\n'),
    'containers[worker].image: set it in spec.worker.image',
  );
});

test.run();
