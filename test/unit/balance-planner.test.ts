import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BalancingSpecSchema } from '../../operator/api/training-job.ts';
import {
  BalanceStateSchema,
  driftPlansIn,
  median,
  observe,
  type PlanInput,
  planBalance,
  predictedStepSeconds,
  proportionalSplit,
  replanInterval,
  smoothed,
  stragglers,
  type WorkerEstimate,
  winsorize,
  withPlan,
} from '../../worker/balance/planner.ts';

const spec = (o: Record<string, unknown> = {}) => BalancingSpecSchema.parse({ mode: 'proportional', ...o });
const est = (
  worker: string,
  secondsPerSample: number,
  steps = 20,
  slowSince: number | null = null,
  updateSeconds = 0,
): WorkerEstimate => ({
  worker,
  secondsPerSample,
  steps,
  recent: [],
  waitSeconds: 0,
  updateSeconds,
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

test('observe: the first step starts the estimate, the second replaces it; gone workers dropped', () => {
  const first = observe(
    [],
    {
      members: ['a', 'b'],
      perWorker: [10, 20],
      computeSeconds: [1, 1],
      waitSeconds: [0, 0.5],
      updateSeconds: [0, 0.2],
    },
    0.5,
  );
  assert.equal(first, [
    {
      worker: 'a',
      secondsPerSample: 0.1,
      steps: 1,
      recent: [],
      waitSeconds: 0,
      updateSeconds: 0,
      slowSince: null,
    },
    {
      worker: 'b',
      secondsPerSample: 0.05,
      steps: 1,
      recent: [],
      waitSeconds: 0.5,
      updateSeconds: 0.2,
      slowSince: null,
    },
  ]);
  const second = observe(
    [...first, est('gone', 1)],
    {
      members: ['b', 'a'],
      perWorker: [10, 10],
      computeSeconds: [1.5, 1],
      waitSeconds: [0.1, 0],
      updateSeconds: [0.1, 0.3],
    },
    0.5,
  );
  assert.equal(
    second.map((e) => [e.worker, e.secondsPerSample, e.steps, e.updateSeconds]),
    [
      ['b', 0.15, 2, 0.1],
      ['a', 0.1, 2, 0.3],
    ],
  );
  // A rank that took no samples (or measured nothing) keeps its estimate.
  const kept = observe(
    second,
    { members: ['a'], perWorker: [0], computeSeconds: [0], waitSeconds: [0] },
    0.5,
  );
  assert.equal(kept[0]?.steps, 2);
  // An update not measured (the first step of a world) keeps the update estimate.
  const noUpdate = observe(
    [est('a', 0.01, 20, null, 0.004)],
    { members: ['a'], perWorker: [10], computeSeconds: [0.1], waitSeconds: [0], updateSeconds: [0] },
    0.5,
  );
  assert.is(noUpdate[0]?.updateSeconds, 0.004);
});

test('observe: compute goes through the median of the newest 5 steps, so a lone stall leaves no trace', () => {
  const step = (estimates: WorkerEstimate[], compute: number) =>
    observe(
      estimates,
      { members: ['a'], perWorker: [10], computeSeconds: [compute], waitSeconds: [0] },
      0.9,
      3,
    );
  let e = step([], 9); // the first step: replaced by the second
  for (const c of [0.1, 0.1, 0.1, 0.1]) e = step(e, c);
  assert.equal(e[0]?.recent, [0.01, 0.01, 0.01, 0.01]);
  const before = e[0]?.secondsPerSample;
  e = step(e, 1); // one step 10× slower
  assert.is(e[0]?.secondsPerSample, before, 'the stall is not the median');
  assert.is(e[0]?.recent.length, 5);
  for (const c of [0.2, 0.2, 0.2]) e = step(e, c); // a lasting slow-down to half speed
  assert.ok((e[0]?.secondsPerSample ?? 0) > (before ?? 0) * 1.05, `followed: ${e[0]?.secondsPerSample}`);
});

test('winsorize pulls a sample into [estimate / 2, estimate · 2]; no estimate: the sample', () => {
  const cases: [number, number, number][] = [
    [1, 1.5, 1.5],
    [1, 0.6, 0.6],
    [1, 10, 2],
    [1, 0.1, 0.5],
    [0, 3, 3],
  ];
  for (const [estimate, sample, expected] of cases)
    assert.is(winsorize(estimate, sample), expected, `${estimate} ${sample}`);
});

test('smoothed: the sample alone, then the mean within the warm-up, then a winsorized moving average', () => {
  // [estimate, sample, counted, smoothing, warmup, expected]
  const cases: [string, number, number, number, number, number, number][] = [
    ['nothing counted: the sample', 5, 1, 0, 0.9, 5, 1],
    ['warm-up: mean of 2', 1, 3, 1, 0.9, 5, 2],
    ['warm-up: mean of 4 (3 before)', 2, 6, 3, 0.9, 5, 3],
    ['warm-up over: moving average', 1, 1.5, 5, 0.9, 5, 1.05],
    ['an outlier moves it as a sample at 2× would', 1, 100, 5, 0.9, 5, 1.1],
    ['a stall-free step at 1/10 as one at 1/2', 1, 0.1, 5, 0.5, 5, 0.75],
    ['smoothing 0: the (winsorized) sample', 1, 1.5, 5, 0, 5, 1.5],
  ];
  for (const [name, estimate, sample, counted, smoothing, warmup, expected] of cases)
    assert.ok(
      Math.abs(smoothed(estimate, sample, counted, smoothing, warmup) - expected) < 1e-12,
      `${name}: ${smoothed(estimate, sample, counted, smoothing, warmup)}`,
    );
});

test('the state of an earlier version (estimates without update seconds) reads as no fixed part', () => {
  const old = BalanceStateSchema.parse({
    estimates: [{ worker: 'a', secondsPerSample: 0.01, steps: 20, waitSeconds: 0, slowSince: null }],
    lastPlanStep: 0,
    plans: [],
  });
  assert.is(old.estimates[0]?.updateSeconds, 0);
  assert.equal(old.estimates[0]?.recent, []);
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

test('proportionalSplit with fixed work per rank: every rank finishes together, u_i + b_i / w_i equal', () => {
  // weights in samples per second, offsets in seconds.
  const cases: [number, number[], number[], number, number[]][] = [
    [120, [100, 100, 50], [0, 0, 0], 1, [48, 48, 24]],
    // T = (120 + 100·0.1 + 100·0.1 + 50·0.2) / 250 = 0.6: b = 50, 50, 20.
    [120, [100, 100, 50], [0.1, 0.1, 0.2], 1, [50, 50, 20]],
    // The same fixed work everywhere changes nothing.
    [120, [100, 100, 50], [0.3, 0.3, 0.3], 1, [48, 48, 24]],
    // More fixed work than the step: the floor.
    [120, [100, 100, 50], [0, 0, 5], 10, [55, 55, 10]],
  ];
  for (const [total, weights, offsets, floor, expected] of cases) {
    const split = proportionalSplit(total, weights, floor, offsets);
    assert.equal(split, expected, `${weights} + ${offsets}`);
    assert.is(
      split.reduce((x, y) => x + y, 0),
      total,
    );
  }
});

test("predictedStepSeconds counts each rank's fixed work: max u_i + b_i·s_i", () => {
  assert.ok(Math.abs(predictedStepSeconds([48, 48, 24], [0.01, 0.01, 0.02], [0.1, 0.1, 0.2]) - 0.68) < 1e-12);
  assert.ok(Math.abs(predictedStepSeconds([50, 50, 20], [0.01, 0.01, 0.02], [0.1, 0.1, 0.2]) - 0.6) < 1e-12);
});

test('replanInterval doubles with each drift re-plan of the generation, up to 16×', () => {
  const cases: [number, number, number][] = [
    [50, 0, 50],
    [50, 1, 100],
    [50, 2, 200],
    [50, 4, 800],
    [50, 9, 800],
    [10, -1, 10],
  ];
  for (const [min, plans, expected] of cases)
    assert.is(replanInterval(min, plans), expected, `${min} ${plans}`);
});

test('planBalance: fixed update work and the re-plan backoff', () => {
  const cases: [string, Partial<PlanInput>, number[] | undefined][] = [
    [
      "the slow rank's longer update takes samples from it",
      {
        estimates: [
          est('a', 0.01, 20, null, 0.1),
          est('b', 0.01, 20, null, 0.1),
          est('c', 0.02, 20, null, 0.2),
        ],
      },
      [50, 50, 20],
    ],
    ['one drift plan this generation: 100 steps must pass', { lastPlanStep: 20, driftPlans: 1 }, undefined],
    ['… and after 100 it re-plans', { lastPlanStep: 0, driftPlans: 1 }, [48, 48, 24]],
    ['a boundary ignores the backoff', { lastPlanStep: 99, driftPlans: 4, boundary: true }, [48, 48, 24]],
  ];
  for (const [name, override, expected] of cases)
    assert.equal(planBalance({ ...base, ...override })?.perWorker, expected, name);
});

test('driftPlansIn counts the drift plans of one generation', () => {
  const plan = (generation: number, reason: 'drift' | 'generation') => ({
    step: 1,
    generation,
    perWorker: [1],
    predictedBefore: 1,
    predicted: 1,
    reason,
  });
  assert.is(
    driftPlansIn([plan(1, 'drift'), plan(2, 'generation'), plan(2, 'drift'), plan(2, 'drift')], 2),
    2,
  );
  assert.is(driftPlansIn([], 1), 0);
});

/** A seeded stream in [0, 1) (an LCG: the test needs reproducible noise, not quality). */
function noise(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 4294967296;
  };
}

/**
 * Runs the estimator and the planner as a rank does, on step times drawn with ±`jitter` uniform
 * noise and a stall (×`stall`) every `stallEvery` steps, for worker speeds that may change at a step.
 */
function simulate(options: {
  steps: number;
  jitter: number;
  stallEvery: number;
  stall: number;
  speeds: (step: number) => number[];
  seed: number;
}) {
  const s = spec({ warmupSteps: 10, minIntervalSteps: 20 });
  const members = ['a', 'b', 'c'];
  const random = noise(options.seed);
  let estimates: WorkerEstimate[] = [];
  let current = [400, 400, 400];
  let lastPlanStep = 0;
  const plans: { step: number; perWorker: number[] }[] = [];
  for (let step = 1; step <= options.steps; step++) {
    const speeds = options.speeds(step);
    const computeSeconds = current.map((b, i) => {
      const stalled = step % options.stallEvery === i ? options.stall : 1;
      return (b / (speeds[i] as number)) * (1 + options.jitter * (2 * random() - 1)) * stalled;
    });
    estimates = observe(
      estimates,
      { members, perWorker: current, computeSeconds, waitSeconds: [0, 0, 0] },
      s.smoothing,
      s.warmupSteps,
    );
    const plan = planBalance({
      spec: s,
      members,
      current,
      estimates,
      step,
      lastPlanStep,
      driftPlans: plans.length,
      boundary: false,
    });
    if (plan === undefined) continue;
    current = plan.perWorker;
    lastPlanStep = step;
    plans.push({ step, perWorker: plan.perWorker });
  }
  return { plans, current };
}

test('noise and stalls do not churn the split; a real slow-down is still followed', () => {
  // ±15 % noise and a 5× stall of each rank every 7 steps, speeds 1000 / 1000 / 500 samples/s: the
  // first plan, and at most two more in 2000 steps (the plain moving average without the backoff
  // re-planned 92 to 95 times here, about every time minIntervalSteps let it).
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) {
    const steady = simulate({
      steps: 2000,
      jitter: 0.15,
      stallEvery: 7,
      stall: 5,
      speeds: () => [1000, 1000, 500],
      seed,
    });
    assert.ok(
      steady.plans.length <= 3,
      `seed ${seed}: ${steady.plans.length} plans: ${JSON.stringify(steady.plans)}`,
    );
    const [a, b, c] = steady.current;
    assert.ok(
      Math.abs((c as number) / (((a as number) + (b as number)) / 2) - 0.5) < 0.1,
      `${steady.current}`,
    );
  }
  // Worker c drops from 500 to 200 samples/s at step 1000: the split follows it once or twice.
  const changed = simulate({
    steps: 2000,
    jitter: 0.15,
    stallEvery: 7,
    stall: 5,
    speeds: (step) => [1000, 1000, step < 1000 ? 500 : 200],
    seed: 7,
  });
  const after = changed.plans.filter((p) => p.step >= 1000);
  assert.ok(after.length >= 1 && after.length <= 3, JSON.stringify(changed.plans));
  const [a2, b2, c2] = changed.current;
  assert.ok(
    Math.abs((c2 as number) / (((a2 as number) + (b2 as number)) / 2) - 0.2) < 0.05,
    `${changed.current}`,
  );
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
