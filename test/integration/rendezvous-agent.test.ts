/**
 * Rendezvous agents of several workers against a real nats-server: forming, losing, leaving, joining.
 * How soon a silent member counts as lost is `decide`'s to say, with `now` injected
 * (test/unit/rendezvous-decide.test.ts). Here the agents read a clock the test can stop, and each
 * world's reason says which path formed it: both hold however slow the machine is.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { silentLogger } from '../../worker/log.ts';
import { RendezvousAgent } from '../../worker/rendezvous/agent.ts';
import type { WorldRecord } from '../../worker/rendezvous/decide.ts';
import { NatsKvStore } from '../../worker/rendezvous/nats-kv-store.ts';
import { PausableClock } from '../helpers/clock.ts';
import { consistently, eventually } from '../helpers/eventually.ts';
import { natsServerFixture } from '../helpers/nats-server.ts';

const nats = natsServerFixture(test);
let job = 0;

// A loss timeout far above the heartbeat: a busy machine may stall a heartbeat for a second or two,
// and a survivor taken for lost would be another world than the one a test expects.
const config = { minReplicas: 2, maxReplicas: 4, timeoutMs: 5000, lastCallMs: 300 };

async function agents(bucket: string, ids: string[], now?: () => number) {
  const store = await NatsKvStore.open(nats.nc, bucket);
  const made = ids.map(
    (id) =>
      new RendezvousAgent({
        store,
        id,
        address: `127.0.0.1:${id.length}`,
        config,
        heartbeatMs: 300,
        log: silentLogger(),
        ...(now === undefined ? {} : { now }),
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

/** The world every agent in `all` agrees on, once it satisfies `predicate`. */
function settle(all: RendezvousAgent[], predicate: (w: WorldRecord) => boolean): Promise<WorldRecord> {
  return eventually(
    () => `an agreed world (generations ${JSON.stringify(all.map((a) => a.latestWorld?.generation))})`,
    () => {
      const worlds = all.map((a) => a.latestWorld);
      const first = worlds[0];
      return first !== undefined &&
        predicate(first) &&
        worlds.every((w) => w?.generation === first.generation)
        ? first
        : undefined;
    },
    { intervalMs: 50 },
  );
}

test('three workers agree on one world; a lost worker is dropped by its silence once the timeout has passed', async () => {
  const clock = new PausableClock();
  const {
    agents: [a, b, c],
  } = await agents(`tensile_t_${++job}`, ['a', 'b', 'c'], clock.now);
  if (a === undefined || b === undefined || c === undefined) throw new Error('agents');
  try {
    const first = await settle([a, b, c], (w) => w.members.length === 3);
    assert.equal(first.members.map((m) => m.id).sort(), ['a', 'b', 'c']);
    for (const agent of [a, b, c]) await agent.enter(first.generation, 10, true);
    // While no time passes for the agents, silence is no loss, however long it lasts here.
    clock.pause();
    await c[Symbol.asyncDispose](); // no leave: like kill -9, its heartbeats just stop
    await consistently(
      "the world with c, while the agents' clock stands still",
      () => [a, b].every((x) => x.latestWorld?.generation === first.generation),
      { forMs: config.timeoutMs + config.lastCallMs + 500, intervalMs: 100 },
    );
    clock.resume();
    const second = await settle([a, b], (w) => w.generation > first.generation);
    assert.equal(
      second.members.map((m) => m.id),
      first.members.map((m) => m.id).filter((id) => id !== 'c'),
    );
    // Found by the loss timeout (its silence), not by a leave, and the survivors kept each other.
    assert.match(second.reason, 'c lost');
    assert.is(second.generation, first.generation + 1, 'one new world, no round lost on the way');
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
    await c.leave();
    const second = await settle([a, b], (w) => w.generation > first.generation);
    // Seen at once: the world says c left, where a loss timeout would say "c lost".
    assert.match(second.reason, /\bc (left|is leaving)\b/);
    assert.not.match(second.reason, 'lost');
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
