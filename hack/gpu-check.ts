/**
 * One leg of hack/gpu-check.sh: trains the CNN of examples/fashion-mnist-cnn.yaml with the worker's
 * Trainer on the tensorflow backend for STEPS steps of BATCH samples and prints one JSON line with
 * samples/s and the backend. The shell script runs it twice, with the GPU visible and with
 * CUDA_VISIBLE_DEVICES=-1, and reads TensorFlow's device log from this process's stderr.
 *
 *   node --import tsx hack/gpu-check.ts [STEPS] [BATCH]
 */
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { parse } from 'yaml';
import { DatasetSpecSchema, ModelSpecSchema, OptimizerSpecSchema } from '../operator/api/training-job.ts';
import { initialState, oneWorker } from '../test/bench/training-fixture.ts';
import { selectBackend } from '../worker/backend/select.ts';
import { loadDataset } from '../worker/data/dataset.ts';
import { buildModel } from '../worker/model/build.ts';
import { LocalReducer } from '../worker/train/reducer.ts';
import { Trainer } from '../worker/train/trainer.ts';

const steps = Number(process.argv[2] ?? 300);
const batch = Number(process.argv[3] ?? 64);
if (!Number.isInteger(steps) || steps < 1 || !Number.isInteger(batch) || batch < 1)
  throw new Error('usage: hack/gpu-check.ts [STEPS] [BATCH] (positive integers)');

const manifest = parse(
  readFileSync(new URL('../examples/fashion-mnist-cnn.yaml', import.meta.url), 'utf8'),
) as {
  spec: { model: unknown; dataset: Record<string, unknown> };
};
const selected = await selectBackend('tensorflow');
tf.enableProdMode();
const data = await loadDataset(
  DatasetSpecSchema.parse({ ...manifest.spec.dataset, maxTrainSamples: 16_384, eval: { maxSamples: 1000 } }),
  () => undefined,
);
const model = await buildModel(ModelSpecSchema.parse(manifest.spec.model), data.sampleShape, data.classes);
const trainer = new Trainer({
  model,
  optimizer: OptimizerSpecSchema.parse({ type: 'adam', learningRate: 0.001 }),
  dataset: data,
  maxPerWorker: undefined,
  state: initialState(data),
});
const local = new LocalReducer();
const world = { ...oneWorker(batch), perWorker: [batch] };
// Warm-up: kernel selection, cuDNN autotuning and XLA/PTX compilation happen in the first steps.
for (let i = 0; i < 10; i++) await trainer.step(world, local);
const started = performance.now();
let loss = 0;
for (let i = 0; i < steps; i++) loss = (await trainer.step(world, local)).loss;
const seconds = (performance.now() - started) / 1000;
console.log(
  JSON.stringify({
    via: selected.via,
    cudaVisibleDevices: process.env['CUDA_VISIBLE_DEVICES'] ?? null,
    steps,
    batch,
    seconds: Math.round(seconds * 100) / 100,
    samplesPerSecond: Math.round((steps * batch) / seconds),
    loss: Math.round(loss * 1000) / 1000,
  }),
);
trainer.dispose();
