import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  epochPermutation,
  mixSeed,
  planStep,
  type SamplerPosition,
  shareIndices,
  splitProportionally,
  stepsPerEpoch,
  uint32Stream,
} from '../../worker/data/sampler.ts';

test('the permutation of an epoch is a permutation, fixed by (seed, epoch)', () => {
  const a = epochPermutation(1000, 42, 3);
  assert.equal(
    [...a].sort((x, y) => x - y),
    Array.from({ length: 1000 }, (_, i) => i),
  );
  assert.equal(a, epochPermutation(1000, 42, 3));
  assert.not.equal(a, epochPermutation(1000, 42, 4));
  assert.not.equal(a, epochPermutation(1000, 43, 3));
});

test('permutations are not biased towards the identity', () => {
  // Position 0 of a 10-element permutation over 2000 epochs: every value about 200 times.
  const counts = new Array(10).fill(0);
  for (let epoch = 0; epoch < 2000; epoch++) counts[epochPermutation(10, 7, epoch)[0] as number]++;
  for (const c of counts) assert.ok(c > 140 && c < 260, `counts ${counts}`);
});

test('mixSeed and uint32Stream are deterministic and sensitive to every part', () => {
  assert.is(mixSeed(1, 2, 3), mixSeed(1, 2, 3));
  assert.is.not(mixSeed(1, 2, 3), mixSeed(1, 3, 2));
  assert.is.not(mixSeed(2 ** 33), mixSeed(2 ** 34));
  const a = uint32Stream(5);
  const b = uint32Stream(5);
  for (let i = 0; i < 10; i++) assert.is(a(), b());
});

const splits: [number, number[], number[]][] = [
  [10, [1, 1], [5, 5]],
  [11, [1, 1], [6, 5]],
  [7, [1, 1, 1], [3, 2, 2]],
  [10, [64, 32], [7, 3]],
  [5, [3, 1], [4, 1]],
  [0, [2, 2], [0, 0]],
  [3, [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]],
];
for (const [total, weights, expected] of splits) {
  test(`splitProportionally(${total}, [${weights}]) = [${expected}]`, () => {
    assert.equal(splitProportionally(total, weights), expected);
  });
}

test('a step gives each rank a contiguous share of b_i positions, in rank order', () => {
  const plan = planStep(100, { epoch: 2, cursor: 10 }, [8, 4, 4]);
  assert.equal(plan.shares, [
    { start: 10, count: 8 },
    { start: 18, count: 4 },
    { start: 22, count: 4 },
  ]);
  assert.is(plan.samples, 16);
  assert.is(plan.endsEpoch, false);
  assert.equal(plan.next, { epoch: 2, cursor: 26 });
});

test('the last step of an epoch is short, split in proportion, and moves to the next epoch', () => {
  const plan = planStep(100, { epoch: 0, cursor: 94 }, [8, 4]);
  assert.is(plan.samples, 6);
  assert.equal(
    plan.shares.map((s) => s.count),
    [4, 2],
  );
  assert.is(plan.endsEpoch, true);
  assert.equal(plan.next, { epoch: 1, cursor: 0 });
});

test('an exact fit ends the epoch too', () => {
  const plan = planStep(96, { epoch: 0, cursor: 80 }, [16]);
  assert.is(plan.endsEpoch, true);
  assert.equal(plan.next, { epoch: 1, cursor: 0 });
});

test('bad positions and worlds are rejected', () => {
  assert.throws(() => planStep(10, { epoch: 0, cursor: 10 }, [1]), /cursor 10/);
  assert.throws(() => planStep(10, { epoch: 0, cursor: 0 }, []), /per-worker/);
  assert.throws(() => planStep(10, { epoch: 0, cursor: 0 }, [0]), /per-worker/);
  assert.throws(() => planStep(0, { epoch: 0, cursor: 0 }, [1]), /positive/);
});

test('every sample exactly once per epoch while the world changes at every step', () => {
  const size = 997;
  const next = uint32Stream(99);
  const seen = new Map<number, number[]>();
  let position: SamplerPosition = { epoch: 0, cursor: 0 };
  let steps = 0;
  while (position.epoch < 4) {
    const ranks = 1 + (next() % 5);
    const perWorker = Array.from({ length: ranks }, () => 1 + (next() % 40));
    const plan = planStep(size, position, perWorker);
    const order = epochPermutation(size, 11, plan.epoch);
    const counts = seen.get(plan.epoch) ?? new Array(size).fill(0);
    for (const share of plan.shares) for (const index of shareIndices(order, share)) counts[index]++;
    seen.set(plan.epoch, counts);
    position = plan.next;
    steps++;
  }
  assert.is(seen.size, 4);
  for (const [epoch, counts] of seen) {
    assert.ok(
      counts.every((c) => c === 1),
      `epoch ${epoch}: ${counts.filter((c) => c !== 1).length} samples not seen exactly once`,
    );
  }
  assert.ok(steps > 4 * (size / 200));
});

test('stepsPerEpoch rounds up (the short last step counts)', () => {
  assert.is(stepsPerEpoch(60000, 128), 469);
  assert.is(stepsPerEpoch(128, 128), 1);
});

test.run();
