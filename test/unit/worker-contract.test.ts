/**
 * The operator↔worker environment contract (operator/api/worker-env.ts), end to end without a
 * cluster: the env of a built pod, with the downward API filled in as the kubelet would, and the env
 * of a local worker both go through the worker's own config loader, and must describe the same worker.
 */
import type { V1EnvVar } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WORKER_ENV, workerEnvVars } from '../../operator/api/worker-env.ts';
import { buildWorkerPod, workerSpecOf } from '../../operator/controller/pod-builder.ts';
import { planLocalWorker } from '../../operator/local-run/run.ts';
import { loadWorkerConfig, type WorkerConfig } from '../../worker/config.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const NATS = 'nats://nats.tensile-system:4222';
const POD_IP = '10.1.2.3';
const NODE = 'node-7';
const defaults = { workerImage: 'w:1', workerGpuImage: 'w:1-gpu', natsUrl: NATS };

/** What the kubelet does with a container's env: literal values as they are, fieldRefs resolved. */
function kubeletEnv(env: readonly V1EnvVar[], fields: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of env) {
    const path = v.valueFrom?.fieldRef?.fieldPath;
    const value = path === undefined ? v.value : fields[path];
    if (value === undefined) throw new Error(`${v.name}: no value for ${path ?? 'a literal'}`);
    out[v.name] = value;
  }
  return out;
}

function podConfig(job = ownedJob({ 'spec.worker': { backend: 'wasm' } }), index = 2): WorkerConfig {
  const pod = buildWorkerPod(job, index, defaults);
  const env = pod.spec?.containers[0]?.env ?? [];
  return loadWorkerConfig(
    kubeletEnv(env, {
      'metadata.name': pod.metadata?.name ?? '',
      'status.podIP': POD_IP,
      'spec.nodeName': NODE,
      // A cluster without the node's topology labels on pods resolves the label to nothing.
      "metadata.labels['topology.kubernetes.io/zone']": '',
    }),
  );
}

test("a built pod's env loads into the worker config it stands for", () => {
  const job = ownedJob({ 'spec.worker': { backend: 'wasm' } });
  const config = podConfig(job);
  assert.equal(config, {
    jobName: 'job',
    namespace: 'default',
    jobUid: 'job-uid',
    spec: workerSpecOf(job.spec),
    specRevision: 1,
    workerId: 'job-worker-2',
    replicaIndex: 2,
    podIp: POD_IP,
    nodeName: NODE,
    natsUrl: NATS,
    checkpointDir: job.spec.checkpoint.path,
    modelDir: `${job.spec.checkpoint.path}/model`,
    backend: 'wasm',
    logLevel: 'info',
    progressMs: 2000,
    checksumEvery: 0,
    federationAudit: false,
  });
});

test('a federated worker becomes its site’s: job name, spec, data and steps', () => {
  const job = ownedJob({
    'spec.federation': {
      rounds: 4,
      localSteps: 10,
      sites: [{ name: 'east', replicas: 2 }, { name: 'west' }],
    },
  });
  const env = Object.fromEntries(
    workerEnvVars({
      jobName: 'job',
      namespace: 'default',
      jobUid: 'job-uid',
      spec: job.spec,
      replicaIndex: 0,
      checkpointDir: '/checkpoints',
      federationSite: 'west',
    }).flatMap((v) => ('value' in v ? [[v.name, v.value]] : [])),
  );
  const config = loadWorkerConfig(env);
  assert.is(config.jobName, 'job-west');
  assert.equal(config.federation?.index, 1);
  assert.is(config.spec.replicas, 1);
  assert.is(config.spec.stopping.steps, 40);
  assert.is(config.spec.evaluation.intervalSteps, 10);
  assert.throws(
    () => loadWorkerConfig({ ...env, TENSILE_FEDERATION_SITE: 'north' }),
    /not one of spec.federation.sites/,
  );
  const { TENSILE_FEDERATION_SITE: _, ...withoutSite } = env;
  assert.throws(() => loadWorkerConfig(withoutSite), /TENSILE_FEDERATION_SITE: required/);
});

test('every variable a pod sets is one the worker reads', () => {
  const pod = buildWorkerPod(ownedJob({ 'spec.worker': { backend: 'wasm' } }), 0, defaults);
  const known = new Set<string>(Object.values(WORKER_ENV));
  for (const v of pod.spec?.containers[0]?.env ?? []) assert.ok(known.has(v.name), v.name);
});

test('a pod of an operator with per-job credentials and TLS: the worker reads its credentials and TLS files', () => {
  const job = ownedJob({ 'spec.worker': { backend: 'wasm' } });
  const pod = buildWorkerPod(job, 0, { ...defaults, perJobCredentials: true, natsTls: { clientCert: true } });
  const config = loadWorkerConfig(
    kubeletEnv(pod.spec?.containers[0]?.env ?? [], {
      'metadata.name': 'job-worker-0',
      'status.podIP': POD_IP,
      'spec.nodeName': NODE,
      "metadata.labels['topology.kubernetes.io/zone']": '',
    }),
  );
  assert.is(config.natsCreds, '/etc/tensile/nats/nats.creds');
  assert.is(config.natsTlsCa, '/etc/tensile/nats-tls/ca.crt');
  assert.is(config.natsTlsCert, '/etc/tensile/nats-tls/tls.crt');
  assert.is(config.natsTlsKey, '/etc/tensile/nats-tls/tls.key');
  const mounts = pod.spec?.containers[0]?.volumeMounts?.map((m) => m.mountPath) ?? [];
  assert.ok(
    mounts.includes('/etc/tensile/nats') && mounts.includes('/etc/tensile/nats-tls'),
    mounts.join(' '),
  );
});

test('a local worker and a pod of the same job and index agree on everything but where they run', () => {
  const job = ownedJob({ 'spec.worker': { backend: 'wasm' } });
  // The local runner keeps its own uid for the run (DIR/job-uid), as the API server gives a job one.
  const local = planLocalWorker(
    job,
    { backend: 'wasm', chaos: [] },
    '/tmp/run',
    job.spec.checkpoint.path,
    2,
    NATS,
    'run-uid',
  );
  const fromLocal = loadWorkerConfig(local.env);
  const fromPod = podConfig(job);
  const differs = Object.keys({ ...fromPod, ...fromLocal })
    .filter(
      (key) =>
        JSON.stringify(fromPod[key as keyof WorkerConfig]) !==
        JSON.stringify(fromLocal[key as keyof WorkerConfig]),
    )
    .sort();
  // The uid and revision come from the API server, the pod IP and node from the kubelet, the out and
  // model dirs from `tensile run` (a pod writes its model where spec.output says).
  assert.equal(differs, ['jobUid', 'modelDir', 'nodeName', 'outDir', 'podIp', 'specRevision']);
  assert.is(fromLocal.workerId, fromPod.workerId);
});

test.run();
