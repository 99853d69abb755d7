import { createServer, type Server } from 'node:http';
import { KubeConfig } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  ApiServerContact,
  type ReadinessInput,
  readinessChecks,
  readinessResponse,
} from '../../operator/controller/readiness.ts';

const synced = [
  { name: 'trainingjobs', synced: true },
  { name: 'pods', synced: true },
  { name: 'nodes', synced: true },
];
const NOW = 1_000_000;
const base: ReadinessInput = {
  informers: synced,
  lastContactMs: NOW - 1000,
  nowMs: NOW,
  contactWindowMs: 10_000,
};

const cases: { name: string; input: Partial<ReadinessInput>; ready: boolean; failed: string[] }[] = [
  {
    name: 'caches synced and the API server answered a second ago: ready',
    input: {},
    ready: true,
    failed: [],
  },
  {
    name: 'a cache not synced yet: not ready, even though the API server answers',
    input: { informers: [...synced.slice(0, 2), { name: 'nodes', synced: false }] },
    ready: false,
    failed: ['informer-sync'],
  },
  {
    name: 'the API server never answered: not ready',
    input: { lastContactMs: undefined },
    ready: false,
    failed: ['apiserver'],
  },
  {
    name: 'silent exactly for the window: still ready',
    input: { lastContactMs: NOW - 10_000 },
    ready: true,
    failed: [],
  },
  {
    name: 'silent for longer than the window: not ready',
    input: { lastContactMs: NOW - 10_001 },
    ready: false,
    failed: ['apiserver'],
  },
  {
    name: 'nothing synced and nothing heard: both checks fail',
    input: { informers: synced.map((i) => ({ ...i, synced: false })), lastContactMs: undefined },
    ready: false,
    failed: ['informer-sync', 'apiserver'],
  },
];

for (const c of cases) {
  test(c.name, () => {
    const checks = readinessChecks({ ...base, ...c.input });
    assert.is(
      checks.every((x) => x.ok),
      c.ready,
    );
    assert.equal(
      checks.filter((x) => !x.ok).map((x) => x.name),
      c.failed,
    );
    for (const check of checks) assert.is(check.ok, check.detail === '', 'a failure says why');
  });
}

test('the unsynced informers are named', () => {
  const [informers] = readinessChecks({
    ...base,
    informers: [
      { name: 'trainingjobs', synced: false },
      { name: 'pods', synced: true },
      { name: 'nodes', synced: false },
    ],
  });
  assert.is(informers?.detail, 'caches not synced: trainingjobs, nodes');
});

const failing = readinessChecks({ ...base, lastContactMs: NOW - 12_500 });
const passing = readinessChecks(base);

const responses: { url: string; checks: typeof passing; status: number; body: string }[] = [
  { url: '/readyz', checks: passing, status: 200, body: 'ok' },
  {
    url: '/readyz?verbose',
    checks: passing,
    status: 200,
    body: '[+]informer-sync ok\n[+]apiserver ok\nreadyz check passed\n',
  },
  {
    url: '/readyz',
    checks: failing,
    status: 500,
    body: '[+]informer-sync ok\n[-]apiserver failed: no answer from the API server for 12.5 s\nreadyz check failed\n',
  },
  { url: '/readyz/informer-sync', checks: failing, status: 200, body: 'ok' },
  {
    url: '/readyz/apiserver',
    checks: failing,
    status: 500,
    body: '[-]apiserver failed: no answer from the API server for 12.5 s\nreadyz check failed\n',
  },
  {
    url: '/readyz?exclude=apiserver',
    checks: failing,
    status: 200,
    body: 'ok',
  },
  { url: '/readyz/nope', checks: passing, status: 404, body: 'no readiness check named nope\n' },
];

for (const r of responses) {
  test(`GET ${r.url} → ${r.status}`, () => {
    const answer = readinessResponse(r.checks, r.url);
    assert.is(answer.status, r.status);
    assert.is(answer.body, r.body);
  });
}

/** An API server stand-in on a real socket: answers /api with `status`, or never when 0. */
async function fakeApiServer(status: number): Promise<{ server: Server; config: KubeConfig }> {
  const server = createServer((req, res) => {
    if (status === 0) return; // silent: the connection stays open, no answer
    res.writeHead(req.url === '/api' ? status : 404).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return { server, config };
}

for (const [status, reached] of [
  [200, true],
  [403, false],
  [503, false],
  [0, false],
] as const) {
  test(`API server probe: ${status === 0 ? 'no answer' : `HTTP ${status}`} → ${reached ? 'contact' : 'no contact'}`, async () => {
    const { server, config } = await fakeApiServer(status);
    let now = 5000;
    const contact = new ApiServerContact(config, 100, 200, () => now);
    try {
      assert.is(await contact.probe(), reached);
      assert.is(contact.lastContactMs, reached ? 5000 : undefined);
      now = 6000;
      await contact.probe();
      assert.is(contact.lastContactMs, reached ? 6000 : undefined);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
}

test.run();
