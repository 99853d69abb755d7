/**
 * A stop that arrives while the worker is still loading its backend, data and model (SIGTERM to a pod
 * that was just scheduled, Ctrl-C right after `tensile run`): the worker takes no step and ends
 * stopped, instead of missing the signal, training on and being cut off by its grace period.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { workerEnvironment } from '../../operator/api/worker-env.ts';
import { loadWorkerConfig } from '../../worker/config.ts';
import { silentLogger } from '../../worker/log.ts';
import { readWorkerResult, resultFile } from '../../worker/result.ts';
import { runWorker } from '../../worker/runtime.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-early-signal-'));

test.after(() => rmSync(dir, { recursive: true, force: true }));

test('a stop that came before the first world: no step taken, the result says stopped', async () => {
  const m = validManifest('early');
  setPath(m, 'spec.replicas', 1);
  setPath(m, 'spec.minReplicas', 1);
  setPath(m, 'spec.maxReplicas', 1);
  setPath(m, 'spec.dataset', {
    format: 'idx',
    path: FASHION,
    maxTrainSamples: 500,
    eval: { maxSamples: 100 },
  });
  setPath(m, 'spec.batch', { global: 50 });
  setPath(m, 'spec.stopping', { epochs: 1000 });
  const valid = validateTrainingJob(m);
  if (!valid.ok) throw new Error(valid.problems.map((p) => `${p.path}: ${p.message}`).join('; '));
  const config = loadWorkerConfig(
    workerEnvironment({
      jobName: 'early',
      namespace: 'default',
      spec: valid.job.spec,
      workerId: 'early-worker-0',
      replicaIndex: 0,
      checkpointDir: join(dir, 'checkpoints'),
      outDir: dir,
      backend: 'wasm',
    }),
  );
  const stop = new AbortController();
  stop.abort();
  const result = await runWorker({ config, log: silentLogger(), stop: stop.signal });
  assert.is(result.status, 'stopped');
  assert.is(result.step, 0, 'no step after the stop');
  assert.is(readWorkerResult(resultFile(dir, 'early-worker-0')).status, 'stopped');
});

test.run();
