import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ModelSpecSchema, OptimizerSpecSchema } from '../../operator/api/training-job.ts';
import { ModelError } from '../../worker/errors.ts';
import { buildModel, dropoutLayers, seedDropout, seedTopology } from '../../worker/model/build.ts';
import { layerAdapted, TrainingOptimizer, trustRatio } from '../../worker/train/optimizer.ts';

await tf.setBackend('cpu');
const dir = mkdtempSync(join(tmpdir(), 'tensile-model-'));
const model = (fields: object) => ModelSpecSchema.parse(fields);

async function weightsOf(fields: object, shape: number[], classes = 10): Promise<Float32Array[]> {
  const built = await buildModel(model(fields), shape, classes);
  const values = built.model.weights.map((w) => Float32Array.from(w.read().dataSync()));
  built.model.dispose();
  return values;
}

async function modelError(fields: object, shape: number[], classes = 10): Promise<string> {
  try {
    await buildModel(model(fields), shape, classes);
  } catch (error) {
    assert.instance(error, ModelError);
    return (error as Error).message;
  }
  throw new Error('expected a ModelError');
}

test('mlp: explicit layer names, flattening, softmax output', async () => {
  const built = await buildModel(
    model({ mlp: { hiddenUnits: [8, 4], dropout: 0.5, batchNorm: true } }),
    [3, 3],
    5,
  );
  assert.equal(
    built.model.layers.map((l) => l.name),
    [
      'flatten',
      'dense_1',
      'batchnorm_1',
      'activation_1',
      'dropout_1',
      'dense_2',
      'batchnorm_2',
      'activation_2',
      'dropout_2',
      'output',
    ],
  );
  assert.equal(built.model.outputs[0]?.shape, [null, 5]);
  assert.equal(built.inputShape, [3, 3]);
  assert.is(built.parameters, 9 * 8 + 8 * 2 + 8 * 4 + 4 * 2 + 4 * 5 + 5);
  built.model.dispose();
});

test('the seed fixes the initial weights', async () => {
  const a = await weightsOf({ mlp: { hiddenUnits: [6] }, seed: 1 }, [4]);
  const b = await weightsOf({ mlp: { hiddenUnits: [6] }, seed: 1 }, [4]);
  const c = await weightsOf({ mlp: { hiddenUnits: [6] }, seed: 2 }, [4]);
  assert.equal(a, b);
  assert.not.equal(a[0], c[0]);
});

test('cnn: image samples get a channel; blocks, pooling, dense head', async () => {
  const built = await buildModel(
    model({
      cnn: {
        blocks: [
          { filters: 4, kernelSize: 3, pool: 2 },
          { filters: 8, kernelSize: 3, pool: 2 },
        ],
        dense: [16],
      },
    }),
    [28, 28],
    10,
  );
  assert.equal(built.model.layers[0]?.name, 'reshape');
  assert.equal(built.model.getLayer('flatten').outputShape, [null, 7 * 7 * 8]);
  assert.equal(built.model.outputs[0]?.shape, [null, 10]);
  built.model.dispose();
});

test('cnn: flat samples and too much pooling are ModelErrors that say what to change', async () => {
  assert.match(
    await modelError({ cnn: {} }, [784]),
    /model\.cnn needs image samples .* set dataset\.featureShape/,
  );
  assert.match(
    await modelError(
      {
        cnn: {
          blocks: [
            { filters: 2, pool: 4 },
            { filters: 2, pool: 4 },
          ],
        },
      },
      [8, 8],
    ),
    /model\.cnn\.blocks\[1\]: pooling by 4 leaves no feature map/,
  );
});

function topology(classes = 3, activation = 'softmax'): object {
  const m = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [4], units: 5, activation: 'relu', name: 'hidden' }),
      tf.layers.dropout({ rate: 0.1, name: 'drop' }),
      tf.layers.dense({ units: classes, activation: activation as 'softmax', name: 'out' }),
    ],
  });
  const json = m.toJSON(null, false) as object;
  m.dispose();
  return json;
}

test('layers: an inline topology and a file build the same seeded model', async () => {
  const file = join(dir, 'model.json');
  writeFileSync(file, JSON.stringify({ modelTopology: topology(), weightsManifest: [] }));
  const inline = await weightsOf({ layers: { topology: topology() }, seed: 9 }, [2, 2], 3);
  const fromFile = await weightsOf({ layers: { path: file }, seed: 9 }, [2, 2], 3);
  const other = await weightsOf({ layers: { path: file }, seed: 10 }, [2, 2], 3);
  assert.equal(inline, fromFile);
  assert.not.equal(inline[0], other[0]);
  const built = await buildModel(model({ layers: { path: file } }), [2, 2], 3);
  assert.equal(built.inputShape, [4]);
  assert.equal(
    dropoutLayers(built.model).map((l) => l.name),
    ['drop'],
  );
  built.model.dispose();
});

test('layers: mismatches with the data and bad files are ModelErrors', async () => {
  assert.match(
    await modelError({ layers: { topology: topology(4) } }, [4], 3),
    /output has shape \[null, 4\], expected \[null, 3\]/,
  );
  assert.match(
    await modelError({ layers: { topology: topology(3, 'linear') } }, [4], 3),
    /last layer must be a softmax/,
  );
  assert.match(
    await modelError({ layers: { topology: topology() } }, [5], 3),
    /takes samples of shape \[4\], the data has \[5\]/,
  );
  assert.match(
    await modelError({ layers: { path: join(dir, 'absent.json') } }, [4], 3),
    /absent\.json: no such file/,
  );
  const junk = join(dir, 'junk.json');
  writeFileSync(junk, '{not json');
  assert.match(await modelError({ layers: { path: junk } }, [4], 3), /junk\.json: not JSON/);
  assert.match(
    await modelError({ layers: { topology: { class_name: 'Nonsense', config: {} } } }, [4], 3),
    /not a tfjs Layers topology/,
  );
  assert.match(
    await modelError({ layers: { configMap: { name: 'arch' } } }, [4], 3),
    /outside a cluster, use model\.layers\.path/,
  );
});

test('seedTopology seeds initialisers without a seed and keeps explicit ones', () => {
  const seeded = seedTopology(
    {
      a: { kernel_initializer: { class_name: 'GlorotUniform', config: { seed: null } } },
      b: { bias_initializer: { class_name: 'Zeros', config: { seed: 5 } } },
    },
    1,
  ) as {
    a: { kernel_initializer: { config: { seed: unknown } } };
    b: { bias_initializer: { config: { seed: unknown } } };
  };
  assert.type(seeded.a.kernel_initializer.config.seed, 'number');
  assert.is(seeded.b.bias_initializer.config.seed, 5);
});

test('dropout masks are a function of (seed, step, rank, micro-batch)', async () => {
  const built = await buildModel(model({ mlp: { hiddenUnits: [64], dropout: 0.5 } }), [8], 2);
  const layers = dropoutLayers(built.model);
  const x = tf.ones([4, 8]);
  const run = (step: number) => {
    seedDropout(layers, 42, step, 0, 0);
    const out = built.model.apply(x, { training: true }) as tf.Tensor;
    const values = Float32Array.from(out.dataSync());
    out.dispose();
    return values;
  };
  assert.equal(run(3), run(3));
  assert.not.equal(run(3), run(4));
  // Inference passes everything through; training drops about `rate` of the units.
  const dense = built.model.getLayer('dropout_1');
  const hidden = tf.ones([100, 64]);
  const trained = dense.apply(hidden, { training: true }) as tf.Tensor;
  const values = trained.dataSync();
  const dropped = values.filter((v) => v === 0).length / values.length;
  assert.ok(Math.abs(dropped - 0.5) < 0.05, `dropped ${dropped}`);
  assert.ok(
    values.every((v) => v === 0 || Math.abs(v - 2) < 1e-6),
    'kept units are scaled by 1/(1 − rate)',
  );
  const inferred = dense.apply(hidden) as tf.Tensor;
  assert.ok(inferred.dataSync().every((v) => v === 1));
  tf.dispose([hidden, trained, inferred]);
  x.dispose();
  built.model.dispose();
});

const optimizerCases: [string, object, () => tf.Optimizer][] = [
  ['sgd', { type: 'sgd', learningRate: 0.1 }, () => tf.train.sgd(0.1)],
  ['momentum', { type: 'momentum', learningRate: 0.1, momentum: 0.8 }, () => tf.train.momentum(0.1, 0.8)],
  ['adam', { type: 'adam', learningRate: 0.01 }, () => tf.train.adam(0.01, 0.9, 0.999, 1e-7)],
  [
    'rmsprop',
    { type: 'rmsprop', learningRate: 0.01, momentum: 0.5 },
    () => tf.train.rmsprop(0.01, 0.9, 0.5, 1e-7),
  ],
];

function gradientsFor(step: number): tf.Tensor[] {
  return [
    tf.tensor1d([0.1 * step - 0.3, 0.2, -0.5 / (step + 1)]),
    tf.tensor2d([[step % 2 ? 0.4 : -0.4, 0.05]]),
  ];
}

const resumeCases: [string, object][] = [
  ...optimizerCases.map(([name, spec]): [string, object] => [name, spec]),
  ['adamw', { type: 'adam', learningRate: 0.01, weightDecay: 0.1 }],
  ['lars', { type: 'lars', learningRate: 0.5, trustCoefficient: 0.02, weightDecay: 0.01 }],
  ['lamb', { type: 'lamb', learningRate: 0.01, weightDecay: 0.01 }],
];

for (const [name, spec, reference] of optimizerCases) {
  test(`${name}: the same updates as tf.train.${name}`, () => {
    const ours = [tf.variable(tf.tensor1d([1, 2, 3])), tf.variable(tf.tensor2d([[0.5, -0.5]]))];
    const theirs = ours.map((v) => tf.variable(v.clone()));
    const optimizer = new TrainingOptimizer(
      OptimizerSpecSchema.parse(spec),
      ours.map((variable, i) => ({ name: `w${i}`, variable })),
    );
    const tfOptimizer = reference();
    for (let step = 0; step < 5; step++) {
      const grads = gradientsFor(step);
      optimizer.apply(grads, (spec as { learningRate: number }).learningRate);
      tfOptimizer.applyGradients(theirs.map((v, i) => ({ name: v.name, tensor: grads[i] as tf.Tensor })));
      tf.dispose(grads);
    }
    ours.forEach((v, i) => {
      const a = v.dataSync();
      const b = (theirs[i] as tf.Variable).dataSync();
      a.forEach((x, j) => {
        assert.ok(Math.abs(x - (b[j] as number)) < 1e-5, `${name} w${i}[${j}]: ${x} vs ${b[j]}`);
      });
    });
    tfOptimizer.dispose();
    optimizer.dispose();
    tf.dispose([...ours, ...theirs]);
  });
}

for (const [name, spec] of resumeCases) {
  test(`${name}: a restored optimizer continues bit for bit`, () => {
    const make = () => [tf.variable(tf.tensor1d([1, 2, 3])), tf.variable(tf.tensor2d([[0.5, -0.5]]))];
    const parsed = OptimizerSpecSchema.parse(spec);
    const a = make();
    const first = new TrainingOptimizer(
      parsed,
      a.map((variable, i) => ({ name: `w${i}`, variable })),
    );
    for (let step = 0; step < 3; step++) {
      const g = gradientsFor(step);
      first.apply(g, 0.05);
      tf.dispose(g);
    }
    const saved = first.snapshot();
    const weights = a.map((v) => v.clone());
    for (let step = 3; step < 6; step++) {
      const g = gradientsFor(step);
      first.apply(g, 0.05);
      tf.dispose(g);
    }
    const b = weights.map((w) => tf.variable(w));
    const second = new TrainingOptimizer(
      parsed,
      b.map((variable, i) => ({ name: `w${i}`, variable })),
    );
    second.restore(saved);
    assert.is(second.iterations, 3);
    for (let step = 3; step < 6; step++) {
      const g = gradientsFor(step);
      second.apply(g, 0.05);
      tf.dispose(g);
    }
    a.forEach((v, i) => {
      assert.equal(v.dataSync(), (b[i] as tf.Variable).dataSync());
    });
    first.dispose();
    second.dispose();
    tf.dispose([...a, ...b]);
  });
}

/** One step of `spec` on a kernel [[3, 4]] (‖w‖ = 5) and a bias [1] with gradients [[0.6, 0.8]] (‖g‖ = 1) and [0.5]. */
function oneStep(spec: object, learningRate: number): { kernel: number[]; bias: number[] } {
  const kernel = tf.variable(tf.tensor2d([[3, 4]]));
  const bias = tf.variable(tf.tensor1d([1]));
  const optimizer = new TrainingOptimizer(OptimizerSpecSchema.parse(spec), [
    { name: 'dense/kernel', variable: kernel },
    { name: 'dense/bias', variable: bias },
  ]);
  const grads = [tf.tensor2d([[0.6, 0.8]]), tf.tensor1d([0.5])];
  optimizer.apply(grads, learningRate);
  const out = { kernel: [...kernel.dataSync()], bias: [...bias.dataSync()] };
  optimizer.dispose();
  tf.dispose([kernel, bias, ...grads]);
  return out;
}

function close(actual: number[], expected: number[], what: string): void {
  assert.is(actual.length, expected.length, what);
  actual.forEach((x, i) => {
    assert.ok(Math.abs(x - (expected[i] as number)) < 1e-5, `${what}[${i}]: ${x} vs ${expected[i]}`);
  });
}

test('trust ratio: η‖w‖/‖u‖, and 1 when a norm is 0', () => {
  const cases: [number, number, number, number][] = [
    [5, 1, 0.01, 0.05],
    [5, 1.5, 0.01, 0.05 / 1.5],
    [0, 1, 0.01, 1],
    [5, 0, 0.01, 1],
    [2, 4, 1, 0.5],
  ];
  for (const [w, u, eta, expected] of cases) assert.ok(Math.abs(trustRatio(w, u, eta) - expected) < 1e-12);
  assert.ok(layerAdapted([3, 4]));
  assert.ok(layerAdapted([3, 3, 1, 8]));
  assert.not.ok(layerAdapted([4]), 'biases and normalisation weights are excluded');
});

test('lars: a hand-computed step, biases by plain momentum', () => {
  // λ = 0.01·5/1 = 0.05 → v = 0.05·g = [0.03, 0.04]; the bias moves by lr·g.
  const plain = oneStep({ type: 'lars', learningRate: 1, trustCoefficient: 0.01 }, 1);
  close(plain.kernel, [2.97, 3.96], 'kernel');
  close(plain.bias, [0.5], 'bias');
  // β = 0.1: λ = 0.05/(1 + 0.5) and g + βw = [0.9, 1.2], the same step; the bias is not decayed.
  const decayed = oneStep({ type: 'lars', learningRate: 1, trustCoefficient: 0.01, weightDecay: 0.1 }, 1);
  close(decayed.kernel, [2.97, 3.96], 'decayed kernel');
  close(decayed.bias, [0.5], 'decayed bias');
});

test('lamb: a hand-computed first step (m̂/√v̂ = sign g), bias without trust ratio', () => {
  const plain = oneStep({ type: 'lamb', learningRate: 0.1 }, 0.1);
  const r = 5 / Math.SQRT2;
  close(plain.kernel, [3 - 0.1 * r, 4 - 0.1 * r], 'kernel');
  close(plain.bias, [0.9], 'bias');
  // β = 0.1: u = [1.3, 1.4], ratio 5/‖u‖.
  const decayed = oneStep({ type: 'lamb', learningRate: 0.1, weightDecay: 0.1 }, 0.1);
  const ru = 5 / Math.sqrt(1.3 ** 2 + 1.4 ** 2);
  close(decayed.kernel, [3 - 0.1 * ru * 1.3, 4 - 0.1 * ru * 1.4], 'decayed kernel');
  close(decayed.bias, [0.9], 'decayed bias');
});

test('weight decay: decoupled for adam (AdamW), L2 for sgd, never on biases', () => {
  // Adam's first step is lr·sign(g); AdamW adds lr·β·w.
  const adamw = oneStep({ type: 'adam', learningRate: 0.1, weightDecay: 0.1 }, 0.1);
  close(adamw.kernel, [3 - 0.1 - 0.03, 4 - 0.1 - 0.04], 'adamw kernel');
  close(adamw.bias, [0.9], 'adamw bias');
  // SGD: w − lr·(g + βw).
  const sgd = oneStep({ type: 'sgd', learningRate: 0.1, weightDecay: 0.1 }, 0.1);
  close(sgd.kernel, [3 - 0.1 * (0.6 + 0.3), 4 - 0.1 * (0.8 + 0.4)], 'sgd kernel');
  close(sgd.bias, [1 - 0.05], 'sgd bias');
});

test('restoring optimizer state of another type or shape is refused', () => {
  const v = [tf.variable(tf.zeros([2]))];
  const adam = new TrainingOptimizer(OptimizerSpecSchema.parse({ learningRate: 0.1 }), [
    { name: 'w', variable: v[0] as tf.Variable },
  ]);
  const sgd = new TrainingOptimizer(OptimizerSpecSchema.parse({ type: 'sgd', learningRate: 0.1 }), [
    { name: 'w', variable: v[0] as tf.Variable },
  ]);
  assert.throws(() => sgd.restore(adam.snapshot()), /optimizer state is for adam/);
  const other = [tf.variable(tf.zeros([3]))];
  const adam3 = new TrainingOptimizer(OptimizerSpecSchema.parse({ learningRate: 0.1 }), [
    { name: 'w', variable: other[0] as tf.Variable },
  ]);
  assert.throws(() => adam3.restore(adam.snapshot()), /shape/);
  tf.dispose([...v, ...other]);
});

test.run();
