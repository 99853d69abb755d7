/**
 * Proportional balancing with real worker processes, a real nats-server and Fashion-MNIST:
 * `tensile run --workers 3 --chaos slow:2:0.3` slows one worker to 0.3 of its speed (a SIGSTOP/SIGCONT
 * duty cycle); the world must give it a smaller share of the global batch than either other worker,
 * keep the global batch, train every sample exactly once per epoch and hold identical weights on
 * every worker after every step.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import {
  assertLockstep,
  finished,
  tensileRun,
  workerEvents,
  writeJobManifest,
} from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const TRAIN = 9000;
const BATCH = 300;
const EPOCHS = 2;
const dir = mkdtempSync(join(tmpdir(), 'tensile-balancing-'));

test('proportional: the slowed worker gets the smallest batch; B kept, exactly once, in lockstep', async () => {
  const file = writeJobManifest(join(dir, 'job.yaml'), 'balancing', {
    replicas: 3,
    // All three from the first world: on a loaded machine a world of the first to start could
    // otherwise train the whole run before the others arrive (seen once).
    minReplicas: 3,
    maxReplicas: 3,
    model: { mlp: { hiddenUnits: [128] } },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 1000 } },
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: BATCH, policy: 'fixedGlobalBatch' },
    balancing: { mode: 'proportional', warmupSteps: 3, minIntervalSteps: 5, driftThreshold: 0.05 },
    stopping: { epochs: EPOCHS },
    checkpoint: { intervalSteps: 100_000 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 5000, lastCallMillis: 1000 },
  });
  const out = join(dir, 'out');
  const summary = await finished(
    tensileRun(file, out, ['--workers', '3', '--chaos', 'slow:2:0.3'], { TENSILE_CHECKSUM_EVERY: '1' }),
  );
  assert.is(summary.status, 'completed');
  assert.is(summary.step, (TRAIN / BATCH) * EPOCHS);
  for (const e of summary.epochs)
    assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0], `epoch ${e.epoch}`);
  for (const g of summary.generations) assert.is(g.globalBatch, BATCH);

  const events = workerEvents(out);
  const slowed = 'balancing-worker-2';
  const writer = eventsOf(events, 'generation').find((e) => e.rank === 0)?.worker;
  const plans = eventsOf(events, 'balance').filter((e) => e.worker === writer);
  const last = plans.at(-1);
  assert.ok(last !== undefined, 'the split was re-planned');
  const mine = last.perWorker[last.members.indexOf(slowed)] as number;
  const others = last.perWorker.filter((_, i) => last.members[i] !== slowed);
  assert.ok(
    others.every((b) => b > mine),
    `the slowed worker's ${mine} against ${others} (${JSON.stringify(last)})`,
  );
  assert.is(
    last.perWorker.reduce((a, b) => a + b, 0),
    BATCH,
  );
  // Every worker took the same decisions at the same steps (they come from the all-reduced times).
  const byWorker = new Map<string, string>();
  for (const e of eventsOf(events, 'balance'))
    byWorker.set(String(e.worker), `${byWorker.get(String(e.worker)) ?? ''}${e.step}:${e.perWorker};`);
  assert.is(new Set(byWorker.values()).size, 1, JSON.stringify([...byWorker]));
  assert.is(byWorker.size, 3);

  // The progress reports per-worker throughput: the slowed worker's is the lowest.
  const loads = eventsOf(events, 'progress')
    .filter((e) => e.worker === writer)
    .at(-1)?.workers;
  assert.ok(loads !== undefined && loads.length === 3, 'per-worker figures in progress');
  const slowRate = loads.find((l) => l.worker === slowed)?.samplesPerSecond ?? 0;
  assert.ok(
    loads.every((l) => l.worker === slowed || l.samplesPerSecond > slowRate),
    JSON.stringify(loads),
  );

  // Identical weights on every worker after every step.
  const shared = assertLockstep(events);
  assert.ok(shared >= summary.step / 2, `${shared} steps checked on more than one worker`);
});

test.run();
