/**
 * Per-job NATS identities on a real nats-server with decentralized JWT authentication: a worker of job
 * A, connected with the credentials minted for A, runs its rendezvous bucket and its subjects as
 * before, and is refused (the server says "permissions violation") when it publishes to job B's
 * control subject, subscribes to B's progress or control, or opens B's bucket. A revoked user can no
 * longer connect.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeMessage, jobSubjects, rendezvousBucket } from '../../operator/api/contract.ts';
import {
  jobInboxPrefix,
  jobPermissions,
  OPERATOR_INBOX_PREFIX,
  operatorPermissions,
} from '../../operator/api/nats-permissions.ts';
import {
  accountClaims,
  createTrust,
  mintUser,
  serverTrustConfig,
  type Trust,
} from '../../operator/controller/nats-credentials.ts';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';
import { NatsKvStore } from '../../worker/rendezvous/nats-kv-store.ts';
import { eventually } from '../helpers/eventually.ts';

const NS = 'team';
const A = { job: 'job-a', uid: 'uid-a' };
const B = { job: 'job-b', uid: 'uid-b' };
const dir = mkdtempSync(join(tmpdir(), 'tensile-nats-auth-'));

let trust: Trust;
let server: NatsServer;
const connections: NatsConnection[] = [];

const serverConfig = serverTrustConfig;

async function as(
  creds: string,
  inboxPrefix: string,
  errors: string[] = [],
): Promise<{ nc: NatsConnection; errors: string[] }> {
  const nc = await connect({
    servers: server.url,
    authenticator: credsAuthenticator(new TextEncoder().encode(creds)),
    inboxPrefix,
  });
  connections.push(nc);
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type !== 'error') continue;
      // nats.js puts what was refused on the status next to the code.
      const context = (status as { permissionContext?: { operation: string; subject: string } })
        .permissionContext;
      errors.push(
        context === undefined
          ? String(status.data)
          : `permissions violation: ${context.operation} ${context.subject}`,
      );
    }
  })();
  return { nc, errors };
}

async function worker(of: { job: string; uid: string }) {
  const user = await mintUser(trust.account, `${NS}/${of.job}`, jobPermissions(NS, of.job, of.uid));
  return { user, ...(await as(user.creds, jobInboxPrefix(NS, of.job))) };
}

test.before(async () => {
  try {
    trust = await createTrust();
    const file = join(dir, 'nats.conf');
    writeFileSync(file, serverConfig(trust, trust.accountJwt));
    server = await startNatsServer({ configFile: file });
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await server?.[Symbol.asyncDispose]();
});

test("a job's worker uses its own subjects and bucket", async () => {
  const a = await worker(A);
  const store = await NatsKvStore.open(a.nc, rendezvousBucket(NS, A.job, A.uid));
  const revision = await store.create('member.w-0', encodeMessage({ id: 'w-0' }));
  assert.ok(revision > 0);
  assert.ok((await store.get('member.w-0')) !== undefined);
  const control = a.nc.subscribe(jobSubjects(NS, A.job).control, { max: 1 });
  const operator = await mintUser(trust.account, 'tensile-operator', operatorPermissions());
  const op = await as(operator.creds, OPERATOR_INBOX_PREFIX);
  const progress = op.nc.subscribe(jobSubjects(NS, A.job).metrics, { max: 1 });
  await a.nc.flush();
  await op.nc.flush();
  op.nc.publish(jobSubjects(NS, A.job).control, encodeMessage({ type: 'stop', reason: 'test' }));
  a.nc.publish(jobSubjects(NS, A.job).metrics, encodeMessage({ type: 'progress' }));
  for await (const m of control) assert.is(m.subject, jobSubjects(NS, A.job).control);
  for await (const m of progress) assert.is(m.subject, jobSubjects(NS, A.job).metrics);
  assert.equal(a.errors, []);
});

test("a worker of job A cannot steer, read or open job B's subjects and bucket", async () => {
  const b = await worker(B);
  await NatsKvStore.open(b.nc, rendezvousBucket(NS, B.job, B.uid));
  const a = await worker(A);
  const subjectsB = jobSubjects(NS, B.job);
  // Publishing to B's control subject: the server refuses and says so on A's connection.
  a.nc.publish(subjectsB.control, encodeMessage({ type: 'stop', reason: 'hostile' }));
  await eventually(
    () => `a permissions violation for ${subjectsB.control}, got ${a.errors.join('; ')}`,
    () => a.errors.some((e) => /permissions violation/i.test(e) && e.includes(subjectsB.control)),
  );
  // Nor may it listen to B's progress or control.
  for (const subject of [subjectsB.metrics, subjectsB.control]) {
    a.nc.subscribe(subject);
    await eventually(
      () => `a subscription violation for ${subject}, got ${a.errors.join('; ')}`,
      () => a.errors.some((e) => /permissions violation/i.test(e) && e.includes(subject)),
    );
  }
  // Nor open (read or write) B's bucket.
  const opened = await NatsKvStore.open(a.nc, rendezvousBucket(NS, B.job, B.uid)).then(
    () => 'opened',
    (e: unknown) => String(e),
  );
  assert.ok(opened !== 'opened', "job A opened job B's bucket");
  const kvB = await a.nc
    .jetstream()
    .views.kv(rendezvousBucket(NS, B.job, B.uid), { bindOnly: true })
    .then((kv) => kv.get('world'))
    .then(
      () => 'read',
      (e: unknown) => String(e),
    );
  assert.ok(kvB !== 'read', "job A read job B's bucket");
});

test('a revoked user is refused', async () => {
  const a = await worker(A);
  await a.nc.close();
  const revokedConfig = join(dir, 'revoked.conf');
  writeFileSync(
    revokedConfig,
    serverConfig(trust, await accountClaims(trust.operator, trust.account, [a.user.publicKey])),
  );
  await server.stop();
  server = await startNatsServer({ configFile: revokedConfig });
  const refused = await as(a.user.creds, jobInboxPrefix(NS, A.job)).then(
    () => 'connected',
    (e: unknown) => String(e),
  );
  assert.match(refused, /authoriz|revoked/i);
});

test.run();
