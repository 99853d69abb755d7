/**
 * The large-batch pieces under elasticity, with real worker processes: lamb with a batch-size ramp-up
 * and lars under AdaScale each survive a kill and a join (`tensile run --chaos kill,join`) with every
 * sample trained exactly once per epoch and bit-identical weights on every worker after every step.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import {
  assertLockstep,
  finished,
  tensileRun,
  workerEvents,
  writeJobManifest,
} from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-large-batch-'));

const TRAIN = 3000;
const EPOCHS = 3;

const cases: [string, object, object][] = [
  [
    'lamb with a batch-size ramp-up',
    { type: 'lamb', learningRate: 0.005, weightDecay: 0.01, warmup: { steps: 10 } },
    { global: 60, policy: 'fixedGlobalBatch', rampUp: { start: 15, increment: 15, samples: 3000 } },
  ],
  [
    'lars under AdaScale',
    { type: 'lars', learningRate: 0.5, trustCoefficient: 0.02, weightDecay: 0.0005 },
    { global: 20, perWorker: 20, policy: 'adascale', adascaleSmoothing: 0.9, warmupSteps: 5 },
  ],
];

for (const [name, optimizer, batch] of cases) {
  test(`${name}: a kill and a join, exactly once, identical weights on every rank`, async () => {
    const slug = name.split(' ')[0] as string;
    const file = writeJobManifest(join(dir, `${slug}.yaml`), slug, {
      replicas: 3,
      minReplicas: 1,
      maxReplicas: 3,
      model: { mlp: { hiddenUnits: [32], dropout: 0 }, seed: 3 },
      dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
      optimizer,
      batch,
      stopping: { epochs: EPOCHS },
      evaluation: { intervalSteps: 50 },
      checkpoint: { intervalSteps: 20, keep: 3 },
      rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
    });
    const out = join(dir, slug);
    const summary = await finished(
      tensileRun(file, out, ['--workers', '3', '--chaos', 'kill:20,join:40'], {
        TENSILE_CHECKSUM_EVERY: '1',
      }),
    );
    console.log(
      `  ${name}: ${summary.generations.map((g) => `${g.generation}:${g.worldSize}@${g.firstStep}`).join(' ')}, accuracy ${summary.eval?.accuracy}`,
    );
    assert.is(summary.status, 'completed');
    assert.equal(
      summary.chaos?.map((c) => c.action),
      ['kill', 'join'],
    );
    assert.is(summary.epochs.length, EPOCHS);
    for (const e of summary.epochs)
      assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0], `epoch ${e.epoch}`);
    const shared = assertLockstep(workerEvents(out));
    assert.ok(shared > 20, `${shared} steps checked on more than one worker`);
    assert.ok((summary.eval?.accuracy ?? 0) > 0.6, `accuracy ${summary.eval?.accuracy}`);
  });
}

test.run();
