import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BatchSpecSchema, OptimizerSpecSchema } from '../../operator/api/training-job.ts';
import { epochPermutation, planStep, type SamplerPosition } from '../../worker/data/sampler.ts';
import { worldShape } from '../../worker/rescale/policy.ts';
import { rampedBatches, rampUpBatch } from '../../worker/rescale/ramp-up.ts';
import { stepWorld, type World } from '../../worker/train/policy.ts';

const batch = (fields: object) => BatchSpecSchema.parse(fields);

test('rampUpBatch: start, then + increment at evenly spaced samples, then global', () => {
  // 128 → 512 by 128: 3 stages over 3000 samples, one every 1000.
  const ramp = { start: 128, increment: 128, samples: 3000 };
  const cases: [number, number][] = [
    [0, 128],
    [999, 128],
    [1000, 256],
    [2500, 384],
    [3000, 512],
    [1_000_000, 512],
  ];
  for (const [samples, expected] of cases)
    assert.is(rampUpBatch(ramp, 512, samples, 60_000), expected, `${samples}`);
  // An increment that does not divide the gap: the last stage stops at global.
  assert.is(rampUpBatch({ start: 100, increment: 300, samples: 100 }, 512, 60, 1000), 400);
  assert.is(rampUpBatch({ start: 100, increment: 300, samples: 100 }, 512, 100, 1000), 512);
  // Epochs count the training set: 2 epochs of 1000 samples, 3 stages.
  assert.is(rampUpBatch({ start: 128, increment: 128, epochs: 2 }, 512, 700, 1000), 256);
});

test('rampedBatches: fixedGlobalBatch splits the ramped batch; other policies shrink by the same fraction', () => {
  const fixed = batch({ global: 512, rampUp: { start: 128, increment: 128, samples: 3000 } });
  assert.equal(rampedBatches(fixed, [256, 256], 0, 60_000), { perWorker: [64, 64], fraction: 0.25 });
  assert.equal(rampedBatches(fixed, [256, 256], 5000, 60_000), { perWorker: [256, 256], fraction: 1 });
  const linear = batch({
    global: 512,
    policy: 'linear',
    perWorker: 256,
    rampUp: { start: 128, increment: 128, samples: 3000 },
  });
  // Four ranks of 256 (B = 1024) at a quarter: 256 in all.
  assert.equal(rampedBatches(linear, [256, 256, 256, 256], 0, 60_000), {
    perWorker: [64, 64, 64, 64],
    fraction: 0.25,
  });
  assert.equal(rampedBatches(batch({ global: 512 }), [256, 256], 0, 60_000).fraction, 1, 'no ramp');
});

test('the ramp-up keeps exactly-once per epoch across every stage and a rescale', () => {
  const size = 1000;
  const spec = batch({ global: 96, rampUp: { start: 16, increment: 16, samples: 1500 } });
  let position: SamplerPosition = { epoch: 0, cursor: 0 };
  let samples = 0;
  const seen = new Map<number, number[]>();
  for (let step = 0; position.epoch < 3; step++) {
    const workers = step < 40 ? 3 : 2; // a rescale in the middle of the ramp
    const full = worldShape(spec, 3, workers, step, undefined).perWorker;
    const { perWorker } = rampedBatches(spec, full, samples, size);
    const plan = planStep(size, position, perWorker);
    const order = epochPermutation(size, 7, plan.epoch);
    const list = seen.get(plan.epoch) ?? [];
    for (const share of plan.shares) list.push(...order.subarray(share.start, share.start + share.count));
    seen.set(plan.epoch, list);
    samples += plan.samples;
    position = plan.next;
  }
  for (const [epoch, list] of seen) {
    assert.is(list.length, size, `epoch ${epoch}`);
    assert.is(new Set(list).size, size, `epoch ${epoch} once each`);
  }
});

test('stepWorld: ramped batches, the rate following the policy, AdaScale S of the batch taken', () => {
  const optimizer = OptimizerSpecSchema.parse({ learningRate: 0.1 });
  const ramp = { start: 64, increment: 64, samples: 1000 };
  const cases: [string, object, number, number, number | undefined][] = [
    // name, batch spec, samples done, expected rate, expected AdaScale S
    [
      'linear, first stage',
      { global: 256, policy: 'linear', perWorker: 128, rampUp: ramp },
      0,
      0.1 * 2 * 0.25,
      undefined,
    ],
    [
      'linear, done',
      { global: 256, policy: 'linear', perWorker: 128, rampUp: ramp },
      1000,
      0.1 * 2,
      undefined,
    ],
    [
      'sqrt, first stage',
      { global: 256, policy: 'sqrt', perWorker: 128, rampUp: ramp },
      0,
      0.1 * Math.SQRT2 * 0.5,
      undefined,
    ],
    ['fixedGlobalBatch keeps the rate', { global: 256, rampUp: ramp }, 0, 0.1, undefined],
    ['adascale', { global: 256, policy: 'adascale', perWorker: 128, rampUp: ramp }, 0, 0.1, 0.5],
  ];
  for (const [name, fields, samples, rate, scale] of cases) {
    const spec = batch(fields);
    const shape = worldShape(spec, 2, 4, 0, undefined);
    const world: World = {
      generation: 0,
      rank: 0,
      size: 4,
      perWorker: shape.perWorker,
      learningRate: 0,
      ...(spec.policy === 'adascale'
        ? { adascale: { baseBatch: 256, scale: shape.state.scale, smoothing: 0.9 } }
        : {}),
    };
    const next = stepWorld(
      optimizer,
      spec,
      world,
      { step: 0, samples, dataset: { trainSamples: 1000 }, policy: shape.state },
      100,
    );
    assert.ok(Math.abs(next.learningRate - rate) < 1e-12, `${name}: rate ${next.learningRate}`);
    if (scale !== undefined) assert.ok(Math.abs((next.adascale?.scale ?? 0) - scale) < 1e-12, name);
    assert.is(world.perWorker.length, next.perWorker.length, name);
  }
});

test.run();
