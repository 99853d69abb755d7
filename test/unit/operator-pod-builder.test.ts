import { createAccount, decode, parseCreds } from '@nats-io/jwt';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { modelLocation } from '../../operator/api/model-output.ts';
import { JobCredentialMinter } from '../../operator/controller/nats-credentials.ts';
import {
  buildCheckpointClaim,
  buildWorkerPod,
  type WorkerPodDefaults,
} from '../../operator/controller/pod-builder.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const defaults: WorkerPodDefaults = {
  workerImage: 'ghcr.io/tensile-dev/tensile-worker:1',
  workerGpuImage: 'ghcr.io/tensile-dev/tensile-worker:1-gpu',
  natsUrl: 'nats://nats.tensile-system:4222',
};

const env = (pod: ReturnType<typeof buildWorkerPod>) =>
  Object.fromEntries((pod.spec?.containers[0]?.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));

test('names, labels, owner reference and the accounting finalizer', () => {
  const pod = buildWorkerPod(ownedJob(), 3, defaults);
  assert.is(pod.metadata?.name, 'job-worker-3');
  assert.equal(pod.metadata?.labels, {
    'tensile.dev/job-name': 'job',
    'tensile.dev/role': 'worker',
    'tensile.dev/replica-index': '3',
  });
  assert.equal(pod.metadata?.ownerReferences, [
    {
      apiVersion: 'tensile.dev/v1alpha1',
      kind: 'TrainingJob',
      name: 'job',
      uid: 'job-uid',
      controller: true,
      blockOwnerDeletion: true,
    },
  ]);
  assert.equal(pod.metadata?.finalizers, ['tensile.dev/accounting']);
  assert.is(pod.spec?.restartPolicy, 'Never');
  assert.is(pod.spec?.terminationGracePeriodSeconds, 30);
});

test('the spec revision (metadata.generation) reaches the worker, so that workers agree on the newest', () => {
  const job = ownedJob();
  assert.is(env(buildWorkerPod(job, 0, defaults))['TENSILE_SPEC_REVISION'], '1');
  const scaled = { ...job, metadata: { ...job.metadata, generation: 7 } };
  assert.is(env(buildWorkerPod(scaled, 0, defaults))['TENSILE_SPEC_REVISION'], '7');
});

test('spec.output: the model claim is mounted, never owned, and the worker and status agree on where', () => {
  const job = ownedJob({ 'spec.output': { claimName: 'models', mountPath: '/output' } });
  const pod = buildWorkerPod(job, 0, defaults);
  assert.ok(
    pod.spec?.volumes?.some((v) => v.name === 'output' && v.persistentVolumeClaim?.claimName === 'models'),
  );
  assert.ok(
    pod.spec?.containers[0]?.volumeMounts?.some((m) => m.name === 'output' && m.mountPath === '/output'),
  );
  // The operator creates no claim for the output: only the checkpoint claim of the template.
  assert.is(buildCheckpointClaim(job)?.metadata?.name, 'job-checkpoints');
  assert.equal(modelLocation({ name: 'job', namespace: 'team-a' }, job.spec), {
    dir: '/output/team-a/job',
    uri: 'pvc://models/team-a/job',
    ownedByJob: false,
  });
  // Without spec.output the model goes beside the checkpoints, and goes with the job's own claim.
  const plain = ownedJob();
  assert.not.ok(buildWorkerPod(plain, 0, defaults).spec?.volumes?.some((v) => v.name === 'output'));
  assert.equal(modelLocation({ name: 'job', namespace: 'team-a' }, plain.spec), {
    dir: '/checkpoints/model',
    uri: 'pvc://job-checkpoints/model',
    ownedByJob: true,
  });
});

test('the same job and index give the same pod', () => {
  assert.equal(buildWorkerPod(ownedJob(), 1, defaults), buildWorkerPod(ownedJob(), 1, defaults));
});

test('worker environment: identity, spec, NATS, checkpoint dir, replica index, downward API', () => {
  const e = env(
    buildWorkerPod(
      ownedJob({ 'spec.worker': { backend: 'wasm', env: [{ name: 'EXTRA', value: 'x' }] } }),
      2,
      defaults,
    ),
  );
  assert.is(e['TENSILE_JOB_NAME'], 'job');
  assert.is(e['TENSILE_NAMESPACE'], 'default');
  assert.is(e['TENSILE_JOB_UID'], 'job-uid');
  assert.is(e['TENSILE_REPLICA_INDEX'], '2');
  assert.is(e['TENSILE_NATS_URL'], 'nats://nats.tensile-system:4222');
  assert.is(e['TENSILE_CHECKPOINT_DIR'], '/checkpoints');
  assert.is(e['TENSILE_BACKEND'], 'wasm');
  assert.is(e['EXTRA'], 'x');
  assert.equal(e['TENSILE_WORKER_ID'], { fieldRef: { fieldPath: 'metadata.name' } });
  assert.equal(e['TENSILE_POD_IP'], { fieldRef: { fieldPath: 'status.podIP' } });
  const spec = JSON.parse(String(e['TENSILE_JOB_SPEC']));
  assert.equal(spec.model.mlp.hiddenUnits, [64]);
});

test("a job's NATS URL wins over the operator's", () => {
  const e = env(buildWorkerPod(ownedJob({ 'spec.nats': { url: 'nats://other:4222' } }), 0, defaults));
  assert.is(e['TENSILE_NATS_URL'], 'nats://other:4222');
});

test('GPU workers: the GPU image, requests equal to limits, tolerations, node selector, priority class', () => {
  const pod = buildWorkerPod(
    ownedJob({
      'spec.worker': {
        resources: { limits: { 'nvidia.com/gpu': 1, memory: '8Gi' }, requests: { cpu: '2' } },
        nodeSelector: { 'karpenter.sh/capacity-type': 'spot' },
        tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
        affinity: {
          nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [] } },
        },
        priorityClassName: 'spot-training',
        terminationGracePeriodSeconds: 90,
      },
    }),
    0,
    defaults,
  );
  const container = pod.spec?.containers[0];
  assert.is(container?.image, 'ghcr.io/tensile-dev/tensile-worker:1-gpu');
  assert.equal(container?.resources, {
    requests: { cpu: '2', 'nvidia.com/gpu': '1' },
    limits: { 'nvidia.com/gpu': '1', memory: '8Gi' },
  });
  assert.equal(pod.spec?.nodeSelector, { 'karpenter.sh/capacity-type': 'spot' });
  assert.equal(pod.spec?.tolerations, [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
  assert.ok(pod.spec?.affinity?.nodeAffinity !== undefined);
  assert.is(pod.spec?.priorityClassName, 'spot-training');
  assert.is(pod.spec?.terminationGracePeriodSeconds, 90);
});

const slowNodePreference = {
  weight: 100,
  preference: { matchExpressions: [{ key: 'tensile.dev/slow', operator: 'DoesNotExist' }] },
};
const userPreference = {
  weight: 10,
  preference: { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] },
};

for (const [name, balancing, affinity, expected] of [
  ['no eviction: the user affinity as given', { evictStragglers: false }, undefined, undefined],
  ['eviction: nodes marked slow are avoided', { evictStragglers: true }, undefined, [slowNodePreference]],
  [
    "eviction: the avoidance is added to the user's preferences",
    { evictStragglers: true },
    { nodeAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [userPreference] } },
    [userPreference, slowNodePreference],
  ],
] as const) {
  test(`worker affinity, ${name}`, () => {
    const job = ownedJob({
      'spec.balancing': { mode: 'proportional', ...balancing },
      ...(affinity === undefined ? {} : { 'spec.worker': { affinity } }),
    });
    const pod = buildWorkerPod(job, 0, defaults);
    assert.equal(pod.spec?.affinity?.nodeAffinity?.preferredDuringSchedulingIgnoredDuringExecution, expected);
    // The job's own spec is left as it was.
    assert.equal(job.spec.worker.affinity, affinity);
  });
}

test('an explicit image wins; CPU workers get the CPU image', () => {
  assert.is(
    buildWorkerPod(ownedJob(), 0, defaults).spec?.containers[0]?.image,
    'ghcr.io/tensile-dev/tensile-worker:1',
  );
  assert.is(
    buildWorkerPod(ownedJob({ 'spec.worker': { image: 'my/img:2' } }), 0, defaults).spec?.containers[0]
      ?.image,
    'my/img:2',
  );
});

test('volumes: checkpoint claim from the template, an existing claim, the dataset claim, a ConfigMap topology', () => {
  const templated = buildWorkerPod(ownedJob(), 0, defaults);
  assert.equal(templated.spec?.volumes?.[0], {
    name: 'checkpoints',
    persistentVolumeClaim: { claimName: 'job-checkpoints' },
  });
  assert.equal(templated.spec?.containers[0]?.volumeMounts?.[0], {
    name: 'checkpoints',
    mountPath: '/checkpoints',
  });
  const job = ownedJob({
    'spec.checkpoint': { intervalSteps: 10, path: '/ckpt', volume: { claimName: 'shared' } },
    'spec.dataset': {
      format: 'idx',
      path: '/data/fashion',
      volume: { claimName: 'datasets', mountPath: '/data' },
    },
    'spec.model': { layers: { configMap: { name: 'my-model' } } },
  });
  const pod = buildWorkerPod(job, 0, defaults);
  assert.equal(pod.spec?.volumes, [
    { name: 'checkpoints', persistentVolumeClaim: { claimName: 'shared' } },
    { name: 'dataset', persistentVolumeClaim: { claimName: 'datasets', readOnly: true } },
    { name: 'model', configMap: { name: 'my-model', items: [{ key: 'model.json', path: 'model.json' }] } },
    { name: 'tmp', emptyDir: {} },
  ]);
  const spec = JSON.parse(String(env(pod)['TENSILE_JOB_SPEC']));
  assert.equal(
    spec.model.layers,
    { path: '/etc/tensile/model/model.json' },
    'the worker reads the mounted file',
  );
  assert.is(buildCheckpointClaim(job), undefined, 'an existing claim is not created');
});

test('the restricted Pod Security Standard by default: non-root, no escalation, no capabilities, read-only root', () => {
  const pod = buildWorkerPod(ownedJob(), 0, defaults);
  assert.equal(pod.spec?.securityContext, {
    runAsNonRoot: true,
    runAsUser: 1000,
    runAsGroup: 1000,
    fsGroup: 1000,
    seccompProfile: { type: 'RuntimeDefault' },
  });
  const container = pod.spec?.containers[0];
  assert.equal(container?.securityContext, {
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
  });
  // With the root read-only, /tmp must be a volume of its own.
  const tmp = container?.volumeMounts?.find((m) => m.mountPath === '/tmp');
  assert.ok(pod.spec?.volumes?.some((v) => v.name === tmp?.name && v.emptyDir !== undefined));
});

test('the checkpoint claim from a template is owned by the job', () => {
  const claim = buildCheckpointClaim(
    ownedJob({
      'spec.checkpoint': {
        intervalSteps: 10,
        volume: {
          claimTemplate: { size: '5Gi', storageClassName: 'efs', accessModes: ['ReadWriteMany'] },
        },
      },
    }),
  );
  assert.is(claim?.metadata?.name, 'job-checkpoints');
  assert.is(claim?.metadata?.ownerReferences?.[0]?.uid, 'job-uid');
  assert.equal(claim?.spec, {
    accessModes: ['ReadWriteMany'],
    resources: { requests: { storage: '5Gi' } },
    storageClassName: 'efs',
  });
});

test('NATS credentials from a Secret are mounted and named in the environment', () => {
  const pod = buildWorkerPod(
    ownedJob({ 'spec.nats': { credentialsSecret: { name: 'nats-creds' } } }),
    0,
    defaults,
  );
  assert.ok(pod.spec?.volumes?.some((v) => v.secret?.secretName === 'nats-creds'));
  assert.is(env(pod)['TENSILE_NATS_CREDS'], '/etc/tensile/nats/nats.creds');
});

test('per-job credentials: the Secret the operator minted is mounted; a job naming its own keeps it', async () => {
  const minted = buildWorkerPod(ownedJob(), 0, { ...defaults, perJobCredentials: true });
  assert.ok(minted.spec?.volumes?.some((v) => v.secret?.secretName === 'job-nats-credentials'));
  assert.is(env(minted)['TENSILE_NATS_CREDS'], '/etc/tensile/nats/nats.creds');
  const own = buildWorkerPod(ownedJob({ 'spec.nats': { credentialsSecret: { name: 'mine' } } }), 0, {
    ...defaults,
    perJobCredentials: true,
  });
  assert.ok(own.spec?.volumes?.some((v) => v.secret?.secretName === 'mine'));
  assert.not.ok(own.spec?.volumes?.some((v) => v.secret?.secretName === 'job-nats-credentials'));
  const secret = await new JobCredentialMinter(createAccount()).secretFor(ownedJob());
  assert.is(secret.metadata?.name, 'job-nats-credentials');
  assert.is(secret.metadata?.ownerReferences?.[0]?.uid, 'job-uid', 'deleted with the job');
  const { jwt } = await parseCreds(new TextEncoder().encode(secret.stringData?.['nats.creds'] ?? ''));
  const claims = decode<{ pub: { allow: string[] }; sub: { allow: string[] } }>(jwt);
  assert.equal(claims.nats.sub?.allow, ['tensile.default.job.control', '_INBOX.tensile.default.job.>']);
  assert.ok(claims.nats.pub?.allow.includes('$KV.tensile_default_job_job-uid.>'));
  assert.not.ok(claims.nats.pub?.allow.some((s) => s.includes('.control') || s === '>'));
});

test('cluster defaults fill in what the job leaves out; the job wins where it says something', () => {
  const template = {
    nodeSelector: { 'karpenter.sh/capacity-type': 'spot' },
    tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists' as const, effect: 'NoSchedule' as const }],
    resources: { limits: { 'nvidia.com/gpu': 1 } },
    priorityClassName: 'tensile-training',
  };
  const plain = buildWorkerPod(ownedJob(), 0, { ...defaults, template });
  assert.equal(plain.spec?.nodeSelector, { 'karpenter.sh/capacity-type': 'spot' });
  assert.is(plain.spec?.tolerations?.[0]?.key, 'nvidia.com/gpu');
  assert.is(plain.spec?.priorityClassName, 'tensile-training');
  assert.is(
    plain.spec?.containers[0]?.image,
    'ghcr.io/tensile-dev/tensile-worker:1-gpu',
    'a GPU default means the GPU image',
  );
  assert.equal(plain.spec?.containers[0]?.resources?.limits, { 'nvidia.com/gpu': '1' });
  const own = buildWorkerPod(
    ownedJob({ 'spec.worker': { nodeSelector: { pool: 'mine' }, resources: { requests: { cpu: '1' } } } }),
    0,
    { ...defaults, template },
  );
  assert.equal(own.spec?.nodeSelector, { pool: 'mine' });
  assert.equal(own.spec?.containers[0]?.resources, { requests: { cpu: '1' } });
  assert.is(own.spec?.containers[0]?.image, 'ghcr.io/tensile-dev/tensile-worker:1');
  assert.is(own.spec?.tolerations?.[0]?.key, 'nvidia.com/gpu', 'unset fields still come from the defaults');
});

test.run();
