/**
 * Tensile under a real Kueue (built from the Go module proxy by hack/install-tools.sh) on the local
 * control plane: a ClusterQueue with quota for 2 workers; a 4-replica job (minReplicas 2) labelled with
 * the queue is held suspended until Kueue admits it, then runs with the 2 workers Kueue allows (partial
 * admission) on the flavor's node label and toleration; a higher-priority workload preempts it: its
 * workers checkpoint and go, the quota is handed back, and when the other workload finishes the job is
 * admitted again and resumes. An elastic job (kueue.x-k8s.io/elastic-job, Kueue's
 * ElasticJobsViaWorkloadSlices gate) is scaled up through a replacement slice without restarting its
 * workers, keeps running while a larger slice waits for quota, and is scaled down through it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi, type V1Pod } from '@kubernetes/client-node';
import { connect, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import { toolDirs } from '../../hack/cluster/tools.ts';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';
import { type LocalCluster, operatorServiceAccount, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';
import { type OperatorProcess, startOperator } from '../helpers/operator-process.ts';

const FAKE_IMAGE = 'tensile.test/fake-worker:1';
const fakeWorker = fileURLToPath(new URL('../helpers/fake-worker.mjs', import.meta.url));
const NS = 'team-a';
const KUEUE_METRICS_CERTS = '/etc/kueue/metrics/certs';
let cluster: LocalCluster;
let nats: NatsServer;
let nc: NatsConnection;
let custom: CustomObjectsApi;
let core: CoreV1Api;
let operator: OperatorProcess;
let kueue: ChildProcess;
const kueueLog: string[] = [];

function kueueTools(): { bin: string; crds: string } {
  for (const dir of toolDirs()) {
    const bin = join(dir, 'kueue');
    const crds = join(dir, '..', 'crds');
    if (existsSync(bin) && existsSync(crds)) return { bin, crds };
  }
  throw new Error('kueue is missing; build it with: bash hack/install-tools.sh');
}

const kubectl = (args: string[], input?: string): Promise<string> => cluster.kubectlOk(args, input);

/** Kueue's manager without webhooks (the API server is not told of any) and without leader election. */
function startKueue(bin: string, webhookPort: number): ChildProcess {
  const config = join(cluster.dir, 'kueue-config.yaml');
  const certs = join(cluster.dir, 'kueue-certs');
  writeFileSync(
    config,
    stringify({
      apiVersion: 'config.kueue.x-k8s.io/v1beta2',
      kind: 'Configuration',
      namespace: 'kueue-system',
      health: { healthProbeBindAddress: '127.0.0.1:0' },
      metrics: { bindAddress: '0' },
      webhook: { port: webhookPort, host: '127.0.0.1', certDir: certs },
      leaderElection: { leaderElect: false },
      internalCertManagement: { enable: false },
      manageJobsWithoutQueueName: false,
      integrations: { frameworks: ['batch/job'], externalFrameworks: ['TrainingJob.v1alpha1.tensile.dev'] },
    }),
  );
  const child = spawn(
    bin,
    [
      `--config=${config}`,
      '--zap-log-level=2',
      '--feature-gates=VisibilityOnDemand=false,ElasticJobsViaWorkloadSlices=true',
    ],
    {
      env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const keep = (b: Buffer) => {
    kueueLog.push(...b.toString().split('\n').filter(Boolean));
    if (kueueLog.length > 2000) kueueLog.splice(0, kueueLog.length - 2000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return child;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

async function selfSignedCert(dir: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-keyout',
        join(dir, 'tls.key'),
        '-out',
        join(dir, 'tls.crt'),
      ],
      { stdio: 'ignore' },
    );
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`openssl exited ${code}`))));
  });
}

test.before(async () => {
  try {
    const tools = kueueTools();
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
    cluster = await startCluster({
      nodes: 2,
      imageMap: { [FAKE_IMAGE]: { entrypoint: [process.execPath, fakeWorker], cmd: ['run'] } },
    });
    custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    for (const f of readdirSync(tools.crds))
      await kubectl(['apply', '--server-side', '-f', join(tools.crds, f)]);
    // kubectl wait fails on a CRD that has no conditions yet: poll instead.
    for (const crd of ['workloads', 'clusterqueues', 'localqueues', 'resourceflavors'])
      await eventually(`crd ${crd} established`, async () => {
        const r = await cluster.kubectl([
          'get',
          `crd/${crd}.kueue.x-k8s.io`,
          '-o',
          'jsonpath={.status.conditions[?(@.type=="Established")].status}',
        ]);
        return r.stdout.trim() === 'True';
      });
    await kubectl(['create', 'namespace', 'kueue-system']);
    await kubectl(['create', 'namespace', NS]);
    // Every fake node carries the flavor's label; the flavor's taint is tolerated through the admission.
    for (const node of cluster.nodeNames) await kubectl(['label', 'node', node, 'pool=training']);
    await kubectl(
      ['apply', '-f', '-'],
      [
        stringify({
          apiVersion: 'kueue.x-k8s.io/v1beta2',
          kind: 'ResourceFlavor',
          metadata: { name: 'training' },
          spec: {
            nodeLabels: { pool: 'training' },
            tolerations: [{ key: 'example.com/batch', operator: 'Exists', effect: 'NoSchedule' }],
          },
        }),
        stringify({
          apiVersion: 'kueue.x-k8s.io/v1beta2',
          kind: 'ClusterQueue',
          metadata: { name: 'cq' },
          spec: {
            namespaceSelector: {},
            preemption: { withinClusterQueue: 'LowerPriority' },
            resourceGroups: [
              {
                coveredResources: ['cpu'],
                flavors: [{ name: 'training', resources: [{ name: 'cpu', nominalQuota: '2' }] }],
              },
            ],
          },
        }),
        stringify({
          apiVersion: 'kueue.x-k8s.io/v1beta2',
          kind: 'LocalQueue',
          metadata: { name: 'team-a', namespace: NS },
          spec: { clusterQueue: 'cq' },
        }),
        stringify({
          apiVersion: 'kueue.x-k8s.io/v1beta2',
          kind: 'ClusterQueue',
          metadata: { name: 'elastic-cq' },
          spec: {
            namespaceSelector: {},
            resourceGroups: [
              {
                coveredResources: ['cpu'],
                flavors: [{ name: 'training', resources: [{ name: 'cpu', nominalQuota: '3' }] }],
              },
            ],
          },
        }),
        stringify({
          apiVersion: 'kueue.x-k8s.io/v1beta2',
          kind: 'LocalQueue',
          metadata: { name: 'elastic', namespace: NS },
          spec: { clusterQueue: 'elastic-cq' },
        }),
        stringify({
          apiVersion: 'scheduling.k8s.io/v1',
          kind: 'PriorityClass',
          metadata: { name: 'urgent' },
          value: 1000,
        }),
      ].join('---\n'),
    );
    const certs = join(cluster.dir, 'kueue-certs');
    mkdirSync(certs, { recursive: true });
    await selfSignedCert(certs);
    // Without its internal cert management Kueue reads metrics certificates from this fixed path (its
    // Deployment mounts a Secret there), even with metrics off; a self-signed pair stands in.
    mkdirSync(KUEUE_METRICS_CERTS, { recursive: true });
    if (!existsSync(join(KUEUE_METRICS_CERTS, 'tls.crt'))) await selfSignedCert(KUEUE_METRICS_CERTS);
    kueue = startKueue(tools.bin, await freePort());
    const kubeconfig = await operatorServiceAccount(cluster, NS);
    operator = startOperator('op-kueue', [
      '--kubeconfig',
      kubeconfig,
      '--nats',
      nats.url,
      '--namespace',
      NS,
      '--no-leader-elect',
      '--worker-image',
      FAKE_IMAGE,
      '--failure-backoff',
      '1',
    ]);
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await operator?.[Symbol.asyncDispose]();
  if (kueue !== undefined && kueue.exitCode === null) {
    const exited = new Promise((resolve) => kueue.once('exit', resolve));
    kueue.kill('SIGTERM');
    await exited;
  }
  await nc?.close();
  await cluster?.[Symbol.asyncDispose]();
  await nats?.[Symbol.asyncDispose]();
});

const until = <T>(what: string, probe: () => Promise<T | undefined | false>) =>
  eventually(what, probe, { timeoutMs: 120_000, intervalMs: 500 }).catch((error: unknown) => {
    console.error(`--- kueue log (last 40 lines)\n${kueueLog.slice(-40).join('\n')}`);
    throw error;
  });

async function status(name: string): Promise<TrainingJobStatus> {
  const obj = (await custom.getNamespacedCustomObject({
    group: 'tensile.dev',
    version: 'v1alpha1',
    namespace: NS,
    plural: 'trainingjobs',
    name,
  })) as { status?: TrainingJobStatus };
  return obj.status ?? {};
}

async function workers(job: string): Promise<V1Pod[]> {
  const list = await core.listNamespacedPod({ namespace: NS, labelSelector: `tensile.dev/job-name=${job}` });
  return list.items.filter((p) => p.metadata?.deletionTimestamp === undefined);
}

async function workload(name: string): Promise<{
  metadata: { name: string; uid?: string; annotations?: Record<string, string> };
  spec: { podSets: { count: number; minCount?: number }[] };
  status?: {
    conditions?: { type: string; status: string; reason?: string }[];
    admission?: { podSetAssignments: { count?: number }[] };
  };
}> {
  return (await custom.getNamespacedCustomObject({
    group: 'kueue.x-k8s.io',
    version: 'v1beta2',
    namespace: NS,
    plural: 'workloads',
    name,
  })) as never;
}

const condition = (w: Awaited<ReturnType<typeof workload>>, type: string) =>
  w.status?.conditions?.find((c) => c.type === type)?.status;

test('a queued 4-replica job: held, admitted with the 2 workers the quota allows, evicted, resumed', async () => {
  const checkpoints: string[] = [];
  const sub = nc.subscribe(`tensile.${NS}.trainer.control`, {
    callback: (_e, m) => checkpoints.push(new TextDecoder().decode(m.data)),
  });
  const job = validManifest('trainer');
  setPath(job, 'metadata.namespace', NS);
  setPath(job, 'metadata.labels', { 'kueue.x-k8s.io/queue-name': 'team-a' });
  setPath(job, 'spec.replicas', 4);
  setPath(job, 'spec.minReplicas', 2);
  setPath(job, 'spec.maxReplicas', 4);
  setPath(job, 'spec.worker', {
    image: FAKE_IMAGE,
    args: ['run'],
    terminationGracePeriodSeconds: 5,
    resources: { requests: { cpu: '1' } },
  });
  await kubectl(['apply', '-f', '-'], stringify(job));

  // The workload: one pod set of 4, at least 2 (partial admission); admitted with 2.
  const admitted = await until('Kueue admits the workload', async () => {
    const w = await workload('trainingjob-trainer').catch(() => undefined);
    return w !== undefined && condition(w, 'Admitted') === 'True' ? w : undefined;
  });
  assert.equal([admitted.spec.podSets[0]?.count, admitted.spec.podSets[0]?.minCount], [4, 2]);
  assert.is(admitted.status?.admission?.podSetAssignments[0]?.count, 2, 'partial admission: 2 of 4');
  const running = await until('2 workers, on the flavor', async () => {
    const pods = await workers('trainer');
    return pods.length === 2 ? pods : undefined;
  });
  for (const pod of running) {
    assert.equal(pod.spec?.nodeSelector, { pool: 'training' });
    assert.ok(
      pod.spec?.tolerations?.some((t) => t.key === 'example.com/batch'),
      'the flavor toleration',
    );
  }
  await until('Running', async () => (await status('trainer')).phase === 'Running');

  // A higher-priority batch/v1 Job in the same queue takes the quota: the TrainingJob is evicted.
  await kubectl(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: 'urgent', namespace: NS, labels: { 'kueue.x-k8s.io/queue-name': 'team-a' } },
      spec: {
        suspend: true,
        parallelism: 2,
        completions: 2,
        template: {
          spec: {
            priorityClassName: 'urgent',
            restartPolicy: 'Never',
            containers: [
              {
                name: 'c',
                image: FAKE_IMAGE,
                args: ['complete:3000'],
                resources: { requests: { cpu: '1' } },
              },
            ],
          },
        },
      },
    }),
  );
  const suspended = await until('evicted: Suspended, no workers', async () => {
    const s = await status('trainer');
    return s.phase === 'Suspended' && (await workers('trainer')).length === 0 ? s : undefined;
  });
  assert.match(
    suspended.conditions?.find((c) => c.type === 'Suspended')?.reason ?? '',
    /EvictedByKueue|QueuedByKueue/,
  );
  assert.ok(
    checkpoints.some((m) => m.includes('"checkpoint"')),
    'the workers were asked to checkpoint',
  );
  await until(
    'the quota handed back',
    async () => condition(await workload('trainingjob-trainer'), 'QuotaReserved') === 'False' || undefined,
  );

  // The urgent Job finishes; the TrainingJob is admitted again and resumes.
  await until('resumed with workers', async () => (await workers('trainer')).length >= 2 || undefined);
  await until('Running again', async () => (await status('trainer')).phase === 'Running');

  // Scaled while admitted (not elastic): stopped, its Workload replaced by one for the new size.
  const before = await workload('trainingjob-trainer');
  await kubectl(['-n', NS, 'scale', 'trainingjob/trainer', '--replicas=3']);
  const requeued = await until('a new Workload for 3 workers, admitted', async () => {
    const active = (await workloadsOf('trainer')).filter((w) => condition(w, 'Finished') !== 'True');
    const [w] = active;
    return active.length === 1 && w?.spec.podSets[0]?.count === 3 && condition(w, 'Admitted') === 'True'
      ? w
      : undefined;
  });
  assert.is(requeued.metadata.name, 'trainingjob-trainer');
  assert.is.not(requeued.metadata.uid, before.metadata.uid, 'a new Workload: the old one was deleted');
  assert.is(requeued.spec.podSets[0]?.minCount, 2);
  await until('running again with the 2 workers the quota allows', async () => {
    const s = await status('trainer');
    return s.phase === 'Running' && (await workers('trainer')).length === 2 ? s : undefined;
  });
  sub.unsubscribe();
});

async function workloadsOf(job: string): Promise<Awaited<ReturnType<typeof workload>>[]> {
  const list = (await custom.listNamespacedCustomObject({
    group: 'kueue.x-k8s.io',
    version: 'v1beta2',
    namespace: NS,
    plural: 'workloads',
    labelSelector: `tensile.dev/job-name=${job}`,
  })) as { items: Awaited<ReturnType<typeof workload>>[] };
  return list.items;
}

const uids = (pods: V1Pod[]) => pods.map((p) => p.metadata?.uid ?? '').sort();

test('an elastic job: scaled up by a replacement slice without a restart, then down in place', async () => {
  const job = validManifest('stretch');
  setPath(job, 'metadata.namespace', NS);
  setPath(job, 'metadata.labels', { 'kueue.x-k8s.io/queue-name': 'elastic' });
  setPath(job, 'metadata.annotations', { 'kueue.x-k8s.io/elastic-job': 'true' });
  setPath(job, 'spec.replicas', 2);
  setPath(job, 'spec.minReplicas', 1);
  setPath(job, 'spec.maxReplicas', 4);
  setPath(job, 'spec.worker', {
    image: FAKE_IMAGE,
    args: ['run'],
    terminationGracePeriodSeconds: 5,
    resources: { requests: { cpu: '1' } },
  });
  await kubectl(['apply', '-f', '-'], stringify(job));
  const first = await until('2 workers under the first slice', async () => {
    const pods = await workers('stretch');
    return pods.length === 2 && (await status('stretch')).phase === 'Running' ? pods : undefined;
  });
  const [slice] = await workloadsOf('stretch');
  assert.is(slice?.metadata.annotations?.['kueue.x-k8s.io/elastic-job'], 'true');
  assert.is(slice?.spec.podSets[0]?.minCount, undefined, 'no partial admission on an elastic job');

  // Up to 3 (the quota): a new slice replaces the first; the two workers keep running.
  await kubectl(['-n', NS, 'scale', 'trainingjob/stretch', '--replicas=3']);
  const three = await until('3 workers under a replacement slice', async () => {
    const pods = await workers('stretch');
    return pods.length === 3 ? pods : undefined;
  });
  for (const uid of uids(first)) assert.ok(uids(three).includes(uid), 'the first workers were not restarted');
  const afterUp = await workloadsOf('stretch');
  const replaced = afterUp.find((w) => w.metadata.name === 'trainingjob-stretch');
  const replacement = afterUp.find(
    (w) =>
      w.metadata.annotations?.['kueue.x-k8s.io/workload-slice-replacement-for'] ===
      `${NS}/trainingjob-stretch`,
  );
  assert.ok(replacement !== undefined, 'a slice that replaces the first');
  assert.is(condition(replacement, 'Admitted'), 'True');
  assert.is(replacement.spec.podSets[0]?.count, 3);
  assert.ok(replaced !== undefined, 'the first slice is kept, finished');
  assert.equal(
    replaced.status?.conditions?.find((c) => c.type === 'Finished')?.status,
    'True',
    'the first slice is finished',
  );

  // Up to 4, beyond the quota: the larger slice waits, the job goes on with its 3 workers.
  await kubectl(['-n', NS, 'scale', 'trainingjob/stretch', '--replicas=4']);
  const waiting = await until('a 4-worker slice pending on quota', async () => {
    const w = (await workloadsOf('stretch')).find((x) => x.spec.podSets[0]?.count === 4);
    return w !== undefined && condition(w, 'QuotaReserved') === 'False' ? w : undefined;
  });
  assert.is(condition(waiting, 'Admitted'), undefined, 'not admitted');
  const still = await workers('stretch');
  assert.equal(uids(still), uids(three), 'the 3 workers run on, untouched');
  assert.is((await status('stretch')).phase, 'Running');

  // Down to 1: the pending slice shrinks, Kueue admits it in place of the 3-worker one.
  await kubectl(['-n', NS, 'scale', 'trainingjob/stretch', '--replicas=1']);
  await until('1 worker under an admitted 1-worker slice', async () => {
    const active = (await workloadsOf('stretch')).filter((w) => condition(w, 'Finished') !== 'True');
    const pods = await workers('stretch');
    return active.length === 1 &&
      active[0]?.spec.podSets[0]?.count === 1 &&
      condition(active[0], 'Admitted') === 'True' &&
      pods.length === 1
      ? true
      : undefined;
  });
  const left = await workers('stretch');
  assert.ok(uids(three).includes(uids(left)[0] ?? ''), 'a survivor, not a new pod');
  assert.is((await status('stretch')).phase, 'Running');
});

test.run();
