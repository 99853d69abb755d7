/**
 * Ctrl-C on `tensile run`, as a terminal sends it (SIGINT to the whole foreground process group):
 * the workers checkpoint, the run writes its summary and exits 130 (128 + SIGINT), as shells expect
 * of an interrupted command, so that `tensile run ... && next` does not go on.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { RunSummary } from '../../operator/api/run-summary.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { tensileRun, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-interrupt-'));

test.after(() => rmSync(dir, { recursive: true, force: true }));

test('Ctrl-C: the workers checkpoint, the summary says stopped, and tensile run exits 130', async () => {
  const file = writeJobManifest(join(dir, 'job.yaml'), 'interrupted', {
    model: { mlp: { hiddenUnits: [32] }, seed: 2 },
    dataset: { format: 'idx', path: FASHION, maxTrainSamples: 2000, eval: { maxSamples: 200 } },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 50 },
    // Far more steps than it can take before the signal lands; only the stop checkpoints.
    stopping: { epochs: 500 },
    checkpoint: { intervalSteps: 100000 },
  });
  const out = join(dir, 'out');
  const run = tensileRun(file, out);
  await run.waitFor(/^step \d+\//);
  process.kill(-(run.child.pid as number), 'SIGINT');
  const { code } = await run.done;
  assert.is(code, 130, run.lines.slice(-20).join('\n'));
  const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as RunSummary;
  assert.is(summary.status, 'stopped');
  assert.ok(summary.step > 0 && summary.step < 500 * 40, `stopped at step ${summary.step}`);
  assert.is(summary.checkpoint?.step, summary.step, 'checkpointed where it stopped');
  assert.ok(
    run.lines.some((l) => /stopped at step \d+; run the same command again to resume/.test(l)),
    run.lines.slice(-20).join('\n'),
  );
  console.log(`  Ctrl-C → checkpoint at step ${summary.step}, exit ${code}`);
});

test.run();
