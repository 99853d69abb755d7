/**
 * The product as the container images ship it (operator/Dockerfile, worker/Dockerfile): the
 * `tsc -p operator/tsconfig.build.json` output beside production dependencies only (no dev, no
 * optional packages, no install scripts; so no TypeScript and no esbuild binary for tsx), run with
 * plain `node dist/operator/main.js`. Trains a Fashion-MNIST subset, checkpoints, stops on SIGTERM and
 * resumes: once as a pod runs it (`worker`, configured by the environment) and once through `run`.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TrainingJobSpecSchema } from '../../operator/api/training-job.ts';
import { workerEnvironment } from '../../operator/api/worker-env.ts';
import { decodeWorkerLine } from '../../operator/api/worker-events.ts';
import { readWorkerResult, resultFile } from '../../worker/result.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tensile-image-'));
/** The image's /app: package.json, node_modules (production only) and dist/. */
const app = join(dir, 'app');
const main = join(app, 'dist', 'operator', 'main.js');

test.after(() => rmSync(dir, { recursive: true, force: true }));

/** 40 steps an epoch; 600 in all, so that a SIGTERM after the first checkpoint lands long before the end. */
const SPEC = {
  model: { mlp: { hiddenUnits: [64] }, seed: 5 },
  dataset: { format: 'idx', path: FASHION, maxTrainSamples: 2000, eval: { maxSamples: 500 } },
  optimizer: { type: 'adam', learningRate: 0.003 },
  batch: { global: 50 },
  stopping: { epochs: 15 },
  evaluation: { intervalSteps: 200 },
  checkpoint: { intervalSteps: 20, keep: 3 },
  worker: { terminationGracePeriodSeconds: 20 },
};

function sh(command: string, args: string[], cwd: string): void {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 300_000 });
  assert.is(r.status, 0, `${command} ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
}

test.before(() => {
  mkdirSync(app, { recursive: true });
  // As the Dockerfiles do: compile, then only what `npm prune --omit=dev --omit=optional` keeps.
  sh(
    join(root, 'node_modules', '.bin', 'tsc'),
    ['-p', 'operator/tsconfig.build.json', '--outDir', join(app, 'dist')],
    root,
  );
  copyFileSync(join(root, 'package.json'), join(app, 'package.json'));
  copyFileSync(join(root, 'package-lock.json'), join(app, 'package-lock.json'));
  sh(
    'npm',
    [
      'install',
      '--omit=dev',
      '--omit=optional',
      '--ignore-scripts',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
    ],
    app,
  );
  assert.not.ok(existsSync(join(app, 'node_modules', 'typescript')), 'no dev dependency in the image');
});

interface JsonLines {
  readonly child: ChildProcess;
  readonly events: Record<string, unknown>[];
  readonly done: Promise<number | null>;
  waitFor(event: string): Promise<Record<string, unknown>>;
}

/** `node dist/operator/main.js worker` as the pod's container runs it, its JSON log lines parsed. */
function podWorker(env: Record<string, string>): JsonLines {
  const child = spawn(process.execPath, [main, 'worker'], {
    cwd: app,
    env: { PATH: process.env['PATH'] ?? '', HOME: dir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Record<string, unknown>[] = [];
  const text: string[] = [];
  const waiters: { event: string; resolve: (line: Record<string, unknown>) => void }[] = [];
  let buffered = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      text.push(line);
      if (!line.startsWith('{')) continue;
      const decoded = decodeWorkerLine(line);
      if (decoded.kind === 'invalid') text.push(`(not a worker event: ${decoded.problem})`);
      if (decoded.kind !== 'event') continue;
      const parsed: Record<string, unknown> = decoded.event;
      events.push(parsed);
      for (const w of waiters.filter((w) => w.event === parsed['event'])) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(parsed);
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => text.push(chunk.toString()));
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    events,
    done,
    waitFor: (event) =>
      new Promise((resolve, reject) => {
        const seen = events.find((e) => e['event'] === event);
        if (seen !== undefined) return resolve(seen);
        waiters.push({ event, resolve });
        void done.then(() =>
          reject(new Error(`ended without a "${event}" event:\n${text.slice(-30).join('\n')}`)),
        );
      }),
  };
}

test('the built worker, as a pod runs it: trains, checkpoints, stops on SIGTERM with a checkpoint, resumes', async () => {
  const out = join(dir, 'pod');
  const env = workerEnvironment({
    jobName: 'built',
    namespace: 'default',
    spec: TrainingJobSpecSchema.parse(SPEC),
    workerId: 'built-worker-0',
    replicaIndex: 0,
    checkpointDir: join(out, 'checkpoints'),
    outDir: out,
  });
  const first = podWorker(env);
  const written = await first.waitFor('checkpoint');
  assert.ok(Number(written['step']) > 0, JSON.stringify(written));
  // The kubelet's stop: SIGTERM to the container's process.
  first.child.kill('SIGTERM');
  assert.is(await first.done, 0, JSON.stringify(first.events.slice(-10)));
  assert.not.ok(
    first.events.some((e) => e['event'] === 'checkpoint-failed' || e['event'] === 'failed'),
    JSON.stringify(first.events.filter((e) => e['level'] === 'error')),
  );
  const stopped = readWorkerResult(resultFile(out, 'built-worker-0'));
  assert.is(stopped.status, 'stopped');
  assert.ok(stopped.step < 600, `stopped at step ${stopped.step}, before the end`);
  assert.is(stopped.checkpoint?.step, stopped.step, 'the stop wrote a checkpoint at the step it stopped');

  const second = podWorker(env);
  const resumed = await second.waitFor('resumed');
  assert.is(resumed['step'], stopped.step);
  assert.is(await second.done, 0, JSON.stringify(second.events.slice(-10)));
  const completed = readWorkerResult(resultFile(out, 'built-worker-0'));
  assert.is(completed.status, 'completed');
  assert.is(completed.step, 600);
  assert.is(completed.checkpoint?.step, 600);
  assert.is(completed.resumedFrom?.step, stopped.step);
  console.log(
    `  pod: first checkpoint at step ${written['step']}, SIGTERM → stopped with a checkpoint at step ${stopped.step}, resumed there and completed ${completed.step} steps`,
  );
});

test('the built `run`: trains, checkpoints, stops on SIGTERM, resumes and completes with every sample once an epoch', async () => {
  const file = writeJobManifest(join(dir, 'run.yaml'), 'built-run', SPEC);
  const out = join(dir, 'run');
  const first = tensileRun(file, out, [], {}, main);
  await first.waitFor(/^checkpoint at step \d+:/);
  first.child.kill('SIGTERM');
  await first.done;
  const stopped = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as {
    status: string;
    step: number;
  };
  assert.is(stopped.status, 'stopped', first.lines.slice(-20).join('\n'));
  assert.ok(stopped.step > 0 && stopped.step < 600, `stopped at step ${stopped.step}`);

  const summary = await finished(tensileRun(file, out, [], {}, main));
  assert.is(summary.status, 'completed');
  assert.is(summary.step, 600);
  assert.is(summary.resumedFrom?.step, stopped.step);
  for (const epoch of summary.epochs)
    assert.equal([epoch.seen, epoch.duplicated, epoch.missing], [2000, 0, 0], `epoch ${epoch.epoch}`);
  assert.ok((summary.eval?.accuracy ?? 0) > 0.7, `accuracy ${summary.eval?.accuracy}`);
  console.log(
    `  run: SIGTERM → stopped at step ${stopped.step}; resumed and completed ${summary.step} steps, accuracy ${summary.eval?.accuracy} on ${summary.backend}`,
  );
});

test.run();
