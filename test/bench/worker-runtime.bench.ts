/**
 * The worker runtime's training speed against a plain tfjs loop on the same backend and model
 * (design target ≥ 0.95), wasm against cpu, and the wasm kernels this project registers against
 * their alternatives.
 *
 * Runtime and plain loop alternate in rounds and the medians are compared, so that noise from other
 * work on the machine hits both alike.
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../worker/backend/select.ts';
import {
  conv2DBackpropFilterDelegate,
  conv2DBackpropFilterNative,
  maxPoolGradNative,
  originalWasmBatchMatMul,
  originalWasmConv2DBackpropInput,
  originalWasmMaxPoolGrad,
} from '../../worker/backend/wasm-kernels.ts';
import { normalizeInPlace } from '../../worker/data/preprocess.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import type { Trainer } from '../../worker/train/trainer.ts';
import { fashion, MLP, median, model, oneWorker, round, trainer } from './training-fixture.ts';

const BATCH = 128;
const ROUNDS = 5;
const STEPS = 25;

/**
 * The loop a careful tfjs user writes: features normalised once into a Float32Array, each batch a
 * tensor over a contiguous slice of it (cheaper than the runtime's gather through the permutation),
 * optimizer.minimize over the model's variables, the loss read every step.
 */
export async function plainLoop(data: Awaited<ReturnType<typeof fashion>>) {
  const built = await model(MLP, data);
  const n = data.train.size;
  const d = data.train.featureSize;
  const features = new Float32Array(n * d);
  const labels = new Int32Array(n);
  data.train.read(
    Uint32Array.from({ length: n }, (_, i) => i),
    features,
    labels,
  );
  normalizeInPlace(data.normalization, features, n);
  const optimizer = tf.train.adam(0.001);
  const variables = built.model.trainableWeights.map((w) => w.read() as tf.Variable);
  let start = 0;
  const step = () => {
    if (start + BATCH > n) start = 0;
    const x = tf.tensor(features.subarray(start * d, (start + BATCH) * d), [BATCH, ...built.inputShape]);
    const y = tf.oneHot(tf.tensor1d(labels.subarray(start, start + BATCH), 'int32'), data.classes);
    const loss = optimizer.minimize(
      () => {
        const p = built.model.apply(x, { training: true }) as tf.Tensor;
        return tf.mean(tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(p, 1e-7, 1 - 1e-7))), 1))) as tf.Scalar;
      },
      true,
      variables,
    );
    loss?.dataSync();
    tf.dispose([x, y, loss as tf.Scalar]);
    start += BATCH;
  };
  return {
    step,
    dispose: () => {
      optimizer.dispose();
      built.model.dispose();
    },
  };
}

export async function samplesPerSecond(
  steps: number,
  step: () => unknown | Promise<unknown>,
): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < steps; i++) await step();
  return (steps * BATCH) / ((performance.now() - t) / 1000);
}

/** A trainer on `backend`, warmed up by two steps. */
async function runtimeOn(
  backend: 'wasm' | 'cpu',
  data: Awaited<ReturnType<typeof fashion>>,
): Promise<Trainer> {
  await tf.setBackend(backend);
  const t = await trainer(MLP, data);
  const local = new LocalReducer();
  for (let i = 0; i < 2; i++) await t.step(oneWorker(BATCH), local);
  return t;
}

function timeKernel(
  kernel: tf.KernelFunc,
  inputs: Record<string, tf.Tensor>,
  attrs: object,
  repeats: number,
): number {
  const backend = tf.engine().findBackend('wasm') as tf.KernelBackend;
  const infos = Object.fromEntries(
    Object.entries(inputs).map(([k, t]) => [k, { dataId: t.dataId, shape: t.shape, dtype: t.dtype }]),
  );
  const once = () => {
    const out = kernel({
      inputs: infos as tf.NamedTensorInfoMap,
      backend,
      attrs: attrs as tf.NamedAttrMap,
    }) as tf.TensorInfo;
    backend.disposeData(out.dataId);
  };
  once();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t = performance.now();
    once();
    times.push(performance.now() - t);
  }
  return median(times);
}

export default async function bench(): Promise<object> {
  const selected = await selectBackend('wasm');
  tf.enableProdMode();
  const data = await fashion(8192);
  const local = new LocalReducer();

  // Runtime vs plain loop, wasm, MLP 784-256-128-10, batch 128.
  const plain = await plainLoop(data);
  const runtime = await runtimeOn('wasm', data);
  for (let i = 0; i < 3; i++) plain.step();
  const plainRates: number[] = [];
  const runtimeRates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    plainRates.push(await samplesPerSecond(STEPS, plain.step));
    runtimeRates.push(await samplesPerSecond(STEPS, () => runtime.step(oneWorker(BATCH), local)));
  }
  plain.dispose();
  const wasmRate = median(runtimeRates);

  // The same runtime on cpu.
  const cpuTrainer = await runtimeOn('cpu', data);
  const cpuRate = await samplesPerSecond(8, () => cpuTrainer.step(oneWorker(BATCH), local));
  cpuTrainer.dispose();
  await tf.setBackend('wasm');

  // Kernels, each against its alternative: the native Conv2DBackpropFilter against delegating to
  // cpu (small batch: the cpu kernel is a scalar loop) and against the forward convolution of the
  // same size; the replacements of MaxPoolGrad, Conv2DBackpropInput and transposed BatchMatMul
  // against wasm's own kernels.
  const kernel = (name: string) => tf.getKernel(name, 'wasm')?.kernelFunc as tf.KernelFunc;
  const x = tf.randomNormal([4, 14, 14, 32]);
  const dy = tf.randomNormal([4, 14, 14, 64]);
  const convAttrs = { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 32, 64] };
  const nativeConv = timeKernel(conv2DBackpropFilterNative, { x, dy }, convAttrs, 20);
  const delegatedConv = timeKernel(conv2DBackpropFilterDelegate, { x, dy }, convAttrs, 2);
  const bx = tf.randomNormal([64, 14, 14, 32]);
  const bdy = tf.randomNormal([64, 14, 14, 64]);
  const filter = tf.randomNormal([3, 3, 32, 64]);
  const filterGradient = timeKernel(conv2DBackpropFilterNative, { x: bx, dy: bdy }, convAttrs, 5);
  const forward = timeKernel(
    kernel('Conv2D'),
    { x: bx, filter },
    { strides: 1, pad: 'same', dataFormat: 'NHWC', dilations: 1 },
    5,
  );
  const inputAttrs = { strides: 1, pad: 'same', dataFormat: 'NHWC', inputShape: [64, 14, 14, 32] };
  const inputReplacement = timeKernel(kernel('Conv2DBackpropInput'), { dy: bdy, filter }, inputAttrs, 5);
  const inputOriginal =
    originalWasmConv2DBackpropInput === undefined
      ? undefined
      : timeKernel(originalWasmConv2DBackpropInput, { dy: bdy, filter }, inputAttrs, 2);
  const px = tf.randomNormal([64, 28, 28, 32]);
  const py = tf.maxPool(px as tf.Tensor4D, 2, 2, 'valid');
  const pdy = tf.randomNormal(py.shape);
  const poolAttrs = { filterSize: 2, strides: 2, pad: 'valid' };
  const replacementPool = timeKernel(maxPoolGradNative, { dy: pdy, input: px, output: py }, poolAttrs, 10);
  const originalPool =
    originalWasmMaxPoolGrad === undefined
      ? undefined
      : timeKernel(originalWasmMaxPoolGrad, { dy: pdy, input: px, output: py }, poolAttrs, 10);
  const ma = tf.randomNormal([128, 784]);
  const mb = tf.randomNormal([128, 256]);
  const matMulAttrs = { transposeA: true, transposeB: false };
  const matMulReplacement = timeKernel(kernel('BatchMatMul'), { a: ma, b: mb }, matMulAttrs, 10);
  const matMulOriginal =
    originalWasmBatchMatMul === undefined
      ? undefined
      : timeKernel(originalWasmBatchMatMul, { a: ma, b: mb }, matMulAttrs, 5);
  tf.dispose([x, dy, bx, bdy, filter, px, py, pdy, ma, mb]);
  runtime.dispose();
  const speedup = (original: number | undefined, replacement: number) =>
    original === undefined ? null : round(original / replacement, 1);

  return {
    figures: {
      runtimeVsPlainLoop: round(wasmRate / median(plainRates)),
      wasmVsCpu: round(wasmRate / cpuRate, 2),
      conv2DBackpropFilterNativeVsCpuDelegate: round(delegatedConv / nativeConv, 1),
      conv2DBackpropFilterVsForwardConv: round(filterGradient / forward, 2),
      conv2DBackpropInputSpeedupOverWasm: speedup(inputOriginal, inputReplacement),
      maxPoolGradSpeedupOverWasm: speedup(originalPool, replacementPool),
      transposedMatMulSpeedupOverWasm: speedup(matMulOriginal, matMulReplacement),
    },
    targets: { runtimeVsPlainLoop: '>= 0.95' },
    measured: {
      model: 'mlp 784-256-128-10, adam, batch 128, Fashion-MNIST',
      plainSamplesPerSecond: plainRates.map((v) => round(v, 0)),
      runtimeSamplesPerSecond: runtimeRates.map((v) => round(v, 0)),
      cpuRuntimeSamplesPerSecond: round(cpuRate, 0),
      kernelMs: {
        conv2DBackpropFilter: {
          native: round(nativeConv, 2),
          delegatedToCpu: round(delegatedConv, 1),
          shape: 'x [4,14,14,32], filter [3,3,32,64]',
        },
        conv2DBackpropFilterBatch64: {
          native: round(filterGradient, 1),
          forwardConv: round(forward, 1),
          shape: 'x [64,14,14,32], filter [3,3,32,64]',
        },
        conv2DBackpropInput: {
          replacement: round(inputReplacement, 1),
          wasm: inputOriginal === undefined ? null : round(inputOriginal, 1),
        },
        maxPoolGrad: {
          replacement: round(replacementPool, 2),
          wasm: originalPool === undefined ? null : round(originalPool, 2),
          shape: '[64,28,28,32] pool 2',
        },
        transposedMatMul: {
          replacement: round(matMulReplacement, 2),
          wasm: matMulOriginal === undefined ? null : round(matMulOriginal, 2),
          shape: '[128,784]ᵀ·[128,256]',
        },
      },
      addedKernels: selected.addedKernels,
    },
  };
}
