/**
 * Every data source through real `tensile run` workers with a kill and a join mid-epoch, on the same
 * Fashion-MNIST samples in every format: IDX and CSV in memory (the references), and streamed through
 * `dataset.cache` from JSONL, Parquet, IDX on S3 (tensile-s3) and a MongoDB collection (FerretDB).
 * Every epoch's audit is clean, and each source reaches its reference's accuracy within 3 points.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { MongoClient } from 'mongodb';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { RunSummary } from '../../operator/api/run-summary.ts';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { readIdx } from '../../worker/data/idx.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { type MongoServer, startMongoServer } from '../helpers/mongo-server.ts';
import {
  S3_TEST_CREDENTIALS,
  type S3Server,
  s3TestClient,
  startS3Server,
  uploadFolder,
} from '../helpers/s3-server.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-sources-'));
const N = 3200;
const TRAIN = N * 0.8;
const BATCH = 64;
const EPOCHS = 4;
const credentials = S3_TEST_CREDENTIALS;

let s3: S3Server | undefined;
let mongo: MongoServer | undefined;
let pixels: Uint8Array = new Uint8Array(0);
let labels: Uint8Array = new Uint8Array(0);
const image = (i: number) => pixels.subarray(i * 784, (i + 1) * 784);

test.before(async () => {
  try {
    pixels = (await readIdx(join(FASHION, 'train-images-idx3-ubyte.gz'))).data as Uint8Array;
    labels = (await readIdx(join(FASHION, 'train-labels-idx1-ubyte.gz'))).data as Uint8Array;
    const rows = Array.from({ length: N }, (_, i) => i);
    const header = ['label', ...Array.from({ length: 784 }, (_, j) => `p${j}`)].join(',');
    writeFileSync(
      join(dir, 'fashion.csv'),
      `${header}\n${rows.map((i) => `${labels[i]},${image(i).join(',')}`).join('\n')}\n`,
    );
    writeFileSync(
      join(dir, 'fashion.jsonl'),
      `${rows.map((i) => JSON.stringify({ features: Array.from(image(i)), label: labels[i] })).join('\n')}\n`,
    );
    const columnData = [
      { name: 'pixels', data: rows.map((i) => image(i).slice()), type: 'BYTE_ARRAY' },
      { name: 'label', data: rows.map((i) => labels[i]), type: 'INT32' },
    ];
    writeFileSync(
      join(dir, 'fashion.parquet'),
      new Uint8Array(parquetWriteBuffer({ columnData: columnData as never, rowGroupSize: 500 })),
    );
    s3 = await startS3Server();
    const client = s3TestClient(s3);
    await uploadFolder(client, 'data', 'fashion', FASHION);
    client.destroy();
    mongo = await startMongoServer();
    const db = new MongoClient(`${mongo.url}/tensile`);
    await db
      .db()
      .collection('fashion')
      .insertMany(rows.map((i) => ({ _id: i as never, features: Array.from(image(i)), label: labels[i] })));
    await db.close();
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});
test.after(async () => {
  await mongo?.[Symbol.asyncDispose]();
  await s3?.[Symbol.asyncDispose]();
});

interface Source {
  readonly name: string;
  /** The run this one is compared with: the same samples and evaluation set, held in memory. */
  readonly reference: string;
  readonly dataset: Record<string, unknown>;
}

/**
 * What differs between the sources. Two groups, each against its in-memory reference: the row
 * formats hold out the same 20 % of the same 3,200 rows; IDX on S3 trains on the first 2,560 images
 * of the local IDX files and evaluates on the first 1,000 test images. (The streamed sources of a
 * group reach the same accuracy to the last digit: the same shards in the same shard-local order.)
 */
function sources(): Source[] {
  const shape = { featureShape: [28, 28, 1], classes: 10 };
  const holdout = { eval: { source: 'holdout', fraction: 0.2 } };
  const idx = { format: 'idx', maxTrainSamples: TRAIN, eval: { maxSamples: 1000 } };
  const cache = (name: string) => ({ cache: { directory: join(dir, `cache-${name}`), memoryMiB: 4 } });
  const csv = { format: 'csv', path: join(dir, 'fashion.csv'), ...shape, ...holdout };
  return [
    { name: 'idx', reference: 'idx', dataset: { ...idx, path: FASHION } },
    {
      name: 's3',
      reference: 'idx',
      dataset: { ...idx, path: 's3://data/fashion', s3: { endpoint: s3?.endpoint }, ...cache('s3') },
    },
    { name: 'csv', reference: 'csv', dataset: csv },
    {
      name: 'jsonl',
      reference: 'csv',
      dataset: { format: 'jsonl', path: join(dir, 'fashion.jsonl'), ...shape, ...holdout, ...cache('jsonl') },
    },
    {
      name: 'parquet',
      reference: 'csv',
      dataset: {
        format: 'parquet',
        path: join(dir, 'fashion.parquet'),
        parquet: { featureColumns: ['pixels'] },
        ...shape,
        ...holdout,
        ...cache('parquet'),
      },
    },
    {
      name: 'mongodb',
      reference: 'csv',
      dataset: {
        format: 'mongodb',
        path: `${mongo?.url}/tensile`,
        mongodb: { collection: 'fashion' },
        ...shape,
        ...holdout,
        ...cache('mongodb'),
      },
    },
  ];
}

async function train(name: string, dataset: Record<string, unknown>): Promise<RunSummary> {
  const file = writeJobManifest(join(dir, `${name}.yaml`), `source-${name}`, {
    replicas: 2,
    minReplicas: 1,
    maxReplicas: 2,
    model: { mlp: { hiddenUnits: [64], dropout: 0 }, seed: 7 },
    dataset,
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: BATCH, policy: 'fixedGlobalBatch' },
    stopping: { epochs: EPOCHS },
    evaluation: { intervalSteps: 1000 },
    checkpoint: { intervalSteps: 15 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
  });
  const out = join(dir, name);
  // Steps 60 and 100 are mid-epoch (40 steps each): one worker killed, one joining later.
  const summary = await finished(
    tensileRun(file, out, ['--workers', '2', '--chaos', 'kill:60,join:100'], credentials),
  );
  const described = eventsOf(workerEvents(out), 'dataset');
  assert.ok(
    described.every((e) => e.trainSamples === TRAIN),
    `${name}: ${described.map((e) => e.trainSamples).join(', ')} training samples`,
  );
  assert.is(summary.status, 'completed', name);
  assert.is(summary.epochs.length, EPOCHS, name);
  for (const e of summary.epochs)
    assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0], `${name}, epoch ${e.epoch}`);
  return summary;
}

test('every source trains through a kill and a join, exactly once, to the accuracy of its reference', async () => {
  const accuracy = new Map<string, number>();
  for (const { name, dataset } of sources())
    accuracy.set(name, (await train(name, dataset)).eval?.accuracy ?? 0);
  console.log([...accuracy].map(([name, a]) => `${name} ${a.toFixed(4)}`).join(', '));
  for (const { name, reference } of sources()) {
    const a = accuracy.get(name) ?? 0;
    const r = accuracy.get(reference) ?? 0;
    assert.ok(r > 0.7, `${reference} reached ${r}`);
    assert.ok(Math.abs(a - r) <= 0.03, `${name}: ${a} against ${reference} ${r}`);
  }
});

test.run();
