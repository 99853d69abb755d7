/**
 * A federated TrainingJob in a cluster: the real operator (under the chart's ClusterRole, minting
 * per-site NATS users from the account seed) on a real control plane, the node agent running real
 * worker processes (tfjs) on real Fashion-MNIST, a real nats-server that authenticates every client by
 * JWT. Two sites (one of two workers) each train on their Dirichlet part and aggregate securely; the job
 * must run every round to Succeeded, status.federation must show the rounds and each site, the applied
 * mean must be the sample-weighted average of the plain deltas (written aside by the test image's
 * audit, TENSILE_FEDERATION_AUDIT, which no pod the operator builds sets), and one site's credentials
 * must not reach the other site's subjects or its keys of the federation bucket.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import { federationBucket, newSiteSigningKey } from '../../operator/api/federation.ts';
import { jobInboxPrefix, operatorPermissions, sitePermissions } from '../../operator/api/nats-permissions.ts';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { workerEnvironment } from '../../operator/api/worker-env.ts';
import {
  createTrust,
  mintUser,
  serverTrustConfig,
  type Trust,
} from '../../operator/controller/nats-credentials.ts';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';
import { type LocalCluster, operatorServiceAccount, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { readAuditedRound, worstMeanError } from '../helpers/federation-audit.ts';
import { type OperatorProcess, startOperator } from '../helpers/operator-process.ts';

const NS = 'fed';
const OPERATOR_NS = 'tensile-system';
const JOB = 'fed-cluster';
const IMAGE = 'tensile.test/federated-worker:1';
const ROUNDS = 3;
const LOCAL_STEPS = 10;
const SITES = ['a', 'b'] as const;
const repo = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tensile-federated-cluster-'));
const audit = join(dir, 'audit');

let cluster: LocalCluster;
let trust: Trust;
let nats: NatsServer;
let operator: OperatorProcess;
let core: CoreV1Api;
let custom: CustomObjectsApi;
const connections: NatsConnection[] = [];

test.before(async () => {
  try {
    trust = await createTrust();
    writeFileSync(join(dir, 'nats.conf'), serverTrustConfig(trust));
    writeFileSync(join(dir, 'account.nk'), new TextDecoder().decode(trust.account.getSeed()));
    nats = await startNatsServer({ configFile: join(dir, 'nats.conf') });
    cluster = await startCluster({
      nodes: 2,
      gpusPerNode: 0,
      imageMap: {
        // The worker image, with the test audit on (and where it writes): a debug build of the image.
        [IMAGE]: {
          entrypoint: [process.execPath, join(repo, 'operator', 'bin', 'tensile.mjs')],
          cmd: [],
          workingDir: repo,
          env: { TENSILE_FEDERATION_AUDIT: '1', TENSILE_OUT_DIR: audit },
        },
      },
    });
    core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    await cluster.kubectlOk(['create', 'namespace', OPERATOR_NS]);
    await cluster.kubectlOk(['create', 'namespace', NS]);
    const kubeconfig = await operatorServiceAccount(cluster, OPERATOR_NS);
    // The operator's own user, as the chart hands it one (TENSILE_NATS_CREDS); it mints the sites'.
    const own = await mintUser(trust.account, 'tensile-operator', operatorPermissions());
    writeFileSync(join(dir, 'operator.creds'), own.creds);
    operator = startOperator(
      'op-fed',
      [
        ...['--kubeconfig', kubeconfig, '--namespace', OPERATOR_NS, '--no-leader-elect'],
        ...['--nats', nats.url, '--nats-account-seed', join(dir, 'account.nk')],
        ...['--failure-backoff', '1', '--worker-image', IMAGE],
      ],
      { env: { TENSILE_NATS_CREDS: join(dir, 'operator.creds') } },
    );
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

function manifest() {
  return {
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'TrainingJob',
    metadata: { name: JOB, namespace: NS },
    spec: {
      model: { mlp: { hiddenUnits: [64], dropout: 0 }, seed: 3 },
      dataset: {
        format: 'idx',
        path: fashionMnistDir(),
        normalize: 'scale',
        maxTrainSamples: 4000,
        eval: { source: 'test', maxSamples: 500 },
      },
      optimizer: { type: 'sgd', learningRate: 0.1 },
      batch: { global: 32 },
      checkpoint: {
        intervalSteps: 1000,
        volume: {
          claimTemplate: { size: '1Gi', accessModes: ['ReadWriteMany'], storageClassName: 'shared' },
        },
      },
      rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 500 },
      worker: { image: IMAGE, terminationGracePeriodSeconds: 5 },
      federation: {
        rounds: ROUNDS,
        localSteps: LOCAL_STEPS,
        partition: { type: 'dirichlet', alpha: 0.5, seed: 1 },
        sites: [{ name: 'a', replicas: 2 }, { name: 'b' }],
      },
    },
  };
}

async function status(name = JOB): Promise<TrainingJobStatus> {
  const job = (await custom.getNamespacedCustomObject({
    group: 'tensile.dev',
    version: 'v1alpha1',
    namespace: NS,
    plural: 'trainingjobs',
    name,
  })) as { status?: TrainingJobStatus };
  return job.status ?? {};
}

/** The worst distance of any rank's applied mean from the plain sample-weighted mean of `round`. */
function roundMeanError(round: number): { worst: number; means: number } {
  const audited = readAuditedRound(join(audit, 'federation'), round, SITES);
  return { worst: worstMeanError(audited), means: audited.means.length };
}

/** A NATS client with a site's own credentials (its Secret, read here as admin), and what it was refused. */
async function asSite(site: string): Promise<{ nc: NatsConnection; refused: string[] }> {
  const secret = await core.readNamespacedSecret({ namespace: NS, name: `${JOB}-${site}-nats-credentials` });
  const creds = Buffer.from(secret.data?.['nats.creds'] ?? '', 'base64');
  const nc = await connect({
    servers: nats.url,
    authenticator: credsAuthenticator(new Uint8Array(creds)),
    inboxPrefix: jobInboxPrefix(NS, `${JOB}-${site}`),
  });
  connections.push(nc);
  const refused: string[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      const context = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (context !== undefined) refused.push(`${context.operation} ${context.subject}`);
    }
  })();
  return { nc, refused };
}

test('a federated job runs its sites as labelled pod groups, every round to Succeeded, the secure mean exact', async () => {
  await cluster.kubectlOk(['apply', '-f', '-'], stringify(manifest()));
  const pods = await eventually(
    'the three site pods',
    async () => {
      const list = await core.listNamespacedPod({
        namespace: NS,
        labelSelector: `tensile.dev/job-name=${JOB}`,
      });
      assert.is(list.items.length, 3);
      return list.items;
    },
    { timeoutMs: 60_000 },
  );
  const bySite = (site: string) =>
    pods
      .filter((p) => p.metadata?.labels?.['tensile.dev/federation-site'] === site)
      .map((p) => p.metadata?.name)
      .sort();
  assert.equal(bySite('a'), [`${JOB}-a-worker-0`, `${JOB}-a-worker-1`]);
  assert.equal(bySite('b'), [`${JOB}-b-worker-0`]);
  for (const pod of pods) {
    const site = pod.metadata?.labels?.['tensile.dev/federation-site'];
    const secrets = (pod.spec?.volumes ?? []).flatMap((v) =>
      v.secret?.secretName === undefined ? [] : [v.secret.secretName],
    );
    assert.equal(
      secrets.sort(),
      [`${JOB}-${site}-federation-key`, `${JOB}-${site}-nats-credentials`].sort(),
      `${pod.metadata?.name} mounts its own site's Secrets only`,
    );
  }

  const final = await eventually(
    () => `the job finishes (${operator.file})`,
    async () => {
      const s = await status();
      assert.ok(s.phase === 'Succeeded' || s.phase === 'Failed', `phase ${s.phase}: ${s.message}`);
      return s;
    },
    { timeoutMs: 600_000, intervalMs: 1000 },
  );
  assert.is(final.phase, 'Succeeded', final.message);
  assert.match(final.message ?? '', /every site completed \(a, b\)/);
  assert.is(final.federation?.rounds, ROUNDS);
  assert.equal(
    final.federation?.sites.map((s) => [s.name, s.round, s.completed]),
    [
      ['a', ROUNDS, true],
      ['b', ROUNDS, true],
    ],
  );
  for (let round = 1; round <= ROUNDS; round++) {
    const { worst, means } = roundMeanError(round);
    assert.ok(means >= 2, `round ${round}: ${means} ranks wrote the mean they applied`);
    // Fixed point at 2^-20 per site, divided by the summed weight: a few 1e-6 at most.
    assert.ok(worst < 1e-5, `round ${round}: the secure mean is ${worst} from the plain one`);
  }
});

test('one site’s NATS credentials cannot read or steer another site, nor write its federation keys', async () => {
  const a = await asSite('a');
  a.nc.subscribe(`tensile.${NS}.${JOB}-b.control`);
  a.nc.subscribe(`_INBOX.tensile.${NS}.${JOB}-b.x`);
  a.nc.publish(`tensile.${NS}.${JOB}-b.metrics`, new Uint8Array(1));
  a.nc.publish(`$KV.${federationBucket(NS, JOB)}.r9.a0.advertise.1`, new Uint8Array(1));
  // Its own: allowed, and no refusal.
  a.nc.subscribe(`tensile.${NS}.${JOB}-a.control`);
  a.nc.publish(`$KV.${federationBucket(NS, JOB)}.r9.a0.advertise.0`, new Uint8Array(1));
  await a.nc.flush();
  const refused = await eventually('the refusals', () => {
    assert.ok(a.refused.length >= 4, a.refused.join('; '));
    return a.refused;
  });
  for (const subject of [`${JOB}-b.control`, `${JOB}-b.x`, `${JOB}-b.metrics`, 'advertise.1'])
    assert.ok(
      refused.some((r) => r.includes(subject)),
      `refused ${subject}: ${refused.join('; ')}`,
    );
  assert.not.ok(
    refused.some((r) => r.includes(`${JOB}-a.control`) || r.includes('advertise.0')),
    refused.join('; '),
  );
});

test('sites in two places: a remote site’s worker outside this cluster joins through the same NATS', async () => {
  const name = 'fed-remote';
  const keyA = newSiteSigningKey();
  const keyB = newSiteSigningKey();
  // Every site pins its key: each place holds its own site's private key only.
  const sites = (remote: 'a' | 'b') => [
    { name: 'a', replicas: 2, signingKey: keyA.public, remote: remote === 'a' },
    { name: 'b', signingKey: keyB.public, remote: remote === 'b' },
  ];
  const here = manifest();
  here.metadata.name = name;
  here.spec.federation = { ...here.spec.federation, sites: sites('b') } as typeof here.spec.federation;
  // The pinned site brings its own key Secret.
  await cluster.kubectlOk(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: `${name}-a-federation-key`, namespace: NS },
      stringData: { 'signing-key.pem': keyA.privatePem },
    }),
  );
  await cluster.kubectlOk(['apply', '-f', '-'], stringify(here));
  // Site b, run elsewhere: the job as its own place sees it (a remote), a user of the same account
  // limited to site b, its own incarnation (uid) and its own private key.
  const there = structuredClone(here);
  there.spec.federation = { ...there.spec.federation, sites: sites('a') } as typeof there.spec.federation;
  const parsed = validateTrainingJob(there);
  if (!parsed.ok) throw new Error(parsed.problems.map((p) => p.message).join('; '));
  const uid = randomUUID();
  const user = await mintUser(
    trust.account,
    `${NS}/${name}-b`,
    sitePermissions(NS, `${name}-b`, uid, federationBucket(NS, name), 1),
  );
  const away = join(dir, 'remote-b');
  mkdirSync(away, { recursive: true });
  writeFileSync(join(away, 'nats.creds'), user.creds, { mode: 0o600 });
  writeFileSync(join(away, 'signing-key.pem'), keyB.privatePem, { mode: 0o600 });
  const env = workerEnvironment({
    jobName: name,
    namespace: NS,
    jobUid: uid,
    spec: parsed.job.spec,
    workerId: `${name}-b-worker-0`,
    replicaIndex: 0,
    checkpointDir: join(away, 'checkpoints'),
    outDir: away,
    natsUrl: nats.url,
    natsCreds: join(away, 'nats.creds'),
    federationSite: 'b',
    federationSigningKey: join(away, 'signing-key.pem'),
    federationSiteKeys: { a: keyA.public, b: keyB.public },
  });
  const child = spawn(process.execPath, [join(repo, 'operator', 'bin', 'tensile.mjs'), 'worker'], {
    cwd: repo,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  child.stdout.on('data', (d: Buffer) => lines.push(...d.toString().split('\n')));
  child.stderr.on('data', (d: Buffer) => lines.push(...d.toString().split('\n')));
  const exited = new Promise<number | null>((done) => child.on('close', done));
  // Pods only for the site this cluster runs (looked at while they run: finished pods may go).
  const names = await eventually('the pods of site a', async () => {
    const list = await core.listNamespacedPod({
      namespace: NS,
      labelSelector: `tensile.dev/job-name=${name}`,
    });
    return list.items.length === 2 ? list.items.map((p) => p.metadata?.name).sort() : undefined;
  });
  assert.equal(names, [`${name}-a-worker-0`, `${name}-a-worker-1`], 'no pods for the remote site');
  const final = await eventually(
    () => `${name} finishes (${operator.file})`,
    async () => {
      const s = await status(name);
      return s.phase === 'Succeeded' || s.phase === 'Failed' ? s : undefined;
    },
    { timeoutMs: 600_000, intervalMs: 1000 },
  );
  assert.is(final.phase, 'Succeeded', final.message);
  assert.is(final.federation?.rounds, ROUNDS);
  assert.equal(
    final.federation?.sites.map((s) => s.name),
    ['a'],
    'this cluster reports the site it runs',
  );
  assert.is(await exited, 0, lines.slice(-20).join('\n'));
  const rounds = lines.filter((l) => l.includes('"event":"federation-round"'));
  assert.is(rounds.length, ROUNDS, 'the remote site took part in every round');
  for (const line of rounds) assert.match(line, /"sites":\[0,1\]/);
});

test.run();
