/**
 * spec.federation in a cluster, the pure parts: which pod slot is which site's, the site pods the
 * builder makes (names, labels, keys, credentials, data), the planner's site-aware decisions (every
 * site completes before the job does, a finished site keeps its pods), status.federation, the site
 * NATS permissions, and how site reports and buckets find their federated job.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ProgressMessage } from '../../operator/api/contract.ts';
import { LABEL_JOB_NAME } from '../../operator/api/contract.ts';
import { federationBucket } from '../../operator/api/federation.ts';
import { jobPermissions, sitePermissions } from '../../operator/api/nats-permissions.ts';
import { gaussianEpsilon } from '../../operator/api/privacy-accountant.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import {
  bucketOwningJobs,
  combineSiteObservations,
  federationSlot,
  federationStatus,
  LABEL_FEDERATION_SITE,
  remoteSiteJobs,
  siteOwner,
} from '../../operator/controller/federation-sites.ts';
import { type PlanConfig, plan } from '../../operator/controller/plan.ts';
import { buildWorkerPod, type OwnedJob } from '../../operator/controller/pod-builder.ts';
import type { JobObservations } from '../../operator/controller/progress.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';
import { node, nodeMap, ownedJob, T0, workerPod } from '../helpers/k8s-builders.ts';

const config: PlanConfig = {
  workerImage: 'tensile:test',
  workerGpuImage: 'tensile:test-gpu',
  natsUrl: 'nats://nats:4222',
  failureBackoffSeconds: 10,
  maxFailureBackoffSeconds: 360,
  perJobCredentials: true,
};

function federated(extra: Record<string, unknown> = {}): OwnedJob {
  return ownedJob({
    'spec.federation': {
      rounds: 4,
      localSteps: 10,
      sites: [
        { name: 'a', replicas: 2 },
        { name: 'b', dataset: { path: '/data/b', volume: { claimName: 'b-data', mountPath: '/data' } } },
      ],
      ...extra,
    },
  });
}

const env = (pod: V1Pod) => pod.spec?.containers[0]?.env ?? [];
const envValue = (pod: V1Pod, name: string) => env(pod).find((e) => e.name === name);

/** A pod of the job as the builder made it, in the given phase. */
function sitePod(job: OwnedJob, index: number, phase: 'Running' | 'Succeeded' | 'Failed' = 'Running'): V1Pod {
  const built = buildWorkerPod(job, index, config);
  const shaped = workerPod(index, { phase });
  return { ...shaped, metadata: { ...shaped.metadata, ...built.metadata, uid: `uid-${index}` } };
}

const progress = (step: number, worldSize: number): ProgressMessage => ({
  type: 'progress',
  jobUid: 'job-uid',
  worker: 'w',
  generation: 1,
  worldSize,
  step,
  epoch: 0,
  loss: 0.5,
  samplesPerSecond: 100,
  time: T0.toISOString(),
});

const completed = (step: number): NonNullable<JobObservations['completed']> => ({
  type: 'completed',
  jobUid: 'job-uid',
  worker: 'w',
  step,
  epoch: 1,
  loss: 0.4,
  reason: 'step limit',
  time: T0.toISOString(),
});

test('pod slots are the sites’ replicas laid end to end', () => {
  const spec = federated().spec;
  const slots = [0, 1, 2, 3].map((i) => federationSlot(spec, i));
  assert.equal(slots, [
    { site: 'a', siteIndex: 0, replicaIndex: 0 },
    { site: 'a', siteIndex: 0, replicaIndex: 1 },
    { site: 'b', siteIndex: 1, replicaIndex: 0 },
    undefined,
  ]);
});

test('a site pod: its name, label, site, own key Secret, the public keys of all, own NATS identity and data', () => {
  const job = federated();
  const pod = buildWorkerPod(job, 2, config);
  assert.is(pod.metadata?.name, 'job-b-worker-0');
  assert.is(pod.metadata?.labels?.[LABEL_FEDERATION_SITE], 'b');
  assert.is(pod.metadata?.labels?.[LABEL_JOB_NAME], 'job');
  assert.is(envValue(pod, 'TENSILE_FEDERATION_SITE')?.value, 'b');
  assert.is(envValue(pod, 'TENSILE_REPLICA_INDEX')?.value, '0');
  assert.is(envValue(pod, 'TENSILE_JOB_NAME')?.value, 'job', 'the worker derives its site job itself');
  const volumes = pod.spec?.volumes ?? [];
  const key = volumes.find((v) => v.name === 'federation-key');
  assert.equal(key?.secret?.secretName, 'job-b-federation-key');
  assert.equal(key?.secret?.items, [{ key: 'signing-key.pem', path: 'signing-key.pem' }]);
  // The other site's Secret is read for its public half only, never mounted.
  const secretsMounted = volumes.flatMap((v) => (v.secret === undefined ? [] : [v.secret.secretName]));
  assert.not.ok(secretsMounted.includes('job-a-federation-key'));
  assert.equal(envValue(pod, 'TENSILE_FEDERATION_KEY_0')?.valueFrom?.secretKeyRef, {
    name: 'job-a-federation-key',
    key: 'signing-key.pub',
  });
  assert.is(
    envValue(pod, 'TENSILE_FEDERATION_SITE_KEYS')?.value,
    JSON.stringify({ a: '$(TENSILE_FEDERATION_KEY_0)', b: '$(TENSILE_FEDERATION_KEY_1)' }),
  );
  const names = env(pod).map((e) => e.name);
  assert.ok(
    names.indexOf('TENSILE_FEDERATION_KEY_1') < names.indexOf('TENSILE_FEDERATION_SITE_KEYS'),
    'the keys are defined before the variable that refers to them',
  );
  assert.ok(secretsMounted.includes('job-b-nats-credentials'), 'the site’s own NATS identity');
  assert.is(volumes.find((v) => v.name === 'dataset')?.persistentVolumeClaim?.claimName, 'b-data');
  const checkpoints = pod.spec?.containers[0]?.volumeMounts?.find((m) => m.name === 'checkpoints');
  assert.is(checkpoints?.subPath, 'federation/b');
  assert.throws(() => buildWorkerPod(job, 3, config), /beyond the sites/);
});

test('a pinned site key is taken from the spec; without secure aggregation no keys at all', () => {
  const pin = Buffer.alloc(32, 7).toString('base64');
  const pinned = buildWorkerPod(
    ownedJob({
      'spec.federation': { rounds: 2, sites: [{ name: 'a', signingKey: pin }, { name: 'b' }] },
    }),
    1,
    config,
  );
  assert.is(envValue(pinned, 'TENSILE_FEDERATION_KEY_0')?.value, pin);
  const plain = buildWorkerPod(federated({ secureAggregation: { enabled: false } }), 0, config);
  assert.is(envValue(plain, 'TENSILE_FEDERATION_SITE_KEYS'), undefined);
  assert.not.ok(plain.spec?.volumes?.some((v) => v.name === 'federation-key'));
});

test('the planner creates every site’s pods and no more', () => {
  const job = federated();
  const p = plan({ job, pods: [], nodes: nodeMap(node('node-0')), claimExists: true, now: T0, config });
  assert.equal(
    p.createPods.map((x) => x.metadata?.name),
    ['job-a-worker-0', 'job-a-worker-1', 'job-b-worker-0'],
  );
  assert.not.ok(p.status.phase === 'Failed', p.status.message);
  const again = plan({
    job,
    pods: [sitePod(job, 0), sitePod(job, 2)],
    nodes: nodeMap(node('node-0')),
    claimExists: true,
    now: T0,
    config,
  });
  assert.equal(
    again.createPods.map((x) => x.metadata?.name),
    ['job-a-worker-1'],
    'the lost pod is replaced in its own site',
  );
});

test('one site finished: the job runs on and keeps that site’s pods; every site finished: Succeeded', () => {
  const job = federated();
  const oneDone = plan({
    job,
    pods: [sitePod(job, 0), sitePod(job, 1), sitePod(job, 2, 'Succeeded')],
    nodes: nodeMap(node('node-0')),
    claimExists: true,
    now: T0,
    config,
    siteObservations: [{ progress: progress(30, 2) }, { completed: completed(40) }],
  });
  assert.is.not(oneDone.status.phase, 'Succeeded');
  assert.equal(oneDone.createPods, [], 'the finished site is not started again');
  assert.equal(oneDone.deletePods, []);
  assert.equal(oneDone.status.federation?.rounds, 3);
  assert.equal(
    oneDone.status.federation?.sites.map((s) => [s.name, s.replicas, s.round, s.completed ?? false]),
    [
      ['a', 2, 3, false],
      ['b', 0, 4, true],
    ],
  );
  const allDone = plan({
    job,
    pods: [sitePod(job, 0, 'Succeeded'), sitePod(job, 1, 'Succeeded'), sitePod(job, 2, 'Succeeded')],
    nodes: nodeMap(node('node-0')),
    claimExists: true,
    now: T0,
    config,
    siteObservations: [{ completed: completed(40) }, { completed: completed(40) }],
  });
  assert.is(allDone.status.phase, 'Succeeded');
  assert.match(allDone.status.message ?? '', /every site completed \(a, b\)/);
});

test('a federated job in a Kueue queue is refused (partial admission would cut sites off)', () => {
  const job = federated();
  job.metadata.labels = { 'kueue.x-k8s.io/queue-name': 'q' };
  const p = plan({ job, pods: [], nodes: nodeMap(node('node-0')), claimExists: true, now: T0, config });
  assert.is(p.status.phase, 'Failed');
  assert.match(p.status.message ?? '', /cannot run in a Kueue queue yet/);
  assert.equal(p.createPods, []);
});

test('combined progress: the site furthest behind, every site’s workers; ε after the rounds done', () => {
  const combined = combineSiteObservations([
    { name: 'a', observations: { progress: progress(25, 2) } },
    { name: 'b', observations: { progress: progress(21, 1) } },
  ]);
  assert.is(combined.progress?.step, 21);
  assert.is(combined.progress?.worldSize, 3);
  assert.is(combined.progress?.samplesPerSecond, 200);
  assert.is(combined.completed, undefined);
  assert.is(
    combineSiteObservations([
      { name: 'a', observations: { progress: progress(25, 2) } },
      { name: 'b', observations: undefined },
    ]).progress,
    undefined,
    'no progress until every site reports',
  );
  const dp = { clipNorm: 1, noiseMultiplier: 1.1, delta: 1e-5 };
  const status = federationStatus(
    federated({ differentialPrivacy: dp }).spec,
    [{ progress: progress(25, 2) }, { progress: progress(21, 1) }],
    [
      { pods: 2, ready: 2, succeeded: false },
      { pods: 1, ready: 1, succeeded: false },
    ],
  );
  assert.is(status.rounds, 2);
  assert.is(status.epsilon, Number(gaussianEpsilon(1.1, 2, 1e-5).epsilon.toPrecision(4)));
  assert.equal(status.sites[1], {
    name: 'b',
    replicas: 1,
    readyReplicas: 1,
    worldSize: 1,
    step: 21,
    round: 2,
  });
});

test('a site’s NATS identity: its own subjects and bucket, not another site’s; only its own federation keys', () => {
  const bucket = federationBucket('ns', 'job');
  const a = sitePermissions('ns', 'job-a', 'u1', bucket, 0);
  const b = jobPermissions('ns', 'job-b', 'u1');
  for (const subject of [...b.publish, ...b.subscribe].filter((s) => !s.startsWith('$JS.API.INFO')))
    assert.not.ok([...a.publish, ...a.subscribe].includes(subject), `site a may not use ${subject}`);
  assert.ok(a.publish.includes(`$KV.${bucket}.*.*.*.0`));
  assert.ok(a.publish.includes(`$KV.${bucket}.*.*.input.0.*`));
  assert.not.ok(a.publish.some((s) => s.endsWith('.1') || s.includes('input.1')));
  assert.ok(a.subscribe.includes('tensile.ns.job-a.control'));
});

test('a remote site: no pods, no Secrets of it here, its pinned key handed out, the job done when its own sites are', () => {
  const pin = Buffer.alloc(32, 9).toString('base64');
  const job = ownedJob({
    'spec.federation': {
      rounds: 2,
      localSteps: 10,
      sites: [
        { name: 'a', replicas: 2 },
        { name: 'b', remote: true, signingKey: pin },
      ],
    },
  });
  const p = plan({ job, pods: [], nodes: nodeMap(node('node-0')), claimExists: true, now: T0, config });
  assert.equal(
    p.createPods.map((x) => x.metadata?.name),
    ['job-a-worker-0', 'job-a-worker-1'],
  );
  const pod = p.createPods[0] as V1Pod;
  assert.is(envValue(pod, 'TENSILE_FEDERATION_KEY_1')?.value, pin);
  assert.equal(
    p.status.federation?.sites.map((s) => s.name),
    ['a'],
  );
  const done = plan({
    job,
    pods: [sitePod(job, 0, 'Succeeded'), sitePod(job, 1, 'Succeeded')],
    nodes: nodeMap(node('node-0')),
    claimExists: true,
    now: T0,
    config,
    siteObservations: [{ completed: completed(20) }],
  });
  assert.is(done.status.phase, 'Succeeded');
  const manifest = validManifest('x');
  setPath(manifest, 'spec.federation', { rounds: 2, sites: [{ name: 'a' }, { name: 'b', remote: true }] });
  const refused = validateTrainingJob(manifest);
  assert.not.ok(refused.ok, 'a remote site without a pinned key is refused with secure aggregation');
});

test('site reports and buckets belong to their federated job', () => {
  const jobs = [
    {
      metadata: { name: 'job', namespace: 'ns', uid: 'u1' },
      spec: { federation: { sites: [{ name: 'a' }, { name: 'b' }] } },
    },
    { metadata: { name: 'job-c', namespace: 'ns', uid: 'u2' }, spec: {} },
  ];
  assert.equal(siteOwner('job-a', jobs), { name: 'job', uid: 'u1' });
  assert.is(siteOwner('job-c', jobs), undefined, 'a plain job named like a site is its own');
  assert.equal(
    [
      ...remoteSiteJobs([
        {
          metadata: { name: 'job', namespace: 'ns' },
          spec: { federation: { sites: [{ name: 'a' }, { name: 'b', remote: true }] } },
        },
      ]),
    ],
    ['ns/job-b'],
    'a remote site’s buckets are the other place’s',
  );
  assert.equal(
    bucketOwningJobs(jobs).map((j) => `${j.name}/${j.uid}`),
    ['job/u1', 'job/federation', 'job-a/u1', 'job-b/u1', 'job-c/u2'],
  );
});

test.run();
