/**
 * A job's NATS identity ends with the job, over TLS: a real nats-server configured as the Helm chart
 * configures its bundled NATS for `nats.auth` and `nats.tls` (operator mode with the full resolver and
 * the trust of `tensile nats-trust`; TLS clients with a certificate only), and a real
 * `tensile operator` (`--nats-trust`, `--nats-tls-*`) on a real control plane. The operator gives each
 * job a Secret with its user and the TLS material; a worker connected with it is cut off by the server
 * the moment its job is deleted, and cannot come back, while another job's worker carries on.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAllDocuments, stringify } from 'yaml';
import { encodeMessage, jobSubjects } from '../../operator/api/contract.ts';
import { type NatsSecurity, natsSecurityOptions } from '../../operator/api/nats-connection.ts';
import { jobInboxPrefix } from '../../operator/api/nats-permissions.ts';
import { createTrust, TRUST_FILES, writeTrustDir } from '../../operator/controller/nats-credentials.ts';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';
import { readWorkerResult, resultFile } from '../../worker/result.ts';
import { type LocalCluster, operatorServiceAccount, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { helm, KUBE_VERSION } from '../helpers/helm.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';
import { type OperatorProcess, startOperator } from '../helpers/operator-process.ts';
import { makeCertificates, type TestCertificates } from '../helpers/tls-certs.ts';

const NS = 'team-a';
const OPERATOR_NS = 'tensile-system';
const tensileBin = fileURLToPath(new URL('../../operator/bin/tensile.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tensile-nats-revocation-'));
const trustDir = join(dir, 'trust');

let cluster: LocalCluster;
let nats: NatsServer;
let certs: TestCertificates;
let operator: OperatorProcess;
const connections: NatsConnection[] = [];

const kubectl = (args: string[], input?: string): Promise<string> => cluster.kubectlOk(args, input);

const chart = fileURLToPath(new URL('../../charts/tensile', import.meta.url));
const etcNats = join(dir, 'etc-nats');

/**
 * The bundled NATS's configuration exactly as the chart renders it for `nats.auth` and `nats.tls`
 * (with verify), its mounts laid out as the pod has them: /etc/nats and /data become folders here;
 * the port and JetStream's store are the test's (startNatsServer passes them as flags).
 */
async function chartServerConfig(): Promise<string> {
  const r = await helm([
    ...['template', 'demo', chart, '--namespace', 'tensile-system', '--kube-version', KUBE_VERSION],
    ...['--set', 'nats.auth.trustSecret=trust', '--set', 'nats.tls.secretName=nats-server-tls'],
    ...['--set', 'nats.tls.verify=true', '--set', 'nats.tls.clientSecretName=nats-client-tls'],
  ]);
  if (r.code !== 0) throw new Error(`helm template: ${r.stderr}`);
  const config = parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as { kind?: string; data?: Record<string, string> } | null)
    .find((d) => d?.kind === 'ConfigMap' && d.data?.['nats.conf'] !== undefined)?.data?.['nats.conf'];
  if (config === undefined) throw new Error('the chart rendered no nats.conf');
  return config
    .replaceAll('/etc/nats/', `${etcNats}/`)
    .replaceAll('"/data', `"${join(dir, 'data')}`)
    .replace(/^\s*(port|http_port|jetstream)\b.*$/gm, '');
}

/** The trust Secret's trust.conf and the TLS Secret's files where the chart mounts them. */
function mountSecrets(): void {
  mkdirSync(join(etcNats, 'trust'), { recursive: true });
  mkdirSync(join(etcNats, 'tls'), { recursive: true });
  copyFileSync(join(trustDir, TRUST_FILES.serverConfig), join(etcNats, 'trust', 'trust.conf'));
  copyFileSync(certs.serverCert, join(etcNats, 'tls', 'tls.crt'));
  copyFileSync(certs.serverKey, join(etcNats, 'tls', 'tls.key'));
  copyFileSync(certs.ca, join(etcNats, 'tls', 'ca.crt'));
}

test.before(async () => {
  try {
    certs = makeCertificates(dir);
    writeTrustDir(trustDir, await createTrust());
    mountSecrets();
    writeFileSync(join(etcNats, 'nats.conf'), await chartServerConfig());
    nats = await startNatsServer({ configFile: join(etcNats, 'nats.conf') });
    cluster = await startCluster({ nodeAgent: false });
    await kubectl(['create', 'namespace', OPERATOR_NS]);
    await kubectl(['create', 'namespace', NS]);
    const operatorKubeconfig = await operatorServiceAccount(cluster, OPERATOR_NS);
    operator = startOperator('op-revoke', [
      ...['--kubeconfig', operatorKubeconfig],
      ...['--nats', nats.url, '--namespace', OPERATOR_NS, '--no-leader-elect'],
      ...['--nats-trust', trustDir, '--nats-tls-ca', certs.ca],
      ...['--nats-tls-cert', certs.clientCert, '--nats-tls-key', certs.clientKey],
      ...['--worker-image', 'tensile.test/never-runs:1', '--job-network-policies'],
    ]);
    await operator.waitFor((l) => l['message'] === 'connected to NATS');
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await operator?.[Symbol.asyncDispose]();
  await cluster?.[Symbol.asyncDispose]();
  await nats?.[Symbol.asyncDispose]();
});

async function createJob(name: string): Promise<void> {
  const m = validManifest(name);
  setPath(m, 'metadata.namespace', NS);
  await kubectl(['apply', '-f', '-'], stringify(m));
}

/** The job's Secret as its pods mount it: one file per key, in a folder of its own. */
async function secretFiles(job: string): Promise<Record<string, string>> {
  const raw = await eventually(
    () => `the Secret ${job}-nats-credentials`,
    async () => {
      const r = await cluster.kubectl(['-n', NS, 'get', 'secret', `${job}-nats-credentials`, '-o', 'json']);
      return r.code === 0 ? r.stdout : undefined;
    },
  );
  const data = (JSON.parse(raw) as { data: Record<string, string> }).data;
  const folder = mkdtempSync(join(dir, `${job}-`));
  const files: Record<string, string> = {};
  for (const [key, value] of Object.entries(data)) {
    files[key] = join(folder, key);
    writeFileSync(files[key], Buffer.from(value, 'base64'));
  }
  return files;
}

interface Worker {
  readonly nc: NatsConnection;
  readonly errors: string[];
  closed: boolean;
}

/** Connects as the job's worker does, from the files of its Secret; records what the server says. */
async function connectAs(job: string, security: NatsSecurity): Promise<Worker> {
  const nc = await connect({
    servers: nats.url,
    inboxPrefix: jobInboxPrefix(NS, job),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 200,
    ...natsSecurityOptions(security),
  });
  connections.push(nc);
  const worker: Worker = { nc, errors: [], closed: false };
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') worker.errors.push(String(s.data));
  })();
  void nc.closed().then(() => {
    worker.closed = true;
  });
  return worker;
}

function workerSecurity(files: Record<string, string>): NatsSecurity {
  const at = (key: string) => {
    const file = files[key];
    if (file === undefined) throw new Error(`the job's Secret has no ${key}`);
    return file;
  };
  return {
    credsFile: at('nats.creds'),
    tlsCaFile: at('ca.crt'),
    tlsCertFile: at('tls.crt'),
    tlsKeyFile: at('tls.key'),
  };
}

test("each job's Secret holds its user and the TLS material its pods mount", async () => {
  await createJob('job-a');
  const files = await secretFiles('job-a');
  assert.equal(Object.keys(files).sort(), ['ca.crt', 'nats.creds', 'tls.crt', 'tls.key']);
  assert.is(readFileSync(files['ca.crt'] ?? '', 'utf8'), readFileSync(certs.ca, 'utf8'));
  const pod = JSON.parse(await kubectl(['-n', NS, 'get', 'pod', 'job-a-worker-0', '-o', 'json'])) as {
    spec: { containers: { env: { name: string; value?: string }[] }[]; volumes: { name: string }[] };
  };
  const env = Object.fromEntries((pod.spec.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
  assert.is(env['TENSILE_NATS_TLS_CA'], '/etc/tensile/nats-tls/ca.crt');
  assert.is(env['TENSILE_NATS_TLS_CERT'], '/etc/tensile/nats-tls/tls.crt');
  assert.is(env['TENSILE_NATS_CREDS'], '/etc/tensile/nats/nats.creds');
  assert.ok(pod.spec.volumes.some((v) => v.name === 'nats-tls'));
  // Under the chart's ClusterRole the operator also fenced the job in: only its workers reach them.
  const policy = JSON.parse(
    await kubectl(['-n', NS, 'get', 'networkpolicy', 'job-a-workers', '-o', 'json']),
  ) as {
    metadata: { ownerReferences: { name: string }[] };
    spec: { ingress: { from: { podSelector: { matchLabels: Record<string, string> } }[] }[] };
  };
  assert.is(policy.metadata.ownerReferences[0]?.name, 'job-a');
  assert.equal(policy.spec.ingress[0]?.from[0]?.podSelector.matchLabels, {
    'tensile.dev/job-name': 'job-a',
    'tensile.dev/role': 'worker',
  });
  // Its worker connects with them; without a client certificate the server takes nobody.
  const worker = await connectAs('job-a', workerSecurity(files));
  await worker.nc.flush();
  const plain = await connect({
    servers: nats.url,
    maxReconnectAttempts: 0,
    ...natsSecurityOptions({ credsFile: files['nats.creds'] ?? '' }),
  }).then(
    (nc) => {
      connections.push(nc);
      return 'connected';
    },
    (e: unknown) => String(e),
  );
  assert.ok(plain !== 'connected', 'a client without TLS was let in');
});

interface PodJson {
  readonly metadata: { readonly name: string; readonly ownerReferences: readonly { readonly uid: string }[] };
  readonly spec: {
    readonly containers: readonly { readonly env: readonly { name: string; value?: string }[] }[];
  };
}

/** The worker container's env as the kubelet would give it, its mounts moved to folders here. */
function localEnv(pod: PodJson, files: Record<string, string>, out: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of pod.spec.containers[0]?.env ?? []) env[v.name] = v.value ?? '';
  const mounted = (path: string | undefined) => {
    const key = path?.split('/').pop();
    const file = key === undefined ? undefined : files[key];
    if (file === undefined) throw new Error(`the pod mounts ${path}, which its Secret lacks`);
    return file;
  };
  for (const name of [
    'TENSILE_NATS_CREDS',
    'TENSILE_NATS_TLS_CA',
    'TENSILE_NATS_TLS_CERT',
    'TENSILE_NATS_TLS_KEY',
  ])
    env[name] = mounted(env[name]);
  return {
    ...env,
    TENSILE_WORKER_ID: pod.metadata.name,
    TENSILE_POD_IP: '127.0.0.1',
    TENSILE_NODE_NAME: 'local',
    TENSILE_ZONE: '',
    TENSILE_CHECKPOINT_DIR: join(out, 'checkpoints'),
    TENSILE_MODEL_DIR: join(out, 'model'),
    TENSILE_OUT_DIR: out,
  };
}

test("a real worker, configured as its pod is, trains over TLS with its job's identity; the finished job's identity is revoked", async () => {
  const m = validManifest('job-c');
  setPath(m, 'metadata.namespace', NS);
  setPath(m, 'spec.dataset', {
    format: 'idx',
    path: fashionMnistDir(),
    maxTrainSamples: 200,
    eval: { maxSamples: 100 },
  });
  setPath(m, 'spec.batch', { global: 50 });
  setPath(m, 'spec.stopping', { epochs: 1 });
  setPath(m, 'spec.worker', { backend: 'wasm' });
  await kubectl(['apply', '-f', '-'], stringify(m));
  const files = await secretFiles('job-c');
  const pod: PodJson = JSON.parse(
    await eventually(
      () => 'the pod job-c-worker-0',
      async () => {
        const r = await cluster.kubectl(['-n', NS, 'get', 'pod', 'job-c-worker-0', '-o', 'json']);
        return r.code === 0 ? r.stdout : undefined;
      },
    ),
  );
  const out = mkdtempSync(join(dir, 'worker-c-'));
  const child = spawn(process.execPath, [tensileBin, 'worker'], {
    env: { ...process.env, ...localEnv(pod, files, out) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (chunk: Buffer) => {
    log += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    log += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  writeFileSync(join(out, 'worker.log'), log);
  assert.is(code, 0, log.slice(-3000));
  const result = readWorkerResult(resultFile(out, 'job-c-worker-0'));
  assert.is(result.status, 'completed');
  assert.is(result.step, 4);
  assert.not.match(log, /permissions violation|authorization violation/i);
  // The operator heard the completion over its own TLS connection, and ends the job's identity.
  await operator.waitFor(
    (l) =>
      l['message'] === 'revoked NATS credentials of ended jobs' &&
      JSON.stringify(l['uids']).includes(pod.metadata.ownerReferences[0]?.uid ?? '(none)'),
    120_000,
  );
  const after = await connect({
    servers: nats.url,
    maxReconnectAttempts: 0,
    ...natsSecurityOptions(workerSecurity(files)),
  }).then(
    (nc) => {
      connections.push(nc);
      return 'connected';
    },
    (e: unknown) => String(e),
  );
  assert.match(after, /authoriz/i);
});

test('deleting a job cuts its connected worker off at once; another job carries on', async () => {
  await createJob('job-b');
  const aSecurity = workerSecurity(await secretFiles('job-a'));
  const a = await connectAs('job-a', aSecurity);
  const b = await connectAs('job-b', workerSecurity(await secretFiles('job-b')));
  await Promise.all([a.nc.flush(), b.nc.flush()]);
  await kubectl(['-n', NS, 'delete', 'trainingjob', 'job-a', '--wait=false']);
  await operator.waitFor((l) => l['message'] === 'revoked NATS credentials of ended jobs');
  // The server closes the revoked user's connection and refuses its reconnects...
  await eventually(
    () => `job-a's worker refused by the server; it saw: ${a.errors.join('; ') || 'nothing'}`,
    () => a.errors.some((e) => /authoriz|revoked/i.test(e)),
  );
  // ...and any new connection with those credentials (a copy of the Secret, say).
  const again = await connect({
    servers: nats.url,
    maxReconnectAttempts: 0,
    ...natsSecurityOptions(aSecurity),
  }).then(
    (nc) => {
      connections.push(nc);
      return 'connected';
    },
    (e: unknown) => String(e),
  );
  assert.match(again, /authoriz/i);
  // job-b's worker was never disturbed and still publishes.
  b.nc.publish(jobSubjects(NS, 'job-b').metrics, encodeMessage({ type: 'progress' }));
  await b.nc.flush();
  assert.is(b.closed, false);
  assert.equal(b.errors, []);
});

test.run();
