/** The rendezvous store contract, run against a real nats-server with JetStream. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NatsKvStore } from '../../worker/rendezvous/nats-kv-store.ts';
import {
  type RendezvousStore,
  RevisionConflictError,
  type StoreChange,
  StoreUnavailableError,
} from '../../worker/rendezvous/store.ts';
import { eventually } from '../helpers/eventually.ts';
import { natsServerFixture } from '../helpers/nats-server.ts';

const nats = natsServerFixture(test);
let bucket = 0;

async function freshStore(): Promise<RendezvousStore> {
  return NatsKvStore.open(nats.nc, `tensile_contract_${++bucket}`);
}

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));

test('get of a missing key is undefined', async () => {
  const store = await freshStore();
  assert.is(await store.get('nope'), undefined);
});

test('create writes once; a second create is a revision conflict', async () => {
  const store = await freshStore();
  const revision = await store.create('world', bytes('a'));
  assert.ok(revision > 0);
  const got = await store.get('world');
  assert.is(text(got?.value), 'a');
  assert.is(got?.revision, revision);
  try {
    await store.create('world', bytes('b'));
    assert.unreachable('second create must fail');
  } catch (error) {
    assert.instance(error, RevisionConflictError);
  }
  assert.is(text((await store.get('world'))?.value), 'a');
});

test('update is a compare-and-set on the revision (the fencing token)', async () => {
  const store = await freshStore();
  const r1 = await store.create('world', bytes('g1'));
  const r2 = await store.update('world', bytes('g2'), r1);
  assert.ok(r2 > r1);
  try {
    await store.update('world', bytes('stale'), r1);
    assert.unreachable('a stale revision must lose');
  } catch (error) {
    assert.instance(error, RevisionConflictError);
  }
  assert.is(text((await store.get('world'))?.value), 'g2');
});

test('of two concurrent compare-and-sets exactly one wins', async () => {
  const store = await freshStore();
  const r1 = await store.create('world', bytes('g1'));
  const results = await Promise.allSettled([
    store.update('world', bytes('x'), r1),
    store.update('world', bytes('y'), r1),
  ]);
  assert.is(results.filter((r) => r.status === 'fulfilled').length, 1);
  const loser = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.instance(loser.reason, RevisionConflictError);
});

test('put is unconditional; delete removes; a deleted key can be created again', async () => {
  const store = await freshStore();
  await store.put('member.a', bytes('1'));
  await store.put('member.a', bytes('2'));
  assert.is(text((await store.get('member.a'))?.value), '2');
  await store.delete('member.a');
  assert.is(await store.get('member.a'), undefined);
  await store.create('member.a', bytes('3'));
  assert.is(text((await store.get('member.a'))?.value), '3');
});

test('watch yields current values first, then changes and deletions', async () => {
  const store = await freshStore();
  await store.put('member.a', bytes('a1'));
  await store.put('world', bytes('w1'));
  const controller = new AbortController();
  const seen: StoreChange[] = [];
  const done = (async () => {
    for await (const change of store.watch(controller.signal)) {
      seen.push(change);
      if (seen.length === 4) controller.abort();
    }
  })();
  // The changes come after the current values were delivered, so the order below is the contract's.
  await eventually('the current values', () => seen.length >= 2);
  await store.put('member.b', bytes('b1'));
  await store.delete('member.a');
  await done;
  assert.equal(
    seen.map((c) => [c.key, text(c.value)]),
    [
      ['member.a', 'a1'],
      ['world', 'w1'],
      ['member.b', 'b1'],
      ['member.a', undefined],
    ],
  );
});

test('with the server down, calls fail as unavailable (typed), and work again after restart', async () => {
  const store = await freshStore();
  await store.put('k', bytes('v'));
  // Down until the outage has been seen, however long a busy machine takes to notice it.
  let bringBack!: () => void;
  const restarting = nats.server.restart(new Promise<void>((resolve) => (bringBack = resolve)));
  const failure = await eventually('a call that fails while the server is down', () =>
    store.get('k').then(
      () => undefined,
      (error: unknown) => error,
    ),
  );
  bringBack();
  await restarting;
  assert.instance(failure, StoreUnavailableError);
  const value = await eventually('the value after the restart', () =>
    store.get('k').then((v) => text(v?.value)),
  );
  assert.is(value, 'v', 'the bucket survives a restart (file store)');
});

test.run();
