/**
 * The train step as one TensorFlow function (worker/train/native-step.ts) against tfjs's per-op tape,
 * on the native backend: the same model, seeds, batch and dropout masks give the same gradients,
 * loss and correct count to float rounding, for an MLP and a CNN; models the function does not cover
 * keep the per-op path and say why; a run on the function path repeats bit for bit; a step function
 * TensorFlow refuses to run hands over to the per-op tape at its first run.
 *
 * Needs @tensorflow/tfjs-node built by hack/install-tensorflow.sh (npm test runs it).
 */
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ModelSpecSchema, OptimizerSpecSchema } from '../../operator/api/training-job.ts';
import { selectBackend } from '../../worker/backend/select.ts';
import type { Dataset } from '../../worker/data/dataset.ts';
import { fitNormalization } from '../../worker/data/preprocess.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { InMemoryStore } from '../../worker/data/store.ts';
import { buildModel } from '../../worker/model/build.ts';
import { TrainingOptimizer } from '../../worker/train/optimizer.ts';
import type { World } from '../../worker/train/policy.ts';
import type { GradientReducer } from '../../worker/train/reducer.ts';
import { initialTrainingState } from '../../worker/train/snapshot.ts';
import { Trainer } from '../../worker/train/trainer.ts';

const selected = await selectBackend('tensorflow');
assert.is(selected.backend, 'tensorflow');

const SIDE = 12;

/** Images with a class-dependent bright row, plus noise: [SIDE, SIDE] samples, 4 classes. */
function images(count: number, seed: number): InMemoryStore {
  const next = uint32Stream(seed);
  const size = SIDE * SIDE;
  const features = new Float32Array(count * size);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    labels[i] = i % 4;
    for (let j = 0; j < size; j++)
      features[i * size + j] = (Math.floor(j / SIDE) === 2 * (i % 4) ? 1 : 0) + next() / 2 ** 32 - 0.5;
  }
  return InMemoryStore.of(features, labels, size);
}

function dataset(): Dataset {
  const train = images(256, 1);
  return {
    train,
    eval: images(64, 2),
    featureShape: [SIDE, SIDE],
    classes: 4,
    normalization: fitNormalization(train, 'none'),
    pca: undefined,
    sampleShape: [SIDE, SIDE],
    fingerprint: { trainSamples: 256, featureSize: SIDE * SIDE, classes: 4 },
    describe: {},
    close: () => undefined,
  };
}

const MLP = { mlp: { hiddenUnits: [32, 16], dropout: 0.2 }, seed: 3 };
const CNN = {
  cnn: {
    blocks: [
      { filters: 4, kernelSize: 3, pool: 2 },
      { filters: 8, kernelSize: 3, pool: 2 },
    ],
    dense: [16],
    dropout: 0.25,
  },
  seed: 3,
};

async function trainer(model: object, stepFunction: boolean, data = dataset()): Promise<Trainer> {
  const built = await buildModel(ModelSpecSchema.parse(model), data.sampleShape, data.classes);
  return new Trainer({
    model: built,
    optimizer: OptimizerSpecSchema.parse({ type: 'adam', learningRate: 0.01 }),
    dataset: data,
    maxPerWorker: undefined,
    state: initialTrainingState({ shuffleSeed: 5, modelSeed: 7, dataset: data.fingerprint }),
    stepFunction,
  });
}

/** A world of one whose reducer keeps a copy of every fused buffer (gradients, loss, correct). */
class Recording implements GradientReducer {
  readonly buffers: Float32Array[] = [];
  async allReduce(buffer: Float32Array): Promise<Float32Array> {
    this.buffers.push(buffer.slice());
    return buffer;
  }
  async allGather(bytes: Uint8Array): Promise<Uint8Array[]> {
    return [bytes];
  }
}

const world = (batch: number): World => ({
  generation: 0,
  rank: 0,
  size: 1,
  perWorker: [batch],
  learningRate: 0.01,
});

/** Largest |a − b| relative to the largest |b|, over the gradient part of the buffers. */
function relativeError(a: Float32Array, b: Float32Array, length: number): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < length; i++) {
    worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
    scale = Math.max(scale, Math.abs(b[i] as number));
  }
  assert.ok(scale > 0, 'the gradients are not all zero');
  return worst / scale;
}

async function compare(model: object): Promise<void> {
  const fast = await trainer(model, true);
  const slow = await trainer(model, false);
  assert.is(fast.stepPath.path, 'function');
  assert.equal(slow.stepPath, { path: 'per-op', reason: 'turned off (stepFunction: false)' });
  const a = new Recording();
  const b = new Recording();
  // Three steps, the last with a batch of another size: the weights moved by Adam stay together too.
  for (const batch of [32, 32, 20]) {
    const ra = await fast.step(world(batch), a);
    const rb = await slow.step(world(batch), b);
    assert.ok(
      Math.abs(ra.loss - rb.loss) < 1e-5 * Math.max(1, Math.abs(rb.loss)),
      `loss ${ra.loss} vs ${rb.loss}`,
    );
    assert.is(ra.accuracy, rb.accuracy);
  }
  // The gradients, the loss and the correct count; the step times after them differ between runs.
  const length = fast.gradientSize + 2;
  a.buffers.forEach((buffer, i) => {
    const error = relativeError(buffer, b.buffers[i] as Float32Array, length);
    assert.ok(error < 1e-4, `step ${i}: gradients differ by ${error} of their largest`);
  });
  fast.dispose();
  slow.dispose();
}

test('an MLP with dropout: the function gives the per-op gradients, loss and accuracy', async () => {
  await compare(MLP);
});

test('a CNN with dropout: the function gives the per-op gradients, loss and accuracy', async () => {
  await compare(CNN);
});

test('the function path repeats bit for bit, and leaks no tensors', async () => {
  const run = async () => {
    const t = await trainer(CNN, true);
    const reducer = new Recording();
    await t.step(world(32), reducer);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) await t.step(world(32), reducer);
    assert.is(tf.memory().numTensors, before, 'tensors per step');
    const checksum = t.weightsChecksum();
    t.dispose();
    return checksum;
  };
  assert.is(await run(), await run());
});

test("Adam's update as one function equals the per-op update bit for bit, weight decay included", async () => {
  const shapes = [[5, 3], [3], [2, 2, 1, 4]];
  const next = uint32Stream(9);
  const random = (shape: number[]) =>
    tf.tensor(
      Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => next() / 2 ** 32 - 0.5),
      shape,
    );
  const start = shapes.map(random);
  const gradients = [0, 1, 2].map(() => shapes.map(random));
  const run = (fused: boolean) => {
    const weights = start.map((t, i) => ({ name: `w${i}`, variable: tf.variable(t.clone()) }));
    const spec = OptimizerSpecSchema.parse({ type: 'adam', learningRate: 0.01, weightDecay: 0.1 });
    const optimizer = new TrainingOptimizer(spec, weights, fused);
    assert.is(optimizer.updatePath, fused ? 'function' : 'per-op');
    for (const [step, g] of gradients.entries()) optimizer.apply(g, 0.01 * (step + 1));
    const out = optimizer.snapshot();
    const values = weights.map((w) => Array.from(w.variable.dataSync()));
    optimizer.dispose();
    for (const w of weights) w.variable.dispose();
    return { values, slots: Array.from(out.slots.buffer) };
  };
  const fused = run(true);
  const perOp = run(false);
  assert.equal(fused.values, perOp.values);
  assert.equal(fused.slots, perOp.slots);
  assert.not.equal(fused.values[0], Array.from(start[0]?.dataSync() ?? []), 'the weights moved');
  tf.dispose([...start, ...gradients.flat()]);
});

test('a model the function does not cover keeps the per-op path, with the reason', async () => {
  const t = await trainer({ mlp: { hiddenUnits: [8], batchNorm: true }, seed: 3 }, true);
  assert.equal(t.stepPath, { path: 'per-op', reason: 'the model has non-trainable weights' });
  const tanh = await trainer({ mlp: { hiddenUnits: [8], activation: 'tanh' }, seed: 3 }, true);
  assert.is(tanh.stepPath.path, 'per-op');
  assert.match(tanh.stepPath.reason ?? '', /activation tanh/);
  t.dispose();
  tanh.dispose();
});

test('a step function TensorFlow cannot run falls back to the per-op tape at its first run, once, saying why', async () => {
  // Dense on a rank-3 input (tfjs applies it to the last axis): the checks let it through, the graph
  // registers, and TensorFlow's MatMul refuses the rank-3 operand when the function first runs.
  const build = () => {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({
          inputShape: [SIDE, SIDE],
          units: 6,
          activation: 'relu',
          kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        }),
        tf.layers.flatten(),
        tf.layers.dense({
          units: 4,
          activation: 'softmax',
          kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
        }),
      ],
    });
    return { model, inputShape: [SIDE, SIDE], kind: 'layers', parameters: model.countParams() } as const;
  };
  const data = dataset();
  const reasons: string[] = [];
  const make = (stepFunction: boolean) =>
    new Trainer({
      model: build(),
      optimizer: OptimizerSpecSchema.parse({ type: 'adam', learningRate: 0.01 }),
      dataset: data,
      maxPerWorker: undefined,
      state: initialTrainingState({ shuffleSeed: 5, modelSeed: 7, dataset: data.fingerprint }),
      stepFunction,
      onStepFallback: (reason) => reasons.push(reason),
    });
  const failing = make(true);
  const perOp = make(false);
  assert.is(failing.stepPath.path, 'function', 'the checks let this model through');
  for (let i = 0; i < 3; i++) {
    const a = await failing.step(world(32), new Recording());
    const b = await perOp.step(world(32), new Recording());
    assert.is(a.loss, b.loss, `step ${i}: the per-op tape took over from the first step`);
  }
  assert.is(reasons.length, 1, 'told once');
  assert.match(reasons[0] ?? '', /^the step function failed: .*In\[0\] ndims must be >= 2/);
  assert.equal(failing.stepPath, { path: 'per-op', reason: reasons[0] });
  assert.is(failing.weightsChecksum(), perOp.weightsChecksum());
  failing.dispose();
  perOp.dispose();
});

test.run();
