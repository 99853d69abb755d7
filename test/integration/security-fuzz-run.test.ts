/**
 * Hostile input during a real run (`tensile run`: real worker processes, a real nats-server, the real
 * Fashion-MNIST files). While two workers train, the test publishes ≥ 1,000 random and mutated
 * messages on each of the job's subjects and into its rendezvous bucket, opens connections to the
 * workers' collective ports that send garbage, oversized and stray frames, and dials a worker as an
 * outsider who knows everything about the world but its link token. Every one of them must be
 * dropped and counted (the outsider refused and logged), and the run must finish as if nothing
 * happened: one world, every step, every sample exactly once per epoch, identical weights on both ranks.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  encodeMessage,
  jobSubjects,
  MAX_REPORT_BYTES,
  rendezvousBucket,
} from '../../operator/api/contract.ts';
import { CollectiveError, dial, encodeFrame } from '../../worker/collective/transport.ts';
import { MemberRecordSchema, WorldRecordSchema } from '../../worker/rendezvous/decide.ts';
import { eventually } from '../helpers/eventually.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();

const TRAIN = 6000;
const BATCH = 60;
// Long enough to outlast the fuzz on a fast machine (400 steps did not).
const EPOCHS = 25;
const STEPS = (TRAIN / BATCH) * EPOCHS;
const PER_SUBJECT = 1000;
const JOB = 'fuzzed';

/** A seeded xorshift: a failing case replays with TENSILE_TEST_SEED. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  return {
    int: (n: number) => next() % n,
    bytes: (n: number) => Uint8Array.from({ length: n }, () => next() & 0xff),
  };
}
type Rng = ReturnType<typeof rng>;

/** Random bytes, a mutated or truncated valid message, a wrong type, or one over the size limit. */
function hostile(r: Rng, valid: Uint8Array): Uint8Array {
  switch (r.int(5)) {
    case 0:
      return r.bytes(1 + r.int(2000));
    case 1: {
      const bytes = Uint8Array.from(valid);
      for (let flips = 1 + r.int(4); flips > 0; flips--) bytes[r.int(bytes.length)] = r.int(256);
      return bytes;
    }
    case 2:
      return valid.subarray(0, r.int(valid.length));
    case 3:
      return encodeMessage([null, 1, 'x', { type: r.int(3) }][r.int(4)]);
    default:
      return new Uint8Array(MAX_REPORT_BYTES + 1 + r.int(1000)).fill(0x20);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'tensile-fuzz-'));
const file = writeJobManifest(join(dir, 'fuzzed.yaml'), JOB, {
  // Both from the start: one world of two for the whole run, unless the fuzz breaks it.
  replicas: 2,
  minReplicas: 2,
  maxReplicas: 2,
  model: { mlp: { hiddenUnits: [64], dropout: 0 }, seed: 5 },
  dataset: { format: 'idx', path: FASHION, maxTrainSamples: TRAIN, eval: { maxSamples: 500 } },
  optimizer: { type: 'adam', learningRate: 0.003 },
  batch: { global: BATCH, policy: 'fixedGlobalBatch' },
  stopping: { epochs: EPOCHS },
  checkpoint: { intervalSteps: 100, keep: 2 },
  rendezvous: { heartbeatMillis: 500, timeoutMillis: 5000, lastCallMillis: 500 },
});

/** Publishes hostile messages on the job's subjects and writes malformed records into its bucket. */
async function fuzzNats(nc: NatsConnection, uid: string, r: Rng): Promise<number> {
  const subjects = jobSubjects('default', JOB);
  const time = new Date().toISOString();
  // Valid messages of another incarnation: mutations of them may parse, but never as this job's.
  const stranger = 'not-this-incarnation';
  const samples: Record<string, Uint8Array> = {
    [subjects.control]: encodeMessage({ type: 'stop', jobUid: stranger, reason: 'fuzz' }),
    [subjects.metrics]: encodeMessage({
      type: 'progress',
      jobUid: stranger,
      worker: 'w',
      generation: 1,
      worldSize: 1,
      step: 1,
      epoch: 0,
      loss: 1,
      samplesPerSecond: 1,
      time,
    }),
    [subjects.events]: encodeMessage({
      type: 'rescaling',
      jobUid: stranger,
      worker: 'w',
      generation: 1,
      reason: 'x',
      time,
    }),
  };
  let sent = 0;
  for (const [subject, valid] of Object.entries(samples)) {
    for (let i = 0; i < PER_SUBJECT; i++) {
      nc.publish(subject, hostile(r, valid));
      sent++;
    }
    await nc.flush();
  }
  // The bucket: member, world and completion records that do not decode. A well-formed record is
  // a write by someone who may write the bucket (per-job credentials decide who), not fuzz.
  // A loaded machine (the workers train beside this) may ack slowly: the default 5 s is not the test.
  const kv = await nc.jetstream({ timeout: 60_000 }).views.kv(rendezvousBucket('default', JOB, uid));
  const member = encodeMessage({
    id: 'x',
    address: '127.0.0.1:1',
    joinedAt: 0,
    heartbeat: 0,
    state: 'active',
  });
  const world = encodeMessage({ generation: 99, members: [], linkToken: 'x' });
  let written = 0;
  for (let i = 0; written < PER_SUBJECT; i++) {
    const key = [`member.fuzz-${i % 50}`, 'world', 'completed'][i % 3] as string;
    const value = hostile(r, key === 'world' ? world : member);
    if (value.byteLength > 900_000) continue;
    const text = new TextDecoder().decode(value);
    const json = (() => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return undefined;
      }
    })();
    if (MemberRecordSchema.safeParse(json).success || WorldRecordSchema.safeParse(json).success) continue;
    // The world key only rarely: the workers rewrite nothing until their world changes.
    if (key === 'world' && i % 30 !== 0) continue;
    await kv.put(key, value);
    written++;
  }
  return sent + written;
}

/** Connections to a worker's collective port: garbage, oversized and stray frames. */
async function fuzzLink(address: string, r: Rng): Promise<number> {
  const [host, port] = [
    address.slice(0, address.lastIndexOf(':')),
    Number(address.slice(address.lastIndexOf(':') + 1)),
  ];
  let frames = 0;
  for (let c = 0; c < 100; c++) {
    const chunks: Uint8Array[] = [];
    for (let f = 0; f < 12; f++, frames++) {
      const kind = r.int(7);
      const payload = r.int(4) === 0 ? new Uint8Array(0) : r.bytes(r.int(3000));
      const [header, body] = encodeFrame(kind, r.int(4), r.int(10), payload) as [Buffer, Buffer];
      if (r.int(8) === 0) header.writeUInt32BE(0x1000_0000 + r.int(1000), 0); // oversized
      chunks.push(header, body);
    }
    if (r.int(4) === 0) chunks.push(r.bytes(r.int(500)));
    await new Promise<void>((resolve) => {
      const socket = tcpConnect(port, host.replace(/^\[|\]$/g, ''), () => socket.end(Buffer.concat(chunks)));
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
    });
  }
  return frames;
}

test('hostile messages, frames and an outsider during training: dropped, counted, the run unchanged', async () => {
  const seed = Number(process.env['TENSILE_TEST_SEED'] ?? 1);
  const r = rng(seed);
  const out = join(dir, 'run');
  const run = tensileRun(file, out, ['--workers', '2'], { TENSILE_CHECKSUM_EVERY: '1' });
  const url = /nats-server at (\S+)/.exec(await run.waitFor(/nats-server at /))?.[1] as string;
  // Both workers in one world, at its first steps.
  const joined = await eventually('a world of two, training', () => {
    const events = workerEvents(out);
    const addresses = events.filter((e) => e['event'] === 'rendezvous').map((e) => String(e['address']));
    const world = events.find((e) => e['event'] === 'generation');
    const training = events.some((e) => e['event'] === 'progress');
    return addresses.length === 2 && training && world !== undefined
      ? { addresses, generation: Number(world['generation']) }
      : undefined;
  });
  const uid = readFileSync(join(out, 'job-uid'), 'utf8').trim();
  const nc = await connect({ servers: url });
  let sentMessages = 0;
  let sentFrames = 0;
  try {
    const started = performance.now();
    sentMessages = await fuzzNats(nc, uid, r);
    console.log(`  NATS fuzz took ${Math.round(performance.now() - started)} ms`);
    for (const address of joined.addresses) sentFrames += await fuzzLink(address, r);
    // The outsider: the job, the current generation and real ranks, a guessed token.
    const outsider = await dial(
      joined.addresses[0] as string,
      { job: JOB, generation: joined.generation, fromRank: 1, toRank: 0, size: 2 },
      'guessed-token-of-an-outsider',
      1000,
    ).catch((e: unknown) => e);
    assert.ok(outsider instanceof CollectiveError, 'the outsider was refused');
  } finally {
    await nc.close();
  }
  console.log(`  sent ${sentMessages} NATS messages and ${sentFrames} collective frames (seed ${seed})`);
  assert.ok(run.child.exitCode === null, 'the fuzz ended before training did (the run must outlast it)');

  const summary = await finished(run);
  assert.is(summary.status, 'completed');
  assert.is(summary.step, STEPS);
  assert.equal(
    summary.generations.map((g) => g.worldSize),
    [2],
    'one world from start to end: nothing broke it',
  );
  for (const e of summary.epochs) assert.equal([e.seen, e.duplicated, e.missing], [TRAIN, 0, 0]);

  const events = workerEvents(out);
  const sums = new Map<number, Set<string>>();
  for (const e of events.filter((x) => x['event'] === 'checksum'))
    sums.set(e['step'] as number, (sums.get(e['step'] as number) ?? new Set()).add(String(e['checksum'])));
  for (const [step, set] of sums) assert.is(set.size, 1, `weights differ at step ${step}`);

  // Counted: the largest total logged per worker and reason.
  const totals = new Map<string, number>();
  for (const e of events.filter((x) => x['event'] === 'dropped')) {
    const key = `${e['worker']}|${e['channel']}:${e['reason']}`;
    totals.set(key, Math.max(totals.get(key) ?? 0, e['total'] as number));
  }
  console.log(`  dropped: ${[...totals].map(([k, n]) => `${k} ≥${n}`).join(', ')}`);
  const reasons = new Set([...totals.keys()].map((k) => k.split('|')[1]));
  for (const reason of [
    'nats:not json',
    'nats:schema',
    'nats:another incarnation',
    'collective:bad frame',
    'collective:bad token',
  ])
    assert.ok(reasons.has(reason), `${reason} counted: ${[...reasons].join(', ')}`);
  assert.ok(
    events.some((e) => e['event'] === 'dropped' && e['reason'] === 'bad token' && e['level'] === 'warn'),
    'the refused outsider is logged',
  );
});

test.run();
