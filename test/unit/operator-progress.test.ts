import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CompletionMarkerSchema,
  CompletionRecordSchema,
  completionFromRecord,
  decodeMessage,
  encodeMessage,
  MAX_REPORT_BYTES,
  type RescaleEvent,
} from '../../operator/api/contract.ts';
import { ProgressTracker, subjectKey } from '../../operator/controller/progress.ts';
import { silentLogger } from '../../worker/log.ts';

function tracker() {
  const changed: [string, number][] = [];
  const rescaled: RescaleEvent[] = [];
  const t = new ProgressTracker(
    { changed: (k, d) => changed.push([k, d]), rescaled: (_k, e) => rescaled.push(e) },
    silentLogger(),
  );
  return { t, changed, rescaled };
}

const time = '2026-11-21T12:00:00Z';

test('subjects map to job keys', () => {
  assert.is(subjectKey('tensile.team-a.fashion.metrics'), 'team-a/fashion');
  assert.is(subjectKey('tensile.team-a.metrics'), undefined);
  assert.is(subjectKey('other.a.b.metrics'), undefined);
});

test('progress is kept and asks for a delayed reconcile; completion for an immediate one', () => {
  const { t, changed } = tracker();
  const progress = {
    type: 'progress',
    worker: 'w',
    generation: 1,
    worldSize: 2,
    step: 5,
    epoch: 0,
    loss: 1.2,
    samplesPerSecond: 100,
    time,
  };
  t.receive('tensile.ns.job.metrics', encodeMessage(progress));
  assert.is(t.observations('ns/job')?.progress?.step, 5);
  t.receive(
    'tensile.ns.job.metrics',
    encodeMessage({ type: 'completed', worker: 'w', step: 9, epoch: 1, loss: 1, reason: 'done', time }),
  );
  assert.is(t.observations('ns/job')?.completed?.step, 9);
  assert.equal(changed, [
    ['ns/job', 2000],
    ['ns/job', 0],
  ]);
});

test('rescaling sets, rescale clears and is reported', () => {
  const { t, rescaled } = tracker();
  t.receive(
    'tensile.ns.job.events',
    encodeMessage({ type: 'rescaling', worker: 'w', generation: 3, reason: 'w2 lost', time }),
  );
  assert.is(t.observations('ns/job')?.rescaling?.reason, 'w2 lost');
  t.receive(
    'tensile.ns.job.events',
    encodeMessage({
      type: 'rescale',
      generation: 4,
      worldSize: 2,
      members: ['a', 'b'],
      globalBatch: 128,
      learningRate: 0.001,
      step: 40,
      reason: 'w2 lost',
      time,
    }),
  );
  assert.is(t.observations('ns/job')?.rescaling, undefined);
  assert.is(rescaled[0]?.generation, 4);
});

const rescaling = (generation: number) =>
  encodeMessage({ type: 'rescaling', worker: 'w', generation, reason: `world ${generation} broke`, time });
const rescale = (generation: number) =>
  encodeMessage({
    type: 'rescale',
    generation,
    worldSize: 2,
    members: ['a', 'b'],
    globalBatch: 128,
    learningRate: 0.001,
    step: 40,
    reason: 'joining',
    time,
  });
const progressOf = (generation: number) =>
  encodeMessage({
    type: 'progress',
    worker: 'w',
    generation,
    worldSize: 2,
    step: 50,
    epoch: 0,
    loss: 1,
    samplesPerSecond: 100,
    time,
  });

// Messages of one job in arrival order → whether the job is re-forming afterwards.
const rescalingCases: [string, [subject: 'events' | 'metrics', Uint8Array][], boolean][] = [
  ['a world broke', [['events', rescaling(3)]], true],
  [
    'the next world formed',
    [
      ['events', rescaling(3)],
      ['events', rescale(4)],
    ],
    false,
  ],
  [
    "an older world's end arrives after its successor formed: no re-forming",
    [
      ['events', rescale(4)],
      ['events', rescaling(3)],
    ],
    false,
  ],
  [
    'the newest world broke after it formed',
    [
      ['events', rescale(4)],
      ['events', rescaling(4)],
    ],
    true,
  ],
  [
    'progress from a newer world than the broken one: formed, though its news was lost',
    [
      ['events', rescaling(4)],
      ['metrics', progressOf(5)],
    ],
    false,
  ],
  [
    'progress from the broken world itself (sent before it broke) does not clear it',
    [
      ['events', rescaling(4)],
      ['metrics', progressOf(4)],
    ],
    true,
  ],
];
for (const [name, messages, expected] of rescalingCases) {
  test(`rescaling: ${name}`, () => {
    const { t } = tracker();
    for (const [subject, message] of messages) t.receive(`tensile.ns.job.${subject}`, message);
    assert.is(t.observations('ns/job')?.rescaling !== undefined, expected);
  });
}

test('malformed messages are dropped, never fatal', () => {
  const { t, changed } = tracker();
  t.receive('tensile.ns.job.metrics', new TextEncoder().encode('{not json'));
  t.receive('tensile.ns.job.metrics', encodeMessage({ type: 'progress', step: -1 }));
  t.receive('tensile.ns.job.events', encodeMessage({ type: 'explode' }));
  t.receive('tensile.ns.job.events', new Uint8Array(MAX_REPORT_BYTES + 1).fill(0x20));
  t.receive('tensile.metrics', encodeMessage({ type: 'progress' }));
  assert.is(t.observations('ns/job'), undefined);
  assert.equal(changed, []);
  assert.equal(t.drops.totals(), {
    'nats:not json': 1,
    'nats:schema': 2,
    'nats:oversized': 1,
    'nats:unknown subject': 1,
  });
});

test('1,000 mutations of a progress message: each is applied or dropped and counted, none throws', () => {
  const { t, changed } = tracker();
  const valid = encodeMessage({
    type: 'progress',
    jobUid: 'uid-1',
    worker: 'w-0',
    generation: 1,
    worldSize: 2,
    step: 10,
    epoch: 0,
    loss: 0.5,
    samplesPerSecond: 100,
    time,
  });
  let x = 7;
  const next = () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x;
  };
  const n = 1000;
  for (let i = 0; i < n; i++) {
    const bytes = Uint8Array.from(valid);
    for (let flips = 1 + (next() % 3); flips > 0; flips--) bytes[next() % bytes.length] = next() % 256;
    t.receive('tensile.ns.job.metrics', bytes.subarray(0, bytes.length - (next() % 2)));
  }
  assert.ok(t.drops.total > n / 2, `${t.drops.total} dropped`);
  assert.is(t.drops.total + changed.length, n);
});

test('reports are kept per incarnation: a job of the same name never reads the one before it', () => {
  const { t } = tracker();
  const progress = (jobUid: string, step: number) =>
    encodeMessage({
      type: 'progress',
      jobUid,
      worker: 'w',
      generation: 1,
      worldSize: 1,
      step,
      epoch: 0,
      loss: 1,
      samplesPerSecond: 10,
      time,
    });
  t.receive(
    'tensile.ns.job.metrics',
    encodeMessage({
      type: 'completed',
      jobUid: 'old',
      worker: 'w',
      step: 90,
      epoch: 3,
      loss: 1,
      reason: 'done',
      time,
    }),
  );
  t.receive('tensile.ns.job.metrics', progress('new', 4));
  // The old incarnation's workers are still shutting down and reporting.
  t.receive('tensile.ns.job.metrics', progress('old', 91));
  const current = t.observations('ns/job', 'new');
  assert.is(current?.progress?.step, 4);
  assert.is(current?.completed, undefined, 'the old completion is not the new job’s');
  assert.is(t.observations('ns/job', 'old')?.completed?.step, 90);
  assert.is(t.observations('ns/job', 'other'), undefined);
  assert.is(t.observations('ns/job'), undefined, 'nothing arrived without a uid');
});

test('a message without a uid is never taken for a known incarnation’s', () => {
  const { t } = tracker();
  t.receive(
    'tensile.ns.job.metrics',
    encodeMessage({ type: 'completed', worker: 'w', step: 9, epoch: 1, loss: 1, reason: 'done', time }),
  );
  assert.is(t.observations('ns/job', 'some-uid'), undefined);
  assert.is(t.observations('ns/job')?.completed?.step, 9);
});

test('a stale completion from a worker that stood by neither rolls the step back nor drops the model', () => {
  const { t } = tracker();
  const completed = (step: number, model?: object) =>
    encodeMessage({
      type: 'completed',
      worker: `w-${step}`,
      step,
      epoch: 1,
      loss: 0.3,
      reason: 'done',
      time,
      ...(model === undefined ? {} : { model }),
    });
  const model = { uri: 'pvc://c/model', step: 4690, time };
  t.receive('tensile.ns.job.metrics', completed(4690, model));
  t.receive('tensile.ns.job.metrics', completed(29));
  assert.is(t.observations('ns/job')?.completed?.step, 4690);
  assert.equal(t.observations('ns/job')?.completed?.model, model);
  // The other order: the stale one first, the writer's after it.
  const other = tracker().t;
  other.receive('tensile.ns.job.metrics', completed(29));
  other.receive('tensile.ns.job.metrics', completed(4690, model));
  assert.is(other.observations('ns/job')?.completed?.step, 4690);
  assert.equal(other.observations('ns/job')?.completed?.model, model);
});

// What the writer of the last world leaves in the bucket (worker/lifecycle/states.ts `finishing`).
const record = {
  jobUid: 'uid-a',
  worker: 'job-worker-0',
  step: 4690,
  epoch: 10,
  loss: 0.33,
  accuracy: 0.8839,
  lastCheckpoint: { step: 4690, path: '/c/ckpt-4690', time },
  model: { uri: 'pvc://job-checkpoints/model', step: 4690, accuracy: 0.8839, time },
  usefulSeconds: 40.6,
  reason: 'completed 10 epochs',
  time,
};

function liveTracker(uid = 'uid-a') {
  const changed: string[] = [];
  const t = new ProgressTracker(
    { changed: (k) => changed.push(k), rescaled: () => undefined },
    silentLogger(),
    { liveUid: (key) => (key === 'ns/job' ? uid : undefined) },
  );
  return { t, changed };
}

test('a completion record is taken exactly as the completed message it stands for', () => {
  const { t, changed } = liveTracker();
  assert.ok(t.receiveCompletionRecord('ns/job', 'uid-a', encodeMessage(record), 'bucket/completed'));
  assert.equal(t.observations('ns/job', 'uid-a')?.completed, { type: 'completed', ...record });
  // The reconcile that read it plans with it: no other is asked for.
  assert.equal(changed, []);
  assert.is(t.drops.total, 0);
});

test('a record beside the message: the furthest completion stands, with the model of either', () => {
  const { t } = liveTracker();
  const { model: _, ...withoutModel } = record;
  t.receive('tensile.ns.job.metrics', encodeMessage({ type: 'completed', ...withoutModel, step: 4000 }));
  t.receiveCompletionRecord('ns/job', 'uid-a', encodeMessage(record), 'bucket/completed');
  assert.is(t.observations('ns/job', 'uid-a')?.completed?.step, 4690);
  assert.is(t.observations('ns/job', 'uid-a')?.completed?.model?.step, 4690);
});

test('bad, foreign and figureless records are dropped and counted, never thrown', () => {
  const cases: [string, Uint8Array, string][] = [
    ['not JSON', new TextEncoder().encode('{"step": 4'), 'nats:not json'],
    ['a step that is no count', encodeMessage({ ...record, step: -1 }), 'nats:schema'],
    ['a model without its uri', encodeMessage({ ...record, model: { step: 1, time } }), 'nats:schema'],
    ['oversized', new Uint8Array(MAX_REPORT_BYTES + 1), 'nats:oversized'],
    ['another incarnation’s', encodeMessage({ ...record, jobUid: 'uid-b' }), 'nats:other incarnation'],
    ['one naming no incarnation', encodeMessage({ ...record, jobUid: undefined }), 'nats:other incarnation'],
    [
      'an earlier worker’s (step and reason only)',
      encodeMessage({ jobUid: 'uid-a', step: 4690, reason: 'done' }),
      'nats:no figures',
    ],
  ];
  for (const [name, data, reason] of cases) {
    const { t } = liveTracker();
    assert.not.ok(t.receiveCompletionRecord('ns/job', 'uid-a', data, 'bucket/completed'), name);
    assert.is(t.observations('ns/job', 'uid-a'), undefined, name);
    assert.equal(t.drops.totals(), { [reason]: 1 }, name);
  }
});

test('records of earlier workers still decode; workers stop by the marker whatever the figures', () => {
  const old = encodeMessage({ jobUid: 'uid-a', step: 99, reason: 'done' });
  const decoded = decodeMessage(CompletionRecordSchema, old);
  assert.ok(decoded.ok);
  if (decoded.ok) assert.is(completionFromRecord(decoded.value), undefined);
  const garbledFigures = encodeMessage({ ...record, loss: 'high' });
  const marker = decodeMessage(CompletionMarkerSchema, garbledFigures);
  assert.equal(marker.ok ? marker.value : marker, {
    jobUid: 'uid-a',
    step: 4690,
    reason: 'completed 10 epochs',
  });
});

test('only jobs that exist are tracked: 1,000 made-up jobs and uids leave nothing behind', () => {
  const live = new Map([['ns/job', 'uid-1']]);
  const changed: string[] = [];
  const t = new ProgressTracker(
    { changed: (k) => changed.push(k), rescaled: () => undefined },
    silentLogger(),
    { liveUid: (key) => live.get(key) },
  );
  const progress = (jobUid: string) =>
    encodeMessage({
      type: 'progress',
      jobUid,
      worker: 'w',
      generation: 1,
      worldSize: 1,
      step: 1,
      epoch: 0,
      loss: 1,
      samplesPerSecond: 10,
      time,
    });
  for (let i = 0; i < 1000; i++) {
    t.receive(`tensile.ns.job-${i}.metrics`, progress(`uid-${i}`));
    t.receive('tensile.ns.job.metrics', progress(`forged-${i}`));
  }
  assert.is(t.size, 0);
  assert.equal(t.drops.totals(), { 'nats:unknown job': 1000, 'nats:other incarnation': 1000 });
  assert.equal(changed, []);
  t.receive('tensile.ns.job.metrics', progress('uid-1'));
  assert.is(t.observations('ns/job', 'uid-1')?.progress?.step, 1);
  assert.is(t.size, 1);
  // Deleted and created again: the new incarnation's first report evicts the old one's entry.
  live.set('ns/job', 'uid-2');
  t.receive('tensile.ns.job.metrics', progress('uid-2'));
  assert.is(t.size, 1);
  assert.is(t.observations('ns/job', 'uid-1'), undefined);
  // Deleted: forgotten.
  live.delete('ns/job');
  t.forget('ns/job');
  assert.is(t.size, 0);
});

test('before the job cache has listed, reports are kept, not dropped; the first list prunes those of no live job', () => {
  // A replica started while the API server was away (chaos seed 2, 20 minutes): the workers' final
  // progress and their completion came before its first list, and core NATS sends neither again.
  const live = new Map<string, string>();
  let listed = false;
  const t = new ProgressTracker({ changed: () => undefined, rescaled: () => undefined }, silentLogger(), {
    liveUid: (key) => live.get(key),
    knowsJobs: () => listed,
    maxEntries: 3,
  });
  const report = (type: 'progress' | 'completed', jobUid: string, step: number) =>
    encodeMessage({
      ...(type === 'progress'
        ? { type, generation: 1, worldSize: 1, samplesPerSecond: 10 }
        : { type, reason: 'completed 1 epochs', model: { uri: 'pvc://c/model', step, time } }),
      epoch: 0,
      loss: 1,
      jobUid,
      worker: 'w',
      step,
      time,
    });
  t.receive('tensile.ns.job.metrics', report('progress', 'uid-1', 4690));
  t.receive('tensile.ns.job.metrics', report('completed', 'uid-1', 4690));
  t.receive('tensile.ns.gone.metrics', report('progress', 'uid-9', 7));
  t.receive('tensile.ns.job.metrics', report('progress', 'uid-0', 3));
  // Still bounded meanwhile: made-up names stop at the cap.
  for (let i = 0; i < 100; i++) t.receive(`tensile.ns.job-${i}.metrics`, report('progress', `u${i}`, 1));
  assert.is(t.size, 3);
  assert.equal(t.drops.totals(), { 'nats:too many jobs': 100 });
  live.set('ns/job', 'uid-1');
  listed = true;
  t.prune();
  assert.is(t.size, 1, 'the job that does not exist and the incarnation before this one are gone');
  assert.is(t.observations('ns/gone', 'uid-9'), undefined);
  assert.is(t.observations('ns/job', 'uid-0'), undefined);
  assert.is(t.observations('ns/job', 'uid-1')?.progress?.step, 4690);
  assert.equal(t.observations('ns/job', 'uid-1')?.completed?.model?.uri, 'pvc://c/model');
  // Listed: a job it does not know is unknown again.
  t.receive('tensile.ns.other.metrics', report('progress', 'uid-5', 1));
  assert.is(t.drops.totals()['nats:unknown job'], 1);
});

test('without a view of the live jobs, the entries stop at the cap', () => {
  const t = new ProgressTracker({ changed: () => undefined, rescaled: () => undefined }, silentLogger(), {
    maxEntries: 10,
  });
  for (let i = 0; i < 100; i++)
    t.receive(
      `tensile.ns.job-${i}.metrics`,
      encodeMessage({
        type: 'completed',
        jobUid: `u${i}`,
        worker: 'w',
        step: 1,
        epoch: 0,
        loss: 1,
        reason: 'done',
        time,
      }),
    );
  assert.is(t.size, 10);
  assert.is(t.drops.totals()['nats:too many jobs'], 90);
  assert.is(t.observations('ns/job-9', 'u9')?.completed?.step, 1, 'the first ten stay');
});

test.run();
