/** hack/chaos/schedule.ts: the seeded fault schedule of `hack/chaos.sh`. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chaosSchedule, FAULT_KINDS, parseKinds, pickTarget } from '../../hack/chaos/schedule.ts';

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

test.run();
