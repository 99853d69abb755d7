/**
 * checkpoint.objectStore against a real S3-compatible server (tensile-s3), with real `tensile run`
 * workers and Fashion-MNIST: every checkpoint is uploaded (manifest last) and pruned to `keep`; a run
 * on an empty volume (a new node's local disk) resumes from the store's newest checkpoint and loses no
 * step; a corrupt object in the store is refused by its checksum and the one before it is taken.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { S3_TEST_CREDENTIALS, type S3Server, s3TestClient, startS3Server } from '../helpers/s3-server.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const dir = mkdtempSync(join(tmpdir(), 'tensile-s3-checkpoint-'));
const credentials = S3_TEST_CREDENTIALS;
const TRAIN = 1920;
const BATCH = 64;
const STEPS_PER_EPOCH = TRAIN / BATCH;

let server: S3Server | undefined;
let client: S3Client | undefined;
test.before(async () => {
  try {
    server = await startS3Server();
    client = s3TestClient(server);
    await client.send(new CreateBucketCommand({ Bucket: 'checkpoints' }));
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});
test.after(async () => {
  client?.destroy();
  await server?.[Symbol.asyncDispose]();
});

function job(name: string, epochs: number, prefix = 'jobs/mirrored'): string {
  return writeJobManifest(join(dir, `${name}.yaml`), 'mirrored', {
    replicas: 1,
    model: { mlp: { hiddenUnits: [32] }, seed: 5 },
    dataset: { format: 'idx', path: fashionMnistDir(), maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: BATCH, policy: 'fixedGlobalBatch' },
    stopping: { epochs },
    evaluation: { intervalSteps: 1000 },
    checkpoint: {
      intervalSteps: 10,
      keep: 2,
      objectStore: { url: `s3://checkpoints/${prefix}`, endpoint: server?.endpoint },
    },
  });
}

/** The store's objects under the job's prefix, by checkpoint folder. */
async function stored(prefix = 'jobs/mirrored'): Promise<Map<string, string[]>> {
  const page = await client?.send(new ListObjectsV2Command({ Bucket: 'checkpoints', Prefix: `${prefix}/` }));
  const folders = new Map<string, string[]>();
  for (const o of page?.Contents ?? []) {
    const [folder, file] = (o.Key ?? '').slice(prefix.length + 1).split('/');
    if (folder !== undefined && file !== undefined)
      folders.set(folder, [...(folders.get(folder) ?? []), file]);
  }
  return folders;
}

const stepFolder = (step: number) => `ckpt-${String(step).padStart(10, '0')}`;

test('every checkpoint is uploaded, manifest last; the store keeps the newest `keep`', async () => {
  const out = join(dir, 'first');
  const summary = await finished(tensileRun(job('first', 2), out, ['--workers', '1'], credentials));
  assert.is(summary.step, 2 * STEPS_PER_EPOCH);
  const uploads = eventsOf(workerEvents(out), 'checkpoint-uploaded');
  assert.ok(uploads.length >= 2, `${uploads.length} uploads`);
  assert.is(uploads.at(-1)?.step, summary.step, 'the final checkpoint reached the store before the end');
  const folders = await stored();
  assert.equal([...folders.keys()].sort(), [
    stepFolder(uploads.at(-2)?.step ?? -1),
    stepFolder(summary.step),
  ]);
  for (const [folder, files] of folders) {
    assert.ok(files.includes('manifest.json'), `${folder} has its manifest`);
    const manifest = await client?.send(
      new GetObjectCommand({ Bucket: 'checkpoints', Key: `jobs/mirrored/${folder}/manifest.json` }),
    );
    const listed = Object.keys(JSON.parse((await manifest?.Body?.transformToString()) ?? '{}').files);
    assert.equal([...listed, 'manifest.json'].sort(), [...files].sort(), `${folder}: every file uploaded`);
  }
});

/** Committed checkpoints in the store (those with a manifest), by step, newest last. */
async function committedSteps(prefix: string): Promise<number[]> {
  return [...(await stored(prefix))]
    .filter(([, files]) => files.includes('manifest.json'))
    .map(([folder]) => Number(folder.slice('ckpt-'.length)))
    .sort((a, b) => a - b);
}

/**
 * Long enough that the kill, soon after the first epoch, lands epochs before the end whatever the
 * machine's speed (at 4 epochs the one-function step reached the last one first: seen in CI).
 */
const EPOCHS = 20;

test('killed mid-run, then started on an empty volume: resumes from the store, loses no step', async () => {
  const first = tensileRun(
    job('killed', EPOCHS, 'jobs/killed'),
    join(dir, 'killed'),
    ['--workers', '1'],
    credentials,
  );
  // kill -9 of the whole process group once a checkpoint past the first epoch is in the store: the
  // node is gone, and so is its disk. Any step from 31 to 539 (the first upload can come hundreds of
  // steps in on a fast machine, while the client connects), so epochs are left to train after it.
  await first.waitFor(/checkpoint at step (3[1-9]|[4-9]\d|[1-4]\d\d|5[0-3]\d) uploaded/);
  process.kill(-(first.child.pid as number), 'SIGKILL');
  await first.done;
  const before = await committedSteps('jobs/killed');
  const newest = before.at(-1) ?? -1;
  assert.ok(newest > STEPS_PER_EPOCH, `the store holds ${before.join(', ')}`);

  const out = join(dir, 'replacement');
  const summary = await finished(
    tensileRun(job('replacement', EPOCHS, 'jobs/killed'), out, ['--workers', '1'], credentials),
  );
  const events = workerEvents(out);
  assert.ok(
    eventsOf(events, 'checkpoint-downloaded').some((e) => e.step === newest),
    'the newest committed checkpoint came down',
  );
  assert.equal(
    eventsOf(events, 'resumed').map((e) => e.step),
    [newest],
  );
  assert.is(summary.step, EPOCHS * STEPS_PER_EPOCH);
  // The epochs after the one it resumed in were trained here, each sample once.
  const whole = summary.epochs.filter((e) => e.epoch > Math.floor(newest / STEPS_PER_EPOCH));
  assert.ok(whole.length > 0);
  for (const e of whole) assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0], `epoch ${e.epoch}`);
});

test('a corrupt object in the store is refused by its checksum; the checkpoint before it is taken', async () => {
  const steps = await committedSteps('jobs/killed');
  const newest = steps.at(-1) as number;
  const older = steps.at(-2) as number;
  const key = (file: string) => `jobs/killed/ckpt-${String(newest).padStart(10, '0')}/${file}`;
  const head = await client?.send(new HeadObjectCommand({ Bucket: 'checkpoints', Key: key('weights.bin') }));
  await client?.send(
    new PutObjectCommand({
      Bucket: 'checkpoints',
      Key: key('weights.bin'),
      Body: new Uint8Array(head?.ContentLength ?? 16).fill(7),
    }),
  );
  const out = join(dir, 'after-corruption');
  const summary = await finished(
    tensileRun(job('after-corruption', EPOCHS, 'jobs/killed'), out, ['--workers', '1'], credentials),
  );
  const events = workerEvents(out);
  const skipped = eventsOf(events, 'checkpoint-skipped');
  assert.ok(
    skipped.some((e) => e.step === newest && /SHA-256/.test(e.reason)),
    JSON.stringify(skipped),
  );
  assert.equal(
    eventsOf(events, 'resumed').map((e) => e.step),
    [older],
  );
  assert.is(summary.step, EPOCHS * STEPS_PER_EPOCH);
});

test.run();
