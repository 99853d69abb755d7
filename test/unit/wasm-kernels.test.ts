/**
 * The gradient kernels registered for wasm, each checked numerically against the cpu backend, and
 * the full gradients of the built-in models on wasm against cpu.
 */
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ModelSpecSchema } from '../../operator/api/training-job.ts';
import { selectBackend } from '../../worker/backend/select.ts';
import { registerWasmTrainingKernels } from '../../worker/backend/wasm-kernels.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { buildModel } from '../../worker/model/build.ts';

const selected = await selectBackend('wasm');

function randoms(size: number, seed: number): Float32Array {
  const next = uint32Stream(seed);
  return Float32Array.from({ length: size }, () => next() / 2 ** 31 - 1);
}

/** Runs `compute` on a backend and returns its outputs as plain arrays. */
async function on(backend: 'cpu' | 'wasm', compute: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const out = tf.tidy(compute);
  const list = Array.isArray(out) ? out : [out];
  const values = list.map((t) => t.dataSync() as Float32Array);
  tf.dispose(list);
  return values.map((v) => Float32Array.from(v));
}

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: length`);
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < actual.length; i++)
    worst = Math.max(worst, Math.abs((actual[i] as number) - (expected[i] as number)));
  assert.ok(worst <= 1e-5 * Math.max(1, scale), `${what}: max |wasm − cpu| = ${worst} (scale ${scale})`);
  assert.ok(scale > 0, `${what}: all zeros proves nothing`);
}

async function compareKernel(
  name: string,
  inputs: Record<string, { shape: number[]; seed: number }>,
  attrs: object,
) {
  const run = () => {
    const tensors: Record<string, tf.Tensor> = {};
    for (const [key, spec] of Object.entries(inputs)) {
      tensors[key] = tf.tensor(
        randoms(
          spec.shape.reduce((a, b) => a * b, 1),
          spec.seed,
        ),
        spec.shape,
      );
    }
    return tf.engine().runKernel(name, tensors as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as tf.Tensor;
  };
  const [cpu] = await on('cpu', run);
  const [wasm] = await on('wasm', run);
  assertClose(wasm as Float32Array, cpu as Float32Array, name);
}

test('the wasm backend was selected and the missing kernels registered', () => {
  assert.is(selected.backend, 'wasm');
  assert.ok(selected.addedKernels.includes('Conv2DBackpropFilter'), selected.addedKernels.join(', '));
  assert.equal(registerWasmTrainingKernels(), selected.addedKernels, 'registering twice is a no-op');
});

const convCases: [string, number[], number[], number | [number, number], 'same' | 'valid'][] = [
  ['3×3 same stride 1, one channel', [2, 8, 8, 1], [3, 3, 1, 4], 1, 'same'],
  ['3×3 valid stride 1', [2, 7, 9, 3], [3, 3, 3, 5], 1, 'valid'],
  ['3×3 same stride 2', [2, 9, 9, 2], [3, 3, 2, 3], 2, 'same'],
  ['5×5 valid stride 2 (rows left over)', [1, 12, 11, 2], [5, 5, 2, 2], 2, 'valid'],
  ['2×2 same (asymmetric padding)', [2, 6, 6, 3], [2, 2, 3, 4], 1, 'same'],
  ['1×1', [2, 5, 5, 4], [1, 1, 4, 6], 1, 'valid'],
  ['non-square strides', [1, 10, 8, 2], [3, 3, 2, 2], [2, 1], 'same'],
];
for (const [name, xShape, filterShape, strides, pad] of convCases) {
  test(`Conv2DBackpropFilter (native) matches cpu: ${name}`, async () => {
    const info = tf.backend_util.computeConv2DInfo(
      xShape as [number, number, number, number],
      filterShape as [number, number, number, number],
      strides,
      1,
      pad,
    );
    await compareKernel(
      'Conv2DBackpropFilter',
      {
        x: { shape: xShape, seed: 1 },
        dy: { shape: [info.batchSize, info.outHeight, info.outWidth, info.outChannels], seed: 2 },
      },
      { strides, pad, dataFormat: 'NHWC', filterShape },
    );
  });
}

const matMulCases: [number[], number[], boolean, boolean][] = [
  [[5, 7], [7, 3], false, false],
  [[7, 5], [7, 3], true, false],
  [[5, 7], [3, 7], false, true],
  [[7, 5], [3, 7], true, true],
  [[2, 6, 4], [2, 6, 3], true, false],
  [[2, 4, 6], [1, 3, 6], false, true],
];
for (const [aShape, bShape, transposeA, transposeB] of matMulCases) {
  test(`BatchMatMul matches cpu: [${aShape}]${transposeA ? 'ᵀ' : ''} · [${bShape}]${transposeB ? 'ᵀ' : ''}`, async () => {
    await compareKernel(
      'BatchMatMul',
      { a: { shape: aShape, seed: 12 }, b: { shape: bShape, seed: 13 } },
      { transposeA, transposeB },
    );
  });
}

const inputCases: [string, number[], number[], number, 'same' | 'valid'][] = [
  ['3×3 same (as a convolution)', [2, 8, 8, 2], [3, 3, 2, 3], 1, 'same'],
  ['3×3 valid', [2, 7, 9, 3], [3, 3, 3, 5], 1, 'valid'],
  ['2×2 same (asymmetric padding)', [2, 6, 6, 3], [2, 2, 3, 4], 1, 'same'],
  ['5×5 same', [1, 9, 9, 2], [5, 5, 2, 3], 1, 'same'],
  ['1×1', [2, 5, 5, 4], [1, 1, 4, 6], 1, 'valid'],
  ['stride 2 (wasm kernel)', [2, 8, 8, 2], [3, 3, 2, 3], 2, 'same'],
];
for (const [name, inputShape, filterShape, strides, pad] of inputCases) {
  test(`Conv2DBackpropInput matches cpu: ${name}`, async () => {
    const info = tf.backend_util.computeConv2DInfo(
      inputShape as [number, number, number, number],
      filterShape as [number, number, number, number],
      strides,
      1,
      pad,
    );
    await compareKernel(
      'Conv2DBackpropInput',
      {
        dy: { shape: [info.batchSize, info.outHeight, info.outWidth, info.outChannels], seed: 3 },
        filter: { shape: filterShape, seed: 4 },
      },
      { strides, pad, dataFormat: 'NHWC', inputShape },
    );
  });
}

const poolCases: [number[], number, number, 'valid' | 'same'][] = [
  [[2, 4, 4, 1], 2, 2, 'valid'],
  [[2, 7, 7, 2], 2, 2, 'valid'],
  [[2, 6, 6, 3], 3, 3, 'valid'],
  [[2, 6, 6, 4], 2, 2, 'same'],
  [[2, 6, 6, 3], 3, 1, 'valid'],
  [[2, 5, 5, 3], 3, 2, 'same'],
  [[1, 8, 6, 8], 2, 1, 'same'],
];
for (const [shape, size, stride, pad] of poolCases) {
  for (const kernel of ['MaxPool', 'AvgPool'] as const) {
    test(`${kernel}Grad on wasm matches cpu: [${shape}] pool ${size} stride ${stride} ${pad}`, async () => {
      const pool = (x: tf.Tensor) =>
        kernel === 'MaxPool'
          ? tf.maxPool(x as tf.Tensor4D, size, stride, pad)
          : tf.avgPool(x as tf.Tensor4D, size, stride, pad);
      const gradient = () => {
        const x = tf.tensor4d(
          randoms(
            shape.reduce((a, b) => a * b, 1),
            5,
          ),
          shape as [number, number, number, number],
        );
        // ReLU-like zeros make ties, which the first maximum of each window must win, as on cpu.
        const tied = tf.relu(x);
        const out = pool(tied);
        const w = tf.tensor(randoms(out.size, 6), out.shape);
        return tf.grad((input: tf.Tensor) => tf.sum(tf.mul(pool(input), w)))(tied);
      };
      const [cpu] = await on('cpu', gradient);
      const [wasm] = await on('wasm', gradient);
      assertClose(wasm as Float32Array, cpu as Float32Array, `${kernel}Grad`);
    });
  }
}

test('delegated kernels match cpu: depthwise convolution gradients, UnsortedSegmentSum', async () => {
  await compareKernel(
    'DepthwiseConv2dNativeBackpropFilter',
    { x: { shape: [2, 6, 6, 3], seed: 7 }, dy: { shape: [2, 6, 6, 6], seed: 8 } },
    { strides: 1, pad: 'same', dilations: 1, filterShape: [3, 3, 3, 2] },
  );
  await compareKernel(
    'DepthwiseConv2dNativeBackpropInput',
    { dy: { shape: [2, 6, 6, 6], seed: 9 }, filter: { shape: [3, 3, 3, 2], seed: 10 } },
    { strides: 1, pad: 'same', dilations: 1, inputShape: [2, 6, 6, 3] },
  );
  const segments = async (backend: 'cpu' | 'wasm') =>
    on(backend, () =>
      tf.unsortedSegmentSum(
        tf.tensor2d(randoms(12, 11), [6, 2]),
        tf.tensor1d([0, 2, 1, 2, 0, 3], 'int32'),
        4,
      ),
    );
  assertClose(
    (await segments('wasm'))[0] as Float32Array,
    (await segments('cpu'))[0] as Float32Array,
    'UnsortedSegmentSum',
  );
});

async function modelGradients(
  backend: 'cpu' | 'wasm',
  model: object,
  shape: number[],
): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const built = await buildModel(ModelSpecSchema.parse(model), shape, 5);
  const vars = built.model.trainableWeights.map((w) => w.read() as tf.Variable);
  const n = 6;
  const size = shape.reduce((a, b) => a * b, 1);
  const x = tf.tensor(randoms(n * size, 21), [n, ...shape]);
  const y = tf.oneHot(tf.tensor1d([0, 1, 2, 3, 4, 0], 'int32'), 5);
  const { value, grads } = tf.variableGrads(
    () =>
      tf.neg(
        tf.mean(tf.sum(tf.mul(y, tf.log(built.model.apply(x, { training: true }) as tf.Tensor)), 1)),
      ) as tf.Scalar,
    vars,
  );
  const out = vars.map((v) => Float32Array.from((grads[v.name] as tf.Tensor).dataSync()));
  tf.dispose([x, y, value, ...Object.values(grads)]);
  built.model.dispose();
  return out;
}

const models: [string, object, number[]][] = [
  ['mlp with batch norm', { mlp: { hiddenUnits: [16, 8], batchNorm: true, activation: 'tanh' } }, [4, 4]],
  ['mlp with selu', { mlp: { hiddenUnits: [12], activation: 'selu' } }, [10]],
  [
    'cnn with batch norm and pooling',
    {
      cnn: {
        blocks: [
          { filters: 4, kernelSize: 3, pool: 2 },
          { filters: 6, kernelSize: 3, pool: 2 },
        ],
        batchNorm: true,
        dense: [8],
        dropout: 0,
      },
    },
    [12, 12],
  ],
  [
    'cnn with elu, 5×5 kernels and 3 channels',
    { cnn: { blocks: [{ filters: 4, kernelSize: 5, pool: 3 }], dense: [], activation: 'elu', dropout: 0 } },
    [9, 9, 3],
  ],
];
for (const [name, model, shape] of models) {
  test(`the gradients of ${name} on wasm match cpu`, async () => {
    const cpu = await modelGradients('cpu', model, shape);
    const wasm = await modelGradients('wasm', model, shape);
    assert.is(wasm.length, cpu.length);
    wasm.forEach((g, i) => {
      assertClose(g, cpu[i] as Float32Array, `${name}: gradient ${i}`);
    });
  });
}

test.run();
