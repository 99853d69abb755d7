/**
 * Found by hack/chaos.sh (issue 24, seed 4, 20 minutes, `partition-worker`): a partition during an
 * epoch's evaluation timed the evaluation's all-reduce out on every rank. Unlike a failed step, a
 * failed evaluation did not ask for a new round; no peer had died and no probe was refused, so every
 * worker went on heartbeating and waited for a world that nobody proposed, for good.
 *
 * Real workers (`tensile run --workers 3`), a real nats-server and Fashion-MNIST. The cut is timed by
 * the workers themselves: each logs its weights' checksum right after the step that ends the epoch
 * and before the evaluation, which (10 000 samples through a convolution) lasts far longer than it
 * takes to drop the links. iptables on loopback drops every worker-to-worker connection (not NATS)
 * until every worker has left the world, then lets them through again; the run must then re-form
 * and finish. Root, as the chaos driver (CI is).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Firewall } from '../../hack/chaos/faults.ts';
import { eventsOf, type WorkerEvent } from '../../operator/api/worker-events.ts';
import { eventually } from '../helpers/eventually.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const dir = mkdtempSync(join(tmpdir(), 'tensile-evaluation-partition-'));
const WORKERS = 3;
const TRAIN = 300;
const BATCH = 3;
const EPOCH_STEPS = TRAIN / BATCH;

const file = writeJobManifest(join(dir, 'job.yaml'), 'eval-partition', {
  replicas: WORKERS,
  minReplicas: 1,
  maxReplicas: WORKERS,
  // Cheap steps (one sample per rank, few weights), an expensive evaluation (many samples, many
  // multiply-adds per sample): the cut lands in the evaluation, not in a step.
  model: {
    cnn: {
      blocks: [
        { filters: 32, kernelSize: 3, pool: 1 },
        { filters: 32, kernelSize: 3, pool: 4 },
      ],
      dense: [16],
      dropout: 0,
    },
    seed: 3,
  },
  dataset: {
    format: 'idx',
    path: fashionMnistDir(),
    maxTrainSamples: TRAIN,
    eval: { maxSamples: 10_000 },
  },
  optimizer: { type: 'adam', learningRate: 0.003 },
  batch: { global: BATCH, policy: 'fixedGlobalBatch' },
  stopping: { epochs: 2 },
  // Evaluations at the epoch's end only.
  evaluation: { intervalSteps: 100_000 },
  checkpoint: { intervalSteps: 50, keep: 2 },
  // A collective gives up after max(5 s, 2 × (timeout + last call)): 5 s here.
  rendezvous: { heartbeatMillis: 500, timeoutMillis: 1500, lastCallMillis: 500 },
});

const events = (out: string, index: number): WorkerEvent[] => {
  try {
    return workerEvents(out, index);
  } catch {
    return []; // a line half written: not yet
  }
};

test.before(() => {
  assert.is(
    process.getuid?.(),
    0,
    'this test drops loopback packets with iptables: run it as root (CI does)',
  );
});

test('an evaluation cut by a partition asks for a new round: the workers re-form and finish', async () => {
  const out = join(dir, 'run');
  const run = tensileRun(file, out, ['--workers', String(WORKERS)], {
    TENSILE_CHECKSUM_EVERY: String(EPOCH_STEPS),
  });
  await using firewall = new Firewall();
  // Every worker past the epoch's last step, so in (or about to start) its evaluation; the world
  // of that step and each worker's collective port.
  const reached = await eventually(
    () => `every worker at step ${EPOCH_STEPS}:\n${run.lines.slice(-10).join('\n')}`,
    () => {
      const all = Array.from({ length: WORKERS }, (_, i) => events(out, i));
      const sums = all.map((e) => eventsOf(e, 'checksum').find((c) => c.step === EPOCH_STEPS));
      if (sums.some((s) => s === undefined)) return undefined;
      const ports = all.map((e) => eventsOf(e, 'rendezvous').at(-1)?.address?.split(':').at(-1));
      if (ports.some((p) => p === undefined)) return undefined;
      return { generation: sums[0]?.generation, ports: ports.map(Number) };
    },
    { timeoutMs: 5 * 60_000, intervalMs: 10 },
  );
  await firewall.drop(reached.ports);
  // Held until every worker left the world the cut ended: no sooner (it would not be cut), no later.
  await eventually(
    'every worker leaves the world cut during its evaluation',
    () =>
      Array.from({ length: WORKERS }, (_, i) => events(out, i)).every((e) =>
        eventsOf(e, 'generation-end').some((g) => g.generation === reached.generation),
      ),
    { timeoutMs: 2 * 60_000, intervalMs: 50 },
  );
  await firewall.heal();
  // Without the fix every worker waits, heartbeating, for a world nobody proposes: the deadline.
  const summary = await finished(run, 4 * 60_000);

  assert.is(summary.status, 'completed');
  assert.is(summary.step, 2 * EPOCH_STEPS);
  const all = workerEvents(out);
  const cutEvaluations = eventsOf(all, 'eval').filter(
    (e) => e.step === EPOCH_STEPS && e.generation === reached.generation,
  );
  assert.equal(cutEvaluations, [], 'the cut landed in the evaluation: none of its ranks finished it');
  const ends = eventsOf(all, 'generation-end').filter((g) => g.generation === reached.generation);
  assert.equal(
    ends.map((g) => g.lastStep),
    Array(WORKERS).fill(EPOCH_STEPS),
    'the cut world ended at the epoch’s last step on every rank',
  );
  // The whole world again after the cut, from where it was: no worker was lost to it.
  const later = eventsOf(all, 'generation').filter((g) => (g.generation ?? 0) > (reached.generation ?? 0));
  assert.ok(
    later.some((g) => g.worldSize === WORKERS && g.firstStep === EPOCH_STEPS),
    JSON.stringify(later.map((g) => [g.generation, g.worldSize, g.firstStep])),
  );
  for (const e of summary.epochs) assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0]);
});

test.run();
