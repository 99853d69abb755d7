/**
 * The test helpers for time: waiting (what it returns, when it gives up, what it says) and the clock a
 * test can stop.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PausableClock } from '../helpers/clock.ts';
import { consistently, eventually } from '../helpers/eventually.ts';

test('eventually returns the first value that is neither undefined nor false, retrying throws', async () => {
  let calls = 0;
  const value = await eventually(
    'the third call',
    () => {
      calls++;
      if (calls === 1) throw new Error('not up yet');
      return calls === 3 ? { calls } : calls === 2 ? false : undefined;
    },
    { intervalMs: 1 },
  );
  assert.equal(value, { calls: 3 });
});

test('eventually gives up after its deadline, naming what it waited for and the last error', async () => {
  let described = 0;
  try {
    await eventually(
      () => `the answer (described ${++described} time)`,
      () => {
        throw new Error('connection refused');
      },
      { timeoutMs: 30, intervalMs: 5 },
    );
    assert.unreachable('it must time out');
  } catch (error) {
    assert.match(
      (error as Error).message,
      'timed out after 0.03 s waiting for the answer (described 1 time) (last error: connection refused)',
    );
  }
});

test('consistently probes from the start to the end of its window', async () => {
  const at: number[] = [];
  const started = performance.now();
  await consistently(
    'true',
    () => {
      at.push(performance.now() - started);
      return true;
    },
    { forMs: 50, intervalMs: 10 },
  );
  assert.ok(at.length >= 2, `${at.length} probes`);
  assert.ok((at.at(-1) ?? 0) >= 50, 'the last probe is at the end of the window');
});

test('consistently fails at the first probe that does not hold, or throws', async () => {
  let n = 0;
  try {
    await consistently('n below 3', () => ++n < 3, { forMs: 10_000, intervalMs: 1 });
    assert.unreachable('it must fail');
  } catch (error) {
    assert.match((error as Error).message, /^n below 3 stopped holding after \d+ ms$/);
  }
  assert.is(n, 3, 'no probe after the failing one');
  try {
    await consistently(
      'a probe that throws',
      () => {
        throw new Error('boom');
      },
      { forMs: 10 },
    );
    assert.unreachable('it must fail');
  } catch (error) {
    assert.match((error as Error).message, 'boom');
  }
});

test('a paused clock stands still and goes on from there, without a jump', async () => {
  const clock = new PausableClock();
  const before = clock.now();
  assert.ok(Math.abs(before - Date.now()) < 50, 'it follows the wall clock');
  clock.pause();
  const stopped = clock.now();
  await delay(30);
  assert.is(clock.now(), stopped);
  // A timer may fire a millisecond early by the wall clock: the pause is what the wall clock saw.
  const pausedFor = Date.now() - stopped;
  clock.resume();
  const resumed = clock.now();
  assert.ok(resumed >= stopped && resumed - stopped < 20, `${resumed - stopped} ms after resuming`);
  await delay(20);
  assert.ok(clock.now() - stopped >= 20, 'it runs again');
  const behind = Date.now() - clock.now();
  assert.ok(
    behind >= pausedFor && pausedFor >= 25,
    `behind the wall clock by ${behind} ms, paused ${pausedFor} ms`,
  );
});

test.run();
