/** hack/chaos/verdict.ts: duplicate pods, bounded memory, resumes and the restart/preemption counts. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  duplicateIndices,
  formatExpected,
  judgeAccounting,
  judgeMemory,
  judgeResumes,
  MIN_JUDGED_LIFE_SECONDS,
  type SeenPod,
} from '../../hack/chaos/verdict.ts';
import type { WorkerEvent } from '../../operator/api/worker-events.ts';

const pod = (uid: string, index: number, more: Partial<SeenPod> = {}): SeenPod => ({
  uid,
  name: `job-worker-${index}`,
  index,
  phase: 'Running',
  deleting: false,
  gone: false,
  ...more,
});

test('two live pods of one index are a duplicate; an ended or deleted one is not', () => {
  assert.equal([...duplicateIndices([pod('a', 0), pod('b', 1)])], []);
  assert.equal([...duplicateIndices([pod('a', 0), pod('b', 0)]).keys()], [0]);
  // A pod being deleted still runs its process: it counts until it is gone.
  assert.equal([...duplicateIndices([pod('a', 0, { deleting: true }), pod('b', 0)]).keys()], [0]);
  assert.equal([...duplicateIndices([pod('a', 0, { gone: true }), pod('b', 0)])], []);
  assert.equal([...duplicateIndices([pod('a', 0, { phase: 'Failed' }), pod('b', 0)])], []);
  assert.equal(
    [...duplicateIndices([pod('a', 0, { phase: 'Succeeded' }), pod('b', 0, { phase: 'Pending' })])],
    [],
  );
});

const MiB = 2 ** 20;
const series = (component: string, mib: (at: number) => number, seconds = 90) =>
  Array.from({ length: seconds / 5 }, (_, i) => ({ component, at: i * 5, rssBytes: mib(i * 5) * MiB }));

test('memory that levels off is bounded; memory that keeps climbing is not', () => {
  const flat = series('nats-server', (at) => (at < 30 ? 20 + at : 50));
  const leak = series('operator-0', (at) => 100 + 10 * at);
  const verdicts = judgeMemory([...flat, ...leak]);
  assert.equal(
    verdicts.map((v) => [v.component, v.ok]),
    [
      ['nats-server', true],
      ['operator-0', false],
    ],
  );
  // A start-up peak in the first third is not compared; a process sampled too briefly is left out.
  assert.is(judgeMemory(series('w', (at) => (at < 30 ? 900 : 100)))[0]?.ok, true);
  assert.equal(judgeMemory(series('short', () => 10, MIN_JUDGED_LIFE_SECONDS - 5)), []);
});

test('a replacement process is judged over its own life, not by its start-up late in the run', () => {
  const late = (pid: number, mib: (age: number) => number) =>
    series('worker-3', mib, 90).map((s) => ({ ...s, pid, at: s.at + 60 }));
  const original = series('worker-3', () => 600, 60).map((s) => ({ ...s, pid: 1 }));
  const startingUp = late(2, (age) => (age < 20 ? 129 + 25 * age : 644));
  assert.equal(
    judgeMemory([...original, ...startingUp]).map((v) => [v.component, v.ok]),
    [
      ['worker-3 (pid 1)', true],
      ['worker-3 (pid 2)', true],
    ],
  );
  const leaking = late(3, (age) => 129 + 10 * age);
  assert.is(judgeMemory(leaking)[0]?.ok, false, 'a replacement that keeps climbing still fails');
});

const ev = (e: Record<string, unknown>) => e as unknown as WorkerEvent;

test('a resume must load a checkpoint that some worker finished writing', () => {
  const ok = judgeResumes([
    ev({ event: 'checkpoint', step: 200, path: '/c/step-200' }),
    ev({ event: 'checkpoint-skipped', path: '/c/step-400', reason: 'checksum' }),
    ev({ event: 'resumed', step: 200, path: '/c/step-200' }),
  ]);
  assert.equal(ok, { resumed: 1, bad: [], skipped: 1 });
  const bad = judgeResumes([
    ev({ event: 'checkpoint', step: 200, path: '/c/step-200' }),
    ev({ event: 'resumed', step: 400, path: '/c/step-400' }),
    ev({ event: 'resumed', step: 400, path: '/c/.tmp-step-400' }),
  ]);
  assert.equal(bad.bad, ['/c/step-400', '/c/.tmp-step-400']);
});

const T = Date.parse('2026-12-01T12:00:00Z');
const at = (seconds: number) => T + seconds * 1000;

test('restarts equal the failed pods, each kill among them; preemptions equal the workers on deleted nodes', () => {
  const a = {
    killed: new Set(['k1', 'k2']),
    failed: new Map([
      ['k1', at(10)],
      ['k2', at(20)],
    ]),
    lost: new Map([
      ['p1', at(30)],
      ['p2', at(40)],
    ]),
    completedAt: at(100),
  };
  const v = judgeAccounting(a, { restarts: 2, preemptions: 2 });
  assert.equal([v.restartsOk, v.preemptionsOk, v.unexpected], [true, true, []]);
  assert.is(judgeAccounting(a, { restarts: 3, preemptions: 2 }).restartsOk, false, 'one counted twice');
  assert.is(judgeAccounting(a, { restarts: 2, preemptions: 1 }).preemptionsOk, false);
  const crash = { ...a, failed: new Map([...a.failed, ['x', at(50)]]) };
  const c = judgeAccounting(crash, { restarts: 3, preemptions: 2 });
  assert.is(c.restartsOk, true, 'the count is right');
  assert.equal(c.unexpected, ['x'], 'but a worker failed that no fault killed');
  // A kill that never showed as a failure was not counted.
  const unseen = { ...a, failed: new Map([['k1', at(10)]]) };
  assert.is(judgeAccounting(unseen, { restarts: 1, preemptions: 2 }).restartsOk, false);
});

// Seed 1 (3 minutes): a notice 3 s before training completed; the worker left its world but its pod
// was still there when the job finished, and the operator let it go uncounted, as it should.
test('a worker on a deleted node that had not ended when the job finished is not a preemption', () => {
  const a = {
    killed: new Set<string>(),
    failed: new Map<string, number>(),
    lost: new Map<string, number | undefined>([
      ['abrupt', at(30)],
      ['noticed-late', at(100.4)],
      ['still-running', undefined],
      ['ended-after', at(120)],
    ]),
    completedAt: at(100),
  };
  const v = judgeAccounting(a, { preemptions: 1 });
  assert.equal(v.preemptions, { sure: 1, around: 1 });
  assert.is(v.preemptionsOk, true);
  assert.is(judgeAccounting(a, { preemptions: 2 }).preemptionsOk, true, 'counted at the end: also right');
  assert.is(judgeAccounting(a, { preemptions: 3 }).preemptionsOk, false);
  assert.is(judgeAccounting(a, { preemptions: 0 }).preemptionsOk, false, 'the abrupt one was lost');
  assert.is(formatExpected(v.preemptions), "1–2 (1 at the job's end)");
  // A job that never finished: every loss counts.
  assert.equal(judgeAccounting({ ...a, completedAt: undefined }, {}).preemptions, { sure: 4, around: 0 });
});

// Seed 1 (3 minutes): a worker that had completed was deleted with the job's other pods, got SIGTERM
// on its way out and its pod ended Failed (exit 143) after the job had succeeded.
test('a failure after the job finished is no restart, but it is still a crash no fault caused', () => {
  const a = {
    killed: new Set(['k1']),
    failed: new Map([
      ['k1', at(10)],
      ['cleanup', at(100.2)],
      ['later', at(110)],
    ]),
    lost: new Map<string, number | undefined>(),
    completedAt: at(100),
  };
  const v = judgeAccounting(a, { restarts: 1 });
  assert.equal(v.restarts, { sure: 1, around: 1 });
  assert.is(v.restartsOk, true);
  assert.equal(v.unexpected, ['cleanup', 'later']);
});

test.run();
