import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BatchSpec } from '../../operator/api/training-job.ts';
import {
  adascaleGain,
  adascaleSmoothing,
  gainOf,
  gradientStatistics,
  microBatches,
  scaleAt,
  smoothStatistics,
  splitEvenly,
  worldShape,
} from '../../worker/rescale/policy.ts';

const batch = (o: Partial<BatchSpec>): BatchSpec => ({
  global: 120,
  policy: 'fixedGlobalBatch',
  warmupSteps: 10,
  warmupStartFactor: 1,
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

test('fixedGlobalBatch does not warm up by default (the rate does not change)', () => {
  const spec = batch({ warmupSteps: 10 });
  const next = worldShape(spec, 3, 2, 50, worldShape(spec, 3, 3, 0, undefined).state);
  assert.is(next.state.warmupSteps, 0);
  assert.is(scaleAt(next.state, 50), 1);
});

test('warmupStartFactor: every policy warms up after a rescale, never after a restart of the same world', () => {
  // policy, workers before → after, the multiplier at the rescale step, halfway, at the end.
  const cases: [BatchSpec['policy'], number, number, number, number, number][] = [
    ['fixedGlobalBatch', 3, 2, 0.2, 0.6, 1],
    ['adascale', 3, 6, 0.2, 0.6, 1],
    ['linear', 3, 6, 1, 1.5, 2], // the rate changes: from the old one, the factor does not apply
    ['fixedGlobalBatch', 3, 3, 1, 1, 1], // the same world again: no warm-up
  ];
  for (const [policy, before, after, atStart, halfway, atEnd] of cases) {
    const spec = batch({
      policy,
      warmupStartFactor: 0.2,
      ...(policy === 'fixedGlobalBatch' ? {} : { perWorker: 40 }),
    });
    const first = worldShape(spec, 3, before, 0, undefined);
    const next = worldShape(spec, 3, after, 100, first.state);
    const what = `${policy} ${before}→${after}`;
    assert.ok(Math.abs(scaleAt(next.state, 100) - atStart) < 1e-12, what);
    assert.ok(Math.abs(scaleAt(next.state, 105) - halfway) < 1e-12, what);
    assert.ok(Math.abs(scaleAt(next.state, 110) - atEnd) < 1e-12, what);
  }
  const off = batch({ warmupSteps: 0, warmupStartFactor: 0.2 });
  const next = worldShape(off, 3, 2, 50, worldShape(off, 3, 3, 0, undefined).state);
  assert.is(scaleAt(next.state, 50), 1, 'warmupSteps 0 turns it off');
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

test('AdaScale statistics: σ² and μ² from per-worker norms, in base-batch units', () => {
  // Two workers of batch 64, base 32: mean‖g_i‖² = 1.5, ‖ḡ‖² = 1 → σ_64² = 2·0.5 = 1, σ² = 2, μ² = 0.5.
  const stats = gradientStatistics([1, 2], 1, 64, 32);
  assert.equal(stats, { sigma2: 2, mu2: 0.5 });
  assert.is(gradientStatistics([1], 1, 64, 32), undefined, 'one worker: no spread');
  // r = (2 + 0.5) / (2/4 + 0.5) = 2.5 at S = 4; clamped to S and to 1.
  assert.is(gainOf(stats, 4), 2.5);
  assert.ok(Math.abs(gainOf({ sigma2: 100, mu2: 0 }, 4) - 4) < 1e-9, 'μ² = 0: the gain approaches S');
  assert.is(gainOf({ sigma2: 0, mu2: 1 }, 4), 1);
  assert.is(gainOf(undefined, 4), 1);
});

test('AdaScale smoothing: moving averages started by the first estimate, θ = max(1 − S/1000, 0)', () => {
  assert.is(adascaleSmoothing(undefined, 4), 0.996);
  assert.is(adascaleSmoothing(undefined, 2000), 0);
  assert.is(adascaleSmoothing(0.5, 4), 0.5);
  const first = smoothStatistics(undefined, { sigma2: 4, mu2: 1 }, 0.5);
  assert.equal(first, { sigma2: 4, mu2: 1 });
  const second = smoothStatistics(first, { sigma2: 0, mu2: 3 }, 0.5);
  assert.equal(second, { sigma2: 2, mu2: 2 });
  assert.equal(smoothStatistics(second, undefined, 0.5), second, 'a step without an estimate keeps them');
  // One noisy step moves a smoothed gain less than it moves the single-step gain.
  const steady = { sigma2: 1, mu2: 1 };
  const noisy = { sigma2: 50, mu2: 0.01 };
  const smoothed = gainOf(smoothStatistics(steady, noisy, 0.9), 8);
  assert.ok(gainOf(noisy, 8) - smoothed > 1, `${smoothed}`);
});

test.run();
