/**
 * The backend chain when the native backend breaks at its first use: a worker whose libtensorflow
 * does not load (a truncated library, as after a disk filled up mid-copy or a bad image layer) must
 * not crash-loop. It passes tfjs-node over with the loader's reason in its `backend` event (and in
 * `tensile run`'s output), trains on wasm and completes.
 *
 * The failure is real: the addon's RUNPATH ($ORIGIN/../../deps/lib) is searched after
 * LD_LIBRARY_PATH, so a directory there holding a libtensorflow_cc.so.2 that is not a library makes
 * the dynamic loader refuse the addon, exactly as a broken install would.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const dir = mkdtempSync(join(tmpdir(), 'tensile-backend-fallback-'));
const broken = join(dir, 'broken-libtensorflow');
mkdirSync(broken);
writeFileSync(join(broken, 'libtensorflow_cc.so.2'), 'not a shared library\n');

test('libtensorflow fails to load: tfjs-node skipped with the loader reason, training completes on wasm', async () => {
  const file = writeJobManifest(join(dir, 'fallback.yaml'), 'fallback', {
    model: { mlp: { hiddenUnits: [32] }, seed: 1 },
    dataset: { format: 'idx', path: fashionMnistDir(), maxTrainSamples: 640, eval: { maxSamples: 200 } },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 64 },
    stopping: { epochs: 1 },
    evaluation: { intervalSteps: 10 },
    checkpoint: { intervalSteps: 10 },
  });
  const out = join(dir, 'out');
  const run = tensileRun(file, out, [], { LD_LIBRARY_PATH: broken });
  const summary = await finished(run);
  assert.is(summary.status, 'completed');
  assert.is(summary.backend, 'wasm');
  assert.is(summary.step, 10);
  assert.ok((summary.eval?.accuracy ?? 0) > 0.3, `accuracy ${summary.eval?.accuracy} (chance is 0.1)`);

  const events = workerEvents(out, 0);
  const selected = eventsOf(events, 'backend');
  assert.is(selected.length, 1, 'one choice, made once: no retry loop');
  assert.is(selected[0]?.backend, 'wasm');
  const skipped = selected[0]?.skipped ?? [];
  assert.equal(
    skipped.map((s) => s.via),
    ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'],
  );
  assert.match(skipped[0]?.reason ?? '', /no NVIDIA GPU driver/);
  assert.match(
    skipped[1]?.reason ?? '',
    new RegExp(`^failed to load: ${broken}/libtensorflow_cc\\.so\\.2: (file too short|invalid ELF header)`),
  );
  // wasm has no step function: the per-op tape, and the worker says why.
  assert.is(eventsOf(events, 'train-step')[0]?.path, 'per-op');
  assert.ok(eventsOf(events, 'completed').length === 1);
  // What a person running it reads, without opening the worker's JSON log.
  assert.match(
    run.lines.join('\n'),
    /backend wasm \(@tensorflow\/tfjs-backend-wasm\); @tensorflow\/tfjs-node-gpu skipped: no NVIDIA GPU driver .*; @tensorflow\/tfjs-node skipped: failed to load: .*file too short/,
  );
});

test.run();
