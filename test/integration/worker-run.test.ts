/**
 * `tensile run` with real worker processes on the real Fashion-MNIST files: learning, kill -9 and
 * resume (bit-exact against an uninterrupted run), a corrupt newest checkpoint, SIGTERM.
 *
 * The dataset comes from Debian's dataset-fashion-mnist (hack/install-tools.sh installs it).
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { checkpointName } from '../../worker/checkpoint/store.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-run-'));

function manifest(name: string, spec: Record<string, unknown>): string {
  return writeJobManifest(join(dir, `${name}.yaml`), name, {
    model: { mlp: { hiddenUnits: [64], dropout: 0.2 }, seed: 3 },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: 1500, eval: { maxSamples: 500 } },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 50 },
    stopping: { epochs: 3 },
    evaluation: { intervalSteps: 30 },
    checkpoint: { intervalSteps: 10, keep: 20 },
    ...spec,
  });
}

function checkpointFile(out: string, step: number, file: string): Buffer {
  return readFileSync(join(out, 'checkpoints', checkpointName(step), file));
}

test('an MLP learns Fashion-MNIST (subset) and the audit shows every sample once per epoch', async () => {
  const out = join(dir, 'learn');
  const summary = await finished(
    tensileRun(
      manifest('learn', {
        model: { mlp: { hiddenUnits: [128] }, seed: 1 },
        dataset: { format: 'idx', path: FASHION, maxTrainSamples: 6000, eval: { maxSamples: 2000 } },
        batch: { global: 64 },
        stopping: { epochs: 2 },
        evaluation: { intervalSteps: 100 },
        checkpoint: { intervalSteps: 100 },
      }),
      out,
    ),
  );
  assert.is(summary.status, 'completed');
  assert.is(summary.backend, 'tensorflow', 'auto picks the native backend that npm test installs');
  assert.is(summary.epoch, 2);
  assert.is(summary.step, 2 * Math.ceil(6000 / 64));
  assert.ok((summary.eval?.accuracy ?? 0) >= 0.78, `accuracy ${summary.eval?.accuracy} (chance is 0.1)`);
  assert.equal(summary.epochs, [
    { epoch: 0, seen: 6000, duplicated: 0, missing: 0, complete: true },
    { epoch: 1, seen: 6000, duplicated: 0, missing: 0, complete: true },
  ]);
  assert.equal(summary.generations, [
    { generation: 0, worldSize: 1, globalBatch: 64, learningRate: 0.003, firstStep: 0 },
  ]);
  console.log(
    `  learned: accuracy ${summary.eval?.accuracy} after ${summary.step} steps, ${summary.wallSeconds} s`,
  );
});

for (const backend of ['tensorflow', 'cpu', 'wasm'] as const) {
  test(`kill -9 mid-training, run again: resumes at the checkpoint's step and cursor and ends bit-identical (${backend})`, async () => {
    // 20 epochs (600 steps): the kill after the first checkpoint must land long before the end, even
    // when the output reaches this process late on a loaded machine (at 3 epochs, wasm had finished).
    // All 60 checkpoints kept: the one it resumed from is read back at the end.
    const file = manifest(`resume-${backend}`, {
      stopping: { epochs: 20 },
      checkpoint: { intervalSteps: 10, keep: 100 },
    });
    const reference = join(dir, `reference-${backend}`);
    const expected = await finished(tensileRun(file, reference, ['--backend', backend]));
    const out = join(dir, `killed-${backend}`);
    const first = tensileRun(file, out, ['--backend', backend]);
    // Checkpoints are written in the background and one that is due while another is still being
    // written is skipped, so the first one after step 20 can be at any step, not only a multiple of 10.
    await first.waitFor(/checkpoint at step ([2-9]\d|[1-4]\d\d):/);
    process.kill(-(first.child.pid as number), 'SIGKILL');
    const { signal } = await first.done;
    assert.is(signal, 'SIGKILL');
    const summary = await finished(tensileRun(file, out, ['--backend', backend]));
    const resumed = eventsOf(workerEvents(out), 'resumed')[0];
    // On the native backend both runs took the one-function train step (native-step.ts).
    const paths = eventsOf(workerEvents(out), 'train-step').map((e) => e.path);
    assert.ok(paths.length >= 2, 'a train-step event per run');
    for (const path of paths) assert.is(path, backend === 'tensorflow' ? 'function' : 'per-op');
    const from = summary.resumedFrom?.step ?? 0;
    assert.ok(from >= 20 && from < expected.step, `resumed from ${from}`);
    assert.is(resumed?.step, from);
    // The checkpoint it resumed from, and the position an uninterrupted run has after `from` steps
    // (30 steps of 50 per 1,500-sample epoch).
    const saved = JSON.parse(checkpointFile(out, from, 'state.json').toString()) as {
      cursor: number;
      epoch: number;
    };
    assert.equal([resumed?.epoch, resumed?.cursor], [saved.epoch, saved.cursor]);
    assert.equal([saved.epoch, saved.cursor], [Math.floor(from / 30), (from % 30) * 50]);
    assert.is(summary.step, expected.step);
    assert.equal(summary.eval, expected.eval);
    assert.ok(
      checkpointFile(out, summary.step, 'weights.bin').equals(
        checkpointFile(reference, expected.step, 'weights.bin'),
      ),
      'final weights differ',
    );
    assert.ok(
      checkpointFile(out, summary.step, 'optimizer.bin').equals(
        checkpointFile(reference, expected.step, 'optimizer.bin'),
      ),
      'optimizer state differs',
    );
    for (const epoch of summary.epochs)
      assert.equal([epoch.seen, epoch.duplicated, epoch.missing], [1500, 0, 0], `epoch ${epoch.epoch}`);
    assert.equal(
      summary.generations.map((g) => [g.generation, g.firstStep]),
      [
        [0, 0],
        [1, from],
      ],
    );
  });
}

test('a corrupted newest checkpoint is skipped with a warning and the previous one is used', async () => {
  const file = manifest('corrupt', { stopping: { epochs: 1 } });
  const out = join(dir, 'corrupt');
  const expected = await finished(tensileRun(file, out, ['--backend', 'cpu']));
  const kept = readdirSync(join(out, 'checkpoints'))
    .filter((n) => n.startsWith('ckpt-'))
    .sort();
  const previous = Number(kept[kept.length - 2]?.slice(5));
  assert.ok(previous > 0 && previous < expected.step, `checkpoints: ${kept}`);
  const weights = join(out, 'checkpoints', checkpointName(expected.step), 'weights.bin');
  const original = readFileSync(weights);
  const bytes = Buffer.from(original);
  bytes[100] = (bytes[100] as number) ^ 0x55;
  writeFileSync(weights, bytes);
  const run = tensileRun(file, out, ['--backend', 'cpu']);
  const summary = await finished(run);
  assert.ok(
    run.lines.some((l) =>
      /warn: skipping invalid checkpoint \(weights\.bin fails its SHA-256 checksum\)/.test(l),
    ),
    run.lines.join('\n'),
  );
  assert.is(summary.resumedFrom?.step, previous);
  assert.is(summary.step, expected.step);
  assert.equal(summary.eval, expected.eval, 'retraining the lost steps reproduces the result');
  assert.ok(
    checkpointFile(out, summary.step, 'weights.bin').equals(original),
    'the rewritten checkpoint holds the original weights',
  );
});

test('SIGTERM: the worker checkpoints at the next step boundary and exits 0 within its 2 s grace period', async () => {
  const file = manifest('sigterm', {
    stopping: { epochs: 50 },
    checkpoint: { intervalSteps: 100000 },
    worker: { terminationGracePeriodSeconds: 2 },
  });
  const out = join(dir, 'sigterm');
  const run = tensileRun(file, out);
  await run.waitFor(/^step \d+\//);
  // To the worker process itself, as the kubelet would; its own grace timer exits 1 if the checkpoint
  // takes longer than the 2 s the manifest allows.
  const runPid = run.child.pid as number;
  const [workerPid] = readFileSync(`/proc/${runPid}/task/${runPid}/children`, 'utf8')
    .trim()
    .split(/\s+/)
    .map(Number);
  assert.ok(workerPid !== undefined && workerPid > 0);
  const sent = performance.now();
  process.kill(workerPid as number, 'SIGTERM');
  const checkpointLine = await run.waitFor(/^checkpoint at step \d+/);
  const seconds = (performance.now() - sent) / 1000;
  const summary = await finished(run);
  assert.is(summary.status, 'stopped');
  const step = Number(/step (\d+)/.exec(checkpointLine)?.[1]);
  assert.is(summary.checkpoint?.step, step);
  assert.is(summary.step, step);
  const events = workerEvents(out);
  assert.ok(eventsOf(events, 'signal').some((e) => e.signal === 'SIGTERM'));
  assert.is(eventsOf(events, 'grace-exceeded').length, 0);
  console.log(`  SIGTERM → checkpoint written at step ${step} after ${seconds.toFixed(2)} s`);
  const resumed = tensileRun(file, out);
  await resumed.waitFor(/^resumed from .* at step \d+/);
  const line = resumed.lines.find((l) => l.startsWith('resumed from')) ?? '';
  assert.match(line, new RegExp(`at step ${step} `));
  process.kill(-(resumed.child.pid as number), 'SIGKILL');
  await resumed.done;
});

test.run();
