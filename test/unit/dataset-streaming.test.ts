/**
 * Streaming datasets (`dataset.cache`): conversion to record shards and its cache, the block store
 * with read-ahead under a memory budget, and the shard-local shuffle's exactly-once permutation.
 */
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type DatasetSpec, DatasetSpecSchema } from '../../operator/api/training-job.ts';
import { ShardWriter } from '../../worker/data/convert.ts';
import { loadDataset } from '../../worker/data/dataset.ts';
import { encodePreprocessing, fitPca } from '../../worker/data/preprocess.ts';
import { scanRecordShards } from '../../worker/data/records.ts';
import {
  epochPermutation,
  planStep,
  shardLocalPermutation,
  shareIndices,
} from '../../worker/data/sampler.ts';
import { ShardStreamStore } from '../../worker/data/stream-store.ts';
import { DatasetError } from '../../worker/errors.ts';

await tf.setBackend('cpu');
const dir = mkdtempSync(join(tmpdir(), 'tensile-streaming-'));
const quiet = () => undefined;
const spec = (fields: object): DatasetSpec => DatasetSpecSchema.parse(fields);
const FASHION = '/usr/share/datasets/fashion-mnist';

function readAll(
  store: { size: number; featureSize: number; read: ShardStreamStore['read'] },
  indices: Uint32Array,
) {
  const features = new Float32Array(indices.length * store.featureSize);
  const labels = new Int32Array(indices.length);
  store.read(indices, features, labels);
  return { features, labels };
}

test('the shard-local permutation is a permutation, differs by epoch, and keeps batches within a group', () => {
  const size = 10_007;
  for (const epoch of [0, 1]) {
    const order = shardLocalPermutation(size, 42, epoch, 100, 7);
    const seen = new Uint8Array(size);
    for (const i of order) seen[i] = (seen[i] as number) + 1;
    assert.ok(
      seen.every((c) => c === 1),
      'every sample exactly once',
    );
    // The first 700 positions come from 7 blocks only.
    const blocks = new Set(Array.from(order.subarray(0, 700), (i) => Math.floor(i / 100)));
    assert.is(blocks.size, 7);
  }
  assert.not.equal(shardLocalPermutation(size, 42, 0, 100, 7), shardLocalPermutation(size, 42, 1, 100, 7));
  assert.equal(shardLocalPermutation(size, 42, 3, 100, 7), shardLocalPermutation(size, 42, 3, 100, 7));
});

test('planStep over a shard-local order trains every sample once per epoch whatever the world does', () => {
  const size = 5_000;
  const order = shardLocalPermutation(size, 7, 0, 64, 5);
  const seen = new Uint8Array(size);
  let position = { epoch: 0, cursor: 0 };
  const worlds = [[32, 32], [16, 16, 16], [50], [8, 8, 8, 8]];
  for (let step = 0; position.epoch === 0; step++) {
    const plan = planStep(size, position, worlds[step % worlds.length] as number[]);
    for (const share of plan.shares)
      for (const i of shareIndices(order, share)) seen[i] = (seen[i] as number) + 1;
    position = plan.next;
  }
  assert.ok(seen.every((c) => c === 1));
});

test('ShardWriter widens to float32 at the first value that is not a byte, keeping earlier records', () => {
  const folder = join(dir, 'widen');
  const writer = new ShardWriter(folder, 3, 'auto', 4);
  for (let i = 0; i < 6; i++) writer.add([i, i + 1, i + 2], i % 2);
  writer.add([0.5, 300, -1], 1);
  for (let i = 0; i < 3; i++) writer.add([i, 0, 0], 0);
  const written = writer.finish();
  assert.is(written.dtype, 'float32');
  assert.is(written.records, 10);
  assert.equal(readdirSync(folder).sort(), ['shard-00000.bin', 'shard-00001.bin', 'shard-00002.bin']);
  const { shards, labels } = scanRecordShards(folder, { dtype: 'float32', shardPattern: '*.bin' }, [3], 2);
  const store = new ShardStreamStore(shards, 3, 'float32', labels, 1 << 16, false);
  try {
    const { features, labels: got } = readAll(store, Uint32Array.from([0, 5, 6, 9]));
    assert.equal(Array.from(features), [0, 1, 2, 5, 6, 7, 0.5, 300, -1, 2, 0, 0]);
    assert.equal(Array.from(got), [0, 1, 1, 0]);
  } finally {
    store.close();
  }
});

test('ShardStreamStore reads ahead on its thread, within its budget, and matches positioned reads', () => {
  const folder = join(dir, 'blocks');
  const d = 1000;
  const writer = new ShardWriter(folder, d, 'uint8', 3_000);
  const row = new Uint8Array(d);
  for (let i = 0; i < 10_000; i++) {
    row.fill(i % 251);
    row[0] = i % 256;
    writer.add(row, i % 10);
  }
  writer.finish();
  const { shards, labels } = scanRecordShards(folder, { dtype: 'uint8', shardPattern: '*.bin' }, [d], 10);
  const budget = 1 << 20;
  const store = new ShardStreamStore(shards, d, 'uint8', labels, budget);
  try {
    assert.ok(store.residentBytes <= budget + labels.byteLength, 'the budget bounds the samples held');
    const b = store.locality.blockSamples;
    assert.ok(b > 1 && store.locality.groupBlocks >= 1);
    const ahead = Uint32Array.from({ length: 2 * b }, (_, i) => 3 * b + i);
    store.prefetch(ahead);
    assert.ok(store.stats.prefetched >= 2);
    // A block still being read is waited for (Atomics.wait), not read again here.
    const { features, labels: got } = readAll(store, ahead);
    assert.is(store.stats.misses, 0, 'read ahead, so no block was read on the training thread');
    assert.ok(store.stats.hits + store.stats.waits >= 2);
    for (let k = 0; k < ahead.length; k++) {
      const i = ahead[k] as number;
      assert.is(got[k], i % 10);
      assert.is(features[k * d], i % 256);
      assert.is(features[k * d + 1], i % 251);
    }
    // Reads across the whole file through 1 MiB: blocks are reused, results stay right.
    const all = readAll(store, epochPermutation(10_000, 1, 0));
    assert.ok(store.stats.misses > 0);
    assert.is(all.labels.length, 10_000);
  } finally {
    store.close();
  }
});

test('dataset.cache converts idx once (content-hash key), streams it, and matches the in-memory path', async () => {
  const cache = join(dir, 'cache');
  const fields = { format: 'idx', path: FASHION, maxTrainSamples: 2000, eval: { maxSamples: 500 } };
  const memory = await loadDataset(spec(fields), quiet);
  const streamed = await loadDataset(spec({ ...fields, cache: { memoryMiB: 16, directory: cache } }), quiet);
  const again = await loadDataset(spec({ ...fields, cache: { memoryMiB: 16, directory: cache } }), quiet);
  try {
    assert.is(readdirSync(cache).filter((n) => !n.startsWith('.')).length, 1, 'one cached conversion');
    assert.is(streamed.train.size, memory.train.size);
    assert.is(streamed.eval?.size, memory.eval?.size);
    assert.equal(streamed.featureShape, memory.featureShape);
    assert.ok(streamed.train.locality !== undefined);
    const indices = Uint32Array.from([0, 1, 1999, 777]);
    assert.equal(readAll(streamed.train, indices), readAll(memory.train, indices));
    assert.equal(readAll(again.train, indices), readAll(memory.train, indices));
    const evalIndices = Uint32Array.from([0, 499]);
    assert.equal(
      readAll(streamed.eval as ShardStreamStore, evalIndices),
      readAll(memory.eval as ShardStreamStore, evalIndices),
    );
  } finally {
    memory.close();
    streamed.close();
    again.close();
  }
});

test('dataset.cache converts csv with a holdout split; changed content gets a new cache entry', async () => {
  const cache = join(dir, 'csv-cache');
  const file = join(dir, 'data.csv');
  const rows = (n: number, shift: number) =>
    [
      'label,a,b',
      ...Array.from({ length: n }, (_, i) => `${i % 2},${i + shift},${(i * 0.5).toFixed(1)}`),
    ].join('\n');
  writeFileSync(file, rows(200, 0));
  const fields = {
    format: 'csv',
    path: file,
    classes: 2,
    normalize: 'none',
    cache: { directory: cache, memoryMiB: 1 },
  };
  const memory = await loadDataset(spec({ ...fields, cache: undefined }), quiet);
  const streamed = await loadDataset(spec(fields), quiet);
  try {
    assert.is(streamed.train.dtype, 'float32');
    const indices = Uint32Array.from({ length: memory.train.size }, (_, i) => i);
    assert.equal(readAll(streamed.train, indices), readAll(memory.train, indices));
  } finally {
    memory.close();
    streamed.close();
  }
  writeFileSync(file, rows(200, 1));
  const changed = await loadDataset(spec(fields), quiet);
  changed.close();
  assert.is(readdirSync(cache).filter((n) => !n.startsWith('.')).length, 2);
});

test('dataset.cache names the file when a label does not fit a record byte', async () => {
  const file = join(dir, 'wide.jsonl');
  writeFileSync(file, `${JSON.stringify({ features: [1, 2], label: 300 })}\n`);
  try {
    await loadDataset(
      spec({ format: 'jsonl', path: file, classes: 400, cache: { directory: join(dir, 'c3') } }),
      quiet,
    );
    assert.unreachable('expected a DatasetError');
  } catch (error) {
    assert.instance(error, DatasetError);
    assert.match((error as Error).message, /256 classes/);
  }
});

test('records shards with a preprocessing.json (the Spark job) bring their fit; a mismatch names the field', async () => {
  const folder = join(dir, 'shipped');
  const writer = new ShardWriter(folder, 4, 'float32');
  for (let i = 0; i < 40; i++) writer.add([i, i * 2, i % 5, 1], i % 2);
  writer.finish();
  const base = {
    format: 'records',
    path: folder,
    featureShape: [4],
    classes: 2,
    records: { dtype: 'float32' },
  };
  const own = await loadDataset(spec({ ...base, normalize: 'none' }), quiet);
  // A fit that is not the one the worker would make: it must be used as it is.
  const normalization = {
    kind: 'standardize' as const,
    offset: Float32Array.of(1, 2, 3, 4),
    scale: Float32Array.of(0.5, 0.25, 1, 1),
  };
  const pca = fitPca(own.train, normalization, 2, 1);
  own.close();
  writeFileSync(join(folder, 'preprocessing.json'), JSON.stringify(encodePreprocessing(normalization, pca)));
  const shipped = await loadDataset(
    spec({ ...base, normalize: 'standardize', pca: { components: 2 } }),
    quiet,
  );
  shipped.close();
  assert.equal(Array.from(shipped.normalization.offset), [1, 2, 3, 4]);
  assert.equal(Array.from(shipped.pca?.components ?? []), Array.from(pca.components));
  try {
    await loadDataset(spec({ ...base, normalize: 'scale', pca: { components: 2 } }), quiet);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, DatasetError);
    assert.match((error as Error).message, /dataset\.normalize/);
  }
});

test.run();
