/** `tensile run --chaos`: a script at steps, at shares of the run or at times, and when each event is due. */

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startDutyCycle } from '../../operator/local-run/duty-cycle.ts';
import { chaosDue, chaosReady, chaosStep, parseChaos } from '../../operator/local-run/run.ts';
import { consistently, eventually } from '../helpers/eventually.ts';

test('a share of the planned steps and a time after the first world parse beside steps', () => {
  assert.equal(parseChaos('kill:30%,join:@12.5s,leave:400'), [
    { action: 'kill', percent: 30 },
    { action: 'join', seconds: 12.5 },
    { action: 'leave', step: 400 },
  ]);
  // Mixed forms have no common order: they happen as written.
  assert.equal(
    (parseChaos('leave:80%,kill:10%') as { action: string }[]).map((e) => e.action),
    ['leave', 'kill'],
  );
});

test('malformed points are refused with the forms they may take', () => {
  for (const bad of ['kill:101%', 'kill:@20', 'kill:20s', 'kill:-3', 'kill:%', 'kill:@s'])
    assert.match(String(parseChaos(bad)), /is not ACTION:STEP .*kill:30%.*kill:@20s/, bad);
});

test('a step is due at that step; a share once the planned steps are known; a time once training runs', () => {
  const at = (step: number, plannedSteps?: number, seconds?: number) => ({ step, plannedSteps, seconds });
  assert.is(chaosDue({ action: 'kill', step: 40 }, at(39)), false);
  assert.is(chaosDue({ action: 'kill', step: 40 }, at(40)), true);
  assert.is(chaosDue({ action: 'kill', percent: 25 }, at(500)), false, 'no plan, no point');
  assert.is(chaosDue({ action: 'kill', percent: 25 }, at(199, 800)), false);
  assert.is(chaosDue({ action: 'kill', percent: 25 }, at(200, 800)), true);
  assert.is(chaosDue({ action: 'kill', seconds: 5 }, at(10_000, 800)), false, 'before the first world');
  assert.is(chaosDue({ action: 'kill', seconds: 5 }, at(0, 800, 4.9)), false);
  assert.is(chaosDue({ action: 'kill', seconds: 5 }, at(0, 800, 5)), true);
  assert.is(chaosStep({ action: 'kill', percent: 33.3 }, 1000), 333);
  assert.is(chaosStep({ action: 'kill', seconds: 5 }, 1000), undefined, 'a time is no step');
});

test('joins start side by side; any other event waits until the joiners are in a world', () => {
  const progress = { step: 500, plannedSteps: 800, seconds: 10 };
  assert.is(chaosReady({ action: 'join', step: 90 }, 1, progress), true);
  assert.is(chaosReady({ action: 'leave', step: 90 }, 1, progress), false);
  assert.is(chaosReady({ action: 'nats-restart', percent: 50 }, 2, progress), false);
  assert.is(chaosReady({ action: 'leave', step: 90 }, 0, progress), true);
  assert.is(chaosReady({ action: 'join', step: 600 }, 0, progress), false, 'not due yet');
});

test('slow:N:F[:WHEN] and unslow:N[:WHEN] name a worker, a factor and a point', () => {
  assert.equal(parseChaos('slow:1:0.5'), [{ action: 'slow', step: 0, target: 1, factor: 0.5 }]);
  assert.equal(parseChaos('slow:2:0.2:40%,unslow:2:@30s'), [
    { action: 'slow', percent: 40, target: 2, factor: 0.2 },
    { action: 'unslow', seconds: 30, target: 2, factor: 1 },
  ]);
  assert.equal(parseChaos('unslow:0:300,slow:0:1:10'), [
    { action: 'slow', step: 10, target: 0, factor: 1 },
    { action: 'unslow', step: 300, target: 0, factor: 1 },
  ]);
  for (const bad of ['slow:1', 'slow:1:0', 'slow:1:1.5', 'slow:x:0.5', 'slow:1:0.5:soon', 'slow:1:0.5:3:4'])
    assert.match(String(parseChaos(bad)), /is not slow:N:F\[:WHEN\]/, bad);
  assert.match(String(parseChaos('unslow:a')), /is not unslow:N\[:WHEN\]/);
});

test('a duty cycle alternates SIGSTOP and SIGCONT and leaves the process running when it ends', async () => {
  const sent: NodeJS.Signals[] = [];
  const cycle = startDutyCycle(1234, 0.5, 4, (_, s) => sent.push(s));
  await eventually('a few periods', () => sent.length >= 6);
  cycle[Symbol.dispose]();
  const count = sent.length;
  assert.equal(sent.slice(0, 4), ['SIGSTOP', 'SIGCONT', 'SIGSTOP', 'SIGCONT']);
  assert.is(sent.at(-1), 'SIGCONT', 'never left stopped');
  assert.ok(sent.every((s, i) => s === (i % 2 === 0 ? 'SIGSTOP' : 'SIGCONT')));
  await consistently('nothing after the end', () => sent.length === count, { forMs: 30, intervalMs: 5 });
  assert.throws(() => startDutyCycle(1, 0), /in \(0, 1\]/);
});

test('a real process under a duty cycle is stopped part of the time, and left running at the end', async () => {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  const pid = child.pid as number;
  const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_, signal) => r(signal)));
  const state = () => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
  const cycle = startDutyCycle(pid, 0.5, 40);
  await eventually('the process seen stopped', () => state() === 'T', { intervalMs: 3 });
  await eventually('the process seen running again', () => state() !== 'T', { intervalMs: 3 });
  cycle[Symbol.dispose]();
  assert.ok(state() !== 'T', 'not left stopped');
  child.kill('SIGTERM');
  assert.is(await exited, 'SIGTERM', 'it still answers signals');
});

test.run();
