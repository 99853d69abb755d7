/**
 * A worker of `tensile run` that fails, with real worker processes and a real nats-server. One
 * killed from outside (as the OOM killer would) is replaced, as the operator replaces a failed pod,
 * and the run completes. One that fails for good (terminal: a replacement would fail the same way)
 * with fewer workers left than a world needs (spec.minReplicas) ends the run at once — non-zero,
 * naming the worker and its error — instead of the survivors waiting for a world that can never form.
 *
 * The failure is a real terminal one that hits one worker only: the checkpoint directory holds a
 * checkpoint of another job (another model seed), which only the rank that restores (rank 0 of the
 * first world) reads; the other rank then waits for the state that rank was to send.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import {
  DEFAULT_DEADLINE_MS,
  finished,
  lastLogLines,
  tensileRun,
  withDeadline,
  workerEvents,
  writeJobManifest,
} from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-worker-failure-'));

const job = (seed: number, replicas: number) => ({
  replicas,
  minReplicas: replicas,
  maxReplicas: replicas,
  model: { mlp: { hiddenUnits: [16] }, seed },
  dataset: { format: 'idx', path: FASHION, maxTrainSamples: 600, eval: { maxSamples: 200 } },
  optimizer: { type: 'adam', learningRate: 0.003 },
  batch: { global: 60 },
  stopping: { epochs: 1 },
  checkpoint: { intervalSteps: 5 },
  rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 },
});

test('a worker killed from outside is replaced, and the run completes with every sample once', async () => {
  const out = join(dir, 'replaced');
  // 300 steps: the kill lands long before the end, however fast the machine.
  const spec = { ...job(3, 2), maxReplicas: 3, stopping: { epochs: 30 } };
  const run = tensileRun(writeJobManifest(join(dir, 'replaced.yaml'), 'replaced', spec), out, [
    '--workers',
    '2',
  ]);
  const pid = Number(/pid (\d+)/.exec(await run.waitFor(/^replaced-worker-1: pid \d+/))?.[1]);
  await run.waitFor(/generation \d+: 2 worker\(s\)/);
  process.kill(pid, 'SIGKILL');
  const replaced = await run.waitFor(/starting a replacement/);
  assert.match(
    replaced,
    /^tensile run: replaced-worker-1 was killed by SIGKILL; starting a replacement \(failure 1 of the 6 spec\.runPolicy\.backoffLimit tolerates\): replaced-worker-2$/,
  );
  const summary = await finished(run);
  assert.is(summary.status, 'completed');
  assert.ok(
    summary.generations.filter((g) => g.worldSize === 2).length >= 2,
    `a world of two before the kill and one with the replacement: ${JSON.stringify(summary.generations)}`,
  );
  for (const e of summary.epochs) assert.equal([e.duplicated, e.missing], [0, 0], `epoch ${e.epoch}`);
});

test('a worker fails terminally and too few are left: the run ends, naming it and its error', async () => {
  const checkpoints = join(dir, 'checkpoints');
  // Another job's checkpoints in the directory the next one is pointed at.
  const before = await finished(
    tensileRun(writeJobManifest(join(dir, 'first.yaml'), 'first', job(1, 1)), join(dir, 'first'), [
      '--checkpoints',
      checkpoints,
    ]),
  );
  assert.is(before.status, 'completed');
  assert.ok(readdirSync(checkpoints).some((n) => n.startsWith('ckpt-')));

  const out = join(dir, 'second');
  const run = tensileRun(writeJobManifest(join(dir, 'second.yaml'), 'second', job(2, 2)), out, [
    '--workers',
    '2',
    '--checkpoints',
    checkpoints,
  ]);
  // Before the fix this waited forever: the deadline (a safety net, minutes) turns that into a failure.
  const { code } = await withDeadline(
    run.done,
    'tensile run with a worker that failed terminally',
    DEFAULT_DEADLINE_MS,
    () => run.child.pid !== undefined && process.kill(-run.child.pid, 'SIGKILL'),
    () => lastLogLines(out, run.lines),
  );
  const output = run.lines.join('\n');
  assert.is(code, 2, `a terminal failure ends the run with exit 2:\n${output}`);
  const verdict = run.lines.find((l) => /stopping the run/.test(l)) ?? '';
  assert.match(
    verdict,
    /^tensile run: second-worker-\d failed terminally \(exit code 2: a restart cannot fix it\): cannot resume from \S+: its model\.seed is 1, the spec says 2;/,
  );
  assert.match(verdict, /1 worker\(s\) left, fewer than the 2 a world needs \(spec\.minReplicas\)/);

  // The survivor was asked to stop and did, with a result of its own; the failed one recorded why.
  const events = workerEvents(out);
  const failed = eventsOf(events, 'failed');
  assert.is(failed.length, 1, JSON.stringify(failed));
  assert.is(failed[0]?.terminal, true);
  const failedWorker = failed[0]?.worker;
  assert.ok(verdict.includes(`${failedWorker} failed`), `${verdict} names ${failedWorker}`);
  const stopped = eventsOf(events, 'stopped');
  assert.ok(
    stopped.some((e) => e.worker !== failedWorker),
    `the other worker stopped: ${JSON.stringify(stopped)}`,
  );
});

test('the writer killed before its final checkpoint: the survivors re-form, and one writes it and the model', async () => {
  const out = join(dir, 'writer');
  const marker = join(dir, 'writer-failpoint-fired');
  // 7 steps between checkpoints, 20 in all: the last periodic checkpoint (step 14) is not the end.
  const spec = { ...job(4, 3), minReplicas: 1, stopping: { epochs: 2 }, checkpoint: { intervalSteps: 7 } };
  const run = tensileRun(
    writeJobManifest(join(dir, 'writer.yaml'), 'writer', spec),
    out,
    ['--workers', '3'],
    {
      TENSILE_FAILPOINT: `before-final-checkpoint@once:${marker}`,
    },
  );
  const summary = await finished(run);
  assert.ok(existsSync(marker), 'the failpoint fired: a writer was killed before its final checkpoint');
  assert.is(summary.status, 'completed');
  assert.is(summary.step, 20);
  assert.is(summary.checkpoint?.step, 20, `the final checkpoint: ${JSON.stringify(summary.checkpoint)}`);
  const model = JSON.parse(readFileSync(join(out, 'model', 'tensile.json'), 'utf8')) as { step?: number };
  assert.is(model.step, 20, 'the model exported at the last step');
  const events = workerEvents(out);
  const lost = eventsOf(events, 'writer-lost');
  assert.ok(lost.length >= 1, 'a survivor saw the writer lost');
  assert.ok(
    lost.every((e) => e.step === 20),
    JSON.stringify(lost),
  );
  // The survivors held the final state: nothing was redone from the step-14 checkpoint.
  assert.equal(
    eventsOf(events, 'resumed').filter((e) => e.step < 20),
    [],
    'no worker went back to an older checkpoint',
  );
  for (const e of summary.epochs)
    assert.equal([e.seen, e.duplicated, e.missing], [600, 0, 0], `epoch ${e.epoch}`);
});

test.run();
