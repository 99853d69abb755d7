/** hack/chaos/verdict.ts: duplicate pods, bounded memory, resumes and the restart/preemption counts. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  duplicateIndices,
  judgeAccounting,
  judgeMemory,
  judgeResumes,
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
  const verdicts = judgeMemory([...flat, ...leak], 90);
  assert.equal(
    verdicts.map((v) => [v.component, v.ok]),
    [
      ['nats-server', true],
      ['operator-0', false],
    ],
  );
  // A start-up peak in the first third is not compared; a component without late samples is left out.
  assert.is(
    judgeMemory(
      series('w', (at) => (at < 30 ? 900 : 100)),
      90,
    )[0]?.ok,
    true,
  );
  assert.equal(
    judgeMemory(
      series('short', () => 10, 40),
      90,
    ),
    [],
  );
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

test('restarts equal the failed pods, each kill among them; preemptions equal the workers on deleted nodes', () => {
  const a = { killed: new Set(['k1', 'k2']), failed: new Set(['k1', 'k2']), preempted: 2 };
  assert.equal(judgeAccounting(a, { restarts: 2, preemptions: 2 }), {
    restartsOk: true,
    preemptionsOk: true,
    unexpected: [],
  });
  assert.is(judgeAccounting(a, { restarts: 3, preemptions: 2 }).restartsOk, false, 'one counted twice');
  assert.is(judgeAccounting(a, { restarts: 2, preemptions: 1 }).preemptionsOk, false);
  const crash = { ...a, failed: new Set(['k1', 'k2', 'x']) };
  const v = judgeAccounting(crash, { restarts: 3, preemptions: 2 });
  assert.is(v.restartsOk, true, 'the count is right');
  assert.equal(v.unexpected, ['x'], 'but a worker failed that no fault killed');
  // A kill that never showed as a failure was not counted.
  assert.is(
    judgeAccounting({ ...a, failed: new Set(['k1']) }, { restarts: 1, preemptions: 2 }).restartsOk,
    false,
  );
});

test.run();
