import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BalancingSpecSchema } from '../../operator/api/training-job.ts';
import {
  median,
  observe,
  type PlanInput,
  planBalance,
  predictedStepSeconds,
  proportionalSplit,
  stragglers,
  type WorkerEstimate,
  withPlan,
} from '../../worker/balance/planner.ts';

const spec = (o: Record<string, unknown> = {}) => BalancingSpecSchema.parse({ mode: 'proportional', ...o });
const est = (
  worker: string,
  secondsPerSample: number,
  steps = 20,
  slowSince: number | null = null,
): WorkerEstimate => ({
  worker,
  secondsPerSample,
  steps,
  waitSeconds: 0,
  slowSince,
});

test('proportionalSplit: sums to the total, ∝ weights, largest remainder to the lower rank on ties', () => {
  const cases: [number, number[], number, number[]][] = [
    [120, [1, 1, 1], 1, [40, 40, 40]],
    [120, [2, 2, 1], 1, [48, 48, 24]],
    [128, [1, 1, 1], 1, [43, 43, 42]],
    [10, [1, 0, 0], 1, [8, 1, 1]],
    [10, [1, 0, 0], 0, [10, 0, 0]],
    [100, [1, 1, 1, 1], 20, [25, 25, 25, 25]],
    [100, [97, 1, 1, 1], 20, [40, 20, 20, 20]],
    [3, [5, 1, 1], 5, [1, 1, 1]],
  ];
  for (const [total, weights, floor, expected] of cases) {
    const split = proportionalSplit(total, weights, floor);
    assert.equal(split, expected, `${total} by ${weights} floor ${floor}`);
    assert.is(
      split.reduce((a, b) => a + b, 0),
      total,
    );
  }
  assert.throws(() => proportionalSplit(10, []), /0 workers/);
});

test('predictedStepSeconds is the slowest rank: max b_i·s_i', () => {
  assert.is(predictedStepSeconds([40, 40, 40], [0.01, 0.01, 0.02]), 0.8);
  assert.is(predictedStepSeconds([48, 48, 24], [0.01, 0.01, 0.02]), 0.48);
});

test('observe: the first measurement starts the average, then θ·old + (1−θ)·new; gone workers dropped', () => {
  const first = observe(
    [],
    { members: ['a', 'b'], perWorker: [10, 20], computeSeconds: [1, 1], waitSeconds: [0, 0.5] },
    0.5,
  );
  assert.equal(first, [
    { worker: 'a', secondsPerSample: 0.1, steps: 1, waitSeconds: 0, slowSince: null },
    { worker: 'b', secondsPerSample: 0.05, steps: 1, waitSeconds: 0.5, slowSince: null },
  ]);
  const second = observe(
    [...first, est('gone', 1)],
    { members: ['b', 'a'], perWorker: [10, 10], computeSeconds: [1.5, 1], waitSeconds: [0.1, 0] },
    0.5,
  );
  assert.equal(
    second.map((e) => [e.worker, e.secondsPerSample, e.steps]),
    [
      ['b', 0.1, 2],
      ['a', 0.1, 2],
    ],
  );
  // A rank that took no samples (or measured nothing) keeps its estimate.
  const kept = observe(
    second,
    { members: ['a'], perWorker: [0], computeSeconds: [0], waitSeconds: [0] },
    0.5,
  );
  assert.equal(kept[0]?.steps, 2);
  // Within the warm-up the latest figure replaces the estimate: a slow first step leaves no trace.
  const warm = observe(
    [est('a', 1, 2)],
    { members: ['a'], perWorker: [10], computeSeconds: [0.1], waitSeconds: [0] },
    0.9,
    3,
  );
  assert.equal([warm[0]?.secondsPerSample, warm[0]?.steps], [0.01, 3]);
  const after = observe(
    warm,
    { members: ['a'], perWorker: [10], computeSeconds: [0.2], waitSeconds: [0] },
    0.5,
    3,
  );
  assert.ok(Math.abs((after[0]?.secondsPerSample ?? 0) - 0.015) < 1e-12, 'then the moving average');
});

const base: PlanInput = {
  spec: spec(),
  members: ['a', 'b', 'c'],
  current: [40, 40, 40],
  estimates: [est('a', 0.01), est('b', 0.01), est('c', 0.02)],
  step: 100,
  lastPlanStep: 0,
  boundary: false,
};

test('planBalance: when it re-plans and when it keeps the split', () => {
  const cases: [string, Partial<PlanInput>, number[] | undefined][] = [
    ['one worker at half speed gets half the batch', {}, [48, 48, 24]],
    ['even mode never changes the split', { spec: spec({ mode: 'even' }) }, undefined],
    ['a world of one has nothing to balance', { members: ['a'], current: [120] }, undefined],
    ['too soon after the last plan', { lastPlanStep: 60 }, undefined],
    ['… but a generation boundary may re-plan at once', { lastPlanStep: 99, boundary: true }, [48, 48, 24]],
    [
      'a member not measured long enough',
      { estimates: [est('a', 0.01), est('b', 0.01), est('c', 0.02, 3)] },
      undefined,
    ],
    ['a member without any estimate', { estimates: [est('a', 0.01), est('b', 0.01)] }, undefined],
    [
      'noise below the drift threshold does not churn the split',
      { estimates: [est('a', 0.01), est('b', 0.0101), est('c', 0.0104)] },
      undefined,
    ],
    [
      '… a small gain is still taken at a generation boundary',
      { estimates: [est('a', 0.01), est('b', 0.0101), est('c', 0.0104)], boundary: true },
      [41, 40, 39],
    ],
    ['the split already in effect', { current: [48, 48, 24] }, undefined],
    [
      'minShare bounds the slowest worker from below',
      { estimates: [est('a', 0.01), est('b', 0.01), est('c', 1)], spec: spec({ minShare: 0.25 }) },
      [55, 55, 10],
    ],
  ];
  for (const [name, override, expected] of cases) {
    const plan = planBalance({ ...base, ...override });
    assert.equal(plan?.perWorker, expected, name);
    if (plan !== undefined) {
      assert.ok(plan.predicted <= plan.predictedBefore, `${name}: never predicts a slower step`);
      assert.is(
        plan.perWorker.reduce((a, b) => a + b, 0),
        (override.current ?? base.current).reduce((a, b) => a + b, 0),
        `${name}: the global batch is kept`,
      );
    }
  }
});

test('median of positive values', () => {
  assert.is(median([3, 1, 2]), 2);
  assert.is(median([4, 1, 2, 3]), 2.5);
  assert.is(median([0, 0]), 0);
});

test('stragglers: below the threshold of the median for stragglerSteps, then reported; recovery clears it', () => {
  const s = spec({ stragglerThreshold: 0.5, stragglerSteps: 10 });
  const estimates = [est('a', 0.01), est('b', 0.01), est('c', 0.05)];
  const first = stragglers(estimates, s, 100);
  assert.equal(
    first.estimates.map((e) => e.slowSince),
    [null, null, 100],
  );
  assert.equal(first.persistent, []);
  assert.equal(stragglers(first.estimates, s, 109).persistent, []);
  const later = stragglers(first.estimates, s, 110);
  assert.equal(later.persistent, ['c']);
  assert.is(later.estimates[2]?.slowSince, 100, 'the mark keeps the step it started');
  const recovered = stragglers([est('a', 0.01), est('b', 0.01), est('c', 0.015, 20, 100)], s, 120);
  assert.equal(recovered.persistent, []);
  assert.is(recovered.estimates[2]?.slowSince, null);
  // Half speed is not below half the median: not a straggler at the default threshold.
  assert.equal(
    stragglers([est('a', 0.01), est('b', 0.01), est('c', 0.02)], s, 100).estimates[2]?.slowSince,
    null,
  );
  // A worker still warming up is neither judged nor counted in the median.
  assert.equal(stragglers([est('a', 0.01), est('c', 0.05, 2)], s, 100).estimates[1]?.slowSince, null);
});

test('withPlan keeps the newest 50 plans', () => {
  let plans: ReturnType<typeof withPlan> = [];
  for (let step = 0; step < 60; step++)
    plans = withPlan(plans, {
      step,
      generation: 1,
      perWorker: [1],
      predictedBefore: 1,
      predicted: 1,
      reason: 'drift',
    });
  assert.is(plans.length, 50);
  assert.is(plans[0]?.step, 10);
});

test.run();
