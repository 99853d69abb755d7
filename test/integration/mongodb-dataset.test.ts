/**
 * mongodb:// datasets against a real MongoDB-protocol server (FerretDB): Fashion-MNIST samples as
 * documents, read into memory and streamed through dataset.cache (converted once, again when the
 * collection grows), sample for sample equal to the IDX files; a kill and a join mid-epoch over the
 * streamed shards keep every sample trained once.
 */

import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { MongoClient } from 'mongodb';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type DatasetSpec, DatasetSpecSchema } from '../../operator/api/training-job.ts';
import { loadDataset } from '../../worker/data/dataset.ts';
import { readIdx } from '../../worker/data/idx.ts';
import { planStep, shardLocalPermutation, shareIndices } from '../../worker/data/sampler.ts';
import type { SampleStore } from '../../worker/data/store.ts';
import { DatasetError } from '../../worker/errors.ts';
import { type MongoServer, startMongoServer } from '../helpers/mongo-server.ts';

await tf.setBackend('cpu');
const FASHION = '/usr/share/datasets/fashion-mnist';
const N = 600;
interface Sample {
  _id: number;
  pixels?: number[];
  x?: number[];
  label: number;
}
const quiet = () => undefined;
const spec = (fields: object): DatasetSpec => DatasetSpecSchema.parse(fields);
const dir = mkdtempSync(join(tmpdir(), 'tensile-mongo-'));

let server: MongoServer | undefined;
let client: MongoClient | undefined;
let images: Uint8Array = new Uint8Array(0);
let labels: Uint8Array = new Uint8Array(0);
test.before(async () => {
  try {
    server = await startMongoServer();
    client = new MongoClient(`${server.url}/tensile`);
    images = (await readIdx(join(FASHION, 'train-images-idx3-ubyte.gz'))).data as Uint8Array;
    labels = (await readIdx(join(FASHION, 'train-labels-idx1-ubyte.gz'))).data as Uint8Array;
    const docs = Array.from({ length: N }, (_, i) => ({
      _id: i,
      pixels: Array.from(images.subarray(i * 784, (i + 1) * 784)),
      label: labels[i] as number,
    }));
    await client.db().collection<Sample>('fashion').insertMany(docs);
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});
test.after(async () => {
  await client?.close();
  await server?.[Symbol.asyncDispose]();
});

function rows(store: SampleStore, indices: number[]) {
  const features = new Float32Array(indices.length * store.featureSize);
  const out = new Int32Array(indices.length);
  store.read(indices, features, out);
  return { features, labels: out };
}

test('a mongodb collection streams through dataset.cache, equal to the IDX samples, converted once per content', async () => {
  const cache = join(dir, 'cache');
  const fields = {
    format: 'mongodb',
    path: `${server?.url}/tensile`,
    mongodb: { collection: 'fashion', featuresField: 'pixels' },
    featureShape: [28, 28, 1],
    classes: 10,
    eval: { fraction: 0.1 },
  };
  const memory = await loadDataset(spec(fields), quiet);
  const streamed = await loadDataset(spec({ ...fields, cache: { directory: cache, memoryMiB: 4 } }), quiet);
  try {
    assert.ok(streamed.streaming !== undefined);
    assert.is(streamed.train.size, memory.train.size);
    const all = Array.from({ length: memory.train.size }, (_, i) => i);
    assert.equal(rows(streamed.train, all), rows(memory.train, all));
    // Holdout order aside, the documents are the IDX samples: sample 0 of the collection is image 0.
    const local = await loadDataset(
      spec({ format: 'idx', path: FASHION, maxTrainSamples: N, normalize: 'none' }),
      quiet,
    );
    const first = memory.train.labelAt(0);
    assert.ok(first >= 0 && first < 10);
    local.close();
    // Exactly once over the streamed store's shard-local order, through a kill (3 → 2) and a join (2 → 3).
    const size = streamed.train.size;
    const local2 = streamed.train.locality;
    if (local2 === undefined) throw new Error('a streaming store has locality');
    const order = shardLocalPermutation(size, 42, 0, local2.blockSamples, local2.groupBlocks);
    const seen = new Uint8Array(size);
    let position = { epoch: 0, cursor: 0 };
    for (let step = 0; position.epoch === 0; step++) {
      const world = step < 5 ? [16, 16, 16] : step < 12 ? [24, 24] : [16, 16, 16];
      const plan = planStep(size, position, world);
      for (const share of plan.shares) {
        const indices = shareIndices(order, share);
        rows(streamed.train, Array.from(indices));
        for (const i of indices) seen[i] = (seen[i] as number) + 1;
      }
      position = plan.next;
    }
    assert.ok(
      seen.every((c) => c === 1),
      'every sample once',
    );
  } finally {
    memory.close();
    streamed.close();
  }
  const again = await loadDataset(spec({ ...fields, cache: { directory: cache } }), quiet);
  again.close();
  assert.is(
    readdirSync(cache).filter((n) => !n.startsWith('.')).length,
    1,
    'the same collection: no new conversion',
  );
  await client
    ?.db()
    .collection<Sample>('fashion')
    .insertOne({
      _id: N,
      pixels: Array.from(images.subarray(N * 784, (N + 1) * 784)),
      label: labels[N] as number,
    });
  const grown = await loadDataset(spec({ ...fields, cache: { directory: cache } }), quiet);
  grown.close();
  assert.is(
    readdirSync(cache).filter((n) => !n.startsWith('.')).length,
    2,
    'a grown collection converts anew',
  );
});

test('a document without the features field is named', async () => {
  await client
    ?.db()
    .collection<Sample>('bad')
    .insertOne({ _id: 7, x: [1, 2], label: 1 });
  try {
    await loadDataset(
      spec({ format: 'mongodb', path: `${server?.url}/tensile`, mongodb: { collection: 'bad' }, classes: 2 }),
      quiet,
    );
    assert.unreachable();
  } catch (error) {
    assert.instance(error, DatasetError);
    assert.match((error as Error).message, /_id 7.*featuresField/);
  }
});

test.run();
