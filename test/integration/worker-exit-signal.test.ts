/**
 * A worker that completed training and is sent SIGTERM on its way out (the operator deletes the job's
 * pods as it succeeds) exits 0, not 143: a real `tensile worker` process, signalled from the moment it
 * logs `completed` until it is gone. Found by the chaos run with seed 1 (a Failed pod after a Succeeded
 * job); operator/commands/worker-signals.ts. And one signalled while it still loads (deleted as the
 * job completed, just after it was created: chaos seed 24) stops cleanly too (operator/early-signal.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { workerEnvironment } from '../../operator/api/worker-env.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';

const bin = fileURLToPath(new URL('../../operator/bin/tensile.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tensile-exit-signal-'));

function spec() {
  const m = validManifest('exiting');
  setPath(m, 'spec.replicas', 1);
  setPath(m, 'spec.minReplicas', 1);
  setPath(m, 'spec.maxReplicas', 1);
  setPath(m, 'spec.dataset', {
    format: 'idx',
    path: fashionMnistDir(),
    maxTrainSamples: 200,
    eval: { maxSamples: 100 },
  });
  setPath(m, 'spec.batch', { global: 50 });
  setPath(m, 'spec.stopping', { epochs: 1 });
  const result = validateTrainingJob(m);
  if (!result.ok) throw new Error(result.problems.map((p) => `${p.path}: ${p.message}`).join('; '));
  return result.job.spec;
}

const probe = fileURLToPath(new URL('../helpers/sigterm-listener-probe.mjs', import.meta.url));

/**
 * A real `tensile worker` of a one-worker job; `onOutput` sees all its output so far after each
 * chunk (standard output and error together).
 */
function startWorker(checkpoints: string, onOutput: (log: string) => void, env: NodeJS.ProcessEnv = {}) {
  const config = workerEnvironment({
    jobName: 'exiting',
    namespace: 'default',
    spec: spec(),
    replicaIndex: 0,
    checkpointDir: join(dir, checkpoints),
    backend: 'cpu',
  });
  const child = spawn(process.execPath, [bin, 'worker'], {
    env: { ...process.env, ...config, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const append = (chunk: Buffer) => {
    log += chunk.toString();
    onOutput(log);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; log: string }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, log })),
  );
  return { child, exited };
}

test('SIGTERM while the worker still loads: it stops before it starts, exit 0', async () => {
  let signalled = false;
  // At the first listener (before the fix, the worker command's own, once everything had loaded).
  const worker = startWorker(
    'early-checkpoints',
    (log) => {
      if (!signalled && log.includes('probe: listening for SIGTERM'))
        signalled = worker.child.kill('SIGTERM');
    },
    { NODE_OPTIONS: `--import ${probe}` },
  );
  const { code, signal, log } = await worker.exited;
  assert.is(signal, null, `killed by ${signal}:\n${log}`);
  assert.is(code, 0, log.slice(-2000));
  assert.match(log, /signal received before the work started; stopping/);
  assert.not.match(log, /"event":"(generation|progress|checkpoint)"/);
});

test('SIGTERM after `completed`, again and again until the process is gone: exit 0', async () => {
  let signals = 0;
  let timer: NodeJS.Timeout | undefined;
  const worker = startWorker('checkpoints', (log) => {
    if (timer !== undefined || !log.includes('"event":"completed"')) return;
    // Within the 1 s in which repeated signals are one request (a later one means "exit now").
    const until = performance.now() + 800;
    timer = setInterval(() => {
      const { child } = worker;
      if (performance.now() > until) return clearInterval(timer);
      if (child.exitCode === null && child.signalCode === null && child.kill('SIGTERM')) signals++;
    }, 10);
  });
  const { code, signal, log } = await worker.exited;
  clearInterval(timer);
  assert.ok(log.includes('"event":"completed"'), `the worker did not complete:\n${log}`);
  assert.ok(signals > 0, 'no signal was sent before the worker exited');
  assert.is(signal, null, `killed by ${signal} after ${signals} signals`);
  assert.is(code, 0, log.slice(-2000));
  console.log(`  ${signals} SIGTERMs after it completed; exit ${code}`);
});

test.run();
