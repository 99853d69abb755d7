/** hack/chaos/schedule.ts: the seeded fault schedule of `hack/chaos.sh`. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  chaosSchedule,
  FAULT_KINDS,
  FAULT_STEP_SHARE,
  type Fault,
  faultDue,
  parseKinds,
  pickTarget,
} from '../../hack/chaos/schedule.ts';

test('the same seed gives the same schedule; another seed another one', () => {
  const a = chaosSchedule({ seed: 7, seconds: 600 });
  assert.equal(a, chaosSchedule({ seed: 7, seconds: 600 }));
  assert.not.equal(
    a.map((f) => f.kind),
    chaosSchedule({ seed: 8, seconds: 600 }).map((f) => f.kind),
  );
});

test('a longer run extends the schedule of a shorter one with the same seed', () => {
  const short = chaosSchedule({ seed: 3, seconds: 120 });
  const long = chaosSchedule({ seed: 3, seconds: 1200 });
  assert.ok(long.length > short.length);
  assert.equal(long.slice(0, short.length), short);
});

test('every kind comes once before any repeats, and all offsets lie within the run', () => {
  for (const seed of [1, 2, 3, 42, 2 ** 32 - 1]) {
    const faults = chaosSchedule({ seed, seconds: 20 * 60 });
    const first = faults.slice(0, FAULT_KINDS.length).map((f) => f.kind);
    assert.equal([...first].sort(), [...FAULT_KINDS].sort(), `seed ${seed}`);
    for (const f of faults) {
      assert.ok(f.atSeconds >= 10 && f.atSeconds < 20 * 60, `seed ${seed}: ${f.atSeconds}`);
      assert.ok(f.target >= 0 && f.target < 1);
    }
    const gaps = faults.slice(1).map((f, i) => f.atSeconds - (faults[i]?.atSeconds ?? 0));
    assert.ok(
      gaps.every((g) => g >= 14.8 && g <= 40.2),
      `seed ${seed}: gaps ${gaps}`,
    );
  }
});

test('only lasting faults hold, for a time in the hold range', () => {
  const faults = chaosSchedule({ seed: 11, seconds: 3600, holdSeconds: [2, 4] });
  for (const f of faults) {
    const lasting = ['partition-worker', 'fill-checkpoint-volume', 'slow-worker'].includes(f.kind);
    if (lasting) assert.ok(f.seconds >= 2 && f.seconds <= 4, `${f.kind} ${f.seconds}`);
    else assert.is(f.seconds, 0, f.kind);
  }
});

test('a chosen set of kinds, warm-up and gaps are honoured', () => {
  const faults = chaosSchedule({
    seed: 5,
    seconds: 100,
    kinds: ['kill-worker', 'restart-nats'],
    warmupSeconds: 30,
    gapSeconds: [10, 10],
  });
  assert.equal(
    faults.map((f) => f.atSeconds),
    [30, 40, 50, 60, 70, 80, 90],
  );
  assert.ok(faults.every((f) => f.kind === 'kill-worker' || f.kind === 'restart-nats'));
  assert.equal(chaosSchedule({ seed: 5, seconds: 100, kinds: [] }), []);
  assert.equal(chaosSchedule({ seed: 5, seconds: 5 }), [], 'nothing before the warm-up ends');
  assert.throws(() => chaosSchedule({ seed: 1, seconds: 60, gapSeconds: [0, 5] }), /gapSeconds/);
});

test('a target picks the same candidate whatever order the candidates come in', () => {
  assert.is(pickTarget(['b', 'a', 'c'], 0), 'a');
  assert.is(pickTarget(['c', 'b', 'a'], 0.5), 'b');
  assert.is(pickTarget(['a', 'b', 'c'], 0.999), 'c');
  assert.is(pickTarget([], 0.5), undefined);
});

test('kinds parse from a list and an unknown one is named with the known ones', () => {
  assert.equal(parseKinds('kill-worker, slow-worker'), ['kill-worker', 'slow-worker']);
  assert.throws(() => parseKinds('kill-worker,explode'), /unknown fault kind "explode"; known: kill-worker/);
});

test('a fault is due at its offset or at the same share of the job, whichever comes first', () => {
  const fault: Fault = { index: 3, atSeconds: 60, kind: 'kill-worker', target: 0, seconds: 0 };
  const atShare = 0.5 * FAULT_STEP_SHARE * 1000; // 60 s of a 120 s window, of a 1000-step job
  const rows: [string, { since: number; step: number; plannedSteps: number | undefined }, boolean][] = [
    ['before both', { since: 59.9, step: atShare - 1, plannedSteps: 1000 }, false],
    ['the offset passed (a slow machine)', { since: 60, step: 10, plannedSteps: 1000 }, true],
    ['the share passed (a fast machine)', { since: 5, step: atShare, plannedSteps: 1000 }, true],
    ['no planned steps known yet: the offset alone', { since: 5, step: 999, plannedSteps: undefined }, false],
  ];
  for (const [name, clock, due] of rows) assert.is(faultDue(fault, 120, clock), due, name);
  assert.is(faultDue(fault, 0, { since: 5, step: 999, plannedSteps: 1000 }), false, 'no window: the offset');
});

test('on a fast machine every fault of the window is due before the job ends', () => {
  const faults = chaosSchedule({ seed: 24, seconds: 150, gapSeconds: [8, 16] });
  const last = faults.at(-1) as Fault;
  assert.ok(faultDue(last, 150, { since: 1, step: 0.8 * 4690, plannedSteps: 4690 }));
});

test.run();
