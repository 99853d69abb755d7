import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  BackgroundCheckpointer,
  type CheckpointRef,
  CheckpointStore,
  checkpointName,
} from '../../worker/checkpoint/store.ts';
import {
  AuditLog,
  type AuditRecord,
  auditEpochs,
  committedRecords,
  parseAudit,
  readAuditFile,
} from '../../worker/data/audit.ts';
import { fusedLayout, initialTrainingState, type Snapshot } from '../../worker/train/snapshot.ts';

const root = mkdtempSync(join(tmpdir(), 'tensile-checkpoint-'));
let n = 0;
const fresh = () => join(root, `store-${n++}`);

function snapshot(step: number): Snapshot {
  const weights = fusedLayout([
    { name: 'dense_1/kernel', shape: [3, 2] },
    { name: 'dense_1/bias', shape: [2] },
  ]);
  const slots = fusedLayout([
    { name: 'dense_1/kernel/m', shape: [3, 2] },
    { name: 'dense_1/bias/m', shape: [2] },
  ]);
  return {
    producer: 'test',
    topology: { class_name: 'Sequential', config: { name: 'test' } },
    weights: {
      specs: weights.specs,
      buffer: Float32Array.from({ length: weights.length }, (_, i) => step + i / 10),
    },
    optimizer: {
      type: 'adam',
      iterations: step,
      slots: { specs: slots.specs, buffer: Float32Array.from({ length: slots.length }, (_, i) => -i) },
    },
    state: {
      ...initialTrainingState({
        shuffleSeed: 1,
        modelSeed: 2,
        dataset: { trainSamples: 320, featureSize: 3, classes: 2 },
      }),
      step,
      epoch: Math.floor(step / 10),
      cursor: (step % 10) * 32,
      samples: step * 32,
      generations: [{ generation: 0, worldSize: 1, globalBatch: 32, learningRate: 0.001, firstStep: 0 }],
      trainSeconds: 1.5,
    },
  };
}

async function storeWith(steps: number[], keep = 10): Promise<CheckpointStore> {
  const store = new CheckpointStore(fresh(), keep);
  await store.ensureDirectory();
  for (const step of steps) store.write(snapshot(step));
  return store;
}

test('a written checkpoint reads back identical', async () => {
  const store = await storeWith([7]);
  const [ref] = await store.list();
  assert.equal(ref?.step, 7);
  const { snapshot: read, manifest } = await store.read(ref as CheckpointRef);
  const written = snapshot(7);
  assert.equal(read.state, written.state);
  assert.equal([...read.weights.buffer], [...written.weights.buffer]);
  assert.equal(read.weights.specs, written.weights.specs);
  assert.equal([...read.optimizer.slots.buffer], [...written.optimizer.slots.buffer]);
  assert.is(read.optimizer.iterations, 7);
  assert.equal(Object.keys(manifest.files).sort(), [
    'model.json',
    'optimizer.bin',
    'optimizer.json',
    'state.json',
    'weights.bin',
  ]);
  const model = JSON.parse(readFileSync(join(ref?.path ?? '', 'model.json'), 'utf8'));
  assert.is(model.format, 'layers-model');
  assert.equal(model.weightsManifest[0].paths, ['weights.bin']);
});

const corruptions: [string, (path: string) => void, RegExp][] = [
  [
    'a flipped byte',
    (path) => {
      const file = join(path, 'weights.bin');
      const bytes = readFileSync(file);
      bytes[5] = (bytes[5] as number) ^ 0xff;
      writeFileSync(file, bytes);
    },
    /weights\.bin fails its SHA-256 checksum/,
  ],
  [
    'a truncated file',
    (path) => truncateSync(join(path, 'optimizer.bin'), 8),
    /optimizer\.bin has 8 bytes, the manifest says 32 \(truncated\?\)/,
  ],
  ['a missing manifest', (path) => writeFileSync(join(path, 'manifest.json'), ''), /manifest\.json invalid/],
  ['a missing file', (path) => truncateSync(join(path, 'state.json'), 0), /state\.json has 0 bytes/],
];
for (const [name, corrupt, reason] of corruptions) {
  test(`restore skips a newest checkpoint with ${name} and takes the previous one`, async () => {
    const store = await storeWith([10, 20]);
    corrupt(join(store.directory, checkpointName(20)));
    const skipped: [number, string][] = [];
    const latest = await store.latest((ref, why) => skipped.push([ref.step, why]));
    assert.is(latest?.ref.step, 10);
    assert.is(latest?.snapshot.state.step, 10);
    assert.is(skipped.length, 1);
    assert.is(skipped[0]?.[0], 20);
    assert.match(skipped[0]?.[1] ?? '', reason);
  });
}

test('no valid checkpoint at all: undefined, every one reported', async () => {
  const store = await storeWith([1, 2]);
  for (const step of [1, 2]) truncateSync(join(store.directory, checkpointName(step), 'weights.bin'), 0);
  const skipped: number[] = [];
  assert.is(await store.latest((ref) => skipped.push(ref.step)), undefined);
  assert.equal(skipped, [2, 1]);
  assert.is(await new CheckpointStore(fresh(), 3).latest(() => assert.unreachable()), undefined);
});

test('retention keeps the newest `keep`; leftovers of a crashed writer are ignored', async () => {
  const store = await storeWith([1, 2, 3, 4, 5], 2);
  mkdirSync(join(store.directory, '.tmp-ckpt-0000000009-123-0'));
  writeFileSync(join(store.directory, '.tmp-ckpt-0000000009-123-0', 'weights.bin'), 'partial');
  assert.equal(
    (await store.list()).map((r) => r.step),
    [5, 4],
  );
  assert.is((await store.latest(() => assert.unreachable()))?.ref.step, 5);
});

test('writing the same step again replaces it', async () => {
  const store = await storeWith([3]);
  const again = snapshot(3);
  again.weights.buffer.fill(42);
  store.write(again);
  const read = await store.read({ step: 3, path: join(store.directory, checkpointName(3)) });
  assert.ok(read.snapshot.weights.buffer.every((v) => v === 42));
  assert.equal(readdirSync(store.directory), [checkpointName(3)]);
});

test('the background writer does one write at a time and reports it', async () => {
  const store = new CheckpointStore(fresh(), 5);
  await store.ensureDirectory();
  const written: number[] = [];
  let asked = 0;
  const audit = new AuditLog(join(root, 'writer-audit.bin'));
  const writer = new BackgroundCheckpointer(
    store,
    { written: (ref) => written.push(ref.step), failed: (_step, error) => assert.unreachable(String(error)) },
    () => {
      asked++;
      return audit.descriptor;
    },
  );
  assert.ok(writer.start(snapshot(1)));
  assert.ok(writer.busy);
  assert.not.ok(writer.start(snapshot(2)), 'a second write waits');
  await writer.idle();
  assert.not.ok(writer.busy);
  const ref = await writer.writeNow(snapshot(3));
  assert.is(ref.step, 3);
  assert.equal(written, [1, 3]);
  assert.is(asked, 2, 'the audit is synced with every checkpoint');
  assert.is(writer.last?.step, 3);
  assert.equal(
    (await store.list()).map((r) => r.step),
    [3, 1],
  );
  await writer.close();
  audit.close();
});

test('a failed write is reported, not thrown at the training loop', async () => {
  const directory = fresh();
  writeFileSync(directory, 'a file where the directory should be');
  const failures: number[] = [];
  const writer = new BackgroundCheckpointer(new CheckpointStore(directory, 2), {
    written: () => assert.unreachable(),
    failed: (step) => failures.push(step),
  });
  writer.start(snapshot(4));
  await writer.idle();
  assert.equal(failures, [4]);
  await assert_rejects(() => writer.writeNow(snapshot(5)), /writing checkpoint at step 5 failed/);
  await writer.close();
});

async function assert_rejects(work: () => Promise<unknown>, message: RegExp): Promise<void> {
  try {
    await work();
  } catch (error) {
    assert.match((error as Error).message, message, (error as Error).message);
    return;
  }
  assert.unreachable('expected a rejection');
}

test('audit: a torn record at the end is ignored; truncateFrom drops the steps to redo', () => {
  const file = join(root, 'audit.bin');
  const log = new AuditLog(file);
  log.record(0, 0, 0, Uint32Array.from([3, 1]));
  log.record(0, 0, 1, Uint32Array.from([0, 2]));
  log.record(0, 1, 2, Uint32Array.from([2, 0]));
  // A torn record: the header promises 5 indices, 1 made it to disk.
  appendFileSync(file, Buffer.from(Uint32Array.from([0, 1, 3, 5, 7]).buffer));
  assert.equal(
    readAuditFile(file).map((r) => r.step),
    [0, 1, 2],
  );
  assert.equal(log.truncateFrom(2), { kept: 2, dropped: 1 });
  log.record(1, 1, 2, Uint32Array.from([1, 3]));
  log.close();
  const records = readAuditFile(file);
  assert.equal(
    records.map((r) => [...r.indices]),
    [
      [3, 1],
      [0, 2],
      [1, 3],
    ],
  );
  assert.equal(auditEpochs(records, 4), [
    { epoch: 0, seen: 4, duplicated: 0, missing: 0 },
    { epoch: 1, seen: 2, duplicated: 0, missing: 2 },
  ]);
});

test('auditEpochs counts duplicates and missing samples', () => {
  const records = parseAudit(new Uint8Array(Uint32Array.from([0, 0, 0, 3, 1, 1, 2, 0, 0, 1, 1, 2]).buffer));
  assert.equal(auditEpochs(records, 5), [{ epoch: 0, seen: 2, duplicated: 2, missing: 3 }]);
});

const rec = (generation: number, step: number, ...indices: number[]): AuditRecord => ({
  generation,
  epoch: 0,
  step,
  indices: Uint32Array.from(indices),
});

// [records (generation, step), history (generation, firstStep), the (generation, step) kept]
const committedCases: [string, AuditRecord[], { generation: number; firstStep: number }[], string[]][] = [
  [
    'one generation keeps everything',
    [rec(1, 0), rec(1, 1)],
    [{ generation: 1, firstStep: 0 }],
    ['1@0', '1@1'],
  ],
  [
    'a step a survivor finished but the next world redid is dropped',
    [rec(1, 0), rec(1, 1), rec(1, 2), rec(2, 2), rec(2, 3)],
    [
      { generation: 1, firstStep: 0 },
      { generation: 2, firstStep: 2 },
    ],
    ['1@0', '1@1', '2@2', '2@3'],
  ],
  [
    'a generation lost with every worker (absent from the history) counts for nothing',
    [rec(1, 0), rec(2, 1), rec(2, 2), rec(3, 1)],
    [
      { generation: 1, firstStep: 0 },
      { generation: 3, firstStep: 1 },
    ],
    ['1@0', '3@1'],
  ],
  [
    'a later generation that started earlier (restore from an older checkpoint) cuts every older one',
    [rec(1, 0), rec(1, 5), rec(2, 6), rec(3, 4)],
    [
      { generation: 1, firstStep: 0 },
      { generation: 2, firstStep: 6 },
      { generation: 3, firstStep: 4 },
    ],
    ['1@0', '3@4'],
  ],
];

for (const [name, records, history, kept] of committedCases) {
  test(`committedRecords: ${name}`, () => {
    assert.equal(
      committedRecords(records, history).map((r) => `${r.generation}@${r.step}`),
      kept,
    );
  });
}

test.run();
