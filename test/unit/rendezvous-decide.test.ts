import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type Decision,
  decide,
  type MemberRecord,
  type ObservedMember,
  type RendezvousView,
  type WorldRecord,
} from '../../worker/rendezvous/decide.ts';

const NOW = 100_000;
const config = { minReplicas: 2, maxReplicas: 4, timeoutMs: 3000, lastCallMs: 1000 };

function member(
  id: string,
  o: Partial<MemberRecord> & { seenAgo?: number; confirmed?: boolean } = {},
): [string, ObservedMember] {
  const { seenAgo = 0, confirmed, ...record } = o;
  return [
    id,
    {
      record: {
        id,
        address: `127.0.0.1:${1000 + id.charCodeAt(0)}`,
        joinedAt: id.charCodeAt(0),
        heartbeat: 1,
        state: 'active',
        hasState: true,
        step: 50,
        generation: 1,
        ...record,
      },
      observedAt: NOW - seenAgo,
      ...(confirmed === undefined ? {} : { confirmed }),
    },
  ];
}

function world(generation: number, ids: string[], extra: Partial<WorldRecord> = {}): WorldRecord {
  return {
    generation,
    members: ids.map((id) => ({ id, address: `127.0.0.1:${1000 + id.charCodeAt(0)}`, batch: 32 })),
    source: ids[0],
    startStep: 0,
    globalBatch: 32 * ids.length,
    learningRate: 0.01,
    policy: {},
    reason: 'test',
    createdAt: 0,
    linkToken: 'a-test-token-of-sixteen',
    ...extra,
  };
}

function view(
  o: Omit<Partial<RendezvousView>, 'members'> & { members: [string, ObservedMember][] },
): RendezvousView {
  return {
    self: 'a',
    now: NOW,
    config,
    world: undefined,
    running: 0,
    roundSince: undefined,
    ...o,
    members: new Map(o.members),
  };
}

const cases: [string, RendezvousView, (d: Decision) => void][] = [
  [
    'no world, too few workers: wait',
    view({ members: [member('a', { hasState: false, step: 0, generation: 0 })] }),
    (d) => {
      assert.is(d.action, 'wait');
      if (d.action === 'wait') assert.match(d.reason, '1 of at least 2');
    },
  ],
  [
    'no world, minReplicas present, last call not over: wait until it closes',
    view({ members: [member('a'), member('b')] }),
    (d) =>
      assert.equal(d, {
        action: 'wait',
        reason: 'first world; last call',
        until: NOW + 1000,
        roundSince: NOW,
      }),
  ],
  [
    'no world, last call over: propose generation 1, ranks by join order',
    view({ members: [member('b'), member('a')], roundSince: NOW - 1000 }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action !== 'propose') return;
      assert.is(d.world.generation, 1);
      assert.equal(
        d.world.members.map((m) => m.id),
        ['a', 'b'],
      );
      assert.is(d.world.reason, 'first world');
    },
  ],
  [
    'maxReplicas present: the round closes at once',
    view({ members: [member('a'), member('b'), member('c'), member('d'), member('e')] }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action === 'propose')
        assert.equal(
          d.world.members.map((m) => m.id),
          ['a', 'b', 'c', 'd'],
        );
    },
  ],
  [
    'a healthy world this worker runs: continue',
    view({ members: [member('a'), member('b')], world: world(3, ['a', 'b']), running: 3 }),
    (d) => assert.equal(d, { action: 'continue' }),
  ],
  [
    'a newer world that includes this worker: adopt',
    view({ members: [member('a'), member('b')], world: world(4, ['a', 'b']), running: 3 }),
    (d) => assert.is(d.action, 'adopt'),
  ],
  [
    'a member silent longer than the timeout is lost: new round without it',
    view({
      members: [member('a'), member('b'), member('c', { seenAgo: 3001 })],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
      roundSince: NOW - 1000,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action !== 'propose') return;
      assert.equal(
        d.world.members.map((m) => m.id),
        ['a', 'b'],
      );
      assert.is(d.world.generation, 3);
      assert.match(d.world.reason, 'c lost');
    },
  ],
  [
    'a member silent for less than the timeout is still alive',
    view({ members: [member('a'), member('b', { seenAgo: 2999 })], world: world(2, ['a', 'b']), running: 2 }),
    (d) => assert.equal(d, { action: 'continue' }),
  ],
  [
    'a graceful leave is seen at once (no timeout) and, with nobody joining, needs no last call',
    view({
      members: [member('a'), member('b'), member('c', { state: 'leaving' })],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action !== 'propose') return;
      assert.match(d.world.reason, 'c is leaving');
      assert.equal(
        d.world.members.map((m) => m.id),
        ['a', 'b'],
      );
    },
  ],
  [
    'a leave while a newcomer waits: the last call still gathers joiners',
    view({
      members: [
        member('a'),
        member('b'),
        member('c', { state: 'leaving' }),
        member('z', { hasState: false, step: 0, generation: 0 }),
      ],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
    }),
    (d) => {
      assert.is(d.action, 'wait');
      if (d.action === 'wait') assert.equal([d.reason, d.until], ['c is leaving; last call', NOW + 1000]);
    },
  ],
  [
    'a member lost by its heartbeat: the survivors form at once',
    view({
      members: [member('a'), member('b'), member('c', { seenAgo: 3001 })],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action === 'propose') assert.match(d.world.reason, 'c lost');
    },
  ],
  [
    'a member that vanished from the store left',
    view({
      members: [member('a'), member('b')],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
      roundSince: NOW - 5000,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action === 'propose') assert.match(d.world.reason, 'c left');
    },
  ],
  [
    'a joiner while the world has room: new round, survivors keep their order, newcomer last',
    view({
      members: [member('z', { hasState: false, step: 0, generation: 0 }), member('a'), member('b')],
      world: world(5, ['b', 'a']),
      running: 5,
      roundSince: NOW - 1000,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action !== 'propose') return;
      assert.equal(
        d.world.members.map((m) => m.id),
        ['b', 'a', 'z'],
      );
      assert.match(d.world.reason, 'z joining');
    },
  ],
  [
    "a record never seen to change (a killed worker's leftover) is not a joiner",
    view({
      members: [member('z', { hasState: false, confirmed: false }), member('a'), member('b')],
      world: world(5, ['a', 'b']),
      running: 5,
    }),
    (d) => assert.is(d.action, 'continue'),
  ],
  [
    'a joiner whose own record was read only once asks to join (it does not stand by as if the world were full)',
    view({
      self: 'z',
      members: [member('z', { hasState: false, confirmed: false }), member('a'), member('b')],
      world: world(5, ['a', 'b']),
      running: 0,
    }),
    (d) => {
      assert.is(d.action, 'wait', JSON.stringify(d));
      if (d.action === 'wait') assert.match(d.reason, 'z joining; last call');
    },
  ],
  [
    'an unconfirmed record is left out of a new world; a confirmed newcomer is in',
    view({
      members: [
        member('y', { hasState: false, confirmed: false }),
        member('z', { hasState: false, confirmed: true }),
        member('a'),
      ],
      world: world(5, ['a', 'b']),
      running: 5,
      roundSince: NOW - 5000,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action === 'propose')
        assert.equal(
          d.world.members.map((m) => m.id),
          ['a', 'z'],
        );
    },
  ],
  [
    'a joiner while the world is full: nothing changes; the joiner stands by',
    view({
      self: 'e',
      members: [member('a'), member('b'), member('c'), member('d'), member('e', { hasState: false })],
      world: world(2, ['a', 'b', 'c', 'd']),
      running: 0,
    }),
    (d) => assert.is(d.action, 'standby'),
  ],
  [
    'the source is the member with the most advanced state',
    view({
      members: [
        member('a', { step: 40 }),
        member('b', { step: 42 }),
        member('c', { hasState: false, step: 0 }),
      ],
      world: world(1, ['a', 'b']),
      running: 1,
      roundSince: NOW - 1000,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action !== 'propose') return;
      assert.is(d.world.source, 'b');
      assert.is(d.world.startStep, 42);
    },
  ],
  [
    'nobody has state (all workers new): no source, restore from a checkpoint',
    view({
      members: [member('a', { hasState: false, step: 0 }), member('b', { hasState: false, step: 0 })],
      roundSince: NOW - 1000,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action === 'propose') assert.is(d.world.source, undefined);
    },
  ],
  [
    'a member that could not run the world asks for a new round',
    view({
      members: [member('a'), member('b', { failedGeneration: 2 })],
      world: world(2, ['a', 'b']),
      running: 2,
      roundSince: NOW - 1000,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action === 'propose') assert.is(d.world.generation, 3);
    },
  ],
  [
    'a failed generation with the same members waits the last call (no world after world)',
    view({
      members: [member('a'), member('b', { failedGeneration: 2 })],
      world: world(2, ['a', 'b']),
      running: 2,
    }),
    (d) => {
      assert.is(d.action, 'wait');
      if (d.action === 'wait') assert.match(d.reason, 'b could not run generation 2; last call');
    },
  ],
  [
    'a peer reported dead by a survivor (broken link, refused probe) is dropped at once, no last call',
    view({
      members: [
        member('a'),
        member('b', { failedGeneration: 2, lost: [{ id: 'c', joinedAt: 99, heartbeat: 7 }] }),
        member('c', { joinedAt: 99, heartbeat: 7 }),
      ],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action !== 'propose') return;
      assert.equal(
        d.world.members.map((m) => m.id),
        ['a', 'b'],
      );
      assert.match(d.world.reason, 'c lost (its link broke and its port refused a probe)');
    },
  ],
  [
    "a report made while the peer's last heartbeat was in flight still holds",
    view({
      members: [
        member('a', { lost: [{ id: 'c', joinedAt: 99, heartbeat: 7 }] }),
        member('b'),
        member('c', { joinedAt: 99, heartbeat: 8 }),
      ],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
    }),
    (d) => assert.is(d.action, 'propose'),
  ],
  [
    'a reported peer that heartbeats on is alive: the report is void',
    view({
      members: [
        member('a'),
        member('b', { lost: [{ id: 'c', joinedAt: 99, heartbeat: 7 }] }),
        member('c', { joinedAt: 99, heartbeat: 9 }),
      ],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
    }),
    (d) => assert.is(d.action, 'continue'),
  ],
  [
    'a reported peer back as a new process (another start) is a joiner, not dead',
    view({
      members: [
        member('a'),
        member('b', { lost: [{ id: 'c', joinedAt: 99, heartbeat: 7 }] }),
        member('c', { joinedAt: 500, heartbeat: 0, generation: 0, hasState: false }),
      ],
      world: world(3, ['a', 'b']),
      running: 3,
    }),
    (d) => {
      assert.is(d.action, 'wait');
      if (d.action === 'wait') assert.match(d.reason, 'c joining; last call');
    },
  ],
  [
    "after the re-form, the dead peer's leftover record is no joiner while the report holds",
    view({
      members: [
        member('a'),
        member('b', { lost: [{ id: 'c', joinedAt: 99, heartbeat: 7 }] }),
        member('c', { joinedAt: 99, heartbeat: 7 }),
      ],
      world: world(3, ['a', 'b']),
      running: 3,
    }),
    (d) => assert.is(d.action, 'continue'),
  ],
  [
    'a report by a member that is itself gone counts for nothing',
    view({
      members: [
        member('a'),
        member('b', { seenAgo: 10_000, lost: [{ id: 'c', joinedAt: 99, heartbeat: 7 }] }),
        member('c', { joinedAt: 99, heartbeat: 7 }),
      ],
      world: world(3, ['a', 'c']),
      running: 3,
    }),
    (d) => assert.is(d.action, 'continue'),
  ],
  [
    'a silent loss (no report) is still judged by the heartbeat timeout',
    view({
      members: [member('a'), member('b'), member('c', { seenAgo: 2000 })],
      world: world(2, ['a', 'b', 'c']),
      running: 2,
    }),
    (d) => assert.is(d.action, 'continue'),
  ],
  [
    'a proposed world orders its ring by placement: same zone, then same node, adjacent',
    view({
      members: [
        member('a', { node: 'n1', zone: 'z1', hasState: false, step: 0, generation: 0 }),
        member('b', { node: 'n2', zone: 'z2', hasState: false, step: 0, generation: 0 }),
        member('c', { node: 'n1', zone: 'z1', hasState: false, step: 0, generation: 0 }),
        member('d', { node: 'n2', zone: 'z2', hasState: false, step: 0, generation: 0 }),
      ],
    }),
    (d) => {
      assert.is(d.action, 'propose');
      if (d.action !== 'propose') return;
      assert.equal(
        d.world.members.map((m) => `${m.id}@${m.zone}`),
        ['a@z1', 'c@z1', 'b@z2', 'd@z2'],
      );
    },
  ],
  [
    'a full world that failed with the same members still waits the last call (a death report may follow)',
    view({
      members: [member('a'), member('b', { failedGeneration: 2 }), member('c'), member('d')],
      world: world(2, ['a', 'b', 'c', 'd']),
      running: 2,
    }),
    (d) => {
      assert.is(d.action, 'wait');
      if (d.action === 'wait') assert.match(d.reason, 'last call');
    },
  ],
  [
    'losses below minReplicas: wait for workers, do not propose',
    view({
      members: [member('a'), member('b', { seenAgo: 10_000 })],
      world: world(2, ['a', 'b']),
      running: 2,
    }),
    (d) => assert.is(d.action, 'wait'),
  ],
];

for (const [name, input, check] of cases) test(name, () => check(decide(input)));

test('a worker never proposes a world that leaves itself out', () => {
  const d = decide(
    view({
      self: 'e',
      members: [member('a'), member('b'), member('c'), member('d'), member('e')],
      roundSince: NOW - 1000,
    }),
  );
  assert.is(d.action, 'standby');
});

test.run();
