/**
 * What every rank of a world must agree on, with real worker processes, a real nats-server and the
 * real Fashion-MNIST files:
 * - batch norm: the moving statistics (non-trainable weights) stay identical on every rank after
 *   every step, and the per-step checksums cover every weight;
 * - a worker started with a newer spec, as a pod created after `kubectl scale` or a spec edit is
 *   (another `replicas`, another evaluation interval, a higher spec revision), joins a running world
 *   of the linear policy without batch.perWorker: every rank uses the world's per-worker batches,
 *   learning rate and settings, the newer spec takes effect at a generation boundary and is recorded,
 *   and every sample is trained on exactly once per epoch;
 * - a worker of another model refuses to join, with an error naming the field;
 * - a spec edit sent to running workers (the `spec` control message) takes effect at the next
 *   generation on every rank.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeMessage, jobSubjects } from '../../operator/api/contract.ts';
import { TrainingJobSpecSchema } from '../../operator/api/training-job.ts';
import { workerEnvironment } from '../../operator/api/worker-env.ts';
import { eventsOf, type WorkerEventOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import {
  assertEpochsOnce,
  assertLockstep,
  DEFAULT_DEADLINE_MS,
  finished,
  interrupted,
  lastLogLines,
  tensileRun,
  withDeadline,
  workerEvents,
  writeJobManifest,
} from '../helpers/tensile-run.ts';

/** The incarnation `tensile run` gave the job (DIR/job-uid): a worker started by hand must join it. */
const runUid = (out: string): string => readFileSync(join(out, 'job-uid'), 'utf8').trim();

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-agreement-'));
const bin = fileURLToPath(new URL('../../operator/bin/tensile.mjs', import.meta.url));

test('batch norm on two ranks: every weight, moving statistics included, identical after every step', async () => {
  const TRAIN = 2000;
  const file = writeJobManifest(join(dir, 'batchnorm.yaml'), 'batchnorm', {
    replicas: 2,
    model: { mlp: { hiddenUnits: [32], dropout: 0, batchNorm: true }, seed: 3 },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 64, policy: 'fixedGlobalBatch' },
    stopping: { epochs: 2 },
    evaluation: { intervalSteps: 20 },
    checkpoint: { intervalSteps: 50 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
  });
  const out = join(dir, 'batchnorm');
  const summary = await finished(tensileRun(file, out, ['--workers', '2'], { TENSILE_CHECKSUM_EVERY: '1' }));
  assert.is(summary.status, 'completed');
  for (const e of summary.epochs) assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0]);
  const events = workerEvents(out);
  const checksums = eventsOf(events, 'checksum');
  // The hidden dense kernel (no bias before batch norm), batch-norm gamma, beta, moving mean and
  // moving variance, the output kernel and bias.
  for (const e of checksums) assert.is(e.weights, 7, 'the checksum covers every weight');
  const shared = assertLockstep(events);
  assert.ok(shared >= summary.step - 1, `${shared} of ${summary.step} steps were checked on both workers`);
});

/**
 * A `tensile worker` process as a pod created later would be: its own spec and spec revision. Its
 * `exit` has the helpers' deadline (a safety net): a worker that outlives the run's nats-server
 * would wait for it forever.
 */
function startWorker(
  env: Record<string, string>,
  log: string,
): { child: ChildProcess; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [bin, 'worker'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const file = createWriteStream(log, { flags: 'a' });
  child.stdout?.pipe(file, { end: false });
  child.stderr?.pipe(file, { end: false });
  // Resolves once the log holds everything the worker wrote.
  const closed = new Promise<number | null>((resolve) =>
    child.on('close', (code) => file.end(() => resolve(code))),
  );
  const exit = withDeadline(
    closed,
    `${env['TENSILE_WORKER_ID'] ?? 'worker'} started by the test: waiting for its exit`,
    DEFAULT_DEADLINE_MS,
    () => child.kill('SIGKILL'),
    () => lastLogLines(dirname(log)),
  );
  // Read only by some tests: a deadline nobody awaits must not be an unhandled rejection.
  exit.catch(() => undefined);
  return { child, exit };
}

test('a worker with a newer spec joins a linear world: the ranks agree, the change is recorded', async () => {
  const TRAIN = 6000;
  const EPOCHS = 12;
  const spec = {
    replicas: 2,
    minReplicas: 1,
    maxReplicas: 3,
    model: { mlp: { hiddenUnits: [32], dropout: 0 }, seed: 3 },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.002 },
    // No perWorker: b = global / replicas, which a pod created after a scale would compute otherwise.
    batch: { global: 64, policy: 'linear', warmupSteps: 10 },
    stopping: { epochs: EPOCHS },
    evaluation: { intervalSteps: 50 },
    checkpoint: { intervalSteps: 100 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
  };
  const file = writeJobManifest(join(dir, 'agree.yaml'), 'agree', spec);
  const out = join(dir, 'agree');
  const run = tensileRun(file, out, ['--workers', '2'], { TENSILE_CHECKSUM_EVERY: '1' });
  const natsLine = await run.waitFor(/nats-server at nats:\/\/\S+/);
  const natsUrl = /nats:\/\/\S+/.exec(natsLine)?.[0] as string;
  await run.waitFor(/generation \d+: 2 worker\(s\)/);
  // The job as it reads after `kubectl scale --replicas 3` and an edit of the evaluation interval.
  const newer = TrainingJobSpecSchema.parse({ ...spec, replicas: 3, evaluation: { intervalSteps: 40 } });
  const joiner = startWorker(
    {
      ...workerEnvironment({
        jobName: 'agree',
        namespace: 'default',
        spec: newer,
        specRevision: 2,
        workerId: 'agree-worker-2',
        replicaIndex: 2,
        natsUrl,
        jobUid: runUid(out),
        checkpointDir: join(out, 'checkpoints'),
        outDir: out,
      }),
      TENSILE_CHECKSUM_EVERY: '1',
    },
    join(out, 'worker-2.log'),
  );
  const summary = await finished(run);
  assert.is(await joiner.exit, 0, 'the joiner finished cleanly');
  assert.is(summary.status, 'completed');

  const events = workerEvents(out);
  const formed = eventsOf(events, 'generation');
  const byGeneration = new Map<number | undefined, WorkerEventOf<'generation'>[]>();
  for (const e of formed) byGeneration.set(e.generation, [...(byGeneration.get(e.generation) ?? []), e]);
  // Every rank of a world runs it with the same batches, rate and spec revision.
  for (const [generation, ranks] of byGeneration) {
    const agreed = (e: WorkerEventOf<'generation'>) =>
      JSON.stringify([e.perWorker, e.globalBatch, e.learningRate, e.specRevision]);
    const views = new Set(ranks.map(agreed));
    assert.is(views.size, 1, `generation ${generation}: the ranks disagree: ${[...views].join(' vs ')}`);
  }
  const grown = formed.find((e) => e.worldSize === 3);
  assert.ok(grown !== undefined, `a world of three formed: ${JSON.stringify(summary.generations)}`);
  // b stays global / the replicas the batch was set for (64 / 2); linear: lr = lr_base · 96 / 64.
  assert.equal(grown.perWorker, [32, 32, 32]);
  assert.is(grown.globalBatch, 96);
  assert.is(grown.specRevision, 2);
  const first = formed.find((e) => e.worldSize === 2);
  assert.is(first?.specRevision, 0);
  assert.is(summary.generations[summary.generations.length - 1]?.specRevision, 2);
  // After the warm-up, linear: lr = lr_base · 96 / 64.
  const progress = eventsOf(events, 'progress').filter((e) => e.learningRate !== undefined);
  const finalRate = progress[progress.length - 1]?.learningRate ?? Number.NaN;
  assert.ok(Math.abs(finalRate - 0.003) < 1e-9, `learning rate ${finalRate}`);

  // The change is recorded by every rank of the world that took it up, with what changed.
  const changes = eventsOf(events, 'spec-changed');
  assert.ok(changes.length >= 3, `${changes.length} ranks recorded the spec change`);
  for (const c of changes) {
    assert.is(c.from, 0);
    assert.is(c.to, 2);
    assert.equal(c.changed, ['replicas', 'evaluation']);
  }

  // The newer evaluation interval, on every rank at once.
  const evalSteps = (worker: string) =>
    eventsOf(events, 'eval')
      .filter((e) => e.worker === worker && e.generation === grown.generation)
      .map((e) => e.step);
  const joinerEvals = evalSteps('agree-worker-2');
  assert.ok(joinerEvals.length > 0, 'the grown world evaluated');
  assert.ok(
    joinerEvals.some((step) => step % 40 === 0 && step % 50 !== 0),
    `evaluations at ${joinerEvals.join(', ')}`,
  );
  assert.equal(evalSteps('agree-worker-0'), joinerEvals);
  assert.equal(evalSteps('agree-worker-1'), joinerEvals);

  // Exactly once, in lockstep.
  assert.is(summary.epochs.length, EPOCHS);
  for (const e of summary.epochs)
    assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0], `epoch ${e.epoch}`);
  assert.ok(assertLockstep(events) > 0, 'steps were checked on more than one worker');
});

test('a worker of another model refuses to join with a clear error; the others go on', async () => {
  const TRAIN = 6000;
  const spec = {
    replicas: 2,
    minReplicas: 1,
    maxReplicas: 3,
    model: { mlp: { hiddenUnits: [32], dropout: 0 }, seed: 3 },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: 64, policy: 'linear' },
    // It trains until interrupted: the stranger, which takes seconds to load, must find it running.
    stopping: { epochs: 1000 },
    checkpoint: { intervalSteps: 100 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
  };
  const file = writeJobManifest(join(dir, 'other.yaml'), 'other', spec);
  const out = join(dir, 'other');
  const run = tensileRun(file, out, ['--workers', '2']);
  const natsLine = await run.waitFor(/nats-server at nats:\/\/\S+/);
  const natsUrl = /nats:\/\/\S+/.exec(natsLine)?.[0] as string;
  await run.waitFor(/generation \d+: 2 worker\(s\)/);
  const log = join(out, 'worker-2.log');
  const stranger = startWorker(
    workerEnvironment({
      jobName: 'other',
      namespace: 'default',
      spec: TrainingJobSpecSchema.parse({ ...spec, model: { mlp: { hiddenUnits: [16] }, seed: 3 } }),
      specRevision: 3,
      workerId: 'other-worker-2',
      replicaIndex: 2,
      natsUrl,
      jobUid: runUid(out),
      checkpointDir: join(out, 'checkpoints'),
      outDir: out,
    }),
    log,
  );
  assert.is(await stranger.exit, 2, 'a terminal error: a restart cannot fix it');
  const text = readFileSync(log, 'utf8');
  assert.match(
    text,
    /refusing to join generation \d+: spec\.model of this worker \(spec revision 3\) differ/,
  );
  // The two went on after the refusal, in the same world, to epochs past it.
  const refusedAtEpoch = eventsOf(workerEvents(out, 0), 'progress').at(-1)?.epoch ?? 0;
  await run.waitFor(new RegExp(`epoch ${refusedAtEpoch + 2}\\b`));
  const summary = await interrupted(run);
  assertEpochsOnce(summary, TRAIN);
  assert.ok(summary.epochs.length >= refusedAtEpoch + 2, JSON.stringify(summary.epochs));
  for (const g of summary.generations) assert.is(g.specRevision, undefined, 'the world kept its spec');
});

test('a spec edit sent to running workers takes effect at the next generation, on every rank', async () => {
  const TRAIN = 6000;
  const spec = {
    replicas: 2,
    minReplicas: 1,
    maxReplicas: 3,
    model: { mlp: { hiddenUnits: [32], dropout: 0 }, seed: 3 },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: 64, policy: 'linear', warmupSteps: 10 },
    stopping: { epochs: 30 },
    evaluation: { intervalSteps: 50 },
    checkpoint: { intervalSteps: 100 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
  };
  const file = writeJobManifest(join(dir, 'edit.yaml'), 'edit', spec);
  const out = join(dir, 'edit');
  const run = tensileRun(file, out, ['--workers', '2']);
  const natsLine = await run.waitFor(/nats-server at nats:\/\/\S+/);
  const natsUrl = /nats:\/\/\S+/.exec(natsLine)?.[0] as string;
  await run.waitFor(/generation \d+: 2 worker\(s\)/);
  // What the operator sends when metadata.generation moves: here, fewer epochs.
  const nc = await connect({ servers: natsUrl });
  const edited = TrainingJobSpecSchema.parse({ ...spec, stopping: { epochs: 12 } });
  nc.publish(
    jobSubjects('default', 'edit').control,
    // Stamped with the run's incarnation, as the operator stamps the job's uid.
    encodeMessage({
      type: 'spec',
      jobUid: runUid(out),
      revision: 5,
      spec: edited,
      reason: 'test',
    }),
  );
  await nc.drain();
  const summary = await finished(run);
  assert.is(summary.status, 'completed');
  assert.is(summary.reason, 'completed 12 epochs');
  assert.is(summary.epoch, 12);
  for (const e of summary.epochs)
    assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0], `epoch ${e.epoch}`);

  const events = workerEvents(out);
  const changes = eventsOf(events, 'spec-changed');
  assert.is(changes.length, 2, 'both ranks recorded the change');
  for (const c of changes) assert.equal([c.from, c.to, c.changed], [0, 5, ['stopping']]);
  assert.is(new Set(changes.map((c) => c.step)).size, 1, 'at the same step');
  const last = summary.generations[summary.generations.length - 1];
  assert.is(last?.specRevision, 5);
  const formed = eventsOf(events, 'generation').filter((e) => e.specRevision === 5);
  assert.ok(
    formed.some((e) => /brings spec revision 5/.test(e.reason ?? '')),
    JSON.stringify(formed.map((e) => e.reason)),
  );
});

test.run();
