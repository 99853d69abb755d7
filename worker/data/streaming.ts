/**
 * `dataset.cache`: every format read through the streaming store. Record shards are streamed as they
 * are; idx, csv and jsonl are converted once into shards (convert.ts, cached by content hash) and
 * streamed from there. The training split gets 7/8 of the memory budget, idx test files the rest.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DatasetCache, type DatasetSpec, datasetOptions } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import {
  type ConvertedMeta,
  cachedConversion,
  contentHash,
  ShardWriteError,
  ShardWriter,
} from './convert.ts';
import { readCsvInto } from './csv.ts';
import { type IdxHeader, readIdx, streamIdx } from './idx.ts';
import { readJsonlInto } from './jsonl.ts';
import { mongoFingerprint, readMongoInto } from './mongo.ts';
import { readParquetInto } from './parquet.ts';
import { scanRecordShards } from './records.ts';
import { ShardStreamStore } from './stream-store.ts';

export interface StreamingRaw {
  train: ShardStreamStore;
  test?: ShardStreamStore;
  featureShape: number[];
  maxLabel: number;
  close: () => void;
}

export function cacheDirectory(cache: DatasetCache | undefined): string {
  return cache?.directory ?? join(tmpdir(), 'tensile-dataset-cache');
}

type Described = Omit<ConvertedMeta, 'version' | 'key'>;

/** One idx images/labels pair into shards, streaming the images (the labels are N bytes). */
async function convertIdxPair(
  imagesFile: string,
  labelsFile: string,
  folder: string,
): Promise<{ header: IdxHeader; records: number; maxLabel: number; dtype: 'uint8' | 'float32' }> {
  const labels = await readIdx(labelsFile);
  if (labels.dims.length !== 1 || !(labels.data instanceof Uint8Array))
    throw new DatasetError(labelsFile, 'expected one dimension of unsigned-byte labels');
  const labelBytes = labels.data;
  let writer: ShardWriter | undefined;
  let sample = Buffer.alloc(0);
  let filled = 0;
  let index = 0;
  const header = await streamIdx(
    imagesFile,
    (h) => {
      if (h.dims.length < 2)
        throw new DatasetError(imagesFile, `expected dimensions [N, ...], got [${h.dims.join(', ')}]`);
      if (h.dims[0] !== labelBytes.length)
        throw new DatasetError(
          labelsFile,
          `holds ${labelBytes.length} labels but ${imagesFile} holds ${h.dims[0]} samples`,
        );
      const featureSize = h.dims.slice(1).reduce((a, b) => a * b, 1);
      writer = new ShardWriter(folder, featureSize, h.type === 0x08 ? 'uint8' : 'float32');
      sample = Buffer.alloc(featureSize * (h.type === 0x08 ? 1 : 4));
    },
    (bytes) => {
      const out = writer as ShardWriter;
      let at = 0;
      while (at < bytes.length) {
        const take = Math.min(sample.length - filled, bytes.length - at);
        bytes.copy(sample, filled, at, at + take);
        filled += take;
        at += take;
        if (filled === sample.length) {
          // IDX floats are big-endian, shards little-endian.
          if (out.dtype === 'float32') sample.swap32();
          out.addRaw(labelBytes[index++] as number, sample);
          filled = 0;
        }
      }
    },
  );
  const written = (writer as ShardWriter).finish();
  return {
    header,
    records: written.records,
    maxLabel: (writer as ShardWriter).maxLabel,
    dtype: written.dtype,
  };
}

async function convertIdx(spec: DatasetSpec, folder: string): Promise<Described> {
  const o = datasetOptions(spec).idx;
  const train = await convertIdxPair(
    join(spec.path, o.trainImages),
    join(spec.path, o.trainLabels),
    join(folder, 'train'),
  );
  const featureShape = train.header.dims.slice(1);
  if ((spec.eval.source ?? 'test') !== 'test')
    return { featureShape, dtype: train.dtype, maxLabel: train.maxLabel, train: { records: train.records } };
  const test = await convertIdxPair(
    join(spec.path, o.testImages),
    join(spec.path, o.testLabels),
    join(folder, 'test'),
  );
  if (test.header.dims.slice(1).join(',') !== featureShape.join(','))
    throw new DatasetError(
      join(spec.path, o.testImages),
      `samples of shape [${test.header.dims.slice(1).join(', ')}] but the training samples are [${featureShape.join(', ')}]`,
    );
  return {
    featureShape,
    dtype: train.dtype,
    maxLabel: Math.max(train.maxLabel, test.maxLabel),
    train: { records: train.records },
    test: { records: test.records },
  };
}

async function convertText(spec: DatasetSpec, folder: string): Promise<Described> {
  const options = datasetOptions(spec);
  const sink = (featureSize: number) => new ShardWriter(join(folder, 'train'), featureSize);
  const read =
    spec.format === 'csv'
      ? await readCsvInto(spec.path, options.csv, spec.featureShape, spec.classes, sink)
      : spec.format === 'parquet'
        ? await readParquetInto(spec.path, options.parquet, spec.featureShape, spec.classes, sink)
        : spec.format === 'mongodb'
          ? await readMongoInto(spec.path, options.mongodb, spec.featureShape, spec.classes, sink)
          : await readJsonlInto(spec.path, options.jsonl, spec.featureShape, spec.classes, sink);
  return {
    featureShape: read.featureShape,
    dtype: read.store.dtype,
    maxLabel: read.maxLabel,
    train: { records: read.store.records },
  };
}

/** The source files a conversion reads, and the options that change its output. */
async function sourceOf(spec: DatasetSpec): Promise<{
  files: string[];
  salt: unknown;
  convert: (folder: string) => Promise<Described>;
}> {
  const options = datasetOptions(spec);
  if (spec.format === 'mongodb') {
    const fingerprint = await mongoFingerprint(spec.path, options.mongodb);
    const salt = {
      format: 'mongodb',
      options: options.mongodb,
      fingerprint,
      featureShape: spec.featureShape ?? null,
    };
    return { files: [], salt, convert: (f) => convertText(spec, f) };
  }
  const shape = { featureShape: spec.featureShape ?? null, classes: spec.classes ?? null };
  if (spec.format === 'idx') {
    const o = options.idx;
    const test = (spec.eval.source ?? 'test') === 'test';
    const files = [o.trainImages, o.trainLabels, ...(test ? [o.testImages, o.testLabels] : [])];
    return {
      files: files.map((f) => join(spec.path, f)),
      salt: { format: 'idx', test },
      convert: (f) => convertIdx(spec, f),
    };
  }
  const salt = {
    format: spec.format,
    options:
      spec.format === 'csv' ? options.csv : spec.format === 'parquet' ? options.parquet : options.jsonl,
    ...shape,
  };
  return { files: [spec.path], salt, convert: (f) => convertText(spec, f) };
}

function openShards(
  folder: string,
  meta: Pick<ConvertedMeta, 'dtype' | 'featureShape'>,
  pattern: string,
  budgetBytes: number,
  readAhead: boolean,
): { store: ShardStreamStore; maxLabel: number } {
  const { shards, labels, maxLabel, featureSize } = scanRecordShards(
    folder,
    { dtype: meta.dtype, shardPattern: pattern },
    meta.featureShape,
    256,
  );
  return {
    store: new ShardStreamStore(shards, featureSize, meta.dtype, labels, budgetBytes, readAhead),
    maxLabel,
  };
}

export async function readStreaming(
  spec: DatasetSpec,
  cache: DatasetCache,
  progress: (message: string, fields?: object) => void,
): Promise<StreamingRaw> {
  const budget = cache.memoryMiB * 2 ** 20;
  if (spec.format === 'records') {
    const options = datasetOptions(spec).records;
    const shape = spec.featureShape ?? [];
    const { store, maxLabel } = openShards(
      spec.path,
      { dtype: options.dtype, featureShape: [...shape] },
      options.shardPattern,
      budget,
      true,
    );
    return { train: store, featureShape: [...shape], maxLabel, close: () => store.close() };
  }
  const source = await sourceOf(spec);
  progress('hashing dataset source', { files: source.files.length });
  let key: string;
  try {
    key = (await contentHash(source.files, source.salt)).slice(0, 32);
  } catch (error) {
    const file = (error as { path?: string }).path ?? spec.path;
    throw new DatasetError(
      file,
      `cannot read: ${(error as Error).message}; check dataset.path and the file names`,
    );
  }
  const directory = cacheDirectory(cache);
  const { folder, meta, converted } = await cachedConversion(directory, key, async (scratch) => {
    progress('converting dataset to record shards (once)', { format: spec.format, folder: scratch });
    try {
      return await source.convert(scratch);
    } catch (error) {
      if (error instanceof ShardWriteError) throw new DatasetError(spec.path, error.message);
      throw error;
    }
  });
  progress('dataset shards ready', {
    folder,
    converted,
    trainSamples: meta.train.records,
    dtype: meta.dtype,
  });
  if (meta.train.records === 0) throw new DatasetError(spec.path, 'no samples');
  const hasTest = meta.test !== undefined && meta.test.records > 0;
  const train = openShards(
    join(folder, 'train'),
    meta,
    'shard-*.bin',
    hasTest ? (budget * 7) / 8 : budget,
    true,
  );
  const test = hasTest ? openShards(join(folder, 'test'), meta, 'shard-*.bin', budget / 8, false) : undefined;
  return {
    train: train.store,
    ...(test === undefined ? {} : { test: test.store }),
    featureShape: meta.featureShape,
    maxLabel: meta.maxLabel,
    close: () => {
      train.store.close();
      test?.store.close();
    },
  };
}
