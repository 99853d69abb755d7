/**
 * The small units of the worker's lifecycle (worker/lifecycle/): the progress window, the checkpoint
 * schedule, the generation number and the evaluation shards. The states themselves run in
 * test/integration/worker-run, elastic-run and agreement-run.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type SnapshotQuestion, snapshotDue } from '../../worker/lifecycle/checkpoint-schedule.ts';
import { evaluationShard } from '../../worker/lifecycle/evaluate.ts';
import { generationNumber } from '../../worker/lifecycle/generation.ts';
import { ProgressWindow } from '../../worker/lifecycle/progress-window.ts';

test('the progress window: means over its steps, throughput over its time, then a new window', () => {
  const window = new ProgressWindow(1000);
  assert.is(window.due(5000, 1000, true), false, 'nothing to report before a step');
  window.add({ samples: 64, loss: 1, accuracy: 0.5 });
  window.add({ samples: 64, loss: 0.5, accuracy: 0.7 });
  assert.is(window.due(1500, 1000, false), false);
  assert.is(window.due(1500, 1000, true), true, 'at once when training ends or after an evaluation');
  assert.is(window.due(2000, 1000, false), true);
  const report = window.take(2000);
  assert.equal(report, { loss: 0.75, accuracy: 0.6, samplesPerSecond: 128 });
  window.add({ samples: 10, loss: 2, accuracy: 0 });
  assert.equal(window.take(2300), { loss: 2, accuracy: 0, samplesPerSecond: 33.3 });
  window.add({ samples: 10, loss: 2, accuracy: 0 });
  assert.is(window.take(2300).samplesPerSecond, 0, 'no time, no throughput (not Infinity)');
});

const asked = (q: Partial<SnapshotQuestion>): SnapshotQuestion => ({
  writer: true,
  ending: false,
  busy: false,
  requested: false,
  settings: { intervalSteps: 100 },
  step: 100,
  lastStep: 0,
  lastTime: 0,
  now: 1000,
  ...q,
});
// [name, question, due]
const schedule: [string, SnapshotQuestion, boolean][] = [
  ['a multiple of the interval crossed', asked({}), true],
  ['not yet', asked({ step: 99 }), false],
  ['a delayed one does not shift the next', asked({ step: 205, lastStep: 105 }), true],
  ['only the writer', asked({ writer: false }), false],
  ['not while the writer is busy', asked({ busy: true }), false],
  ['not at the end: the final checkpoint follows', asked({ ending: true }), false],
  ['on request, off the interval', asked({ step: 50, requested: true }), true],
  ['a request waits for the busy writer', asked({ step: 50, requested: true, busy: true }), false],
  [
    'by time',
    asked({ settings: { intervalSeconds: 30 }, step: 7, lastStep: 3, lastTime: 0, now: 30_000 }),
    true,
  ],
  ['not twice at a step', asked({ step: 100, lastStep: 100 }), false],
];
for (const [name, question, due] of schedule)
  test(`snapshotDue: ${name}`, () => assert.is(snapshotDue(question), due));

// [name, rendezvous round, state, generation]
const numbers: [string, number, { generation: number; generations: readonly unknown[] }, number][] = [
  ['the first world of an elastic job: its round', 1, { generation: 0, generations: [] }, 1],
  ['a world of one: 0, then one more each time', 0, { generation: 0, generations: [] }, 0],
  ['a world of one resumed', 0, { generation: 4, generations: [{}] }, 5],
  ['a later round', 7, { generation: 3, generations: [{}] }, 7],
  ['a fresh rendezvous bucket under a resumed state', 1, { generation: 6, generations: [{}] }, 7],
];
for (const [name, round, state, expected] of numbers)
  test(`generationNumber: ${name}`, () =>
    assert.is(generationNumber(round, state as Parameters<typeof generationNumber>[1]), expected));

test('evaluation shards cover the set once, in rank order', () => {
  for (const [size, ranks] of [
    [10, 3],
    [1000, 4],
    [2, 3],
  ] as const) {
    const shards = Array.from({ length: ranks }, (_, rank) => evaluationShard(size, rank, ranks));
    assert.is(shards[0]?.from, 0);
    assert.is(shards[ranks - 1]?.to, size);
    for (let r = 1; r < ranks; r++) assert.is(shards[r]?.from, shards[r - 1]?.to);
  }
});

test.run();
