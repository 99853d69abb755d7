/** Rendezvous agents of several workers against a real nats-server: forming, losing, leaving, joining. */
import { connect, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type NatsServer, startNatsServer } from '../../operator/local/nats-server.ts';
import { silentLogger } from '../../worker/log.ts';
import { RendezvousAgent } from '../../worker/rendezvous/agent.ts';
import type { WorldRecord } from '../../worker/rendezvous/decide.ts';
import { NatsKvStore } from '../../worker/rendezvous/nats-kv-store.ts';

let server: NatsServer;
let nc: NatsConnection;
let job = 0;

test.before(async () => {
  try {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await nc?.close();
  await server?.[Symbol.asyncDispose]();
});

const config = { minReplicas: 2, maxReplicas: 4, timeoutMs: 1500, lastCallMs: 300 };

async function agents(bucket: string, ids: string[]) {
  const store = await NatsKvStore.open(nc, bucket);
  const made = ids.map(
    (id) =>
      new RendezvousAgent({
        store,
        id,
        address: `127.0.0.1:${id.length}`,
        config,
        heartbeatMs: 300,
        log: silentLogger(),
        shape: (proposal) => ({
          members: proposal.members.map((m) => ({ ...m, batch: 32 })),
          globalBatch: 32 * proposal.members.length,
          learningRate: 0.01,
          policy: {},
        }),
      }),
  );
  for (const agent of made) await agent.start();
  return { store, agents: made };
}

async function settle(
  all: RendezvousAgent[],
  predicate: (w: WorldRecord) => boolean,
  timeoutMs = 8000,
): Promise<WorldRecord> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const worlds = all.map((a) => a.latestWorld);
    const first = worlds[0];
    if (first !== undefined && predicate(first) && worlds.every((w) => w?.generation === first.generation))
      return first;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no agreed world: ${JSON.stringify(all.map((a) => a.latestWorld?.generation))}`);
}

test('three workers agree on one world; a lost worker is dropped within timeout + last call', async () => {
  const {
    agents: [a, b, c],
  } = await agents(`tensile_t_${++job}`, ['a', 'b', 'c']);
  if (a === undefined || b === undefined || c === undefined) throw new Error('agents');
  try {
    const first = await settle([a, b, c], (w) => w.members.length === 3);
    assert.equal(first.members.map((m) => m.id).sort(), ['a', 'b', 'c']);
    for (const agent of [a, b, c]) await agent.enter(first.generation, 10, true);
    const died = Date.now();
    await c[Symbol.asyncDispose](); // no leave: like kill -9, its heartbeats just stop
    const second = await settle([a, b], (w) => w.generation > first.generation);
    const detected = Date.now() - died;
    assert.equal(
      second.members.map((m) => m.id),
      first.members.map((m) => m.id).filter((id) => id !== 'c'),
    );
    assert.match(second.reason, 'c lost');
    assert.ok(detected < config.timeoutMs + config.lastCallMs + 2000, `re-formed after ${detected} ms`);
  } finally {
    await a[Symbol.asyncDispose]();
    await b[Symbol.asyncDispose]();
  }
});

test('a graceful leave is seen at once; a joiner is added to the next world', async () => {
  const bucket = `tensile_t_${++job}`;
  const {
    agents: [a, b, c],
  } = await agents(bucket, ['a', 'b', 'c']);
  if (a === undefined || b === undefined || c === undefined) throw new Error('agents');
  let d: RendezvousAgent | undefined;
  try {
    const first = await settle([a, b, c], (w) => w.members.length === 3);
    const left = Date.now();
    await c.leave();
    const second = await settle([a, b], (w) => w.generation > first.generation);
    assert.ok(Date.now() - left < config.timeoutMs, 'faster than the loss timeout');
    assert.match(second.reason, 'c');
    ({
      agents: [d],
    } = await agents(bucket, ['d']));
    if (d === undefined) throw new Error('agent d');
    const third = await settle([a, b, d], (w) => w.members.some((m) => m.id === 'd'));
    assert.is(third.members.length, 3);
    assert.is(third.members[2]?.id, 'd', 'the newcomer gets the last rank');
    assert.is(await a.nextWorld(second.generation).then((w) => w.generation), third.generation);
  } finally {
    await a[Symbol.asyncDispose]();
    await b[Symbol.asyncDispose]();
    await c[Symbol.asyncDispose]();
    await d?.[Symbol.asyncDispose]();
  }
});

test('many workers at once (more than maxReplicas): one world of maxReplicas, the rest stand by', async () => {
  const { agents: all } = await agents(`tensile_t_${++job}`, ['a', 'b', 'c', 'd', 'e', 'f']);
  try {
    const world = await settle(all, (w) => w.members.length === 4);
    assert.is(world.generation, 1, 'exactly one proposal won');
  } finally {
    for (const agent of all) await agent[Symbol.asyncDispose]();
  }
});

test.run();
