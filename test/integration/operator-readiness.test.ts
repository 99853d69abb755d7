/**
 * /readyz of real operator processes against a real control plane: a replica is ready once its caches
 * have synced and while the API server answers, whether it leads or stands by. The API server is cut
 * off from one replica by a TCP proxy between them that the test opens and closes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { type OperatorProcess, startOperator } from '../helpers/operator-process.ts';

const OPERATOR_NS = 'tensile-system';
const clusterRole = new URL('../../charts/tensile/files/operator-clusterrole.yaml', import.meta.url).pathname;

let cluster: LocalCluster;
const operators: OperatorProcess[] = [];

const kubectl = (args: string[], input?: string): Promise<string> => cluster.kubectlOk(args, input);

function operatorArgs(kubeconfig: string): string[] {
  return [
    '--kubeconfig',
    kubeconfig,
    '--namespace',
    OPERATOR_NS,
    '--lease-duration',
    '3',
    '--renew-deadline',
    '2',
    '--retry-period',
    '0.5',
  ];
}

async function account(name: string, bound: boolean): Promise<string> {
  await kubectl(['-n', OPERATOR_NS, 'create', 'serviceaccount', name]);
  if (bound) await bind(name);
  return cluster.serviceAccountKubeconfig(OPERATOR_NS, name);
}

async function bind(name: string): Promise<void> {
  await kubectl([
    'create',
    'clusterrolebinding',
    name,
    '--clusterrole=tensile-operator',
    `--serviceaccount=${OPERATOR_NS}:${name}`,
  ]);
}

interface Readyz {
  readonly status: number;
  readonly body: string;
}

/** The status of GET /readyz, with the verbose listing of the checks beside it. */
async function readyz(op: OperatorProcess): Promise<Readyz> {
  const base = `http://127.0.0.1:${await op.port()}/readyz`;
  const { status } = await fetch(base);
  const body = await fetch(`${base}?verbose`).then((r) => r.text());
  return { status, body };
}

const until = <T>(what: string, probe: () => Promise<T | undefined | false>) =>
  eventually(what, probe, { intervalMs: 200 });

const readyzWhere = (op: OperatorProcess, what: string, ok: (r: Readyz) => boolean) =>
  until(what, async () => {
    const r = await readyz(op);
    return ok(r) ? r : undefined;
  });

/** A TCP proxy to the API server; `cut()` drops every connection and refuses new ones. */
class ApiProxy implements AsyncDisposable {
  private blocked = false;
  private readonly sockets = new Set<Socket>();
  private readonly server: Server;

  private constructor(private readonly target: URL) {
    this.server = createServer((client) => this.accept(client));
  }

  static async to(target: URL): Promise<ApiProxy> {
    const proxy = new ApiProxy(target);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get port(): number {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('the proxy has no port');
    return address.port;
  }

  private accept(client: Socket): void {
    if (this.blocked) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: this.target.hostname, port: Number(this.target.port) });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  }

  cut(): void {
    this.blocked = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.blocked = false;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

test.before(async () => {
  try {
    cluster = await startCluster({ nodes: 1 });
    await kubectl(['create', 'namespace', OPERATOR_NS]);
    await kubectl(['apply', '-f', clusterRole]);
    operators.push(startOperator('leader', operatorArgs(await account('leader', true))));
    await operators[0]?.waitFor((l) => l['message'] === 'became leader');
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  for (const op of operators) await op[Symbol.asyncDispose]();
  await cluster?.[Symbol.asyncDispose]();
});

test('the leader is ready once its caches have synced', async () => {
  const leader = operators[0] as OperatorProcess;
  const r = await readyzWhere(leader, 'the leader ready', (x) => x.status === 200);
  assert.match(r.body, '[+]informer-sync ok');
  assert.match(r.body, '[+]apiserver ok');
  assert.is(await fetch(`http://127.0.0.1:${await leader.port()}/readyz`).then((x) => x.text()), 'ok');
});

test('a replica whose caches cannot sync is not ready, says why, and is ready once they sync', async () => {
  // No role bound yet: the API server answers, but every list is forbidden.
  const op = startOperator('unsynced', operatorArgs(await account('unsynced', false)));
  operators.push(op);
  // It has talked to the API server: the Lease is forbidden to it as well.
  await op.waitFor((l) => l['message'] === 'lease acquisition failed');
  assert.is((await readyz(op)).status, 500, 'a replica that cannot list is not ready');
  const before = await readyzWhere(op, 'the API server check passing', (x) =>
    x.body.includes('[+]apiserver ok'),
  );
  assert.is(before.status, 500);
  assert.match(before.body, '[-]informer-sync failed: caches not synced');
  assert.match(before.body, 'readyz check failed');
  assert.is((await fetch(`http://127.0.0.1:${await op.port()}/healthz`)).status, 200, 'alive all the same');
  await bind('unsynced');
  const after = await readyzWhere(op, 'ready after the role is bound', (x) => x.status === 200);
  assert.match(after.body, '[+]informer-sync ok');
  assert.not.ok(
    op.log.some((l) => l['message'] === 'became leader'),
    'it is a standby, and ready',
  );
});

test('a standby cut off from the API server turns unready, and ready again when it answers', async () => {
  const direct = await account('standby', true);
  await using proxy = await ApiProxy.to(new URL(cluster.server));
  const viaProxy = direct.replace(/\.kubeconfig$/, '.proxied.kubeconfig');
  writeFileSync(
    viaProxy,
    readFileSync(direct, 'utf8').replace(cluster.server, `https://127.0.0.1:${proxy.port}`),
  );
  const op = startOperator('standby', operatorArgs(viaProxy));
  operators.push(op);
  await readyzWhere(op, 'the standby ready', (x) => x.status === 200);
  proxy.cut();
  const cut = await readyzWhere(op, 'the standby unready', (x) => x.status === 500);
  assert.match(cut.body, '[+]informer-sync ok', 'synced caches stay synced');
  assert.match(cut.body, '[-]apiserver failed: no answer from the API server for');
  proxy.restore();
  await readyzWhere(op, 'the standby ready again', (x) => x.status === 200);
  assert.ok(op.child.exitCode === null && op.child.signalCode === null, 'a standby rides the outage out');
  assert.not.ok(op.log.some((l) => l['message'] === 'became leader'));
});

test.run();
