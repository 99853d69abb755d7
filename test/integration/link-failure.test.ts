/**
 * Failure detection at the speed of the link, with real worker processes and a real nats-server:
 * `tensile run --chaos kill:N` sends kill -9 to a worker; its neighbours' TCP links break at once,
 * a probe of its collective port is refused, and the survivors re-form without waiting for the
 * heartbeat timeout. The assertions are on the cause the workers recorded, never on time (the
 * elastic bench measures kill → first step).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();

test('kill -9 of a worker: the survivors see its link break and re-form without the heartbeat timeout', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-link-failure-'));
  const file = writeJobManifest(join(dir, 'job.yaml'), 'link-failure', {
    replicas: 3,
    minReplicas: 1,
    maxReplicas: 3,
    model: { mlp: { hiddenUnits: [32] } },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: 3000, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 60 },
    stopping: { epochs: 2 },
    // A timeout far longer than the run takes after the kill: a re-form by heartbeat could not
    // happen before the end, so the world after the kill can only have come from the link.
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 60_000, lastCallMillis: 1000 },
  });
  const out = join(dir, 'out');
  const summary = await finished(tensileRun(file, out, ['--workers', '3', '--chaos', 'kill:20']));
  assert.is(summary.status, 'completed');
  assert.equal(
    summary.chaos?.map((c) => c.action),
    ['kill'],
  );
  const events = workerEvents(out);
  const killed = summary.chaos?.[0]?.worker;
  assert.ok(killed !== undefined, 'the kill names its victim');

  // Both neighbours of the victim saw its link break; at least one probe was refused.
  const lost = eventsOf(events, 'peer-lost').filter((e) => e.peer === killed);
  assert.ok(lost.length >= 1, `peer-lost events: ${JSON.stringify(lost)}`);
  assert.ok(
    lost.every((e) => e.cause === 'link'),
    'cause recorded as the link',
  );
  assert.ok(
    lost.some((e) => e.probe === 'refused'),
    `a probe was refused: ${JSON.stringify(lost)}`,
  );

  // The world after the kill records the link as its cause, not a missing heartbeat, and it has
  // the two survivors.
  const worlds = eventsOf(events, 'generation');
  const after = worlds.filter((e) => String(e.reason).startsWith(`${String(killed)} lost`));
  assert.ok(after.length >= 1, 'a world formed because the victim was lost');
  for (const g of after) {
    assert.match(String(g.reason), 'its link broke and its port refused a probe');
    assert.is(g.worldSize, 2);
  }
  assert.not.ok(
    worlds.some((e) => String(e.reason).includes('no heartbeat')),
    'no world waited for the heartbeat timeout',
  );
  for (const e of summary.epochs) assert.equal([e.missing, e.duplicated], [0, 0], `epoch ${e.epoch}`);
});

test.run();
