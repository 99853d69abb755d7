/**
 * Goodput autoscaling with real worker processes, a real nats-server and Fashion-MNIST: `tensile run
 * --workers 1` of a job with `autoscaling.policy: goodput` in [1, 2]. Measured at one worker, the
 * model predicts a gain from two (synchronisation not measured yet is taken as free, within the
 * exploration bound), so the run starts a second worker by itself; the world of two forms, trains in
 * lockstep and reports the gradient noise scale. The run is then interrupted (it would train on).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { eventually } from '../helpers/eventually.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { assertLockstep, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-goodput-'));

test('goodput: from minReplicas, the predicted gain starts a second worker; the world of two trains', async () => {
  const file = writeJobManifest(join(dir, 'job.yaml'), 'goodput', {
    replicas: 1,
    minReplicas: 1,
    maxReplicas: 2,
    model: { mlp: { hiddenUnits: [128] } },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: 12_000, eval: { maxSamples: 1000 } },
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: 128, policy: 'fixedGlobalBatch' },
    // One change only within the test: the interval holds the next decision back.
    autoscaling: { policy: 'goodput', minSteps: 10, minIntervalSeconds: 3600 },
    stopping: { epochs: 1000 },
    evaluation: { intervalSteps: 100_000 },
    checkpoint: { intervalSteps: 100_000 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 5000, lastCallMillis: 1000 },
  });
  const out = join(dir, 'out');
  const run = tensileRun(file, out, ['--workers', '1'], { TENSILE_CHECKSUM_EVERY: '1' });
  try {
    const decision = await run.waitFor(/goodput autoscaling at step \d+: 1 → 2 worker\(s\)/);
    assert.match(decision, /predicted goodput by workers: 1: [\d.]+, 2: [\d.]+/);
    await run.waitFor(/goodput autoscaling: started goodput-worker-1/);
    await run.waitFor(/generation \d+: 2 worker\(s\)/);
    // Steps of the world of two, measured: its progress carries its step time and noise scale.
    const atTwo = await eventually(
      'a progress line of the world of two with its noise scale',
      () =>
        eventsOf(workerEvents(out), 'progress').find(
          (e) => e.worldSize === 2 && e.goodput?.noiseScale !== undefined,
        ),
      { timeoutMs: 120_000, intervalMs: 500 },
    );
    assert.ok((atTwo.goodput?.noiseScale ?? 0) > 0, JSON.stringify(atTwo));
    // Half the global batch each, less for the short last step of an epoch.
    const perWorker = atTwo.goodput?.perWorkerBatch ?? 0;
    assert.ok(perWorker > 48 && perWorker <= 64, `per-worker batch ${perWorker}`);
  } finally {
    run.child.kill('SIGINT');
    await run.done;
  }
  const events = workerEvents(out);
  assert.ok(assertLockstep(events) > 0, 'steps of the world of two were checked on both workers');
  const recorded = readFileSync(join(out, 'events.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { type: string; replicas?: number; detail?: string });
  const autoscale = recorded.filter((e) => e.type === 'autoscale');
  assert.is(autoscale.length, 1, JSON.stringify(autoscale));
  assert.is(autoscale[0]?.replicas, 2);
  assert.match(autoscale[0]?.detail ?? '', /goodput [\d.]+ → [\d.]+ \(\+\d+ %\)/);
});

test.run();
