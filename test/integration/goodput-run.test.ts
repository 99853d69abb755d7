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
import { connect } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AUTOSCALING_KEY, encodeMessage, rendezvousBucket } from '../../operator/api/contract.ts';
import { eventsOf, type WorkerEvent } from '../../operator/api/worker-events.ts';
import { eventually } from '../helpers/eventually.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import {
  assertEpochsOnce,
  assertLockstep,
  interrupted,
  tensileRun,
  workerEvents,
  writeJobManifest,
} from '../helpers/tensile-run.ts';

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

test('a chosen global batch: the world of two re-forms at it, every sample once per epoch', async () => {
  const TRAIN = 3000;
  const file = writeJobManifest(join(dir, 'batch.yaml'), 'goodput-batch', {
    replicas: 2,
    minReplicas: 1,
    maxReplicas: 2,
    model: { mlp: { hiddenUnits: [64] } },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: 128, policy: 'adascale' },
    // The run's own policy holds (the interval): the choice below is the test's, as the operator's.
    autoscaling: {
      policy: 'goodput',
      minSteps: 10,
      minIntervalSeconds: 3600,
      minGlobalBatch: 64,
      maxGlobalBatch: 512,
    },
    // It trains until interrupted: how many epochs pass before the choice lands is the machine's speed.
    stopping: { epochs: 1000 },
    evaluation: { intervalSteps: 100_000 },
    checkpoint: { intervalSteps: 100_000 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 5000, lastCallMillis: 1000 },
  });
  const out = join(dir, 'batch');
  const run = tensileRun(file, out, ['--workers', '2'], { TENSILE_CHECKSUM_EVERY: '1' });
  const natsUrl = (await run.waitFor(/nats-server at /)).replace(/.*nats-server at /, '').trim();
  await run.waitFor(/generation \d+: 2 worker\(s\), global batch 128/);
  const uid = readFileSync(join(out, 'job-uid'), 'utf8').trim();
  await chooseGlobalBatch(natsUrl, rendezvousBucket('default', 'goodput-batch', uid), uid, 384);
  const chosenAt = await eventually(
    'a world at the chosen global batch',
    () => eventsOf(workerEvents(out), 'generation').find((g) => g.globalBatch === 384),
    { timeoutMs: 120_000, intervalMs: 200 },
  );
  const changedInEpoch = epochAtStep(workerEvents(out), chosenAt.firstStep);
  await eventually(
    'two epochs trained after the change',
    () => eventsOf(workerEvents(out), 'progress').some((e) => (e.epoch ?? 0) >= changedInEpoch + 2),
    { timeoutMs: 120_000, intervalMs: 200 },
  );
  const summary = await interrupted(run);
  const chosen = summary.generations.filter((g) => g.globalBatch === 384);
  assert.ok(chosen.length > 0, JSON.stringify(summary.generations));
  // (Ctrl-C reaches the two workers one after the other: the last may re-form alone before it stops.)
  assert.ok(
    chosen.some((g) => g.worldSize === 2),
    JSON.stringify(summary.generations),
  );
  // adascale keeps the base rate; the gain does the scaling, step by step.
  assert.ok(
    chosen.every((g) => g.learningRate === 0.002),
    JSON.stringify(chosen),
  );
  const rescales = eventsOf(workerEvents(out), 'generation');
  assert.ok(
    rescales.some((e) => /the operator chose global batch 384 \(revision 100\)/.test(e.reason ?? '')),
    JSON.stringify(rescales.map((e) => e.reason)),
  );
  // Exactly once across the change of batch (the per-worker batch went 64 → 192 mid-epoch).
  assert.ok(
    summary.epochs.slice(0, -1).some((e) => e.epoch === changedInEpoch),
    `the epoch of the change (${changedInEpoch}) completed: ${JSON.stringify(summary.epochs)}`,
  );
  assertEpochsOnce(summary, TRAIN);
  assert.ok(assertLockstep(workerEvents(out)) > 0);
});

/** What the operator does for a goodput job: its choice, written to the rendezvous bucket. */
async function chooseGlobalBatch(
  servers: string,
  bucket: string,
  uid: string,
  globalBatch: number,
): Promise<void> {
  const nc = await connect({ servers });
  try {
    const kv = await nc.jetstream().views.kv(bucket, { history: 1 });
    await kv.put(AUTOSCALING_KEY, encodeMessage({ jobUid: uid, globalBatch, revision: 100, replicas: 2 }));
  } finally {
    await nc.close();
  }
}

/** The epoch a step trained in, from the progress lines around it. */
function epochAtStep(events: readonly WorkerEvent[], step: number): number {
  let latest = { step: -1, epoch: 0 };
  for (const e of eventsOf(events, 'progress'))
    if (e.epoch !== undefined && e.step <= step && e.step > latest.step)
      latest = { step: e.step, epoch: e.epoch };
  return latest.epoch;
}

test.run();
