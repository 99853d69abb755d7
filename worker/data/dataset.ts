/**
 * A dataset as the trainer sees it: training and evaluation stores, the sample shape, the number of
 * classes and the fitted preprocessing — built from `spec.dataset`, whatever the format.
 *
 * Splits: idx evaluates on its own test files unless `eval.source` is `holdout`; the other formats
 * hold out `eval.fraction` of the training data, picked by a permutation seeded with `shuffleSeed`
 * (files are often sorted by label, so the tail would be a bad sample). `maxTrainSamples` keeps the
 * first N remaining training samples; `eval.maxSamples` the first M evaluation samples.
 */
import { join } from 'node:path';
import { type DatasetSpec, datasetOptions } from '../../operator/api/training-job.ts';
import type { WorkerEventOf } from '../../operator/api/worker-events.ts';
import { DatasetError } from '../errors.ts';
import { inMemory, readCsv } from './csv.ts';
import { readIdxPair } from './idx.ts';
import { readJsonl } from './jsonl.ts';
import { readMongoInto } from './mongo.ts';
import { readParquetInto } from './parquet.ts';
import {
  fitNormalization,
  fitPca,
  type Normalization,
  type Pca,
  shippedPreprocessing,
} from './preprocess.ts';
import { openRecordShards } from './records.ts';
import { isS3, localCopy } from './remote.ts';
import { epochPermutation, mixSeed } from './sampler.ts';
import { InMemoryStore, type SampleStore, SubsetStore } from './store.ts';
import type { ShardStreamStore } from './stream-store.ts';
import { cacheDirectory, readStreaming } from './streaming.ts';

export interface Dataset {
  readonly train: SampleStore;
  readonly eval: SampleStore | undefined;
  /** Shape of one raw sample. */
  readonly featureShape: readonly number[];
  readonly classes: number;
  readonly normalization: Normalization;
  readonly pca: Pca | undefined;
  /** Shape of one sample as the model sees it (after PCA: [k]). */
  readonly sampleShape: readonly number[];
  /** The streaming store under `train` (dataset.cache), for its read statistics. */
  readonly streaming?: ShardStreamStore | undefined;
  /** What a checkpoint must agree with to be resumed on this data. */
  readonly fingerprint: DatasetFingerprint;
  /** What the worker's `dataset` event says about it. */
  readonly describe: Partial<Omit<WorkerEventOf<'dataset'>, 'event'>>;
  close(): void;
}

export interface DatasetFingerprint {
  readonly trainSamples: number;
  readonly featureSize: number;
  readonly classes: number;
}

function take(store: SampleStore, count: number | undefined): SampleStore {
  if (count === undefined || count >= store.size) return store;
  return new SubsetStore(
    store,
    Uint32Array.from({ length: count }, (_, i) => i),
  );
}

/** Indices of the held-out evaluation samples and the rest (training, in file order). */
export function holdoutSplit(
  size: number,
  fraction: number,
  seed: number,
): { train: Uint32Array; eval: Uint32Array } {
  const held = Math.min(size - 1, Math.max(1, Math.round(size * fraction)));
  const order = epochPermutation(size, mixSeed(seed, 0x401d), 0);
  const isHeld = new Uint8Array(size);
  for (let i = 0; i < held; i++) isHeld[order[i] as number] = 1;
  const train = new Uint32Array(size - held);
  const evaluation = new Uint32Array(held);
  let t = 0;
  let e = 0;
  for (let i = 0; i < size; i++) {
    if (isHeld[i]) evaluation[e++] = i;
    else train[t++] = i;
  }
  return { train, eval: evaluation };
}

interface Raw {
  train: SampleStore;
  test?: SampleStore;
  featureShape: number[];
  maxLabel: number;
  close?: () => void;
  streaming?: ShardStreamStore;
}

async function readRaw(
  spec: DatasetSpec,
  progress: (message: string, fields?: object) => void,
): Promise<Raw> {
  if (spec.cache !== undefined) {
    const streamed = await readStreaming(spec, spec.cache, progress);
    return { ...streamed, streaming: streamed.train };
  }
  const options = datasetOptions(spec);
  switch (spec.format) {
    case 'idx': {
      const o = options.idx;
      const source = spec.eval.source ?? 'test';
      const train = await readIdxPair(join(spec.path, o.trainImages), join(spec.path, o.trainLabels));
      const featureSize = train.featureShape.reduce((a, b) => a * b, 1);
      let maxLabel = train.labels.reduce((a, b) => Math.max(a, b), -1);
      const raw: Raw = {
        train: InMemoryStore.of(train.images.data, train.labels, featureSize),
        featureShape: train.featureShape,
        maxLabel,
      };
      if (source === 'test') {
        const test = await readIdxPair(join(spec.path, o.testImages), join(spec.path, o.testLabels));
        if (test.featureShape.join(',') !== train.featureShape.join(',')) {
          throw new DatasetError(
            test.images.file,
            `samples of shape [${test.featureShape.join(', ')}] but the training samples are [${train.featureShape.join(', ')}]`,
          );
        }
        maxLabel = Math.max(
          maxLabel,
          test.labels.reduce((a, b) => Math.max(a, b), -1),
        );
        raw.test = InMemoryStore.of(test.images.data, test.labels, featureSize);
        raw.maxLabel = maxLabel;
      }
      return raw;
    }
    case 'csv': {
      const read = await readCsv(spec.path, options.csv, spec.featureShape, spec.classes);
      return { train: read.store, featureShape: read.featureShape, maxLabel: read.maxLabel };
    }
    case 'jsonl': {
      const read = await readJsonl(spec.path, options.jsonl, spec.featureShape, spec.classes);
      return { train: read.store, featureShape: read.featureShape, maxLabel: read.maxLabel };
    }
    case 'mongodb': {
      const read = await readMongoInto(spec.path, options.mongodb, spec.featureShape, spec.classes, inMemory);
      return { train: read.store, featureShape: read.featureShape, maxLabel: read.maxLabel };
    }
    case 'parquet': {
      const read = await readParquetInto(
        spec.path,
        options.parquet,
        spec.featureShape,
        spec.classes,
        inMemory,
      );
      return { train: read.store, featureShape: read.featureShape, maxLabel: read.maxLabel };
    }
    case 'records': {
      const shape = spec.featureShape;
      if (shape === undefined || spec.classes === undefined)
        throw new DatasetError(spec.path, 'records need dataset.featureShape and dataset.classes');
      const { store, maxLabel } = openRecordShards(spec.path, options.records, shape, spec.classes);
      return { train: store, featureShape: [...shape], maxLabel, close: () => store.close() };
    }
  }
}

export async function loadDataset(
  spec: DatasetSpec,
  progress: (message: string, fields?: object) => void,
): Promise<Dataset> {
  progress('reading dataset', { format: spec.format, path: spec.path });
  // A remote source is read from its copy in the local disk cache.
  const local = isS3(spec.path)
    ? { ...spec, path: await localCopy(spec, cacheDirectory(spec.cache), progress) }
    : spec;
  const raw = await readRaw(local, progress);
  let featureShape = raw.featureShape;
  const featureSize = raw.train.featureSize;
  if (spec.featureShape !== undefined && spec.format === 'idx') {
    const wanted = spec.featureShape.reduce((a, b) => a * b, 1);
    if (wanted !== featureSize) {
      throw new DatasetError(
        spec.path,
        `dataset.featureShape [${spec.featureShape.join(', ')}] holds ${wanted} values, the idx samples [${featureShape.join(', ')}] hold ${featureSize}`,
      );
    }
    featureShape = [...spec.featureShape];
  }
  const classes = spec.classes ?? raw.maxLabel + 1;
  if (raw.maxLabel >= classes) {
    throw new DatasetError(spec.path, `labels go up to ${raw.maxLabel}, but dataset.classes is ${classes}`);
  }
  if (classes < 2)
    throw new DatasetError(spec.path, `the labels name ${classes} class; training needs at least 2`);

  let train: SampleStore = raw.train;
  let evaluation: SampleStore | undefined = raw.test;
  if (evaluation === undefined) {
    const split = holdoutSplit(train.size, spec.eval.fraction, spec.shuffleSeed);
    evaluation = new SubsetStore(train, split.eval);
    train = new SubsetStore(train, split.train);
  }
  train = take(train, spec.maxTrainSamples);
  evaluation = take(evaluation, spec.eval.maxSamples);

  progress('fitting preprocessing', { normalize: spec.normalize, pca: spec.pca?.components ?? null });
  // Shards prepared elsewhere (the Spark job) bring their fit: the same transform as there.
  const shipped = spec.format === 'records' ? shippedPreprocessing(local.path, spec, featureSize) : undefined;
  const normalization = shipped?.normalization ?? fitNormalization(train, spec.normalize);
  const pca =
    shipped !== undefined
      ? shipped.pca
      : spec.pca === undefined
        ? undefined
        : fitPca(train, normalization, spec.pca.components, spec.shuffleSeed);
  const sampleShape = pca === undefined ? featureShape : [pca.k];
  const residentBytes = raw.train.residentBytes + (raw.test?.residentBytes ?? 0);
  return {
    train,
    eval: evaluation,
    featureShape,
    classes,
    normalization,
    pca,
    sampleShape,
    streaming: raw.streaming,
    fingerprint: { trainSamples: train.size, featureSize, classes },
    describe: {
      format: spec.format,
      trainSamples: train.size,
      evalSamples: evaluation.size,
      featureShape,
      sampleShape,
      classes,
      stored: raw.train.dtype,
      residentMiB: Math.round((residentBytes / 2 ** 20) * 10) / 10,
      ...(pca === undefined
        ? {}
        : { pcaComponents: pca.k, pcaExplained: Math.round(pca.explained * 1000) / 1000 }),
    },
    close: () => raw.close?.(),
  };
}
