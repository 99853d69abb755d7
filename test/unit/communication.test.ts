import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CommunicationSpecSchema } from '../../operator/api/training-job.ts';
import { fromBf16Bits, toBf16Bits } from '../../worker/collective/fp16.ts';
import {
  hookFor,
  PowerSgdHook,
  type ReduceContext,
  TopkHook,
} from '../../worker/train/communication/hooks.ts';
import { averagingDue, outerStep, weightedDelta } from '../../worker/train/communication/local-sgd.ts';
import {
  allGatherBytes,
  lowRank,
  multiply,
  multiplyTransposed,
  orthonormalizeColumns,
  ringAllReduceBytes,
  seededNormal,
  sparseResidual,
  topkIndices,
} from '../../worker/train/communication/math.ts';
import { Sparsifier, topkDensity } from '../../worker/train/communication/sparse.ts';
import type { GradientReducer } from '../../worker/train/reducer.ts';
import {
  decodeSnapshot,
  encodeSnapshot,
  fusedLayout,
  initialTrainingState,
} from '../../worker/train/snapshot.ts';
import { InProcessWorld } from '../helpers/in-process-reducer.ts';

test('top-k picks the largest magnitudes, ties by position, ascending', () => {
  const v = Float32Array.from([0.1, -5, 3, 0, -3, 2, 5]);
  assert.equal([...topkIndices(v, 3)], [1, 2, 6]);
  // |3| = |-3|: the earlier one wins the last place.
  assert.equal([...topkIndices(v, 4)], [1, 2, 4, 6]);
  assert.equal([...topkIndices(v, 0)], []);
  assert.equal([...topkIndices(v, 7)], [0, 1, 2, 3, 4, 5, 6]);
  assert.equal([...topkIndices(v, 99)].length, 7);
});

test('top-k agrees with sorting on random data', () => {
  const v = seededNormal(42, new Float32Array(5001));
  const k = 50;
  const expected = [...v.keys()]
    .sort((a, b) => Math.abs(v[b] as number) - Math.abs(v[a] as number) || a - b)
    .slice(0, k)
    .sort((a, b) => a - b);
  assert.equal([...topkIndices(v, k)], expected);
});

test('sent entries plus the residual give back the accumulated gradient', () => {
  const acc = Float32Array.from([1, -2, 3, -4]);
  const sent = topkIndices(acc, 2);
  const residual = new Float32Array(4);
  sparseResidual(acc, sent, residual);
  assert.equal([...residual], [1, -2, 0, 0]);
});

test('bf16 keeps the upper 16 bits, rounding to nearest even', () => {
  assert.is(fromBf16Bits(toBf16Bits(1)), 1);
  assert.is(fromBf16Bits(toBf16Bits(-2.5)), -2.5);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  assert.is(fromBf16Bits(toBf16Bits(1 + 2 ** -8)), 1);
  assert.is(fromBf16Bits(toBf16Bits(1 + 3 * 2 ** -8)), 1 + 2 ** -6);
  assert.is(fromBf16Bits(toBf16Bits(1e38)) > 9.9e37, true, 'no overflow where fp16 would');
  assert.ok(Number.isNaN(fromBf16Bits(toBf16Bits(Number.NaN))));
  assert.is(fromBf16Bits(toBf16Bits(Number.POSITIVE_INFINITY)), Number.POSITIVE_INFINITY);
});

test('matrix products match the definitions', () => {
  // M [2×3], Q [3×2]
  const m = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const q = Float32Array.from([1, 0, 0, 1, 1, 1]);
  const p = new Float32Array(4);
  multiply(m, 2, 3, q, 2, p);
  assert.equal([...p], [4, 5, 10, 11]);
  const qt = new Float32Array(6);
  multiplyTransposed(m, 2, 3, Float32Array.from([1, 0, 0, 1]), 2, qt);
  assert.equal([...qt], [1, 4, 2, 5, 3, 6]);
  const out = new Float32Array(6);
  lowRank(Float32Array.from([1, 0, 0, 1]), 2, qt, 3, 2, out);
  assert.equal([...out], [1, 2, 3, 4, 5, 6]);
});

test('orthonormalised columns are orthonormal; a dependent column becomes zero', () => {
  const rows = 50;
  const r = 4;
  const p = seededNormal(7, new Float32Array(rows * r));
  // Column 3 = 2 × column 0: linearly dependent.
  for (let i = 0; i < rows; i++) p[i * r + 3] = 2 * (p[i * r] as number);
  orthonormalizeColumns(p, rows, r);
  const dot = (a: number, b: number) => {
    let s = 0;
    for (let i = 0; i < rows; i++) s += (p[i * r + a] as number) * (p[i * r + b] as number);
    return s;
  };
  for (let a = 0; a < 3; a++)
    for (let b = 0; b < 3; b++) assert.ok(Math.abs(dot(a, b) - (a === b ? 1 : 0)) < 1e-5, `<${a},${b}>`);
  assert.ok(Math.abs(dot(3, 3)) < 1e-6, 'the dependent column is dropped, not divided by ~0');
});

test('wire bytes of a ring all-reduce and of an all-gather of ring broadcasts', () => {
  assert.is(ringAllReduceBytes(1000, 4, 1), 0);
  assert.is(ringAllReduceBytes(1000, 4, 2), 4000);
  assert.is(ringAllReduceBytes(900, 4, 3), 4800);
  // Rank 0 of 3 forwards roots 0 and 2, not root 1 (its right neighbour, whose ring ends at rank 0).
  assert.is(allGatherBytes([10, 20, 30], 0), 40);
  assert.is(allGatherBytes([10, 20], 1), 20);
});

function contexts(
  world: InProcessWorld,
  fused: Float32Array[],
  gradientLength: number,
  shape: number[],
  step = 0,
) {
  const { specs } = fusedLayout([{ name: 'w', shape }]);
  return fused.map(
    (f, rank): ReduceContext => ({
      fused: f,
      gradientLength,
      specs,
      weight: 1 / fused.length,
      step,
      seed: 1,
      rank,
      size: fused.length,
      reducer: world.forRank(rank) as GradientReducer,
    }),
  );
}

test('top-k with ratio ½ sums what the ranks sent, the tail exactly; all ranks get the same bits', async () => {
  const world = new InProcessWorld(2);
  const a = Float32Array.from([5, 0, 0, 1, /* tail */ 7]);
  const b = Float32Array.from([0, 0, 4, 3, /* tail */ 0.5]);
  const hooks = [
    new TopkHook({ ratio: 0.5, errorFeedback: true }),
    new TopkHook({ ratio: 0.5, errorFeedback: true }),
  ];
  const ctx = contexts(world, [a, b], 4, [4]);
  const sums = await Promise.all(hooks.map((h, i) => h.reduce(ctx[i] as ReduceContext)));
  assert.equal([...(sums[0] as Float32Array)], [5, 0, 4, 4, 7.5]);
  assert.equal([...(sums[0] as Float32Array)], [...(sums[1] as Float32Array)]);
  assert.is(hooks[0]?.lastWireBytes, 4 * (2 * 2 + 1));
});

test('top-k error feedback: over many steps the applied sum tracks the true sum', async () => {
  const world = new InProcessWorld(2);
  const n = 100;
  const g = [seededNormal(1, new Float32Array(n)), seededNormal(2, new Float32Array(n))];
  const hooks = [
    new TopkHook({ ratio: 0.05, errorFeedback: true }),
    new TopkHook({ ratio: 0.05, errorFeedback: true }),
  ];
  const applied = new Float32Array(n);
  const steps = 200;
  for (let s = 0; s < steps; s++) {
    const fused = g.map((x) => Float32Array.from([...x, 0]));
    const ctx = contexts(world, fused, n, [n], s);
    const [sum] = await Promise.all(hooks.map((h, i) => h.reduce(ctx[i] as ReduceContext)));
    for (let i = 0; i < n; i++) applied[i] = (applied[i] as number) + ((sum as Float32Array)[i] as number);
  }
  // Without feedback the small entries would never be sent; with it, what is held back stays bounded.
  let worst = 0;
  for (let i = 0; i < n; i++) {
    const truth = steps * ((g[0]?.[i] as number) + (g[1]?.[i] as number));
    worst = Math.max(worst, Math.abs((applied[i] as number) - truth) / steps);
  }
  assert.ok(worst < 0.5, `mean per-step deviation ${worst}`);
});

test('PowerSGD at full rank reproduces the sum of the matrices', async () => {
  const world = new InProcessWorld(2);
  const rows = 6;
  const cols = 4;
  const settings = {
    rank: 4,
    warmStart: true,
    errorFeedback: true,
    startAfterSteps: 0,
    minCompressionRate: 0,
  };
  const hooks = [new PowerSgdHook(settings), new PowerSgdHook(settings)];
  const m = [seededNormal(3, new Float32Array(rows * cols)), seededNormal(4, new Float32Array(rows * cols))];
  const fused = m.map((x) => Float32Array.from([...x, 2]));
  const ctx = contexts(world, fused, rows * cols, [rows, cols]);
  const sums = await Promise.all(hooks.map((h, i) => h.reduce(ctx[i] as ReduceContext)));
  for (let i = 0; i < rows * cols; i++) {
    const truth = (m[0]?.[i] as number) + (m[1]?.[i] as number);
    assert.ok(Math.abs(((sums[0] as Float32Array)[i] as number) - truth) < 1e-4, `element ${i}`);
  }
  assert.is((sums[0] as Float32Array)[rows * cols], 4, 'the tail is summed exactly');
  assert.equal([...(sums[0] as Float32Array)], [...(sums[1] as Float32Array)]);
});

test('PowerSGD rank 1 with error feedback converges on a fixed rank-2 gradient; Q is shared state', async () => {
  const world = new InProcessWorld(2);
  const rows = 20;
  const cols = 10;
  const settings = {
    rank: 1,
    warmStart: true,
    errorFeedback: true,
    startAfterSteps: 2,
    minCompressionRate: 1,
  };
  const hooks = [new PowerSgdHook(settings), new PowerSgdHook(settings)];
  const u = seededNormal(5, new Float32Array(rows * 2));
  const v = seededNormal(6, new Float32Array(cols * 2));
  const full = new Float32Array(rows * cols);
  lowRank(u, rows, v, cols, 2, full);
  const applied = new Float32Array(rows * cols);
  const steps = 60;
  let bytes = 0;
  for (let s = 0; s < steps; s++) {
    const fused = [0, 1].map(() => Float32Array.from([...full.map((x) => x / 2), 0]));
    const ctx = contexts(world, fused, rows * cols, [rows, cols], s);
    const [sum] = await Promise.all(hooks.map((h, i) => h.reduce(ctx[i] as ReduceContext)));
    for (let i = 0; i < applied.length; i++)
      applied[i] = (applied[i] as number) + ((sum as Float32Array)[i] as number);
    if (s === 0) assert.is(hooks[0]?.lastWireBytes, ringAllReduceBytes(rows * cols + 1, 4, 2), 'plain first');
    if (s === steps - 1) bytes = hooks[0]?.lastWireBytes ?? 0;
  }
  let err = 0;
  let norm = 0;
  for (let i = 0; i < full.length; i++) {
    err += ((applied[i] as number) / steps - (full[i] as number)) ** 2;
    norm += (full[i] as number) ** 2;
  }
  assert.ok(
    Math.sqrt(err / norm) < 0.1,
    `relative error of the mean applied gradient ${Math.sqrt(err / norm)}`,
  );
  assert.is(bytes, ringAllReduceBytes(rows + 1, 4, 2) + ringAllReduceBytes(cols, 4, 2));
  const shared = hooks[0]?.sharedState();
  assert.ok(shared !== undefined);
  assert.equal(
    [...(shared?.buffer ?? [])],
    [...(hooks[1]?.sharedState()?.buffer ?? [])],
    'every rank holds the same Q',
  );
  const restored = new PowerSgdHook(settings);
  restored.restoreShared(shared as NonNullable<typeof shared>);
  assert.equal([...(restored.sharedState()?.buffer ?? [])], [...(shared?.buffer ?? [])]);
});

test('local SGD: plain averaging and DiLoCo outer Nesterov', () => {
  const anchor = Float32Array.from([1, 1]);
  const d0 = new Float32Array(2);
  const d1 = new Float32Array(2);
  weightedDelta(anchor, Float32Array.from([0, 3]), 0.5, d0);
  weightedDelta(anchor, Float32Array.from([2, 1]), 0.5, d1);
  const delta = Float32Array.from([
    (d0[0] as number) + (d1[0] as number),
    (d0[1] as number) + (d1[1] as number),
  ]);
  const plain = anchor.slice();
  outerStep(plain, delta, () => true, undefined, undefined);
  assert.equal([...plain], [1, 2], 'the mean of the ranks’ weights');
  const momentum = Float32Array.from([0.5, 0]);
  const outer = anchor.slice();
  outerStep(outer, delta, (i) => i === 0, { learningRate: 0.5, momentum: 0.9 }, momentum);
  // i = 0: Δ = 0, m = 0.45, w = 1 − 0.5·(0 + 0.9·0.45); i = 1 is non-trainable: plain.
  assert.ok(Math.abs((outer[0] as number) - (1 - 0.5 * 0.9 * 0.45)) < 1e-6);
  assert.is(outer[1], 2);
  assert.ok(Math.abs((momentum[0] as number) - 0.45) < 1e-6);
  assert.ok(averagingDue(8, 4, false));
  assert.not.ok(averagingDue(9, 4, false));
  assert.ok(averagingDue(9, 4, true));
});

test('communication settings: defaults, and each mode gets its strategy', () => {
  const spec = CommunicationSpecSchema.parse({});
  assert.is(spec.compression, 'none');
  assert.is(spec.localSteps, 1);
  for (const compression of ['none', 'fp16', 'bf16', 'topk', 'powersgd'] as const)
    assert.is(hookFor(CommunicationSpecSchema.parse({ compression })).kind, compression);
});

test('a snapshot carries the shared communication state through its files', () => {
  const state = initialTrainingState({
    shuffleSeed: 1,
    modelSeed: 2,
    dataset: { trainSamples: 10, featureSize: 4, classes: 2 },
  });
  const communication = {
    specs: [{ name: 'powersgd/w/Q', shape: [3], offset: 0, size: 3 }],
    buffer: Float32Array.from([1, 2, 3]),
  };
  const empty = { specs: [], buffer: new Float32Array(0) };
  const snapshot = {
    producer: 'test',
    topology: {},
    weights: empty,
    optimizer: { type: 'sgd', iterations: 0, slots: empty },
    state,
    communication,
  };
  const decoded = decodeSnapshot(encodeSnapshot(snapshot));
  assert.equal([...(decoded.communication?.buffer ?? [])], [1, 2, 3]);
  assert.is(decoded.communication?.specs[0]?.name, 'powersgd/w/Q');
  const without = decodeSnapshot(encodeSnapshot({ ...snapshot, communication: undefined }));
  assert.is(without.communication, undefined);
});

test('top-k density warm-up: from 25 % down to the ratio, exponentially, then the ratio', () => {
  assert.is(topkDensity(0.01, 100, 0), 0.25);
  assert.ok(Math.abs(topkDensity(0.01, 100, 50) - 0.05) < 1e-12, 'the geometric mean half-way');
  assert.is(topkDensity(0.01, 100, 100), 0.01);
  assert.is(topkDensity(0.01, 0, 0), 0.01, 'no warm-up');
  assert.is(topkDensity(0.4, 100, 0), 0.4, 'a ratio above the start is used as it is');
});

test('a residual carries over only to the step it belongs to', () => {
  const s = new Sparsifier({ ratio: 0.25, errorFeedback: true, warmupSteps: 0 });
  const g = Float32Array.from([4, 1, 2, 3]);
  const first = s.select(g, 7);
  assert.equal([...first.indices], [0]);
  s.commit(first, 7);
  assert.equal([...(s.pending ?? [])], [0, 1, 2, 3]);
  // Step 8 sees the residual: 3 + 3 beats 4.
  assert.equal([...s.select(g, 8).indices], [3]);
  assert.equal([...s.select(g, 9).indices], [0], 'at another step the residual is not added');
  s.keepAt(8);
  assert.ok(s.pending !== undefined, 'kept at its own step');
  s.keepAt(5);
  assert.is(s.pending, undefined, 'dropped at another');
});

test.run();
