import { DatasetSpecSchema, ModelSpecSchema, OptimizerSpecSchema } from '../../operator/api/training-job.ts';
import { type Dataset, loadDataset } from '../../worker/data/dataset.ts';
import { type BuiltModel, buildModel } from '../../worker/model/build.ts';
import type { World } from '../../worker/train/policy.ts';
import { initialTrainingState, type TrainingState } from '../../worker/train/snapshot.ts';
import { Trainer } from '../../worker/train/trainer.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';

export const FASHION = fashionMnistDir();

export async function fashion(trainSamples: number, evalSamples = 1000): Promise<Dataset> {
  return loadDataset(
    DatasetSpecSchema.parse({
      format: 'idx',
      path: FASHION,
      maxTrainSamples: trainSamples,
      eval: { maxSamples: evalSamples },
    }),
    () => undefined,
  );
}

export const MLP = { mlp: { hiddenUnits: [256, 128] }, seed: 1 };
export const CNN = { cnn: { dense: [128], dropout: 0.25 }, seed: 1 };

export async function model(spec: object, data: Dataset): Promise<BuiltModel> {
  return buildModel(ModelSpecSchema.parse(spec), data.sampleShape, data.classes);
}

export function initialState(data: Dataset): TrainingState {
  return initialTrainingState({ shuffleSeed: 1, modelSeed: 1, dataset: data.fingerprint });
}

export async function trainer(spec: object, data: Dataset): Promise<Trainer> {
  return new Trainer({
    model: await model(spec, data),
    optimizer: OptimizerSpecSchema.parse({ type: 'adam', learningRate: 0.001 }),
    dataset: data,
    maxPerWorker: undefined,
    state: initialState(data),
  });
}

export const oneWorker = (batch: number): World => ({
  generation: 0,
  rank: 0,
  size: 1,
  perWorker: [batch],
  learningRate: 0.001,
});

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export const round = (value: number, digits = 3) => Math.round(value * 10 ** digits) / 10 ** digits;
