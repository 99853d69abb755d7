/**
 * Parquet input: column selection, errors that name the column, and Fashion-MNIST converted to
 * Parquet (pixels as a byte-array column) training, streamed through `dataset.cache`, to the
 * accuracy of the same samples read from IDX.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type DatasetSpec, DatasetSpecSchema } from '../../operator/api/training-job.ts';
import { selectBackend } from '../../worker/backend/select.ts';
import { loadDataset } from '../../worker/data/dataset.ts';
import { readIdx } from '../../worker/data/idx.ts';
import { DatasetError } from '../../worker/errors.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import { oneWorker, trainer } from '../bench/training-fixture.ts';
import { testBackend } from '../helpers/backend.ts';

await selectBackend(testBackend());
const dir = mkdtempSync(join(tmpdir(), 'tensile-parquet-'));
const quiet = () => undefined;
const spec = (fields: object): DatasetSpec => DatasetSpecSchema.parse(fields);
const FASHION = '/usr/share/datasets/fashion-mnist';

function writeParquet(
  name: string,
  columns: { name: string; data: unknown[]; type: 'INT32' | 'DOUBLE' | 'BYTE_ARRAY' }[],
  rowGroupSize = 1000,
): string {
  const file = join(dir, name);
  writeFileSync(file, new Uint8Array(parquetWriteBuffer({ columnData: columns as never, rowGroupSize })));
  return file;
}

test('parquet: feature columns by name, in the given order, across row groups', async () => {
  const n = 250;
  const file = writeParquet(
    'small.parquet',
    [
      { name: 'a', data: Array.from({ length: n }, (_, i) => i), type: 'DOUBLE' },
      { name: 'b', data: Array.from({ length: n }, (_, i) => i * 0.5), type: 'DOUBLE' },
      { name: 'ignored', data: Array.from({ length: n }, () => 99), type: 'DOUBLE' },
      { name: 'y', data: Array.from({ length: n }, (_, i) => i % 3), type: 'INT32' },
    ],
    64,
  );
  const data = await loadDataset(
    spec({
      format: 'parquet',
      path: file,
      classes: 3,
      normalize: 'none',
      parquet: { labelColumn: 'y', featureColumns: ['b', 'a'] },
      eval: { fraction: 0.2 },
    }),
    quiet,
  );
  assert.is(data.train.size + (data.eval?.size ?? 0), n);
  assert.equal(data.featureShape, [2]);
  const features = new Float32Array(2);
  const labels = new Int32Array(1);
  data.train.read([0], features, labels);
  // Training sample 0 is row 0 unless the holdout took it: either way b = a / 2 and y = a % 3.
  assert.is(features[0], (features[1] as number) / 2);
  assert.is(labels[0], (features[1] as number) % 3);
  try {
    await loadDataset(
      spec({
        format: 'parquet',
        path: file,
        classes: 3,
        parquet: { featureColumns: ['nope'], labelColumn: 'y' },
      }),
      quiet,
    );
    assert.unreachable();
  } catch (error) {
    assert.instance(error, DatasetError);
    assert.match((error as Error).message, /"nope".*featureColumns/);
  }
});

test('Fashion-MNIST as Parquet (streamed) trains to the accuracy of the same samples from IDX', async () => {
  const n = 3000;
  const images = (await readIdx(join(FASHION, 'train-images-idx3-ubyte.gz'))).data as Uint8Array;
  const labels = (await readIdx(join(FASHION, 'train-labels-idx1-ubyte.gz'))).data as Uint8Array;
  const file = writeParquet('fashion.parquet', [
    {
      name: 'pixels',
      data: Array.from({ length: n }, (_, i) => images.slice(i * 784, (i + 1) * 784)),
      type: 'BYTE_ARRAY',
    },
    { name: 'label', data: Array.from(labels.subarray(0, n)), type: 'INT32' },
  ]);
  const fromParquet = await loadDataset(
    spec({
      format: 'parquet',
      path: file,
      classes: 10,
      featureShape: [28, 28, 1],
      parquet: { featureColumns: ['pixels'] },
      cache: { directory: join(dir, 'cache'), memoryMiB: 8 },
    }),
    quiet,
  );
  const fromIdx = await loadDataset(
    spec({
      format: 'idx',
      path: FASHION,
      maxTrainSamples: fromParquet.train.size,
      eval: { maxSamples: 2000 },
    }),
    quiet,
  );
  try {
    assert.ok(fromParquet.streaming !== undefined, 'streamed through the cache');
    const model = { mlp: { hiddenUnits: [64] }, seed: 1 };
    const a = await trainer(model, fromIdx);
    const b = await trainer(model, fromParquet);
    const reducer = new LocalReducer();
    for (let step = 0; step < 60; step++) {
      await a.step(oneWorker(128), reducer);
      await b.step(oneWorker(128), reducer);
    }
    const test = fromIdx.eval;
    if (test === undefined) throw new Error('idx has its test split');
    const accuracyIdx = a.evaluate(test)?.accuracy ?? 0;
    const accuracyParquet = b.evaluate(test)?.accuracy ?? 0;
    assert.ok(accuracyIdx > 0.7, `idx accuracy ${accuracyIdx}`);
    assert.ok(
      Math.abs(accuracyIdx - accuracyParquet) < 0.03,
      `idx ${accuracyIdx} vs parquet ${accuracyParquet}`,
    );
  } finally {
    fromParquet.close();
    fromIdx.close();
  }
});

test.run();
