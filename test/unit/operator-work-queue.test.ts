import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Index } from '../../operator/controller/cache.ts';
import { WorkQueue } from '../../operator/controller/work-queue.ts';

test('a key added many times is handed out once', async () => {
  const q = new WorkQueue();
  q.add('a');
  q.add('a');
  q.add('b');
  q.add('a');
  assert.is(q.length, 2);
  assert.is(await q.get(), 'a');
  assert.is(await q.get(), 'b');
  assert.is(q.length, 0);
});

test('a key added while it is processed runs again after done(), never concurrently', async () => {
  const q = new WorkQueue();
  q.add('a');
  const first = await q.get();
  assert.is(first, 'a');
  q.add('a');
  assert.is(q.length, 0, 'not handed to a second worker while processing');
  q.done('a');
  assert.is(q.length, 1);
  assert.is(await q.get(), 'a');
});

test('a waiting worker receives the next key', async () => {
  const q = new WorkQueue();
  const waiting = q.get();
  q.add('x');
  assert.is(await waiting, 'x');
});

test('addAfter: the earliest pending delay wins, and the key arrives later', async () => {
  const q = new WorkQueue();
  q.addAfter('a', 60_000);
  q.addAfter('a', 5);
  assert.is(q.length, 0);
  assert.is(await q.get(), 'a');
  q.shutdown();
});

test('rate limiting doubles per failure and forget() resets it', () => {
  const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 50 });
  assert.equal(
    [q.addRateLimited('k'), q.addRateLimited('k'), q.addRateLimited('k'), q.addRateLimited('k')],
    [10, 20, 40, 50],
  );
  q.forget('k');
  assert.is(q.addRateLimited('k'), 10);
  q.shutdown();
});

test('shutdown releases waiting workers', async () => {
  const q = new WorkQueue();
  const waiting = q.get();
  q.shutdown();
  assert.is(await waiting, undefined);
});

test('the pod index follows label and node changes', () => {
  const index = new Index<{ metadata: { name: string; namespace: string; labels: Record<string, string> } }>(
    (p) => p.metadata.labels['job'],
  );
  const pod = (job: string) => ({ metadata: { name: 'p', namespace: 'ns', labels: { job } } });
  assert.equal(index.apply('add', pod('a')), ['a']);
  assert.equal(index.apply('update', pod('b')), ['a', 'b']);
  assert.is(index.members('a').length, 0);
  assert.is(index.members('b').length, 1);
  assert.equal(index.apply('delete', pod('b')), ['b']);
  assert.is(index.members('b').length, 0);
});

test.run();
