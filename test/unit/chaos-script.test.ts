/** `tensile run --chaos`: a script at steps, at shares of the run or at times, and when each event is due. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chaosDue, chaosReady, chaosStep, parseChaos } from '../../operator/local-run/run.ts';

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

test.run();
