/**
 * Found by hack/chaos.sh (issue 24, seed 1, `fill-checkpoint-volume`): a full checkpoint volume made a
 * worker that was not writing a checkpoint exit 1 — its per-step audit append threw ENOSPC into the
 * training loop. On a real full file system (a 1 MiB tmpfs, so root): the audit keeps what the volume
 * refuses and writes it, in order, once there is room; a checkpoint meanwhile fails (reported, not
 * thrown) instead of committing steps the audit does not have; the next one after the space returns
 * succeeds.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fillUp } from '../../hack/chaos/faults.ts';
import { BackgroundCheckpointer, CheckpointStore } from '../../worker/checkpoint/store.ts';
import { AuditLog, readAuditFile } from '../../worker/data/audit.ts';
import { fusedLayout, initialTrainingState, type Snapshot } from '../../worker/train/snapshot.ts';

const dir = mkdtempSync(join(tmpdir(), 'tensile-full-volume-'));

function snapshot(step: number): Snapshot {
  const weights = fusedLayout([{ name: 'dense/kernel', shape: [64, 64] }]);
  const slots = fusedLayout([{ name: 'dense/kernel/m', shape: [64, 64] }]);
  return {
    producer: 'test',
    topology: { class_name: 'Sequential', config: { name: 'test' } },
    weights: { specs: weights.specs, buffer: new Float32Array(weights.length).fill(step) },
    optimizer: {
      type: 'adam',
      iterations: step,
      slots: { specs: slots.specs, buffer: new Float32Array(slots.length) },
    },
    state: {
      ...initialTrainingState({
        shuffleSeed: 1,
        modelSeed: 2,
        dataset: { trainSamples: 3200, featureSize: 64, classes: 2 },
      }),
      step,
    },
  };
}

test.before(() => {
  assert.is(process.getuid?.(), 0, 'this test mounts a tmpfs: run it as root (CI does)');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tensile-full-volume', dir]);
});

test.after(() => {
  execFileSync('umount', ['-l', dir]);
  rmSync(dir, { recursive: true, force: true });
});

test('a full volume holds the audit back instead of failing the step, and fails the checkpoint instead of committing', async () => {
  const audit = new AuditLog(join(dir, 'worker-0.bin'));
  const store = new CheckpointStore(join(dir, 'checkpoints'), 2);
  await store.ensureDirectory();
  const failed: string[] = [];
  const written: number[] = [];
  const writer = new BackgroundCheckpointer(
    store,
    { written: (ref) => written.push(ref.step), failed: (_s, error) => failed.push(String(error)) },
    () => audit.descriptor,
  );
  const indices = (step: number) => Uint32Array.from({ length: 32 }, (_, i) => step * 32 + i);
  for (let step = 0; step < 5; step++) audit.record(0, 0, step, indices(step));
  const fill = join(dir, 'fill');
  fillUp(fill);
  // Every step of a full volume: no throw, the records wait.
  for (let step = 5; step < 50; step++) audit.record(0, 0, step, indices(step));
  assert.ok(audit.behind > 0, 'the volume refused some records');
  assert.ok(writer.start(snapshot(50)));
  await writer.idle();
  assert.equal(written, []);
  assert.match(failed[0] ?? '', /audit log .* behind .*volume is full/);

  rmSync(fill);
  audit.record(0, 0, 50, indices(50));
  assert.is(audit.behind, 0, 'written as soon as there is room');
  await writer.writeNow(snapshot(51));
  assert.equal(written, [51]);
  audit.close();
  await writer.close();
  const records = readAuditFile(join(dir, 'worker-0.bin'));
  assert.equal(
    records.map((r) => r.step),
    Array.from({ length: 51 }, (_, i) => i),
  );
  assert.ok(records.every((r) => r.indices.length === 32 && r.indices[0] === r.step * 32));
});

// Chaos seed 2 (20 minutes): a world re-formed while the volume was full; the audit's truncation
// closed its descriptor, failed to write the rewritten file, and every later fsync failed the worker
// with EBADF (5 workers, none killed by a fault).
test('truncating the audit on a full volume keeps it working: the records stay, fsync and appends go on', () => {
  const file = join(dir, 'worker-1.bin');
  const audit = new AuditLog(file);
  const indices = (step: number) => Uint32Array.from({ length: 32 }, (_, i) => step * 32 + i);
  for (let step = 0; step < 10; step++) audit.record(0, 0, step, indices(step));
  audit.sync();
  const fill = join(dir, 'fill-2');
  fillUp(fill);
  assert.equal(audit.truncateFrom(5), { kept: 10, dropped: 0 }, 'nothing dropped while full');
  audit.sync();
  for (let step = 5; step < 8; step++) audit.record(1, 0, step, indices(step));
  rmSync(fill);
  audit.record(1, 0, 8, indices(8));
  assert.is(audit.behind, 0);
  // With room again a truncation drops every record from the step on, those the full one kept too.
  assert.equal(audit.truncateFrom(8), { kept: 11, dropped: 3 });
  audit.close();
  assert.equal(
    readAuditFile(file).map((r) => [r.generation, r.step]),
    [...Array.from({ length: 8 }, (_, i) => [0, i]), [1, 5], [1, 6], [1, 7]],
  );
});

test.run();
