import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BatchSpec } from '../../operator/api/training-job.ts';
import { adascaleGain, microBatches, scaleAt, splitEvenly, worldShape } from '../../worker/rescale/policy.ts';

const batch = (o: Partial<BatchSpec>): BatchSpec => ({
  global: 120,
  policy: 'fixedGlobalBatch',
  warmupSteps: 10,
  ...o,
});

test('splitEvenly: integers differing by at most one, larger first', () => {
  assert.equal(splitEvenly(128, 3), [43, 43, 42]);
  assert.equal(splitEvenly(5, 5), [1, 1, 1, 1, 1]);
  assert.equal(splitEvenly(7, 1), [7]);
});

const shapes: [string, BatchSpec, number, number[], number, number][] = [
  // name, spec, workers, per-worker, global batch, target scale
  ['fixedGlobalBatch keeps B at its base whatever N', batch({}), 3, [40, 40, 40], 120, 1],
  ['fixedGlobalBatch with 7 workers', batch({}), 7, [18, 17, 17, 17, 17, 17, 17], 120, 1],
  [
    'linear: b_i fixed, lr × B/B_base',
    batch({ policy: 'linear', perWorker: 40 }),
    6,
    [40, 40, 40, 40, 40, 40],
    240,
    2,
  ],
  ['sqrt: lr × √(B/B_base)', batch({ policy: 'sqrt', perWorker: 30 }), 16, Array(16).fill(30), 480, 2],
  [
    'linear without perWorker: base over initial replicas',
    batch({ policy: 'linear' }),
    2,
    [40, 40],
    80,
    80 / 120,
  ],
  [
    'adascale: b_i fixed, lr from the gain at run time',
    batch({ policy: 'adascale', perWorker: 40 }),
    6,
    Array(6).fill(40),
    240,
    1,
  ],
];

for (const [name, spec, workers, perWorker, global, target] of shapes) {
  test(`world shape: ${name}`, () => {
    const shape = worldShape(spec, 3, workers, 0, undefined);
    assert.equal(shape.perWorker, perWorker);
    assert.is(shape.globalBatch, global);
    assert.ok(Math.abs(shape.state.targetScale - target) < 1e-12, `target ${shape.state.targetScale}`);
    assert.is(shape.state.warmupSteps, 0, 'the first world needs no warm-up');
  });
}

test('linear warm-up after a change: from the old rate to the new over warmupSteps', () => {
  const spec = batch({ policy: 'linear', perWorker: 40, warmupSteps: 10 });
  const three = worldShape(spec, 3, 3, 0, undefined);
  const six = worldShape(spec, 3, 6, 100, three.state);
  assert.is(six.state.fromScale, 1);
  assert.is(six.state.targetScale, 2);
  assert.is(scaleAt(six.state, 100), 1);
  assert.is(scaleAt(six.state, 105), 1.5);
  assert.is(scaleAt(six.state, 110), 2);
  assert.is(scaleAt(six.state, 500), 2);
  // A change in the middle of a warm-up starts from where the rate was.
  const four = worldShape(spec, 3, 4, 105, six.state);
  assert.is(four.state.fromScale, 1.5);
  assert.ok(Math.abs(four.state.targetScale - 4 / 3) < 1e-12);
});

test('fixedGlobalBatch never warms up (the rate does not change)', () => {
  const spec = batch({ warmupSteps: 10 });
  const next = worldShape(spec, 3, 2, 50, worldShape(spec, 3, 3, 0, undefined).state);
  assert.is(next.state.warmupSteps, 0);
  assert.is(scaleAt(next.state, 50), 1);
});

test('AdaScale gain: 1 for one worker, S when gradients are pure noise, ~1 when they agree', () => {
  assert.is(adascaleGain([4], 4, 32, 32, 1), 1);
  // Identical gradients: no variance, no gain.
  assert.is(adascaleGain([1, 1, 1, 1], 1, 32, 32, 4), 1);
  // Independent noise of equal norm: the mean's norm shrinks by N; gain reaches S.
  assert.ok(Math.abs(adascaleGain([1, 1, 1, 1], 0.25, 32, 32, 4) - 4) < 1e-6);
  const mid = adascaleGain([1, 1, 1, 1], 0.5, 32, 32, 4);
  assert.ok(mid > 1 && mid < 4, `gain ${mid}`);
});

test('micro-batches: split only above the per-worker limit', () => {
  assert.equal(microBatches(40, undefined), [40]);
  assert.equal(microBatches(40, 64), [40]);
  assert.equal(microBatches(100, 32), [25, 25, 25, 25]);
  assert.equal(microBatches(0, 32), []);
});

test.run();
