/**
 * Elastic training with real worker processes, a real nats-server and the real Fashion-MNIST files:
 * `tensile run --workers 3 --chaos ...` kills a worker, adds two, restarts NATS and stops one
 * gracefully; the run must finish with every sample trained on exactly once per epoch, identical
 * weights on every worker after every step, each world's batch and rate as the policy says, and the
 * accuracy of an undisturbed 3-worker run.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { RunSummary } from '../../operator/api/run-summary.ts';
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
const dir = mkdtempSync(join(tmpdir(), 'tensile-elastic-'));

const TRAIN = 6000;
const BATCH = 60;
const EPOCHS = 8;
const STEPS = (TRAIN / BATCH) * EPOCHS;

const file = writeJobManifest(join(dir, 'elastic.yaml'), 'elastic', {
  replicas: 3,
  minReplicas: 1,
  maxReplicas: 4,
  // No dropout: with fixedGlobalBatch the math is then the same whatever the world size (only
  // the order of the sums differs), so the chaos run can be held to the undisturbed one's accuracy.
  model: { mlp: { hiddenUnits: [64], dropout: 0 }, seed: 3 },
  dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 2000 } },
  optimizer: { type: 'adam', learningRate: 0.003 },
  batch: { global: BATCH, policy: 'fixedGlobalBatch' },
  stopping: { epochs: EPOCHS },
  evaluation: { intervalSteps: 100 },
  checkpoint: { intervalSteps: 25, keep: 4 },
  rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
});

let undisturbed: RunSummary;

test('three workers without disturbance: one world, the audit is clean', async () => {
  undisturbed = await finished(tensileRun(file, join(dir, 'fixed'), ['--workers', '3']));
  assert.is(undisturbed.status, 'completed');
  assert.is(undisturbed.step, STEPS);
  assert.ok(
    undisturbed.generations.some((g) => g.worldSize === 3),
    JSON.stringify(undisturbed.generations),
  );
  for (const e of undisturbed.epochs) assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0]);
  console.log(
    `  undisturbed: accuracy ${undisturbed.eval?.accuracy}, ${undisturbed.wallSeconds} s, goodput ${undisturbed.goodput}`,
  );
});

test('kill, two joins, a NATS restart and a leave: the run finishes, exactly once, in lockstep', async () => {
  // The kill lands on another step from seed to seed; TENSILE_TEST_SEED=n replays a failure.
  const seed = Number(process.env['TENSILE_TEST_SEED'] ?? 1);
  const killAt = 30 + ((Math.imul(seed, 2654435761) >>> 0) % 30);
  // A joiner takes seconds to start, however many steps that is: the script's next event after the
  // joins waits until both newcomers are in a world, so the world has grown to 4 before NATS restarts
  // and one leaves (at three quarters of the run, a share rather than a step).
  const chaos = `kill:${killAt},join:${killAt + 20},join:${killAt + 60},nats-restart:${killAt + 110},leave:75%`;
  const out = join(dir, 'chaos');
  const summary = await finished(
    tensileRun(file, out, ['--workers', '3', '--chaos', chaos], { TENSILE_CHECKSUM_EVERY: '1' }),
  );
  console.log(`  chaos ${chaos} (seed ${seed}): ${summary.wallSeconds} s, goodput ${summary.goodput}`);
  console.log(
    `  generations: ${summary.generations.map((g) => `${g.generation}:${g.worldSize}@${g.firstStep}`).join(' ')}`,
  );
  assert.is(summary.status, 'completed');
  assert.is(summary.step, STEPS);
  assert.equal(
    summary.chaos?.map((c) => c.action),
    ['kill', 'join', 'join', 'nats-restart', 'leave'],
  );

  // Exactly once: from the samples each worker recorded, across every world change.
  assert.is(summary.epochs.length, EPOCHS);
  for (const e of summary.epochs)
    assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0], `epoch ${e.epoch}`);

  // Each world as the policy says: fixedGlobalBatch keeps B and the rate whatever N is.
  assert.ok(summary.generations.length >= 4, 'a world per change');
  let previous = -1;
  for (const g of summary.generations) {
    assert.is(g.globalBatch, BATCH);
    assert.is(g.learningRate, 0.003);
    assert.ok(g.worldSize >= 1 && g.worldSize <= 4, `world of ${g.worldSize}`);
    assert.ok(g.firstStep >= previous, 'worlds start where the last one stopped, never earlier');
    previous = g.firstStep;
  }
  assert.ok(
    summary.generations.some((g) => g.worldSize < 3) && summary.generations.some((g) => g.worldSize === 4),
    'it shrank and grew',
  );

  const events = workerEvents(out);
  // Identical weights on every worker after every step, compared bit for bit through checksums.
  const shared = assertLockstep(events);
  assert.ok(shared > STEPS / 3, `${shared} steps were checked on more than one worker`);

  // NATS went away and came back; the workers reconnected and went on.
  assert.ok(eventsOf(events, 'nats-reconnect').length > 0, 'a worker logged its reconnection');

  // Loss decreasing: the last 50 steps against the first 50.
  const losses = eventsOf(events, 'progress')
    .sort((a, b) => a.step - b.step)
    .flatMap((e) => (typeof e.loss === 'number' ? [e.loss] : []));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(mean(losses.slice(-50)) < 0.7 * mean(losses.slice(0, 50)), 'loss decreased');

  // The accuracy of the undisturbed run with the same seed, within half a point.
  const gap = Math.abs((summary.eval?.accuracy ?? 0) - (undisturbed.eval?.accuracy ?? 1));
  console.log(`  accuracy ${summary.eval?.accuracy} vs undisturbed ${undisturbed.eval?.accuracy}`);
  assert.ok(gap <= 0.005, `accuracy gap ${gap}`);
});

test.run();
