import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BatchSpecSchema, OptimizerSpecSchema, StoppingSpecSchema } from '../../operator/api/training-job.ts';
import {
  checkpointDue,
  evaluationDue,
  initialWarmupFactor,
  learningRateAt,
  plannedSteps,
  type ScheduleClock,
  scheduledLearningRate,
  stopReason,
  worldFor,
} from '../../worker/train/policy.ts';

const batch = (fields: object) => BatchSpecSchema.parse(fields);
const optimizer = (fields: object) => OptimizerSpecSchema.parse({ learningRate: 0.1, ...fields });
const stopping = (fields: object) => StoppingSpecSchema.parse(fields);
const clock = (step: number, fields: Partial<ScheduleClock> = {}): ScheduleClock => ({
  step,
  progress: step,
  samples: step * 100,
  trainSamples: 1000,
  globalBatch: 100,
  ...fields,
});

test('worldFor: one worker of a linear job scales the learning rate by B / B_base', () => {
  const { world, policy } = worldFor(
    { batch: batch({ global: 128, policy: 'linear' }), optimizer: optimizer({}), replicas: 4 },
    3,
    0,
    1,
    0,
    undefined,
  );
  assert.equal(world.perWorker, [32]);
  assert.is(world.generation, 3);
  assert.ok(Math.abs(world.learningRate - 0.025) < 1e-12);
  assert.is(policy.targetScale, 0.25);
});

test('worldFor: a restart with the same world keeps the rate (no warm-up)', () => {
  const spec = {
    batch: batch({ global: 128, perWorker: 64, policy: 'sqrt', warmupSteps: 10 }),
    optimizer: optimizer({}),
    replicas: 2,
  };
  const first = worldFor(spec, 0, 0, 1, 0, undefined);
  const again = worldFor(spec, 1, 0, 1, 500, first.policy);
  assert.is(again.policy.warmupSteps, 0);
  assert.ok(Math.abs(again.world.learningRate - 0.1 * Math.SQRT1_2) < 1e-12);
});

test('learningRateAt applies the policy scale, then the schedule', () => {
  const spec = optimizer({ schedule: { type: 'step', decaySteps: 10, decayRate: 0.5 } });
  const policy = {
    policy: 'linear' as const,
    targetScale: 2,
    fromScale: 1,
    warmupStart: 0,
    warmupSteps: 10,
    scale: 2,
  };
  assert.ok(Math.abs(learningRateAt(spec, policy, clock(5), 100) - 0.1 * 1.5) < 1e-12);
  assert.ok(Math.abs(learningRateAt(spec, policy, clock(20), 100) - 0.1 * 2 * 0.25) < 1e-12);
  // AdaScale: the schedule runs on scale-invariant iterations, the rescale warm-up on steps.
  const stretched = learningRateAt(spec, policy, clock(5, { progress: 20 }), 100);
  assert.ok(Math.abs(stretched - 0.1 * 1.5 * 0.25) < 1e-12);
});

test('initial warm-up: linear from startFactor over steps or epochs, then 1', () => {
  const cases: [string, object | undefined, ScheduleClock, number][] = [
    ['none', undefined, clock(0), 1],
    ['steps, first step', { steps: 10 }, clock(0), 0.1],
    ['steps, halfway', { steps: 10 }, clock(4), 0.5],
    ['steps, done', { steps: 10 }, clock(9), 1],
    ['steps, long after', { steps: 10 }, clock(500), 1],
    ['steps, start factor', { steps: 10, startFactor: 0.5 }, clock(4), 0.75],
    ['steps count scale-invariant iterations', { steps: 10 }, clock(2, { progress: 7 }), 0.8],
    // 2 epochs of 1000 samples: after this step of 100, 500 samples are done.
    ['epochs', { epochs: 2 }, clock(4), 0.25],
    ['epochs follow samples, not steps', { epochs: 2 }, clock(4, { samples: 1900 }), 1],
  ];
  for (const [name, warmup, at, expected] of cases) {
    const spec = optimizer(warmup === undefined ? {} : { warmup });
    const factor = initialWarmupFactor(spec.warmup, at);
    assert.ok(Math.abs(factor - expected) < 1e-12, `${name}: ${factor} vs ${expected}`);
  }
  const warm = optimizer({ warmup: { steps: 10 } });
  const policy = worldFor({ batch: batch({}), optimizer: warm, replicas: 1 }, 0, 0, 1, 0, undefined).policy;
  assert.ok(Math.abs(learningRateAt(warm, policy, clock(4), 100) - 0.05) < 1e-12);
});

test('stopReason: stopping.steps counts scale-invariant iterations when there are any', () => {
  const steps = stopping({ steps: 100 });
  assert.is(stopReason(steps, { step: 40, epoch: 0, progress: 99.5 }, null), undefined);
  assert.is(stopReason(steps, { step: 41, epoch: 0, progress: 102 }, null), 'completed 100 steps');
  assert.is(stopReason(steps, { step: 100, epoch: 0 }, null), 'completed 100 steps');
});

const schedules: [string, object, number, number][] = [
  ['constant', {}, 1000, 0.1],
  ['step', { schedule: { type: 'step', decaySteps: 100, decayRate: 0.5 } }, 250, 0.025],
  [
    'exponential',
    { schedule: { type: 'exponential', decaySteps: 100, decayRate: 0.5 } },
    50,
    0.1 * Math.SQRT1_2,
  ],
  ['cosine midway', { schedule: { type: 'cosine', minLearningRate: 0.02 } }, 500, 0.06],
  ['cosine at the end', { schedule: { type: 'cosine', minLearningRate: 0.02 } }, 1000, 0.02],
  ['cosine past the end stays at the floor', { schedule: { type: 'cosine' } }, 1500, 0],
];
for (const [name, fields, step, expected] of schedules) {
  test(`schedule ${name}: step ${step} → ${expected}`, () => {
    const lr = scheduledLearningRate(optimizer(fields), 0.1, step, 1000);
    assert.ok(Math.abs(lr - expected) < 1e-12, `got ${lr}`);
  });
}

test('plannedSteps takes whichever of epochs and steps ends first', () => {
  assert.is(plannedSteps(stopping({ epochs: 2 }), 60000, 128), 938);
  assert.is(plannedSteps(stopping({ epochs: 2, steps: 100 }), 60000, 128), 100);
  assert.is(plannedSteps(stopping({ steps: 7 }), 60000, 128), 7);
});

test('plannedSteps counts the smaller steps of a batch-size ramp-up, each epoch ending on its own', () => {
  // Half the batch for the first 1,000 samples (the whole first epoch), then all of it.
  const ramped = batch({ global: 100, rampUp: { start: 50, increment: 50, samples: 1000 } });
  assert.is(
    plannedSteps(stopping({ epochs: 2 }), 1000, 100, { batch: ramped, perWorker: [60, 40] }),
    20 + 10,
  );
  // Batches 20, 40, 60, 80 for 375 samples each, then 100: epoch 0 is 19·20 + 10·40 + 4·60 (its
  // last step short), epoch 1 is 3·60 + 4·80 + 5·100, epoch 2 is 10·100.
  const staged = batch({ global: 100, rampUp: { start: 20, increment: 20, samples: 1500 } });
  assert.is(
    plannedSteps(stopping({ epochs: 3 }), 1000, 100, { batch: staged, perWorker: [100] }),
    33 + 12 + 10,
  );
  assert.is(
    plannedSteps(stopping({ epochs: 2, steps: 25 }), 1000, 100, { batch: ramped, perWorker: [100] }),
    25,
  );
  assert.is(
    plannedSteps(stopping({ epochs: 2 }), 1000, 100, { batch: batch({ global: 100 }), perWorker: [100] }),
    20,
  );
});

const stops: [string, object, { step: number; epoch: number }, object | null, RegExp | undefined][] = [
  ['epochs done', { epochs: 2 }, { step: 938, epoch: 2 }, null, /2 epochs/],
  ['epochs not done', { epochs: 2 }, { step: 937, epoch: 1 }, null, undefined],
  ['steps done', { steps: 10 }, { step: 10, epoch: 0 }, null, /10 steps/],
  [
    'target reached now',
    { epochs: 5, targetAccuracy: 0.9 },
    { step: 50, epoch: 0 },
    { step: 50, accuracy: 0.91 },
    /0\.9100/,
  ],
  [
    'target reached at an older evaluation',
    { epochs: 5, targetAccuracy: 0.9 },
    { step: 51, epoch: 0 },
    { step: 50, accuracy: 0.91 },
    undefined,
  ],
  [
    'target not reached',
    { epochs: 5, targetAccuracy: 0.9 },
    { step: 50, epoch: 0 },
    { step: 50, accuracy: 0.89 },
    undefined,
  ],
];
for (const [name, spec, progress, evaluation, expected] of stops) {
  test(`stopReason: ${name}`, () => {
    const lastEval =
      evaluation === null
        ? null
        : { epoch: 0, loss: 0.3, samples: 100, ...(evaluation as { step: number; accuracy: number }) };
    const reason = stopReason(stopping(spec), progress, lastEval);
    if (expected === undefined) assert.is(reason, undefined);
    else assert.match(reason ?? '', expected);
  });
}

test('evaluationDue: interval, epoch end, run end', () => {
  assert.ok(evaluationDue(100, 200, false, false));
  assert.not.ok(evaluationDue(100, 201, false, false));
  assert.ok(evaluationDue(100, 201, true, false));
  assert.ok(evaluationDue(100, 201, false, true));
});

const clocks: [string, object, { step: number; lastStep: number; lastTime: number; now: number }, boolean][] =
  [
    ['interval crossed', { intervalSteps: 50 }, { step: 50, lastStep: 0, lastTime: 0, now: 1 }, true],
    ['interval not crossed', { intervalSteps: 50 }, { step: 49, lastStep: 0, lastTime: 0, now: 1 }, false],
    [
      'a delayed checkpoint keeps the grid',
      { intervalSteps: 50 },
      { step: 100, lastStep: 53, lastTime: 0, now: 1 },
      true,
    ],
    [
      'no double checkpoint at one step',
      { intervalSteps: 50 },
      { step: 50, lastStep: 50, lastTime: 0, now: 1 },
      false,
    ],
    ['seconds elapsed', { intervalSeconds: 10 }, { step: 3, lastStep: 1, lastTime: 0, now: 10_000 }, true],
    [
      'seconds not elapsed',
      { intervalSeconds: 10 },
      { step: 3, lastStep: 1, lastTime: 0, now: 9_999 },
      false,
    ],
  ];
for (const [name, spec, clock, expected] of clocks) {
  test(`checkpointDue: ${name}`, () => {
    assert.is(checkpointDue(spec, clock), expected);
  });
}

test.run();
