/**
 * s3:// datasets against a real S3-compatible server (tensile-s3): Fashion-MNIST's IDX files and a
 * CSV uploaded with the AWS SDK, read through the local disk cache (downloaded once, again when an
 * object changes), streamed through dataset.cache, sample for sample equal to the local files.
 */
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type DatasetSpec, DatasetSpecSchema } from '../../operator/api/training-job.ts';
import { loadDataset } from '../../worker/data/dataset.ts';
import type { SampleStore } from '../../worker/data/store.ts';
import { DatasetError } from '../../worker/errors.ts';
import { type S3Server, s3TestClient, startS3Server, uploadFolder } from '../helpers/s3-server.ts';

await tf.setBackend('cpu');
const FASHION = '/usr/share/datasets/fashion-mnist';
const dir = mkdtempSync(join(tmpdir(), 'tensile-s3-'));
const quiet = () => undefined;
const spec = (fields: object): DatasetSpec => DatasetSpecSchema.parse(fields);
// The SDK signs every request; the test server accepts any key.
process.env.AWS_ACCESS_KEY_ID = 'tensile-test';
process.env.AWS_SECRET_ACCESS_KEY = 'tensile-test';

let server: S3Server | undefined;
let client: S3Client | undefined;
test.before(async () => {
  try {
    server = await startS3Server();
    client = s3TestClient(server);
    await uploadFolder(client, 'data', 'fashion', FASHION);
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});
test.after(async () => {
  client?.destroy();
  await server?.[Symbol.asyncDispose]();
});

function rows(store: SampleStore, indices: number[]) {
  const features = new Float32Array(indices.length * store.featureSize);
  const labels = new Int32Array(indices.length);
  store.read(indices, features, labels);
  return { features, labels };
}

test('s3:// idx is downloaded once into the disk cache and streams like the local files', async () => {
  const cache = join(dir, 'cache');
  const remote = {
    format: 'idx',
    path: 's3://data/fashion',
    s3: { endpoint: server?.endpoint },
    maxTrainSamples: 3000,
  };
  const fromS3 = await loadDataset(spec({ ...remote, cache: { directory: cache, memoryMiB: 16 } }), quiet);
  const local = await loadDataset(spec({ format: 'idx', path: FASHION, maxTrainSamples: 3000 }), quiet);
  try {
    assert.is(fromS3.train.size, 3000);
    assert.ok(fromS3.streaming !== undefined);
    assert.equal(rows(fromS3.train, [0, 1234, 2999]), rows(local.train, [0, 1234, 2999]));
    assert.equal(rows(fromS3.eval as SampleStore, [0, 9999]), rows(local.eval as SampleStore, [0, 9999]));
  } finally {
    fromS3.close();
    local.close();
  }
  const folders = readdirSync(join(cache, 'remote'));
  assert.is(folders.length, 1);
  const again = await loadDataset(spec({ ...remote, cache: { directory: cache } }), quiet);
  again.close();
  assert.equal(readdirSync(join(cache, 'remote')), folders, 'the second load found its copy');
});

test('s3:// csv: a changed object is downloaded anew; a missing key names the path', async () => {
  const cache = join(dir, 'csv-cache');
  const put = (body: string) =>
    client?.send(new PutObjectCommand({ Bucket: 'data', Key: 'table.csv', Body: body }));
  const csv = (shift: number) =>
    ['label,a,b', ...Array.from({ length: 50 }, (_, i) => `${i % 2},${i + shift},${i}`)].join('\n');
  await put(csv(0));
  const fields = {
    format: 'csv',
    path: 's3://data/table.csv',
    classes: 2,
    normalize: 'none',
    s3: { endpoint: server?.endpoint },
    cache: { directory: cache },
  };
  const first = await loadDataset(spec(fields), quiet);
  writeFileSync(join(dir, 'table.csv'), csv(0));
  const local = await loadDataset(spec({ ...fields, path: join(dir, 'table.csv'), cache: undefined }), quiet);
  assert.equal(rows(first.train, [0, 10]), rows(local.train, [0, 10]));
  first.close();
  local.close();
  await put(csv(5));
  const second = await loadDataset(spec(fields), quiet);
  second.close();
  assert.is(readdirSync(join(cache, 'remote')).length, 2);
  try {
    await loadDataset(spec({ ...fields, path: 's3://data/nothing.csv' }), quiet);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, DatasetError);
    assert.match((error as Error).message, /s3:\/\/data\/nothing\.csv/);
  }
});

test.run();
