/**
 * A job deleted and created again under the same name is another incarnation: real worker processes
 * (`tensile worker`, configured as the operator configures pods) against a real nats-server show that
 * the second one trains instead of taking the first one's completion, and that a worker refuses the
 * records of another incarnation even where it finds them.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  COMPLETED_KEY,
  CompletionRecordSchema,
  completionFromRecord,
  decodeMessage,
  encodeMessage,
  jobSubjects,
  rendezvousBucket,
} from '../../operator/api/contract.ts';
import type { TrainingJobSpec } from '../../operator/api/training-job.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { workerEnvironment } from '../../operator/api/worker-env.ts';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';
import { readWorkerResult, resultFile, type WorkerResult } from '../../worker/result.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';

const FASHION = fashionMnistDir();
const NS = 'team-a';
const JOB = 'recreated';
const bin = fileURLToPath(new URL('../../operator/bin/tensile.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tensile-incarnation-'));
console.log(`  worker logs under ${dir}`);

let nats: NatsServer;
let nc: NatsConnection;

test.before(async () => {
  try {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await nc?.close();
  await nats?.[Symbol.asyncDispose]();
});

/** 200 samples, global batch 50, one epoch: 4 steps, whatever the number of workers. */
const STEPS = 4;

function spec(replicas: number, epochs = 1): TrainingJobSpec {
  const m = validManifest(JOB);
  setPath(m, 'metadata.namespace', NS);
  setPath(m, 'spec.replicas', replicas);
  setPath(m, 'spec.minReplicas', replicas);
  setPath(m, 'spec.maxReplicas', replicas);
  setPath(m, 'spec.dataset', {
    format: 'idx',
    path: FASHION,
    maxTrainSamples: 200,
    eval: { maxSamples: 100 },
  });
  setPath(m, 'spec.batch', { global: 50 });
  setPath(m, 'spec.stopping', { epochs });
  setPath(m, 'spec.checkpoint', { intervalSteps: 100 });
  const result = validateTrainingJob(m);
  if (!result.ok) throw new Error(result.problems.map((p) => `${p.path}: ${p.message}`).join('; '));
  return result.job.spec;
}

interface Ran {
  readonly code: number | null;
  readonly result: WorkerResult;
  readonly log: string;
}

interface Started {
  /** Resolves once the worker is in the rendezvous (or has exited). */
  readonly joined: Promise<void>;
  /** Resolves once the worker trains in a world (or has exited). */
  readonly training: Promise<void>;
  readonly finished: Promise<Ran>;
}

/** Worker `index` of incarnation `uid` of a job of `replicas` workers, as its pod would run it. */
function startWorker(uid: string, name: string, index = 0, replicas = 1, epochs = 1): Started {
  const out = join(dir, name);
  const workerId = `${JOB}-worker-${index}`;
  const env = workerEnvironment({
    jobName: JOB,
    namespace: NS,
    jobUid: uid,
    spec: spec(replicas, epochs),
    workerId,
    replicaIndex: index,
    natsUrl: nats.url,
    checkpointDir: join(out, 'checkpoints'),
    outDir: out,
    backend: 'wasm',
  });
  const child = spawn(process.execPath, [bin, 'worker'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  let onJoined: () => void = () => undefined;
  let onTraining: () => void = () => undefined;
  const joined = new Promise<void>((resolve) => {
    onJoined = resolve;
  });
  const training = new Promise<void>((resolve) => {
    onTraining = resolve;
  });
  child.stdout.on('data', (chunk: Buffer) => {
    log += chunk.toString();
    if (log.includes('"rendezvous joined"')) onJoined();
    if (log.includes('"world formed"')) onTraining();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    log += chunk.toString();
  });
  const finished = new Promise<number | null>((resolve) => child.on('close', resolve)).then((code) => {
    onJoined();
    onTraining();
    // Kept for reading after a failed run.
    writeFileSync(join(out, `worker-${index}.log`), log);
    const file = resultFile(out, workerId);
    if (!existsSync(file)) throw new Error(`${name}: no result (exit ${code}):\n${log}`);
    return { code, result: readWorkerResult(file), log };
  });
  return { joined, training, finished };
}

const runWorker = (uid: string, name: string) => startWorker(uid, name).finished;

async function buckets(): Promise<string[]> {
  const jsm = await nc.jetstreamManager();
  const names: string[] = [];
  for await (const stream of jsm.streams.names()) names.push(stream);
  return names.sort();
}

const UID_A = '6f1c1b7e-0b0e-4d6a-9a35-1d7c1e2a0001';
const UID_B = '6f1c1b7e-0b0e-4d6a-9a35-1d7c1e2a0002';
const UID_C = '6f1c1b7e-0b0e-4d6a-9a35-1d7c1e2a0003';

test('a job created again under the same name trains from step 0, not done at once by the first one’s completion', async () => {
  const first = await runWorker(UID_A, 'first');
  assert.is(first.code, 0);
  assert.is(first.result.status, 'completed');
  assert.is(first.result.step, STEPS);
  // Its completion record holds the figures of its `completed` message, for an operator that missed it.
  const kv = await nc.jetstream().views.kv(rendezvousBucket(NS, JOB, UID_A), { bindOnly: true });
  const stored = await kv.get(COMPLETED_KEY);
  const decoded = decodeMessage(CompletionRecordSchema, stored?.value ?? new Uint8Array());
  const completion = decoded.ok ? completionFromRecord(decoded.value) : undefined;
  assert.ok(completion !== undefined, decoded.ok ? 'no figures in the record' : decoded.error);
  assert.equal(
    [completion?.jobUid, completion?.step, completion?.epoch, completion?.reason],
    [UID_A, STEPS, first.result.epoch, first.result.reason],
  );
  assert.is(completion?.accuracy, first.result.eval?.accuracy);
  assert.ok((completion?.usefulSeconds ?? 0) > 0, `useful seconds ${completion?.usefulSeconds}`);

  // Recreated with two workers: the first to start waits in the rendezvous for the second, and must
  // not take the first incarnation's completion for its own meanwhile.
  const early = startWorker(UID_B, 'second', 0, 2);
  await early.joined;
  const late = startWorker(UID_B, 'second', 1, 2);
  for (const ran of await Promise.all([early.finished, late.finished])) {
    assert.is(ran.code, 0);
    assert.is(ran.result.status, 'completed');
    assert.is(ran.result.step, STEPS, 'the second incarnation trained every step itself');
    assert.ok(ran.result.samples > 0, 'and saw samples');
    assert.not.match(ran.log, 'already-completed');
  }
  const names = await buckets();
  assert.ok(names.includes(`KV_${rendezvousBucket(NS, JOB, UID_A)}`), names.join(', '));
  assert.ok(names.includes(`KV_${rendezvousBucket(NS, JOB, UID_B)}`), names.join(', '));
});

test('records of another incarnation found in a worker’s own bucket are refused: it trains', async () => {
  // As if state of another incarnation had landed here (copied, or written by a confused peer).
  const kv = await nc.jetstream().views.kv(rendezvousBucket(NS, JOB, UID_C), { history: 1 });
  const encode = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  await kv.put('completed', encode({ step: 99, reason: 'another incarnation finished', jobUid: UID_A }));
  await kv.put(
    'world',
    encode({
      jobUid: UID_A,
      generation: 7,
      members: [{ id: `${JOB}-worker-0`, address: '127.0.0.1:1', batch: 50 }],
      startStep: 99,
      globalBatch: 50,
      learningRate: 0.001,
      policy: {},
      reason: 'another incarnation',
      createdAt: 0,
      linkToken: 'a-test-token-of-sixteen',
    }),
  );
  const ran = await runWorker(UID_C, 'third');
  assert.is(ran.code, 0);
  assert.is(ran.result.status, 'completed');
  assert.is(ran.result.step, STEPS);
  assert.match(ran.log, 'completion-ignored');
  const world = JSON.parse(new TextDecoder().decode((await kv.get('world'))?.value)) as {
    jobUid?: string;
  };
  assert.is(world.jobUid, UID_C, 'its own world replaced the foreign one');
});

test('a worker acts only on control messages of its own incarnation', async () => {
  // Long enough (4,000 steps) that it is still training when the messages arrive.
  const worker = startWorker(UID_C, 'controlled', 0, 1, 1000);
  await worker.training;
  const control = jobSubjects(NS, JOB).control;
  // In this order on one connection, so they arrive in this order: the other incarnation's first.
  nc.publish(control, encodeMessage({ type: 'stop', jobUid: UID_A, reason: 'for the deleted job' }));
  nc.publish(control, encodeMessage({ type: 'stop', reason: 'without a uid' }));
  nc.publish(control, encodeMessage({ type: 'stop', jobUid: UID_C, reason: 'for this job' }));
  const ran = await worker.finished;
  assert.is(ran.code, 0);
  assert.is(ran.result.status, 'stopped');
  assert.is(ran.result.reason, 'stopped by the operator');
  assert.ok(ran.result.step < 4000, 'stopped before the end');
  const acted = ran.log
    .split('\n')
    .filter((l) => l.includes('"event":"control"'))
    .map((l) => (JSON.parse(l) as { reason: string }).reason);
  assert.equal(acted, ['for this job']);
});

test.run();
