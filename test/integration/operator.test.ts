/**
 * The operator against a real control plane (etcd, kube-apiserver, controller-manager, scheduler) with
 * pods run by the node agent, and a real nats-server. The operator runs as two real processes under
 * exactly the ClusterRole of charts/tensile/files/operator-clusterrole.yaml, not as admin. Worker pods
 * run test/helpers/fake-worker.mjs: these tests are about the operator; the end-to-end test trains.
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect as connectTcp, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi, type V1Pod } from '@kubernetes/client-node';
import { connect, type NatsConnection, type Subscription } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import {
  type ControlMessage,
  ControlMessageSchema,
  decodeMessage,
  encodeMessage,
  jobSubjects,
  rendezvousBucket,
} from '../../operator/api/contract.ts';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';
import { type LocalCluster, operatorServiceAccount, startCluster } from '../helpers/cluster.ts';
import { consistently, eventually as until } from '../helpers/eventually.ts';
import { type Manifest, setPath, validManifest } from '../helpers/job-builder.ts';
import { type OperatorProcess, startOperator } from '../helpers/operator-process.ts';

const NS = 'team-a';
const OPERATOR_NS = 'tensile-system';
const FAKE_IMAGE = 'tensile.test/fake-worker:1';
const fakeWorker = fileURLToPath(new URL('../helpers/fake-worker.mjs', import.meta.url));
const tensileBin = fileURLToPath(new URL('../../operator/bin/tensile.mjs', import.meta.url));

let cluster: LocalCluster;
let nats: NatsServer;
let nc: NatsConnection;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let operatorKubeconfig: string;
const operators: OperatorProcess[] = [];

const kubectl = (args: string[], input?: string): Promise<string> => cluster.kubectlOk(args, input);

function operatorArgs(): string[] {
  return [
    '--kubeconfig',
    operatorKubeconfig,
    '--nats',
    nats.url,
    '--namespace',
    OPERATOR_NS,
    '--lease-duration',
    '3',
    '--renew-deadline',
    '2',
    '--retry-period',
    '0.5',
    '--failure-backoff',
    '1',
    '--worker-image',
    FAKE_IMAGE,
  ];
}

test.before(async () => {
  try {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
    cluster = await startCluster({
      nodes: 3,
      gpusPerNode: 2,
      imageMap: { [FAKE_IMAGE]: { entrypoint: [process.execPath, fakeWorker], cmd: ['run'] } },
    });
    core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    await kubectl(['create', 'namespace', OPERATOR_NS]);
    await kubectl(['create', 'namespace', NS]);
    operatorKubeconfig = await operatorServiceAccount(cluster, OPERATOR_NS);
    operators.push(startOperator('op-a', operatorArgs()));
    await operators[0]?.waitFor((l) => l['message'] === 'became leader');
    operators.push(startOperator('op-b', operatorArgs()));
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  for (const op of operators) await op[Symbol.asyncDispose]();
  await nc?.close();
  await cluster?.[Symbol.asyncDispose]();
  await nats?.[Symbol.asyncDispose]();
});

function job(name: string, changes: Record<string, unknown> = {}): Manifest {
  const m = validManifest(name);
  setPath(m, 'metadata.namespace', NS);
  setPath(m, 'spec.worker', { image: FAKE_IMAGE, args: ['run'], terminationGracePeriodSeconds: 5 });
  // Workers spread over the fake nodes (a disruption moves one to another node): a ReadWriteMany
  // claim, as a multi-node job needs; the default ReadWriteOnce would pin them all to one node.
  setPath(m, 'spec.checkpoint', {
    intervalSteps: 100,
    volume: { claimTemplate: { size: '1Gi', accessModes: ['ReadWriteMany'], storageClassName: 'shared' } },
  });
  for (const [path, value] of Object.entries(changes)) setPath(m, path, value);
  return m;
}

async function apply(manifest: Manifest): Promise<void> {
  await kubectl(['apply', '-f', '-'], stringify(manifest));
}

async function status(name: string): Promise<TrainingJobStatus> {
  const obj = (await custom.getNamespacedCustomObject({
    group: 'tensile.dev',
    version: 'v1alpha1',
    namespace: NS,
    plural: 'trainingjobs',
    name,
  })) as {
    status?: TrainingJobStatus;
  };
  return obj.status ?? {};
}

async function pods(jobName: string): Promise<V1Pod[]> {
  const list = await core.listNamespacedPod({
    namespace: NS,
    labelSelector: `tensile.dev/job-name=${jobName}`,
  });
  return list.items;
}

const alive = (op: OperatorProcess) => op.child.exitCode === null && op.child.signalCode === null;
const running = (p: V1Pod) => p.status?.phase === 'Running' && p.metadata?.deletionTimestamp === undefined;

function subscribe(jobName: string): { messages: ControlMessage[]; sub: Subscription } {
  const messages: ControlMessage[] = [];
  const sub = nc.subscribe(jobSubjects(NS, jobName).control);
  void (async () => {
    for await (const m of sub) {
      const decoded = decodeMessage(ControlMessageSchema, m.data);
      if (decoded.ok) messages.push(decoded.value);
    }
  })();
  return { messages, sub };
}

/** The notes of a job's Events with `reason`, oldest first. */
async function eventNotes(jobName: string, reason: string): Promise<string[]> {
  const out = await kubectl([
    '-n',
    NS,
    'get',
    'events.events.k8s.io',
    '--field-selector',
    `regarding.name=${jobName},reason=${reason}`,
    '-o',
    'json',
  ]);
  return (JSON.parse(out) as { items: { note?: string }[] }).items.map((e) => e.note ?? '');
}

async function eventReasons(jobName: string): Promise<string[]> {
  const out = await kubectl([
    '-n',
    NS,
    'get',
    'events.events.k8s.io',
    '--field-selector',
    `regarding.name=${jobName}`,
    '-o',
    'jsonpath={.items[*].reason}',
  ]);
  return out.split(/\s+/).filter((s) => s !== '');
}

async function uidOf(jobName: string): Promise<string> {
  const obj = (await custom.getNamespacedCustomObject({
    group: 'tensile.dev',
    version: 'v1alpha1',
    namespace: NS,
    plural: 'trainingjobs',
    name: jobName,
  })) as { metadata?: { uid?: string } };
  const uid = obj.metadata?.uid;
  if (uid === undefined) throw new Error(`${jobName} has no uid`);
  return uid;
}

/** Creates a KV bucket as a job's worker would (the fake workers here do not). */
async function createBucket(name: string): Promise<void> {
  const kv = await nc.jetstream().views.kv(name, { history: 1 });
  await kv.put('completed', new TextEncoder().encode('{}'));
}

async function bucketExists(name: string): Promise<boolean> {
  const jsm = await nc.jetstreamManager();
  for await (const stream of jsm.streams.names()) if (stream === `KV_${name}`) return true;
  return false;
}

test('apply: the right worker pods, the claim, status Running, events', async () => {
  await apply(job('alpha', { 'spec.replicas': 2, 'spec.maxReplicas': 6 }));
  const ready = await until('2 running workers', async () => {
    const list = (await pods('alpha')).filter(running);
    return list.length === 2 ? list : undefined;
  });
  assert.equal(ready.map((p) => p.metadata?.name).sort(), ['alpha-worker-0', 'alpha-worker-1']);
  const pod = ready[0] as V1Pod;
  assert.is(pod.metadata?.labels?.['tensile.dev/role'], 'worker');
  assert.is(pod.metadata?.ownerReferences?.[0]?.kind, 'TrainingJob');
  assert.ok(pod.metadata?.finalizers?.includes('tensile.dev/accounting'));
  assert.ok(pod.spec?.containers[0]?.env?.some((e) => e.name === 'TENSILE_NATS_URL' && e.value === nats.url));
  const claim = await core.readNamespacedPersistentVolumeClaim({ namespace: NS, name: 'alpha-checkpoints' });
  assert.is(claim.metadata?.ownerReferences?.[0]?.name, 'alpha');
  const s = await until('phase Running with 2 ready', async () => {
    const st = await status('alpha');
    return st.phase === 'Running' && st.readyReplicas === 2 ? st : undefined;
  });
  assert.is(s.replicas, 2);
  assert.is(s.selector, 'tensile.dev/job-name=alpha,tensile.dev/role=worker');
  assert.ok(s.conditions?.some((c) => c.type === 'Running' && c.status === 'True'));
  const table = await kubectl(['-n', NS, 'get', 'tj', 'alpha']);
  assert.match(table, /alpha\s+Running\s+2\s+2/);
  const reasons = await eventReasons('alpha');
  assert.ok(reasons.includes('WorkersCreated'), reasons.join(','));
});

test('kubectl scale 2 → 4 → 1 through the scale subresource', async () => {
  await kubectl(['-n', NS, 'scale', 'trainingjob/alpha', '--replicas=4']);
  await until('4 running', async () => (await pods('alpha')).filter(running).length === 4);
  await until('status.replicas 4', async () => (await status('alpha')).readyReplicas === 4);
  await kubectl(['-n', NS, 'scale', 'trainingjob/alpha', '--replicas=1']);
  const left = await until('1 worker left', async () => {
    const list = await pods('alpha');
    return list.length === 1 ? list : undefined;
  });
  assert.is(left[0]?.metadata?.name, 'alpha-worker-0', 'the newest went first');
  const s = await status('alpha');
  assert.is(s.preemptions ?? 0, 0, 'the operator’s own deletions are not preemptions');
});

test('a deleted worker is replaced: preemptions + 1, restarts unchanged', async () => {
  await kubectl(['-n', NS, 'scale', 'trainingjob/alpha', '--replicas=2']);
  await until('2 running', async () => (await pods('alpha')).filter(running).length === 2);
  const before = await status('alpha');
  await kubectl(['-n', NS, 'delete', 'pod', 'alpha-worker-1', '--wait=false']);
  const after = await until('preemption counted', async () => {
    const st = await status('alpha');
    return (st.preemptions ?? 0) === (before.preemptions ?? 0) + 1 ? st : undefined;
  });
  assert.is(after.restarts ?? 0, before.restarts ?? 0);
  await until('2 running again', async () => {
    const list = (await pods('alpha')).filter(running);
    return list.length === 2 && !list.some((p) => p.metadata?.name === 'alpha-worker-1');
  });
  await until(
    'the deleted pod is gone (finalizer released)',
    async () => !(await pods('alpha')).some((p) => p.metadata?.name === 'alpha-worker-1'),
  );
});

test('a disruption taint: the worker is asked to leave over NATS and replaced early', async () => {
  const { messages, sub } = subscribe('alpha');
  try {
    const victim = (await pods('alpha')).filter(running)[0] as V1Pod;
    const nodeName = victim.spec?.nodeName as string;
    await kubectl(['taint', 'node', nodeName, 'karpenter.sh/disrupted=:NoSchedule']);
    const leave = await until('a leave request', async () => messages.find((m) => m.type === 'leave'));
    assert.ok(
      leave.type === 'leave' && leave.workers.includes(victim.metadata?.name as string),
      JSON.stringify(leave),
    );
    // The message goes out before the annotation is written (a lost annotation re-asks; a lost
    // message would not), so the annotation is waited for.
    const annotation = await until('the leave-requested annotation', async () => {
      const pod = await core.readNamespacedPod({ namespace: NS, name: victim.metadata?.name as string });
      return pod.metadata?.annotations?.['tensile.dev/leave-requested'];
    });
    assert.match(annotation, 'karpenter.sh/disrupted');
    await until('a replacement running beside the leaving worker', async () => {
      const list = (await pods('alpha')).filter(running);
      return list.length === 3;
    });
    // The worker leaves (here: its pod is deleted, as Karpenter would drain it); it counts as a preemption.
    const before = (await status('alpha')).preemptions ?? 0;
    await kubectl(['-n', NS, 'delete', 'pod', victim.metadata?.name as string, '--wait=false']);
    await until('preemption counted', async () => ((await status('alpha')).preemptions ?? 0) === before + 1);
    assert.ok((await eventReasons('alpha')).includes('NodeDisruption'));
    await kubectl(['taint', 'node', nodeName, 'karpenter.sh/disrupted-']);
  } finally {
    sub.unsubscribe();
  }
});

test('suspend: a checkpoint request, workers deleted, Suspended; resume recreates them', async () => {
  const { messages, sub } = subscribe('alpha');
  try {
    await kubectl([
      '-n',
      NS,
      'patch',
      'tj',
      'alpha',
      '--type=merge',
      '-p',
      '{"spec":{"runPolicy":{"suspend":true}}}',
    ]);
    await until('no workers', async () => (await pods('alpha')).length === 0);
    const s = await until('Suspended', async () => {
      const st = await status('alpha');
      return st.phase === 'Suspended' ? st : undefined;
    });
    assert.ok(s.conditions?.some((c) => c.type === 'Suspended' && c.status === 'True'));
    await until('a checkpoint request', async () => messages.some((m) => m.type === 'checkpoint'));
    await kubectl([
      '-n',
      NS,
      'patch',
      'tj',
      'alpha',
      '--type=merge',
      '-p',
      '{"spec":{"runPolicy":{"suspend":false}}}',
    ]);
    await until('2 running again', async () => (await pods('alpha')).filter(running).length === 2);
    const resumed = await until('Running', async () => {
      const st = await status('alpha');
      return st.phase === 'Running' ? st : undefined;
    });
    assert.ok(resumed.conditions?.some((c) => c.type === 'Suspended' && c.status === 'False'));
  } finally {
    sub.unsubscribe();
  }
});

test('a worker that exits non-zero is replaced with backoff, then Failed/BackoffLimitExceeded', async () => {
  await apply(
    job('beta', {
      'spec.replicas': 1,
      'spec.worker.args': ['fail:3:200'],
      'spec.runPolicy': { backoffLimit: 2 },
    }),
  );
  const failed = await until(
    'Failed',
    async () => {
      const st = await status('beta');
      return st.phase === 'Failed' ? st : undefined;
    },
    90_000,
  );
  assert.is(failed.restarts, 3);
  assert.is(failed.preemptions ?? 0, 0);
  assert.ok(failed.conditions?.some((c) => c.type === 'Failed' && c.reason === 'BackoffLimitExceeded'));
  const reasons = await eventReasons('beta');
  assert.ok(reasons.includes('WorkerFailed') && reasons.includes('BackoffLimitExceeded'), reasons.join(','));
  await until('no pod holds the finalizer', async () =>
    (await pods('beta')).every((p) => !p.metadata?.finalizers?.includes('tensile.dev/accounting')),
  );
});

test('activeDeadlineSeconds: Failed/DeadlineExceeded, workers stopped', async () => {
  await apply(job('gamma', { 'spec.replicas': 1, 'spec.runPolicy': { activeDeadlineSeconds: 4 } }));
  const s = await until('Failed', async () => {
    const st = await status('gamma');
    return st.phase === 'Failed' ? st : undefined;
  });
  assert.ok(s.conditions?.some((c) => c.reason === 'DeadlineExceeded'));
  await until('no workers', async () => (await pods('gamma')).length === 0);
});

test('completion and ttlSecondsAfterFinished: Succeeded, then the job is deleted with its pods', async () => {
  await apply(
    job('delta', {
      'spec.replicas': 2,
      'spec.worker.args': ['complete:1500'],
      'spec.runPolicy': { ttlSecondsAfterFinished: 3 },
    }),
  );
  const done = await until('Succeeded', async () => {
    const st = await status('delta');
    return st.phase === 'Succeeded' ? st : undefined;
  });
  assert.ok(done.completionTime !== undefined);
  assert.ok(done.conditions?.some((c) => c.type === 'Succeeded' && c.reason === 'TrainingCompleted'));
  await until(
    'job deleted',
    async () => (await cluster.kubectl(['-n', NS, 'get', 'tj', 'delta'])).code !== 0,
    30_000,
  );
  await until('pods gone', async () => (await pods('delta')).length === 0);
});

test('a spec the operator cannot run: Failed/InvalidSpec, other jobs unaffected', async () => {
  await apply(
    job('epsilon', {
      'spec.worker.resources': { requests: { 'nvidia.com/gpu': 1 }, limits: { 'nvidia.com/gpu': 2 } },
    }),
  );
  const s = await until('Failed', async () => {
    const st = await status('epsilon');
    return st.phase === 'Failed' ? st : undefined;
  });
  const condition = s.conditions?.find((c) => c.type === 'Failed');
  assert.is(condition?.reason, 'InvalidSpec');
  assert.match(condition?.message ?? '', 'nvidia.com/gpu');
  assert.is((await pods('epsilon')).length, 0);
  assert.is((await status('alpha')).phase, 'Running');
});

test('a worker pod the API server refuses (422): Failed/InvalidSpec on the next pass, with the locked write', async () => {
  // Requests above limits: the CRD cannot see it, the API server's pod validation refuses it.
  await apply(
    job('iota', {
      'spec.replicas': 1,
      'spec.worker.resources': { requests: { cpu: '2' }, limits: { cpu: '1' } },
    }),
  );
  const s = await until('Failed', async () => {
    const st = await status('iota');
    return st.phase === 'Failed' ? st : undefined;
  });
  const condition = s.conditions?.find((c) => c.type === 'Failed');
  assert.is(condition?.reason, 'InvalidSpec');
  assert.match(condition?.message ?? '', /^worker pod rejected: create pod team-a\/iota-worker-0: 422/);
  assert.is(s.restarts ?? 0, 0);
  assert.is((await pods('iota')).length, 0);
  assert.ok((await eventReasons('iota')).includes('InvalidSpec'));
});

test('the leader is SIGKILLed in the middle of a scale-up: the other replica converges, no duplicates', async () => {
  const leader = operators.find((op) => alive(op) && op.log.some((l) => l['message'] === 'became leader'));
  assert.ok(leader !== undefined, 'a leader');
  const standby = operators.find((op) => op !== leader) as OperatorProcess;
  await kubectl(['-n', NS, 'scale', 'trainingjob/alpha', '--replicas=6']);
  await until('scale-up started', async () => (await pods('alpha')).length > 2);
  await leader.kill('SIGKILL');
  await standby.waitFor((l) => l['message'] === 'became leader', 30_000);
  const list = await until('6 running', async () => {
    const all = await pods('alpha');
    return all.filter(running).length === 6 ? all : undefined;
  });
  assert.is(list.length, 6, 'no extra pods');
  assert.is(new Set(list.map((p) => p.metadata?.labels?.['tensile.dev/replica-index'])).size, 6);
  // Any late duplicate would show up within moments: none may.
  await consistently('no pod beyond 6', async () => (await pods('alpha')).length === 6, {
    forMs: 2000,
    intervalMs: 250,
  });
  operators.push(startOperator('op-c', operatorArgs()));
});

/** One sample of a scrape: `name{labels} value`, or undefined when the series is missing. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

test('metrics: controller queue and reconcile latency, and per-job training metrics from worker reports', async () => {
  const leader = operators.find(
    (op) => alive(op) && op.log.some((l) => l['message'] === 'became leader'),
  ) as OperatorProcess;
  const port = await leader.port();
  const scrape = () =>
    fetch(`http://127.0.0.1:${port}/metrics`).then(
      (r) => r.text(),
      (error: Error) => {
        throw new Error(`GET /metrics of ${leader.id} on port ${port}: ${String(error.cause ?? error)}`);
      },
    );
  // What a worker of alpha's world reports (the fake workers here do not train).
  const uid = await uidOf('alpha');
  const time = new Date().toISOString();
  const checkpointTime = new Date(Date.now() - 30_000).toISOString();
  const progress = (step: number, at: string) =>
    encodeMessage({
      type: 'progress',
      jobUid: uid,
      worker: 'alpha-worker-0',
      generation: 4,
      worldSize: 6,
      step,
      epoch: 2,
      loss: 0.4321,
      accuracy: 0.875,
      samplesPerSecond: 1234.5,
      lastCheckpoint: { step: 1200, path: '/checkpoints/ckpt-1200', time: checkpointTime },
      time: at,
    });
  nc.publish(jobSubjects(NS, 'alpha').metrics, progress(1250, new Date(Date.now() - 1000).toISOString()));
  nc.publish(jobSubjects(NS, 'alpha').metrics, progress(1300, time));
  const labels = `namespace="${NS}",trainingjob="alpha"`;
  const text = await until('alpha progress in /metrics', async () => {
    const t = await scrape();
    return sample(t, 'tensile_trainingjob_step', labels) === 1300 ? t : undefined;
  });
  const expected: [string, number][] = [
    ['tensile_trainingjob_epoch', 2],
    ['tensile_trainingjob_loss', 0.4321],
    ['tensile_trainingjob_accuracy_ratio', 0.875],
    ['tensile_trainingjob_throughput_samples_per_second', 1234.5],
    ['tensile_trainingjob_world_size_workers', 6],
    ['tensile_trainingjob_rendezvous_generation', 4],
    ['tensile_trainingjob_last_checkpoint_step', 1200],
  ];
  for (const [name, value] of expected) assert.is(sample(text, name, labels), value, name);
  const st = await status('alpha');
  assert.is(sample(text, 'tensile_trainingjob_preemptions_total', labels), st.preemptions ?? 0);
  assert.is(sample(text, 'tensile_trainingjob_restarts_total', labels), st.restarts ?? 0);
  const age = sample(text, 'tensile_trainingjob_last_checkpoint_age_seconds', labels) ?? -1;
  assert.ok(age >= 30 && age < 600, `checkpoint age ${age}`);
  // One second of steps past the furthest: a goodput above 0 and at most 1.
  const goodput = sample(text, 'tensile_trainingjob_goodput_ratio', labels) ?? -1;
  assert.ok(goodput > 0 && goodput <= 1, `goodput ${goodput}`);
  assert.match(text, /^# TYPE tensile_trainingjob_restarts_total counter$/m);
  assert.match(text, /^# TYPE tensile_reconcile_duration_seconds histogram$/m);
  assert.match(text, /^# TYPE tensile_workqueue_queue_duration_seconds histogram$/m);
  assert.ok((sample(text, 'tensile_reconcile_duration_seconds_count', 'result="done"') ?? 0) > 0);
  assert.ok(
    Number(/^tensile_workqueue_queue_duration_seconds_count (\d+)$/m.exec(text)?.[1] ?? 0) > 0,
    'queue waits observed',
  );
  assert.ok(Number(/^tensile_workqueue_adds_total (\d+)$/m.exec(text)?.[1] ?? 0) > 0, 'adds counted');
  for (const name of [
    'tensile_workqueue_depth',
    'tensile_trainingjobs{phase="Running"}',
    'tensile_worker_pods_created_total',
    'tensile_leader 1',
  ]) {
    assert.ok(text.includes(name), `missing ${name}`);
  }
  // Every per-job series carries exactly the namespace and trainingjob labels.
  for (const line of text.split('\n').filter((l) => l.startsWith('tensile_trainingjob_')))
    assert.match(line, /^tensile_trainingjob_[a-z_]+\{namespace="[^"]+",trainingjob="[^"]+"\} \S+$/);
  assert.is((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  assert.is((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
});

test('spec.output: the model claim is mounted and not owned; status.model and tensile export JOB name the model', async () => {
  await kubectl(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'models', namespace: NS },
      spec: { accessModes: ['ReadWriteMany'], resources: { requests: { storage: '1Gi' } } },
    }),
  );
  await apply(
    job('omega', { 'spec.replicas': 1, 'spec.output': { claimName: 'models', path: 'fashion/v1' } }),
  );
  const [pod] = await until('omega pod', async () => {
    const list = await pods('omega');
    return list.length === 1 ? list : undefined;
  });
  assert.ok(pod?.spec?.volumes?.some((v) => v.persistentVolumeClaim?.claimName === 'models'));
  const cli = (args: string[]) =>
    spawnSync(
      process.execPath,
      [tensileBin, 'export', ...args, '-n', NS, '--kubeconfig', cluster.kubeconfigPath],
      {
        encoding: 'utf8',
      },
    );
  const before = cli(['omega']);
  assert.is(before.status, 1);
  assert.match(before.stderr, 'no model yet');
  assert.match(before.stderr, 'pvc://models/fashion/v1');
  const uid = await uidOf('omega');
  const time = new Date().toISOString();
  nc.publish(
    jobSubjects(NS, 'omega').metrics,
    encodeMessage({
      type: 'completed',
      jobUid: uid,
      worker: 'omega-worker-0',
      step: 900,
      epoch: 3,
      loss: 0.3,
      accuracy: 0.9,
      model: { uri: 'pvc://models/fashion/v1', step: 900, accuracy: 0.9, time },
      reason: 'reached 3 epochs',
      time,
    }),
  );
  const st = await until('status.model', async () => {
    const s = await status('omega');
    return s.model === undefined ? undefined : s;
  });
  assert.is(st.phase, 'Succeeded');
  assert.equal(st.model, { uri: 'pvc://models/fashion/v1', step: 900, accuracy: 0.9, time });
  // Copying the model out of the claim is integration/export-cluster's: the fake worker wrote none.
  assert.is(cli(['nope']).status, 1);
  // Deleting the job deletes its pods and its own checkpoint claim, never the model's claim.
  await kubectl(['-n', NS, 'delete', 'tj', 'omega', '--wait=true']);
  await until('omega pods gone', async () => (await pods('omega')).length === 0);
  await consistently(
    'the model claim stays',
    async () => (await cluster.kubectl(['-n', NS, 'get', 'pvc', 'models'])).code === 0,
    { forMs: 2000, intervalMs: 250 },
  );
});

test('a deleted job takes its rendezvous state with it; the same name again gets a new bucket', async () => {
  await apply(job('eta', { 'spec.replicas': 1 }));
  await until('eta running', async () => (await pods('eta')).filter(running).length === 1);
  const first = rendezvousBucket(NS, 'eta', await uidOf('eta'));
  await createBucket(first);
  await kubectl(['-n', NS, 'delete', 'tj', 'eta', '--wait=false']);
  await until('the first incarnation’s bucket deleted', async () => !(await bucketExists(first)), 60_000);
  await until(
    'eta gone',
    async () => (await cluster.kubectl(['-n', NS, 'get', 'tj', 'eta'])).code !== 0,
    60_000,
  );
  await apply(job('eta', { 'spec.replicas': 1 }));
  const second = rendezvousBucket(NS, 'eta', await until('the new eta', () => uidOf('eta')));
  assert.is.not(second, first);
  await kubectl(['-n', NS, 'delete', 'tj', 'eta', '--wait=false']);
});

test('ttlSecondsAfterFinished: the job and its rendezvous bucket are deleted', async () => {
  await apply(
    job('theta', {
      'spec.replicas': 1,
      'spec.worker.args': ['complete:1500'],
      'spec.runPolicy': { ttlSecondsAfterFinished: 2 },
    }),
  );
  const bucket = rendezvousBucket(NS, 'theta', await until('theta created', () => uidOf('theta')));
  await createBucket(bucket);
  await until(
    'theta deleted after its TTL',
    async () => (await cluster.kubectl(['-n', NS, 'get', 'tj', 'theta'])).code !== 0,
    60_000,
  );
  await until('its bucket deleted', async () => !(await bucketExists(bucket)), 30_000);
});

test('a replica that starts leading sweeps buckets no live job owns, and only those', async () => {
  const leader = operators.find(
    (op) => alive(op) && op.log.some((l) => l['message'] === 'became leader'),
  ) as OperatorProcess;
  const standby = operators.find((op) => alive(op) && op !== leader) as OperatorProcess;
  // Left by jobs deleted while no operator watched (one from before buckets were per incarnation).
  const ghost = rendezvousBucket(NS, 'ghost', randomUUID());
  const legacy = `tensile_${NS}_ghost`;
  const live = rendezvousBucket(NS, 'alpha', await uidOf('alpha'));
  for (const name of [ghost, legacy, live, 'unrelated']) await createBucket(name);
  await leader.kill('SIGTERM');
  await standby.waitFor((l) => l['message'] === 'became leader', 30_000);
  await until('the orphans swept', async () => !(await bucketExists(ghost)) && !(await bucketExists(legacy)));
  assert.ok(await bucketExists(live), 'the live job’s bucket stays');
  assert.ok(await bucketExists('unrelated'), 'a bucket that is no rendezvous bucket stays');
  operators.push(startOperator('op-d', operatorArgs()));
});

test('goodput autoscaling: a report that predicts a gain grows the job (status, event); kubectl scale wins', async () => {
  await apply(
    job('goodput', {
      'spec.replicas': 1,
      'spec.maxReplicas': 3,
      'spec.autoscaling': { policy: 'goodput', minSteps: 10, minIntervalSeconds: 3600 },
    }),
  );
  await until('1 running worker', async () => (await pods('goodput')).filter(running).length === 1);
  // What the world of one reports (the fake workers do not train): 50 steps of 0.05 s at batch 128.
  nc.publish(
    jobSubjects(NS, 'goodput').metrics,
    encodeMessage({
      type: 'progress',
      jobUid: await uidOf('goodput'),
      worker: 'goodput-worker-0',
      generation: 1,
      worldSize: 1,
      step: 60,
      epoch: 0,
      loss: 0.5,
      samplesPerSecond: 2560,
      goodput: { perWorkerBatch: 128, stepSeconds: 0.05, steps: 50 },
      time: new Date().toISOString(),
    }),
  );
  await until('2 running workers', async () => (await pods('goodput')).filter(running).length === 2);
  const decided = await status('goodput');
  assert.is(decided.autoscaling?.replicas, 2);
  // The decision's reason is in its Event; status holds the latest one (by now, waiting for the
  // world of two to report).
  const [note] = await until('the GoodputRescale event', async () => {
    const notes = await eventNotes('goodput', 'GoodputRescale');
    return notes.length > 0 ? notes : undefined;
  });
  assert.match(note ?? '', /1 → 2 worker\(s\).*predicted goodput by workers: 1: 2560, 2: 51(19|20)/, note);
  assert.equal(
    decided.autoscaling?.observations?.map((o) => o.replicas),
    [1],
  );
  assert.ok((await eventReasons('goodput')).includes('GoodputRescale'));
  // A user's scale is the latest word: taken at once, and the policy holds it for its interval.
  await kubectl(['-n', NS, 'scale', 'trainingjob/goodput', '--replicas=3']);
  await until('3 running workers', async () => (await pods('goodput')).filter(running).length === 3);
  const scaled = await until('the override in status', async () => {
    const st = await status('goodput');
    return st.autoscaling?.specReplicas === 3 ? st : undefined;
  });
  assert.is(scaled.autoscaling?.replicas, 3);
  assert.ok((await eventReasons('goodput')).includes('ScaleOverride'));
  await kubectl(['-n', NS, 'delete', 'trainingjob', 'goodput', '--wait=false']);
});

test('deleting the job deletes its workers (owner references, finalizers released)', async () => {
  await kubectl(['-n', NS, 'delete', 'tj', 'alpha', '--wait=false']);
  await until('pods gone', async () => (await pods('alpha')).length === 0, 60_000);
  await until(
    'claim gone',
    async () => (await cluster.kubectl(['-n', NS, 'get', 'pvc', 'alpha-checkpoints'])).code !== 0,
    60_000,
  );
});

test('the operator cannot do what its role does not allow (it runs as that role)', async () => {
  const r = await cluster.kubectl(['--kubeconfig', operatorKubeconfig, '-n', NS, 'get', 'secrets']);
  assert.is.not(r.code, 0);
  assert.match(r.stderr, 'forbidden');
});

// Chaos seed 3: the leader gave up its lease while kube-apiserver restarted, the workers completed
// before the standby was elected, and the completion (core NATS keeps nothing) was lost: the job
// stayed Running. Every replica follows the reports from its start now.
test('a completion reported while no replica leads reaches the status: a standby follows the reports', async () => {
  await apply(job('kappa', { 'spec.replicas': 1 }));
  await until('kappa Running', async () => ((await status('kappa')).phase === 'Running' ? true : undefined));
  const uid = await uidOf('kappa');
  const leader = operators.find(
    (op) => alive(op) && op.log.some((l) => l['message'] === 'became leader'),
  ) as OperatorProcess;
  const standby = operators.find((op) => alive(op) && op !== leader) as OperatorProcess;
  await standby.waitFor((l) => l['message'] === 'following worker reports', 30_000);
  await leader.kill('SIGKILL');
  // Within the lease (3 s) of the dead leader: nobody leads yet.
  assert.not.ok(
    standby.log.some((l) => l['message'] === 'became leader'),
    'the standby leads already',
  );
  const time = new Date().toISOString();
  nc.publish(
    jobSubjects(NS, 'kappa').metrics,
    encodeMessage({
      type: 'completed',
      jobUid: uid,
      worker: 'kappa-worker-0',
      step: 700,
      epoch: 2,
      loss: 0.31,
      accuracy: 0.87,
      reason: 'completed 2 epochs',
      time,
    }),
  );
  await standby.waitFor((l) => l['message'] === 'became leader', 30_000);
  const st = await until('kappa Succeeded', async () => {
    const s = await status('kappa');
    return s.phase === 'Succeeded' ? s : undefined;
  });
  assert.is(st.step, 700);
  assert.is(st.accuracy, 0.87);
  operators.push(startOperator('op-e', operatorArgs()));
});

test('a replica started while the API server is away keeps the reports that come before its first list', async () => {
  // Chaos seed 2 (20 minutes): the leader exited when it could not renew its lease, its fresh process
  // followed the reports before it could list a job, dropped the final ones as of an unknown job, and
  // wrote Succeeded without the step, accuracy and model. Here the fresh replica reaches the API
  // server through a port that refuses until the completion has come.
  await apply(job('mu', { 'spec.replicas': 1 }));
  await until('mu Running', async () => ((await status('mu')).phase === 'Running' ? true : undefined));
  const uid = await uidOf('mu');
  for (const op of operators.filter(alive)) await op.kill('SIGKILL');
  const server = new URL(/server: (\S+)/.exec(readFileSync(operatorKubeconfig, 'utf8'))?.[1] ?? '');
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const kubeconfig = join(tmpdir(), `tensile-operator-away-${process.pid}.kubeconfig`);
  writeFileSync(
    kubeconfig,
    readFileSync(operatorKubeconfig, 'utf8').replace(server.origin, `https://127.0.0.1:${port}`),
  );
  const args = operatorArgs();
  args[args.indexOf('--kubeconfig') + 1] = kubeconfig;
  const fresh = startOperator('op-f', args);
  await fresh.waitFor((l) => l['message'] === 'following worker reports', 30_000);
  const time = new Date().toISOString();
  nc.publish(
    jobSubjects(NS, 'mu').metrics,
    encodeMessage({
      type: 'completed',
      jobUid: uid,
      worker: 'mu-worker-0',
      step: 900,
      epoch: 3,
      loss: 0.29,
      accuracy: 0.88,
      model: { uri: 'pvc://mu-checkpoints/model', step: 900, accuracy: 0.88, time },
      reason: 'completed 3 epochs',
      time,
    }),
  );
  await nc.flush();
  // The API server is back: a forwarder on that port to the real one.
  const forwarder = createServer((client) => {
    const upstream = connectTcp(Number(server.port), server.hostname);
    client.pipe(upstream).pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
  });
  await new Promise<void>((resolve) => forwarder.listen(port, '127.0.0.1', resolve));
  try {
    await fresh.waitFor((l) => l['message'] === 'became leader', 60_000);
    const st = await until('mu Succeeded', async () => {
      const s = await status('mu');
      return s.phase === 'Succeeded' ? s : undefined;
    });
    assert.is(st.step, 900);
    assert.is(st.accuracy, 0.88);
    assert.is(st.model?.uri, 'pvc://mu-checkpoints/model');
  } finally {
    await fresh[Symbol.asyncDispose]();
    forwarder.close();
    for (const id of ['op-g', 'op-h']) operators.push(startOperator(id, operatorArgs()));
  }
});

test.run();
