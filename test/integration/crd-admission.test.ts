/**
 * The generated CRD against a real kube-apiserver: every invalid manifest of the shared table is
 * rejected by the API server itself, naming the field (and, for cross-field rules, with the same
 * message zod gives); manifests zod accepts are accepted and defaulted the same way; immutable fields,
 * the scale subresource and the status subresource behave as documented.
 */
import { readFileSync } from 'node:fs';
import { ApiException, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { API_GROUP, API_VERSION, PLURAL } from '../../operator/api/training-job.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { invalidManifests } from '../helpers/invalid-manifests.ts';
import { type Manifest, setPath, validManifest, withField } from '../helpers/job-builder.ts';

const NS = 'default';
let cluster: LocalCluster;
let api: CustomObjectsApi;

test.before(async () => {
  try {
    cluster = await startCluster({ nodeAgent: false });
    api = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await cluster?.[Symbol.asyncDispose]();
});

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const target = { group: API_GROUP, version: API_VERSION, namespace: NS, plural: PLURAL };

interface Rejection {
  readonly code: number;
  readonly message: string;
}

async function rejection(promise: Promise<unknown>): Promise<Rejection | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    if (!(error instanceof ApiException)) throw error;
    const body = JSON.parse(String(error.body)) as { message?: string };
    return { code: error.code, message: body.message ?? '' };
  }
}

let serial = 0;
function create(manifest: Manifest, keepName = false) {
  const body = structuredClone(manifest) as Manifest & { metadata: { name: string } };
  if (!keepName) body.metadata.name = `job-${serial++}`;
  // As kubectl does: unknown fields are errors, not silently pruned.
  return api.createNamespacedCustomObject({ ...target, body, fieldValidation: 'Strict' });
}

/** `spec.worker.resources.limits["nvidia.com/gpu"]` (zod) is `spec.worker.resources.limits.nvidia.com/gpu` (API server). */
function apiServerPath(field: string): string {
  return field.replace(/\["([^"]+)"\]/g, '.$1');
}

/** Messages of the CRD's CEL rules: where zod reports one of these, the API server must say the same. */
function celMessages(): Set<string> {
  const crd = readFileSync(new URL('../../crds/tensile.dev_trainingjobs.yaml', import.meta.url), 'utf8');
  return new Set([...crd.matchAll(/^\s+message: (.*)$/gm)].map((m) => parse(m[1] ?? '') as string));
}

/**
 * Cases the API server rejects without naming the field, each with the reason. Everything else in the
 * table must be rejected with the field in the message.
 */
const expressedDifferently: Record<string, { why: string; expect: RegExp }> = {
  'wrong apiVersion': {
    why: 'the CRD serves only v1alpha1: a document of another version is refused for its version (HTTP 400), the apiVersion field is not named',
    expect: /version "v1"/,
  },
};

/** Parts of zod's messages the API server cannot give, checked by the unit tests instead. */
const zodOnly = new Map([
  [
    'unknown spec field (typo)',
    'the "did you mean minReplicas" hint; the API server names the unknown field',
  ],
  ['unknown nested field', 'the "did you mean learningRate" hint; the API server names the unknown field'],
]);

const cel = celMessages();

for (const c of invalidManifests) {
  test(`rejected by the API server: ${c.name}`, async () => {
    const zod = validateTrainingJob(c.manifest);
    assert.not.ok(zod.ok, 'zod accepts this case: the table and the schema disagree');
    const keepName = c.field === 'metadata.name';
    const refused = await rejection(create(c.manifest, keepName));
    assert.ok(refused, `the API server accepted "${c.name}" which zod rejects: the CRD misses this rule`);
    if (refused === undefined) return;
    assert.ok(refused.code === 400 || refused.code === 422, `HTTP ${refused.code}: ${refused.message}`);
    const different = expressedDifferently[c.name];
    if (different !== undefined) {
      assert.match(refused.message, different.expect, different.why);
      return;
    }
    const field = apiServerPath(c.field);
    assert.ok(refused.message.includes(field), `expected "${field}" in: ${refused.message}`);
    const zodMessages = zod.ok ? [] : zod.problems.filter((p) => p.path === c.field).map((p) => p.message);
    for (const message of zodMessages.filter((m) => cel.has(m)))
      assert.ok(
        refused.message.includes(message),
        `expected the CEL message "${message}" in: ${refused.message}`,
      );
    if (zodOnly.has(c.name)) assert.not.match(refused.message, /did you mean/, zodOnly.get(c.name));
  });
}

/** Manifests zod accepts that exercise every optional part of the schema. */
const validEdgeCases: [string, Manifest][] = [
  [
    'quantities as numbers, strings, suffixes, exponents and a plus sign',
    withField('spec.worker', {
      resources: {
        requests: { cpu: 2, memory: '1.5Gi', 'nvidia.com/gpu': '1' },
        limits: { cpu: '500m', memory: '+2e3', 'nvidia.com/gpu': 1 },
      },
    }),
  ],
  ['zero quantities', withField('spec.worker', { resources: { limits: { 'nvidia.com/gpu': 0, cpu: '0' } } })],
  [
    'tolerations',
    withField('spec.worker', {
      tolerations: [
        { operator: 'Exists' },
        { key: 'k', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 30 },
        { key: 'a', value: 'b' },
      ],
    }),
  ],
  [
    'inline layers topology',
    withField('spec.model', { layers: { topology: { class_name: 'Sequential', config: { layers: [] } } } }),
  ],
  ['layers from a ConfigMap', withField('spec.model', { layers: { configMap: { name: 'm' } } })],
  ['cnn defaults', withField('spec.model', { cnn: {} })],
  [
    'csv with holdout',
    withField('spec.dataset', {
      format: 'csv',
      path: '/d.csv',
      classes: 3,
      eval: { source: 'holdout' },
      csv: { delimiter: ';' },
    }),
  ],
  [
    'records',
    withField('spec.dataset', {
      format: 'records',
      path: '/r',
      classes: 10,
      featureShape: [28, 28, 1],
      records: { dtype: 'float32' },
    }),
  ],
  [
    'jsonl with PCA and a data volume',
    withField('spec.dataset', {
      format: 'jsonl',
      path: '/data/d.jsonl',
      classes: 2,
      pca: { components: 16 },
      normalize: 'standardize',
      volume: { claimName: 'data', mountPath: '/data' },
    }),
  ],
  [
    'linear policy with perWorker',
    withField('spec.batch', { policy: 'linear', perWorker: 32, maxPerWorker: 16, warmupSteps: 0 }),
  ],
  ['step schedule', withField('spec.optimizer.schedule', { type: 'step', decaySteps: 100, decayRate: 0.5 })],
  ['steps only', withField('spec.stopping', { steps: 100, targetAccuracy: 1 })],
  [
    'existing checkpoint claim',
    withField('spec.checkpoint', { intervalSeconds: 60, volume: { claimName: 'ckpt' } }),
  ],
  [
    'claim template',
    withField('spec.checkpoint', {
      intervalSteps: 10,
      keep: 100,
      path: '/ckpt',
      volume: { claimTemplate: { storageClassName: 'fast', accessModes: ['ReadWriteOnce'], size: 5 } },
    }),
  ],
  [
    'every worker field',
    withField('spec.worker', {
      image: 'x:1',
      imagePullPolicy: 'Never',
      command: ['a'],
      args: ['b'],
      env: [
        { name: 'A', value: 'b' },
        { name: 'B', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      ],
      nodeSelector: { a: 'b' },
      affinity: { nodeAffinity: {} },
      priorityClassName: 'high',
      serviceAccountName: 'sa',
      labels: { a: 'b' },
      annotations: { x: 'y' },
      terminationGracePeriodSeconds: 0,
      backend: 'wasm',
    }),
  ],
  [
    'run policy bounds',
    withField('spec.runPolicy', {
      suspend: true,
      backoffLimit: 0,
      activeDeadlineSeconds: 1,
      ttlSecondsAfterFinished: 0,
      pendingTimeoutSeconds: 1,
    }),
  ],
  [
    'rendezvous bounds',
    withField('spec.rendezvous', { heartbeatMillis: 100, timeoutMillis: 200, lastCallMillis: 0 }),
  ],
  ['NATS override', withField('spec.nats', { url: 'tls://nats.x:4222', credentialsSecret: { name: 's' } })],
  ['no maxReplicas', setPath(withField('spec.maxReplicas', undefined), 'spec.replicas', 3)],
  ['a name of 52 characters', withField('metadata.name', 'a'.repeat(52))],
  [
    'the largest replica count',
    setPath(setPath(withField('spec.replicas', 10000), 'spec.maxReplicas', 10000), 'spec.batch', {
      global: 10000,
    }),
  ],
];

for (const [name, manifest] of validEdgeCases) {
  test(`accepted by zod and by the API server: ${name}`, async () => {
    const zod = validateTrainingJob(manifest);
    assert.ok(
      zod.ok,
      `zod rejects it: ${zod.ok ? '' : zod.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`,
    );
    const refused = await rejection(create(manifest, name.startsWith('a name')));
    assert.is(refused, undefined, `the API server rejects what zod accepts: ${refused?.message}`);
  });
}

test('the examples are accepted by kubectl apply, and the API server defaults them as zod does', async () => {
  for (const file of ['minimal', 'fashion-mnist-mlp', 'fashion-mnist-cnn']) {
    const text = readFileSync(new URL(`../../examples/${file}.yaml`, import.meta.url), 'utf8');
    const applied = await cluster.kubectl(['apply', '-n', NS, '-f', '-'], text);
    assert.is(applied.code, 0, applied.stderr);
    const doc = parse(text) as Manifest & { metadata: { name: string } };
    const got = await cluster.kubectl(['get', '-n', NS, 'trainingjob', doc.metadata.name, '-o', 'json']);
    const live = JSON.parse(got.stdout) as Manifest & { spec: unknown };
    const local = validateTrainingJob(doc);
    assert.ok(local.ok);
    if (!local.ok) return;
    // What the API server stored is the spec zod computes: the same defaults, nothing more, nothing less.
    assert.equal(live.spec, JSON.parse(JSON.stringify(local.job.spec)), `${file}: defaults differ`);
  }
});

async function createJob(name: string): Promise<void> {
  const manifest = validManifest(name);
  await api.createNamespacedCustomObject({ ...target, body: manifest, fieldValidation: 'Strict' });
}

test('model, dataset and optimizer are immutable; replicas are not', async () => {
  await createJob('immutable');
  const changes: [string, Record<string, unknown>][] = [
    ['spec.model', { model: { mlp: { hiddenUnits: [32] } } }],
    ['spec.dataset', { dataset: { path: '/elsewhere' } }],
    ['spec.optimizer', { optimizer: { learningRate: 0.5 } }],
  ];
  for (const [field, spec] of changes) {
    const refused = await rejection(
      api.patchNamespacedCustomObject({ ...target, name: 'immutable', body: { spec } }, mergePatch),
    );
    assert.ok(refused, `changing ${field} was accepted`);
    assert.match(refused?.message ?? '', `${field} is immutable once the TrainingJob exists`);
  }
  await api.patchNamespacedCustomObject(
    { ...target, name: 'immutable', body: { spec: { replicas: 3 } } },
    mergePatch,
  );
  const job = (await api.getNamespacedCustomObject({ ...target, name: 'immutable' })) as {
    spec: { replicas: number };
  };
  assert.is(job.spec.replicas, 3);
});

test('kubectl scale changes spec.replicas through the scale subresource, within the CEL rules', async () => {
  await createJob('scaled');
  const scaled = await cluster.kubectl(['scale', '-n', NS, 'trainingjob/scaled', '--replicas=4']);
  assert.is(scaled.code, 0, scaled.stderr);
  const job = (await api.getNamespacedCustomObject({ ...target, name: 'scaled' })) as {
    spec: { replicas: number };
    metadata: { generation: number };
  };
  assert.is(job.spec.replicas, 4);
  assert.is(job.metadata.generation, 2, 'a spec change through /scale is a new generation');
  const tooMany = await cluster.kubectl(['scale', '-n', NS, 'trainingjob/scaled', '--replicas=9']);
  assert.is.not(tooMany.code, 0, 'scaling past maxReplicas must be refused');
  assert.match(tooMany.stderr, 'replicas must not exceed maxReplicas');
  const scale = await cluster.kubectl([
    'get',
    '-n',
    NS,
    'trainingjob/scaled',
    '--subresource=scale',
    '-o',
    'json',
  ]);
  assert.is(scale.code, 0, scale.stderr);
  assert.is((JSON.parse(scale.stdout) as { spec: { replicas: number } }).spec.replicas, 4);
});

test('a status update goes through the status subresource and leaves metadata.generation alone', async () => {
  await createJob('status');
  const before = (await api.getNamespacedCustomObject({ ...target, name: 'status' })) as {
    metadata: { generation: number };
  };
  const status = {
    phase: 'Running',
    replicas: 2,
    readyReplicas: 1,
    selector: 'tensile.dev/job-name=status,tensile.dev/role=worker',
    observedGeneration: before.metadata.generation,
    conditions: [
      {
        type: 'Running',
        status: 'True',
        reason: 'WorkersRunning',
        message: '',
        lastTransitionTime: '2026-01-01T00:00:00Z',
      },
    ],
    step: 10,
    loss: 0.5123,
    accuracy: 0.8874,
    lastCheckpoint: { step: 10, path: '/checkpoints/step-10', time: '2026-01-01T00:00:01.250Z' },
  };
  assert.ok(
    validateTrainingJob({ ...validManifest('status'), status }).ok,
    'the status must be valid for zod too',
  );
  await api.patchNamespacedCustomObjectStatus({ ...target, name: 'status', body: { status } }, mergePatch);
  // Status sent to the main resource is ignored, as for every resource with a status subresource.
  await api.patchNamespacedCustomObject(
    { ...target, name: 'status', body: { status: { phase: 'Failed' } } },
    mergePatch,
  );
  const after = (await api.getNamespacedCustomObject({ ...target, name: 'status' })) as {
    metadata: { generation: number };
    status: { phase: string; step: number };
  };
  assert.is(after.metadata.generation, before.metadata.generation);
  assert.is(after.status.phase, 'Running');
  assert.is(after.status.step, 10);
  const scale = await cluster.kubectl([
    'get',
    '-n',
    NS,
    'trainingjob/status',
    '--subresource=scale',
    '-o',
    'json',
  ]);
  const scaleStatus = (JSON.parse(scale.stdout) as { status: { replicas: number; selector: string } }).status;
  assert.equal(
    scaleStatus,
    { replicas: 2, selector: status.selector },
    'the scale subresource reads the status',
  );
  const badStatus = await rejection(
    api.patchNamespacedCustomObjectStatus(
      { ...target, name: 'status', body: { status: { phase: 'Exploded' } } },
      mergePatch,
    ),
  );
  assert.ok(badStatus, 'an invalid status must be refused');
  assert.match(badStatus?.message ?? '', 'status.phase');
});

test('kubectl explain shows the descriptions; kubectl get shows loss and accuracy', async () => {
  // The API server publishes a new CRD's OpenAPI a moment after it is established.
  const explain = await eventually('kubectl explain trainingjob.spec.worker.gpus', async () => {
    const r = await cluster.kubectl(['explain', 'trainingjob.spec.worker.gpus']);
    return r.code === 0 ? r.stdout : undefined;
  });
  assert.match(explain, 'GPUs (nvidia.com/gpu) per worker: opt-in');
  const status = await cluster.kubectl(['explain', 'trainingjob.status.preemptions']);
  assert.match(status.stdout, 'Workers lost to node reclaims');
  const table = await cluster.kubectl(['get', '-n', NS, 'trainingjob/status']);
  assert.is(table.code, 0, table.stderr);
  const [header, row] = table.stdout.trim().split('\n');
  assert.match(header ?? '', /LOSS\s+ACCURACY/);
  assert.match(row ?? '', /0\.5123\s+0\.8874/);
});

test.run();
