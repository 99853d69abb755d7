/**
 * `tensile worker` and `tensile run` at their boundaries: configuration and argument errors (real
 * processes, one line per problem, no stack traces), and the local run plan, which must produce the
 * environment `loadWorkerConfig` accepts — the same path the operator's pods take.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type GenerationEnd, goodput } from '../../operator/api/goodput.ts';
import { TrainingJobSpecSchema } from '../../operator/api/training-job.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { WORKER_ENV, workerEnvironment } from '../../operator/api/worker-env.ts';
import { decodeWorkerLog, eventsOf } from '../../operator/api/worker-events.ts';
import {
  describeLogLine,
  fakePlacement,
  parseChaos,
  parseRunArgs,
  planLocalRun,
  resolveManifestPaths,
} from '../../operator/local-run/run.ts';
import { loadWorkerConfig } from '../../worker/config.ts';
import { validManifest } from '../helpers/job-builder.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'operator/bin/tensile.mjs');
const dir = mkdtempSync(join(tmpdir(), 'tensile-worker-cmd-'));

function tensile(
  args: string[],
  env: Record<string, string> = {},
): { code: number | null; out: string; err: string } {
  const base: Record<string, string> = { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '' };
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...base, ...env },
    timeout: 120_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const noStack = (text: string) =>
  assert.not.match(text, /^\s+at .*\(.*:\d+:\d+\)$/m, `stack trace in:\n${text}`);

const spec = () => {
  const job = validateTrainingJob(validManifest('job'));
  if (!job.ok) throw new Error('the test manifest must be valid');
  return job.job.spec;
};

test('tensile worker without configuration: exit 2, one line per missing variable, no stack trace', () => {
  const r = tensile(['worker']);
  assert.is(r.code, 2);
  const lines = r.err.trim().split('\n');
  assert.is(lines[0], 'tensile worker: invalid configuration');
  for (const name of [
    'TENSILE_JOB_NAME',
    'TENSILE_JOB_SPEC',
    'TENSILE_REPLICA_INDEX',
    'TENSILE_CHECKPOINT_DIR',
  ]) {
    assert.is(lines.filter((l) => l.trim().startsWith(`${name}:`)).length, 1, `${name} in:\n${r.err}`);
  }
  assert.not.match(r.err, /TENSILE_NATS_URL/, 'NATS is optional: a standalone worker needs none');
  noStack(r.err);
});

test('tensile worker with bad values names each variable and the field inside the spec', () => {
  const badSpec = { ...spec(), optimizer: { ...spec().optimizer, learningRate: -1 } };
  const r = tensile(['worker'], {
    ...workerEnvironment({
      jobName: 'Bad_Name',
      namespace: 'default',
      spec: badSpec,
      replicaIndex: 0,
      checkpointDir: 'relative/dir',
    }),
    [WORKER_ENV.natsUrl]: 'http://nats:4222',
  });
  assert.is(r.code, 2);
  assert.match(r.err, /TENSILE_JOB_NAME: expected the TrainingJob name/);
  assert.match(r.err, /TENSILE_JOB_SPEC\.optimizer\.learningRate: must be > 0/);
  assert.match(r.err, /TENSILE_CHECKPOINT_DIR: expected an absolute path/);
  assert.match(r.err, /TENSILE_NATS_URL: expected a NATS URL/);
  noStack(r.err);
});

test('tensile worker on a missing dataset: exit 2 (terminal), the file and the problem, no stack trace', () => {
  const broken = TrainingJobSpecSchema.parse({
    ...spec(),
    dataset: { format: 'idx', path: join(dir, 'nowhere') },
  });
  const r = tensile(['worker'], {
    ...workerEnvironment({
      jobName: 'job',
      namespace: 'default',
      spec: broken,
      replicaIndex: 0,
      checkpointDir: join(dir, 'ckpt'),
      backend: 'cpu',
    }),
  });
  assert.is(r.code, 2, r.err + r.out);
  const failure = eventsOf(decodeWorkerLog(r.out).events, 'failed')[0];
  assert.ok(failure, r.out);
  assert.match(String(failure?.['error']), /nowhere\/train-images-idx3-ubyte\.gz: no such file/);
  assert.is(failure?.['terminal'], true);
  assert.is(failure?.['job'], 'job');
  noStack(r.out + r.err);
  // Like a pod (no output folder of tensile run), it kept its log on the checkpoint volume too.
  const kept = readdirSync(join(dir, 'ckpt', 'logs'));
  assert.is(kept.length, 1);
  const onVolume = readFileSync(join(dir, 'ckpt', 'logs', kept[0] as string), 'utf8');
  assert.equal(decodeWorkerLog(onVolume).events, decodeWorkerLog(r.out).events);
});

test('tensile worker forced onto an absent backend: a clear terminal error', () => {
  const r = tensile(['worker'], {
    // As where npm dropped the native packages: this machine has them (npm test installs them).
    NODE_OPTIONS: `--import ${join(root, 'test/helpers/without-native-tensorflow.mjs')}`,
    ...workerEnvironment({
      jobName: 'job',
      namespace: 'default',
      spec: spec(),
      replicaIndex: 0,
      checkpointDir: join(dir, 'ckpt2'),
      backend: 'tensorflow',
    }),
  });
  assert.is(r.code, 2);
  assert.match(
    r.out,
    /backend \\"tensorflow\\" is not available \(@tensorflow\/tfjs-node-gpu: not installed .*@tensorflow\/tfjs-node: not installed/,
  );
  noStack(r.out + r.err);
});

const argCases: [string[], RegExp | object][] = [
  [['job.yaml'], { file: 'job.yaml', workers: 1, out: undefined }],
  [
    ['job.yaml', '--workers', '1', '--out', 'o', '--backend', 'cpu'],
    { workers: 1, out: 'o', backend: 'cpu' },
  ],
  [['--out=o', 'job.yaml', '--checkpoints=c'], { out: 'o', checkpoints: 'c' }],
  [[], /missing FILE/],
  [['job.yaml', '--workers', '0'], /--workers needs a positive number/],
  [['job.yaml', '--workers', '3'], { workers: 3, elastic: true }],
  [['job.yaml', '--chaos', 'kill:40, join:80,leave:120'], { elastic: true, chaosSeed: 1 }],
  [
    ['job.yaml', '--chaos', 'explode:40'],
    /--chaos: "explode:40" is not ACTION:STEP with ACTION one of kill, join, leave, nats-restart/,
  ],
  [['job.yaml', '--chaos', 'kill:x'], /--chaos: "kill:x" is not ACTION:STEP/],
  [['job.yaml', '--chaos-seed', 'abc'], /--chaos-seed needs a number, got abc/],
  [['job.yaml', '--backend', 'gpu'], /--backend must be one of auto, tensorflow, wasm, cpu/],
  [['job.yaml', '--fake-topology', '2:2'], { fakeTopology: { nodes: 2, zones: 2 } }],
  [['job.yaml', '--fake-topology', '2'], /--fake-topology needs NODES:ZONES/],
  [['job.yaml', '--fake-topology', '0:1'], /--fake-topology needs NODES:ZONES/],
  [['job.yaml', '--pin-cpus'], { pinCpus: true }],
  [['job.yaml', '--cpu-quota', '0.5'], { cpuQuota: 0.5 }],
  [['job.yaml'], { cpuQuota: undefined }],
  [['job.yaml', '--cpu-quota', '0'], /--cpu-quota needs a positive number of cores per worker/],
  [['job.yaml', '--cpu-quota', 'half'], /--cpu-quota needs a positive number of cores per worker/],
  [['job.yaml', '--cpu-quota', '4096'], /--cpu-quota 4096: more than the \d+ CPU\(s\) of this machine/],
  [['job.yaml', '--cpu-quota', '0.001'], /--cpu-quota 0.001: below the kernel's smallest quota/],
  [['job.yaml'], { pinCpus: undefined }],
  [['job.yaml', '--fast'], /unknown option --fast/],
  [['a.yaml', 'b.yaml'], /one manifest at a time/],
];
for (const [args, expected] of argCases) {
  test(`parseRunArgs ${JSON.stringify(args)}`, () => {
    const parsed = parseRunArgs(args);
    if (expected instanceof RegExp) assert.match(String(parsed), expected);
    else
      for (const [key, value] of Object.entries(expected))
        assert.equal((parsed as unknown as Record<string, unknown>)[key], value);
  });
}

test('--pin-cpus: worker i on CPU i mod the CPUs; without it no worker is pinned', () => {
  const job = validateTrainingJob(validManifest('pinned'));
  if (!job.ok) throw new Error('invalid');
  const options = {
    file: 'x',
    workers: availableParallelism() + 1,
    out: 'runs/p',
    backend: undefined,
    checkpoints: undefined,
    chaos: [],
    chaosSeed: 1,
    elastic: true,
  };
  const pinned = planLocalRun(job.job, { ...options, pinCpus: true }, '/srv');
  assert.equal(
    pinned.workers.map((w) => w.cpu),
    pinned.workers.map((_, i) => i % availableParallelism()),
  );
  assert.ok(planLocalRun(job.job, options, '/srv').workers.every((w) => w.cpu === undefined));
});

test('the local plan configures a worker the way loadWorkerConfig reads it (no NATS for one worker)', () => {
  const job = validateTrainingJob(validManifest('local'));
  if (!job.ok) throw new Error('invalid');
  const resolved = resolveManifestPaths(
    { ...job.job, spec: { ...job.job.spec, dataset: { ...job.job.spec.dataset, path: 'data' } } },
    '/srv/jobs',
  );
  assert.is(resolved.spec.dataset.path, '/srv/jobs/data');
  const remote = resolveManifestPaths(
    { ...job.job, spec: { ...job.job.spec, dataset: { ...job.job.spec.dataset, path: 's3://bucket/data' } } },
    '/srv/jobs',
  );
  assert.is(remote.spec.dataset.path, 's3://bucket/data', 'a URL is not relative to the manifest');
  const plan = planLocalRun(
    resolved,
    {
      file: 'x',
      workers: 1,
      out: 'runs/a',
      backend: 'wasm',
      checkpoints: undefined,
      chaos: [],
      chaosSeed: 1,
      elastic: false,
    },
    '/home/me',
  );
  assert.is(plan.out, '/home/me/runs/a');
  assert.is(plan.checkpointDir, '/home/me/runs/a/checkpoints');
  const worker = plan.workers[0];
  assert.ok(worker);
  const config = loadWorkerConfig(worker?.env ?? {});
  assert.is(config.jobName, 'local');
  assert.is(config.workerId, 'local-worker-0');
  assert.is(config.natsUrl, undefined);
  assert.is(config.backend, 'wasm');
  assert.is(config.outDir, '/home/me/runs/a');
  assert.equal(config.spec, resolved.spec);
});

test('parseChaos sorts the script by step', () => {
  assert.equal(parseChaos('leave:120,kill:40,join:80'), [
    { action: 'kill', step: 40 },
    { action: 'join', step: 80 },
    { action: 'leave', step: 120 },
  ]);
});

// [generation ends, history, wall seconds, expected goodput]
const goodputCases: [string, GenerationEnd[], { generation: number; firstStep: number }[], number, number][] =
  [
    [
      'one generation, all steps count',
      [{ generation: 1, firstStep: 0, lastStep: 100, stepSeconds: 9 }],
      [{ generation: 1, firstStep: 0 }],
      10,
      0.9,
    ],
    [
      'steps a later generation redid do not count; the slowest member speaks for a generation',
      [
        { generation: 1, firstStep: 0, lastStep: 50, stepSeconds: 5 },
        { generation: 1, firstStep: 0, lastStep: 50, stepSeconds: 4 },
        { generation: 2, firstStep: 40, lastStep: 100, stepSeconds: 3 },
      ],
      [
        { generation: 1, firstStep: 0 },
        { generation: 2, firstStep: 40 },
      ],
      10,
      0.7,
    ],
    [
      'a generation lost with its state counts for nothing',
      [{ generation: 3, firstStep: 0, lastStep: 10, stepSeconds: 5 }],
      [{ generation: 1, firstStep: 0 }],
      10,
      0,
    ],
  ];
for (const [name, ends, history, wall, expected] of goodputCases) {
  test(`goodput: ${name}`, () => {
    assert.ok(Math.abs(goodput(ends, history, wall) - expected) < 1e-9, String(goodput(ends, history, wall)));
  });
}

test('tensile run refuses an invalid manifest with the field, before starting anything', () => {
  const file = join(dir, 'bad.yaml');
  writeFileSync(
    file,
    'apiVersion: tensile.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: bad}\nspec:\n  model: {mlp: {}}\n  dataset: {format: idx, path: /x}\n  optimizer: {learningRate: 0}\n',
  );
  const r = tensile(['run', file, '--out', join(dir, 'out')]);
  assert.is(r.code, 2);
  assert.match(r.err, /bad\.yaml:7: document 1: spec\.optimizer\.learningRate: must be > 0/);
  noStack(r.err);
});

const lines: [Record<string, unknown>, RegExp | undefined][] = [
  [
    {
      event: 'progress',
      step: 10,
      plannedSteps: 100,
      epoch: 0,
      loss: 0.5,
      accuracy: 0.8,
      samplesPerSecond: 1234.4,
    },
    /step 10\/100 {2}epoch 0 {2}loss 0\.5000 {2}accuracy 0\.8000 {2}1234 samples\/s/,
  ],
  [
    { event: 'eval', step: 10, accuracy: 0.9, loss: 0.3, samples: 100 },
    /evaluation at step 10: accuracy 0\.9000/,
  ],
  [{ event: 'checkpoint', step: 10, path: '/c/ckpt-10' }, /checkpoint at step 10: \/c\/ckpt-10/],
  [
    { level: 'warn', message: 'skipping invalid checkpoint', reason: 'bad sum' },
    /warn: skipping invalid checkpoint \(bad sum\)/,
  ],
  [{ level: 'info', message: 'reading dataset' }, undefined],
];
for (const [line, expected] of lines) {
  test(`describeLogLine ${String(line['event'] ?? line['message'])}`, () => {
    const text = describeLogLine(line);
    if (expected === undefined) assert.is(text, undefined);
    else assert.match(text ?? '', expected);
  });
}

test('--fake-topology 2:2 places workers alternately on two nodes in two zones, as pods would learn', () => {
  const placed = [0, 1, 2, 3].map((i) => fakePlacement(i, { nodes: 2, zones: 2 }));
  assert.equal(placed, [
    { nodeName: 'fake-node-0', zone: 'fake-zone-0' },
    { nodeName: 'fake-node-1', zone: 'fake-zone-1' },
    { nodeName: 'fake-node-0', zone: 'fake-zone-0' },
    { nodeName: 'fake-node-1', zone: 'fake-zone-1' },
  ]);
  // Four nodes in two zones: nodes 0 and 1 share a zone.
  assert.equal(
    [0, 1, 2, 3].map((i) => fakePlacement(i, { nodes: 4, zones: 2 }).zone),
    ['fake-zone-0', 'fake-zone-0', 'fake-zone-1', 'fake-zone-1'],
  );
  const job = validateTrainingJob(validManifest('placed'));
  if (!job.ok) throw new Error('invalid');
  const plan = planLocalRun(
    job.job,
    {
      file: 'x',
      workers: 2,
      out: '/tmp/placed',
      backend: undefined,
      checkpoints: undefined,
      chaos: [],
      chaosSeed: 1,
      elastic: true,
      fakeTopology: { nodes: 2, zones: 2 },
    },
    '/',
  );
  const config = loadWorkerConfig(plan.workers[1]?.env ?? {});
  assert.equal([config.nodeName, config.zone], ['fake-node-1', 'fake-zone-1']);
});

test.run();
