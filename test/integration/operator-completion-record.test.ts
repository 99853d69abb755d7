/**
 * The final figures of a job outlive the `completed` message (issue 24, chaos: a kube-apiserver
 * restart at the end of a job). Core NATS keeps nothing, so an operator that starts leading after
 * the workers ended never hears their completion; the record they leave in the rendezvous bucket
 * must give it step, accuracy, model and goodput all the same. A real control plane, a real
 * nats-server, the operator as real processes under its own ClusterRole; fake workers, whose
 * record the test writes as the writer of the last world does (worker/lifecycle/states.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { connect, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import { encodeMessage, jobSubjects, rendezvousBucket } from '../../operator/api/contract.ts';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';
import { type LocalCluster, operatorServiceAccount, startCluster } from '../helpers/cluster.ts';
import { eventually as until } from '../helpers/eventually.ts';
import { type Manifest, setPath, validManifest } from '../helpers/job-builder.ts';
import { type OperatorProcess, startOperator } from '../helpers/operator-process.ts';

const NS = 'team-r';
const OPERATOR_NS = 'tensile-system';
const FAKE_IMAGE = 'tensile.test/fake-worker:1';
const fakeWorker = fileURLToPath(new URL('../helpers/fake-worker.mjs', import.meta.url));

let cluster: LocalCluster;
let nats: NatsServer;
let nc: NatsConnection;
let custom: CustomObjectsApi;
let core: CoreV1Api;
let operatorKubeconfig: string;
let scratch: string;
const operators: OperatorProcess[] = [];

function operatorArgs(): string[] {
  return [
    ...['--kubeconfig', operatorKubeconfig, '--nats', nats.url, '--namespace', OPERATOR_NS],
    ...['--lease-duration', '3', '--renew-deadline', '2', '--retry-period', '0.5'],
    ...['--worker-image', FAKE_IMAGE],
  ];
}

test.before(async () => {
  try {
    scratch = mkdtempSync(join(tmpdir(), 'tensile-completion-record-'));
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
    cluster = await startCluster({
      nodes: 1,
      imageMap: { [FAKE_IMAGE]: { entrypoint: [process.execPath, fakeWorker], cmd: ['run'] } },
    });
    custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await cluster.kubectlOk(['create', 'namespace', OPERATOR_NS]);
    await cluster.kubectlOk(['create', 'namespace', NS]);
    operatorKubeconfig = await operatorServiceAccount(cluster, OPERATOR_NS);
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
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
});

/** A one-worker job whose fake worker finishes (exits 0) once `doneFile` exists. */
function job(name: string, doneFile: string): Manifest {
  const m = validManifest(name);
  setPath(m, 'metadata.namespace', NS);
  setPath(m, 'spec.replicas', 1);
  setPath(m, 'spec.worker', { image: FAKE_IMAGE, args: [`complete-when:${doneFile}`] });
  return m;
}

async function tj(name: string): Promise<{ uid: string; status: TrainingJobStatus }> {
  const obj = (await custom.getNamespacedCustomObject({
    group: 'tensile.dev',
    version: 'v1alpha1',
    namespace: NS,
    plural: 'trainingjobs',
    name,
  })) as { metadata?: { uid?: string }; status?: TrainingJobStatus };
  return { uid: obj.metadata?.uid ?? '', status: obj.status ?? {} };
}

async function podPhase(name: string): Promise<string | undefined> {
  const list = await core.listNamespacedPod({ namespace: NS, labelSelector: `tensile.dev/job-name=${name}` });
  return list.items[0]?.status?.phase;
}

function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const time = new Date().toISOString();

/** What the writer of the last world leaves under `completed` (its `completed` message, less `type`). */
function record(jobUid: string, name: string) {
  return {
    jobUid,
    worker: `${name}-worker-0`,
    step: 4690,
    epoch: 10,
    loss: 0.3295,
    accuracy: 0.8839,
    lastCheckpoint: { step: 4690, path: '/checkpoints/ckpt-0000004690', time },
    model: { uri: `pvc://${name}-checkpoints/model`, step: 4690, accuracy: 0.8839, time },
    usefulSeconds: 1.5,
    reason: 'completed 10 epochs',
    time,
  };
}

test('an operator that leads only after the workers completed takes the figures from their record', async () => {
  const first = startOperator('op-a', operatorArgs());
  operators.push(first);
  await first.waitFor((l) => l['message'] === 'became leader', 60_000);
  const doneFile = join(scratch, 'done');
  for (const name of ['rho', 'sigma'])
    await cluster.kubectlOk(['apply', '-f', '-'], stringify(job(name, doneFile)));
  // Both run, and the first leader knows a progress of theirs: what it would leave in status.
  for (const name of ['rho', 'sigma']) {
    const { uid } = await until(`${name} Running`, async () => {
      const j = await tj(name);
      return j.status.phase === 'Running' ? j : undefined;
    });
    nc.publish(
      jobSubjects(NS, name).metrics,
      encodeMessage({
        ...{ type: 'progress', jobUid: uid, worker: `${name}-worker-0`, generation: 1, worldSize: 1 },
        ...{ step: 1876, epoch: 4, loss: 0.3418, accuracy: 0.8698, samplesPerSecond: 1000, time },
      }),
    );
    await until(`${name} status.step from progress`, async () => (await tj(name)).status.step === 1876);
  }
  await first.kill('SIGKILL');

  // No operator: the workers record their completion (sigma's bucket holds another incarnation's)
  // and end. Their `completed` message, published now, would reach no one: it is not sent at all.
  const rho = await tj('rho');
  const sigma = await tj('sigma');
  for (const [name, uid, recordUid] of [
    ['rho', rho.uid, rho.uid],
    ['sigma', sigma.uid, 'an-earlier-sigma'],
  ] as const) {
    const kv = await nc.jetstream().views.kv(rendezvousBucket(NS, name, uid), { history: 1 });
    await kv.put('completed', encodeMessage(record(recordUid, name)));
  }
  writeFileSync(doneFile, '');
  for (const name of ['rho', 'sigma'])
    await until(`${name}'s worker completed`, async () => (await podPhase(name)) === 'Succeeded', 60_000);

  const second = startOperator('op-b', operatorArgs());
  operators.push(second);
  await second.waitFor((l) => l['message'] === 'became leader', 60_000);
  const done = await until('rho Succeeded with its final figures', async () => {
    const { status } = await tj('rho');
    return status.phase === 'Succeeded' && status.model !== undefined ? status : undefined;
  });
  assert.equal([done.step, done.epoch, done.accuracy, done.loss], [4690, 10, 0.8839, 0.3295]);
  assert.equal(done.model, { uri: 'pvc://rho-checkpoints/model', step: 4690, accuracy: 0.8839, time });
  assert.is(done.lastCheckpoint?.step, 4690);

  // Goodput: the record's useful seconds over the job's time, though this operator saw no report.
  const port = await second.port();
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const goodput = sample(metrics, 'tensile_trainingjob_goodput_ratio', `namespace="${NS}",trainingjob="rho"`);
  const seconds = (Date.parse(done.completionTime ?? '') - Date.parse(done.startTime ?? '')) / 1000;
  assert.ok(
    goodput !== undefined && Math.abs(goodput - Math.min(1, 1.5 / seconds)) < 1e-9,
    `goodput ${goodput}`,
  );

  // Another incarnation's record is dropped: sigma finishes from its pod, with what was known.
  const other = await until('sigma Succeeded', async () => {
    const { status } = await tj('sigma');
    return status.phase === 'Succeeded' ? status : undefined;
  });
  assert.equal([other.step, other.model], [1876, undefined]);
  assert.ok(
    second.log.some((l) => l['message'] === 'dropped a other incarnation NATS message'),
    'the foreign record is counted as a drop',
  );
  assert.is(second.child.exitCode, null, 'the operator is still up');
});

test.run();
