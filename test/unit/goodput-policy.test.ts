import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type ClusterJob,
  clusterShares,
  divideCluster,
  type ShareInput,
} from '../../operator/api/goodput-cluster.ts';
import {
  fitThroughput,
  gradientNoiseScale,
  predictStepSeconds,
  predictThroughput,
  solveLinear,
  statisticalEfficiency,
  type ThroughputModel,
  type ThroughputSample,
} from '../../operator/api/goodput-model.ts';
import {
  batchBounds,
  candidateBatches,
  clampBatch,
  decideGoodput,
  describeOptions,
  type GoodputInput,
  notableOptions,
  replicaCap,
} from '../../operator/api/goodput-policy.ts';

const close = (actual: number, expected: number, tolerance: number, what: string) =>
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${what}: ${actual}, expected ${expected} ± ${tolerance}`,
  );

/** Step times of a known model, so the fit has something true to find. */
const truth = { fixed: 0.002, perSample: 0.0001, perReplica: 0.004 };
const timeOf = (n: number, b: number) => truth.fixed + truth.perSample * b + truth.perReplica * (n - 1);
const sample = (replicas: number, perWorkerBatch: number, steps = 100, noise = 0): ThroughputSample => ({
  replicas,
  perWorkerBatch,
  stepSeconds: timeOf(replicas, perWorkerBatch) * (1 + noise),
  steps,
});

test('solveLinear solves, pivots, and says when a system is singular', () => {
  assert.equal(
    solveLinear(
      [
        [2, 1],
        [1, 3],
      ],
      [3, 5],
    )?.map((x) => Math.round(x * 1e9) / 1e9),
    [0.8, 1.4],
  );
  assert.equal(
    solveLinear(
      [
        [0, 1],
        [1, 0],
      ],
      [2, 3],
    ),
    [3, 2],
  );
  assert.is(
    solveLinear(
      [
        [1, 2],
        [2, 4],
      ],
      [1, 2],
    ),
    undefined,
  );
});

test('fitThroughput recovers the three terms from varied worlds and batches', () => {
  const samples = [sample(1, 64), sample(1, 128), sample(2, 64), sample(4, 32), sample(3, 96)];
  const model = fitThroughput(samples) as ThroughputModel;
  close(model.fixedSeconds, truth.fixed, 2e-4, 'fixed');
  close(model.perSampleSeconds, truth.perSample, 2e-6, 'per sample');
  close(model.perReplicaSeconds, truth.perReplica, 2e-4, 'per replica');
  assert.is(model.maxObservedReplicas, 4);
  assert.ok(model.replicasIdentified);
  for (const s of samples)
    close(predictStepSeconds(model, s.replicas, s.perWorkerBatch), s.stepSeconds, 1e-4, 'fit');
});

test('fitThroughput with few points: what the samples cannot tell apart stays 0', () => {
  const cases: { name: string; samples: ThroughputSample[]; check: (m: ThroughputModel) => void }[] = [
    {
      name: 'one point: all per-sample, synchronisation free',
      samples: [sample(1, 128)],
      check: (m) => {
        close(m.perSampleSeconds * 128 + m.fixedSeconds, timeOf(1, 128), 1e-5, 'reproduces the point');
        close(m.fixedSeconds, 0, 1e-4, 'fixed');
        assert.is(m.perReplicaSeconds, 0);
        assert.not.ok(m.replicasIdentified);
      },
    },
    {
      name: 'one world size, two batches: fixed and per-sample, no synchronisation term',
      samples: [sample(2, 32), sample(2, 128)],
      check: (m) => {
        close(m.perSampleSeconds, truth.perSample, 1e-6, 'per sample');
        assert.ok(m.perReplicaSeconds >= 0);
        close(predictStepSeconds(m, 2, 64), timeOf(2, 64), 1e-4, 'between the points');
      },
    },
    {
      name: 'faster with more workers at the same batch (noise): coefficients stay ≥ 0',
      samples: [
        { replicas: 1, perWorkerBatch: 64, stepSeconds: 0.02, steps: 10 },
        { replicas: 2, perWorkerBatch: 64, stepSeconds: 0.018, steps: 10 },
      ],
      check: (m) => {
        assert.ok(m.fixedSeconds >= 0 && m.perSampleSeconds >= 0 && m.perReplicaSeconds >= 0);
        assert.is(m.perReplicaSeconds, 0);
      },
    },
    {
      name: 'noisy samples: close to the truth still',
      samples: [
        sample(1, 64, 50, 0.05),
        sample(2, 64, 50, -0.04),
        sample(4, 64, 50, 0.03),
        sample(2, 128, 50, 0.02),
      ],
      check: (m) => close(predictStepSeconds(m, 3, 64), timeOf(3, 64), 0.002, 'interpolated'),
    },
  ];
  for (const c of cases) {
    const model = fitThroughput(c.samples);
    assert.ok(model !== undefined, c.name);
    c.check(model as ThroughputModel);
  }
  assert.is(fitThroughput([]), undefined);
  assert.is(fitThroughput([{ replicas: 1, perWorkerBatch: 8, stepSeconds: 0, steps: 5 }]), undefined);
});

test('noise scale and statistical efficiency (Pollux: (φ + M₀)/(φ + M))', () => {
  // σ² of a 128-sample gradient 0.01, ‖G‖² 0.005: tr(Σ) = 1.28, φ = 256 samples.
  close(gradientNoiseScale({ sigma2: 0.01, mu2: 0.005 }, 128) as number, 256, 1e-9, 'φ');
  assert.is(gradientNoiseScale(undefined, 128), undefined);
  const table: [number | undefined, number, number, number][] = [
    [undefined, 1024, 128, 1],
    [256, 128, 128, 1],
    [256, 256, 128, 384 / 512],
    [256, 1024, 128, 384 / 1280],
    [1e12, 4096, 128, 1],
    [0, 256, 128, 0.5],
  ];
  for (const [phi, batch, base, expected] of table)
    close(statisticalEfficiency(phi, batch, base), expected, 1e-6, `φ ${phi} M ${batch}`);
});

test('candidateBatches follows the rescale policy, or tries powers of two in a range', () => {
  assert.equal(candidateBatches({ kind: 'fixed', global: 128 }, 4), [128]);
  assert.equal(candidateBatches({ kind: 'fixed', global: 2 }, 4), []);
  assert.equal(candidateBatches({ kind: 'perWorker', perWorker: 32 }, 3), [96]);
  assert.equal(candidateBatches({ kind: 'range', min: 100, max: 600 }, 2), [100, 128, 256, 512, 600]);
  assert.equal(candidateBatches({ kind: 'range', min: 1, max: 4 }, 8), []);
});

const settings = { minIntervalSeconds: 60, threshold: 0.05, explorationFactor: 2 };
const base = (o: Partial<GoodputInput> = {}): GoodputInput => {
  const samples = o.samples ?? [sample(1, 128)];
  return {
    current: 1,
    min: 1,
    max: 8,
    baseBatch: 128,
    batch: { kind: 'fixed', global: 128 },
    samples,
    model: fitThroughput(samples),
    noiseScale: undefined,
    settings,
    lastChangeMs: undefined,
    nowMs: 1_000_000,
    pending: 0,
    ...o,
  };
};

test('replicaCap: the range, the cluster, pending workers and how far the model is trusted', () => {
  assert.is(replicaCap(base()), 2, 'measured 1 → explore up to 2');
  assert.is(
    replicaCap(base({ samples: [sample(3, 40)], model: fitThroughput([sample(3, 40)]), current: 3 })),
    6,
  );
  assert.is(replicaCap(base({ max: 1 })), 1);
  assert.is(replicaCap(base({ capacity: 1, current: 1 })), 1);
  assert.is(replicaCap(base({ pending: 1 })), 1, 'pending: no growth');
  assert.is(replicaCap(base({ settings: { ...settings, explorationFactor: 8 } })), 8);
});

test('decideGoodput: table of situations', () => {
  const measured = [sample(1, 128), sample(2, 64), sample(4, 32), sample(2, 128)];
  const cases: { name: string; input: GoodputInput; replicas: number; changed: boolean; reason: RegExp }[] = [
    {
      name: 'nothing measured',
      input: base({ samples: [], model: undefined }),
      replicas: 1,
      changed: false,
      reason: /no step times/,
    },
    {
      name: 'start at minReplicas, compute-bound: grows to the explored bound',
      input: base(),
      replicas: 2,
      changed: true,
      reason: /1 → 2 worker\(s\), global batch 128: goodput .* \(\+\d+ %\)/,
    },
    {
      name: 'current size not measured yet: wait',
      input: base({ current: 2 }),
      replicas: 2,
      changed: false,
      reason: /waiting for step times of 2/,
    },
    {
      name: 'within the minimum interval: hold, and say when to look again',
      input: base({ lastChangeMs: 1_000_000 - 10_000 }),
      replicas: 1,
      changed: false,
      reason: /minimum interval/,
    },
    {
      name: 'workers pending: no growth',
      input: base({ pending: 1 }),
      replicas: 1,
      changed: false,
      reason: /best within the threshold/,
    },
    {
      name: 'fixed batch 128, measured 1/2/4: the model picks the peak (t = 0.002 + b/10⁴ + 0.004(N−1))',
      input: base({ samples: measured, model: fitThroughput(measured), current: 4, max: 8 }),
      // step(N) = 0.002 + 0.0128/N + 0.004(N−1): 1: 0.0148, 2: 0.0124, 3: 0.0143 → 2 is best.
      replicas: 2,
      changed: true,
      reason: /4 → 2 worker/,
    },
    {
      name: 'a small gain under the threshold: stay',
      input: base({
        samples: measured,
        model: fitThroughput(measured),
        current: 4,
        settings: { ...settings, threshold: 0.5 },
      }),
      // 2 workers: 0.0124 s per step against 0.0172 at 4, +39 % < 50 %.
      replicas: 4,
      changed: false,
      reason: /4 worker\(s\) is best within the threshold/,
    },
    {
      name: 'per-worker batch with a small noise scale: a larger world loses efficiency, stays at 1',
      input: base({
        batch: { kind: 'perWorker', perWorker: 128 },
        noiseScale: 16,
        samples: [sample(1, 128), sample(2, 128)],
        model: fitThroughput([sample(1, 128), sample(2, 128)]),
      }),
      replicas: 1,
      changed: false,
      reason: /1 worker\(s\) is best/,
    },
    {
      name: 'per-worker batch with a large noise scale: grows',
      input: base({
        batch: { kind: 'perWorker', perWorker: 128 },
        noiseScale: 100_000,
        samples: [sample(1, 128), sample(2, 128)],
        model: fitThroughput([sample(1, 128), sample(2, 128)]),
      }),
      replicas: 4,
      changed: true,
      reason: /1 → 4 worker/,
    },
    {
      name: 'a spec whose range moved under the current size: clamped at once',
      input: base({ current: 9, max: 6 }),
      replicas: 6,
      changed: true,
      reason: /outside \[1, 6\]/,
    },
  ];
  for (const c of cases) {
    const d = decideGoodput(c.input);
    assert.is(d.replicas, c.replicas, `${c.name}: ${d.reason}`);
    assert.is(d.changed, c.changed, `${c.name}: ${d.reason}`);
    assert.match(d.reason, c.reason, c.name);
  }
});

test('decideGoodput with a batch range: the batch is chosen too, and a better batch alone is a change', () => {
  const measured = [sample(1, 128), sample(2, 64), sample(4, 32), sample(2, 128)];
  const model = fitThroughput(measured);
  const range = { kind: 'range', min: 64, max: 1024 } as const;
  const cases: {
    name: string;
    input: Partial<GoodputInput>;
    replicas: number;
    globalBatch: number;
    changed: boolean;
    reason: RegExp;
  }[] = [
    {
      // Efficiency ≈ 1 at any batch: the largest batch amortises the fixed and synchronisation terms.
      name: 'huge noise scale: the largest batch, and more workers',
      input: { noiseScale: 1e7, current: 2, currentBatch: 128 },
      replicas: 5,
      globalBatch: 1024,
      changed: true,
      reason: /2 → 5 worker\(s\), global batch 128 → 1024/,
    },
    {
      // (φ + 128)/(φ + 64) = 1.8 at φ = 16: a small batch is worth more per sample than time saved.
      // ... and at 64 samples a second worker's synchronisation costs more than its half batch saves.
      name: 'small noise scale: the smallest batch, on fewer workers',
      input: { noiseScale: 16, current: 2, currentBatch: 128 },
      replicas: 1,
      globalBatch: 64,
      changed: true,
      reason: /2 → 1 worker\(s\), global batch 128 → 64/,
    },
    {
      name: 'one size allowed: the batch alone changes',
      input: { noiseScale: 1e7, current: 1, max: 1, currentBatch: 128 },
      replicas: 1,
      globalBatch: 1024,
      changed: true,
      reason: /1 → 1 worker\(s\), global batch 128 → 1024/,
    },
    {
      name: 'already at the best batch: stays, and says at which batch',
      input: { noiseScale: 1e7, current: 1, max: 1, currentBatch: 1024 },
      replicas: 1,
      globalBatch: 1024,
      changed: false,
      reason: /1 worker\(s\) at global batch 1024 is best within the threshold/,
    },
    {
      name: 'a better batch under the threshold: stays at the current one',
      input: {
        noiseScale: 1e7,
        current: 1,
        max: 1,
        currentBatch: 900,
        settings: { ...settings, threshold: 0.2 },
      },
      replicas: 1,
      globalBatch: 900,
      changed: false,
      reason: /at global batch 900 is best within the threshold/,
    },
  ];
  for (const c of cases) {
    const d = decideGoodput(base({ samples: measured, model, batch: range, ...c.input }));
    assert.is(d.replicas, c.replicas, `${c.name}: ${d.reason}`);
    assert.is(d.globalBatch, c.globalBatch, `${c.name}: ${d.reason}`);
    assert.is(d.changed, c.changed, `${c.name}: ${d.reason}`);
    assert.match(d.reason, c.reason, c.name);
    // Whatever it picks is the best option there is, within the threshold.
    const best = Math.max(...d.options.map((o) => o.goodput));
    const picked = d.options.find((o) => o.replicas === d.replicas && o.globalBatch === d.globalBatch);
    if (d.changed) assert.ok(picked !== undefined && picked.goodput >= best * (1 - 1e-9), c.name);
  }
});

test('clampBatch keeps a batch in bounds and gives every worker a sample', () => {
  const bounds = { min: 64, max: 1024 };
  assert.is(clampBatch(10, 2, bounds), 64);
  assert.is(clampBatch(5000, 2, bounds), 1024);
  assert.is(clampBatch(300.4, 2, bounds), 300);
  assert.is(clampBatch(64, 100, bounds), 100);
  assert.equal(batchBounds({ minGlobalBatch: 64, maxGlobalBatch: 1024 }), bounds);
  assert.is(batchBounds({ minGlobalBatch: 64 }), undefined);
});

test('decideGoodput: the interval names when to look again; options predict every size considered', () => {
  const held = decideGoodput(base({ lastChangeMs: 990_000 }));
  assert.is(held.retryAtMs, 1_050_000);
  assert.equal(
    held.options.map((o) => o.replicas),
    [1, 2],
  );
  const model = fitThroughput([sample(1, 128)]) as ThroughputModel;
  for (const o of held.options)
    close(o.throughput, predictThroughput(model, o.replicas, 128), 1e-6, 'throughput');
});

test('decideGoodput does not flap: after moving, the same measurements keep it where it went', () => {
  const measured = [sample(1, 128), sample(2, 64), sample(4, 32)];
  const first = decideGoodput(base({ samples: measured, model: fitThroughput(measured), current: 4 }));
  assert.ok(first.changed);
  const again = decideGoodput(
    base({ samples: measured, model: fitThroughput(measured), current: first.replicas, lastChangeMs: 0 }),
  );
  assert.is(again.replicas, first.replicas);
  assert.not.ok(again.changed);
});

test('a reason names at most 12 options: the best and the current size', () => {
  const many = Array.from({ length: 40 }, (_, i) => ({
    replicas: i + 1,
    globalBatch: 128,
    stepSeconds: 1,
    throughput: 1,
    efficiency: 1,
    goodput: 100 - Math.abs(i + 1 - 30),
  }));
  const text = describeOptions(many, 2);
  assert.match(text, /^2: 72, 25: 95, 26: 96, .*35: 95 \(and 28 more\)$/);
  assert.is(notableOptions(many, 30, 12).length, 12);
  assert.is(notableOptions(many.slice(0, 5), 1).length, 5);
});

test('divideCluster: minimums in priority order, the fairness floor, then the largest gain in speedup', () => {
  const linear = (n: number) => Array.from({ length: n }, (_, i) => 100 * (i + 1));
  const flat = (n: number) => Array.from({ length: n }, () => 100);
  const saturating = [100, 180, 240, 270, 280, 280, 280, 280];
  const table: [string, ClusterJob[], number, Record<string, number>][] = [
    [
      'one job that scales takes everything',
      [{ id: 'a', min: 1, max: 16, goodput: linear(16) }],
      16,
      { a: 16 },
    ],
    [
      'a job that does not scale keeps its minimum; the other takes the rest',
      [
        { id: 'flat', min: 1, max: 16, goodput: flat(16) },
        { id: 'lin', min: 1, max: 16, goodput: linear(16) },
      ],
      8,
      { flat: 1, lin: 7 },
    ],
    [
      'two saturating jobs split evenly',
      [
        { id: 'a', min: 1, max: 8, goodput: saturating },
        { id: 'b', min: 1, max: 8, goodput: saturating },
      ],
      8,
      { a: 4, b: 4 },
    ],
    [
      'minimums that do not all fit: the later job waits',
      [
        { id: 'a', min: 3, max: 4, goodput: linear(4) },
        { id: 'b', min: 2, max: 4, goodput: linear(4) },
      ],
      4,
      { a: 4, b: 0 },
    ],
    ['a job never exceeds its max', [{ id: 'a', min: 1, max: 3, goodput: linear(3) }], 16, { a: 3 }],
  ];
  for (const [name, jobs, capacity, expected] of table)
    assert.equal(Object.fromEntries(divideCluster(jobs, capacity, { fairnessFloor: 0.8 })), expected, name);
  // A job that gains little per GPU: without a floor the greedy phase starves it down to its minimum,
  // with one it keeps 0.8 of its goodput at the fair share (4 GPUs: 16; 14 at 3 is the first ≥ 12.8).
  const uneven: ClusterJob[] = [
    { id: 'big', min: 1, max: 8, goodput: [100, 300, 600, 1000, 1500, 2100, 2800, 3600] },
    { id: 'small', min: 1, max: 8, goodput: [10, 12, 14, 16, 18, 20, 22, 24] },
  ];
  assert.equal(Object.fromEntries(divideCluster(uneven, 8, { fairnessFloor: 0 })), { big: 7, small: 1 });
  assert.equal(Object.fromEntries(divideCluster(uneven, 8, { fairnessFloor: 0.8 })), { big: 5, small: 3 });
});

test('clusterShares: a job not measured keeps what it runs; the others are divided by their options', () => {
  const options = (goodput: number[], from = 1) =>
    goodput.map((g, i) => ({ replicas: from + i, goodput: g }));
  const table: [string, ShareInput[], number, Record<string, number>][] = [
    [
      'two that scale alike share evenly',
      [
        { id: 'a', min: 1, max: 8, current: 2, options: options([100, 190, 270, 340, 400, 450, 490, 520]) },
        { id: 'b', min: 1, max: 8, current: 6, options: options([100, 190, 270, 340, 400, 450, 490, 520]) },
      ],
      8,
      { a: 4, b: 4 },
    ],
    [
      'a newcomer keeps its workers, the measured job gets the rest',
      [
        { id: 'old', min: 1, max: 8, current: 8, options: options([100, 200, 300, 400, 500, 600, 700, 800]) },
        { id: 'new', min: 1, max: 4, current: 2, options: [] },
      ],
      8,
      { old: 6, new: 2 },
    ],
    [
      'the model is trusted as far as its options go (explored to 2)',
      [{ id: 'a', min: 1, max: 8, current: 1, options: options([100, 200]) }],
      8,
      { a: 2 },
    ],
    [
      // Fair share 4: speedups over 340 and 800; b's +0.25 a GPU beats a's +0.24, +0.18, …
      'options from minReplicas 2: each its minimum, then GPUs to the larger gain in speedup',
      [
        { id: 'a', min: 2, max: 6, current: 4, options: options([200, 280, 340, 380, 400], 2) },
        { id: 'b', min: 2, max: 6, current: 2, options: options([400, 600, 800, 1000, 1200], 2) },
      ],
      8,
      { a: 2, b: 6 },
    ],
  ];
  for (const [name, jobs, capacity, expected] of table) {
    const shares = clusterShares(jobs, capacity, { fairnessFloor: 0.5 });
    assert.equal(Object.fromEntries(shares), expected, name);
    assert.ok([...shares.values()].reduce((a, b) => a + b, 0) <= capacity, `${name}: fits`);
  }
});

test('decideGoodput above its share: down to the best size within it at once, interval or not', () => {
  const measured = [sample(1, 128), sample(2, 64), sample(4, 32)];
  const model = fitThroughput(measured);
  const over = decideGoodput(
    base({ samples: measured, model, current: 4, capacity: 2, lastChangeMs: 1_000_000 - 1000 }),
  );
  assert.is(over.replicas, 2, over.reason);
  assert.ok(over.changed);
  assert.match(over.reason, /4 → 2 worker\(s\): over its share of the cluster \(2\)/);
  // Within its share: the usual rules (the interval holds a change).
  const within = decideGoodput(
    base({ samples: measured, model, current: 2, capacity: 2, lastChangeMs: 1_000_000 - 1000 }),
  );
  assert.is(within.replicas, 2);
  assert.not.ok(within.changed);
});

test.run();
