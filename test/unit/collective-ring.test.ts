import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fromHalfBits, toHalfBits } from '../../worker/collective/fp16.ts';
import {
  chunkRanges,
  ringBytesPerRank,
  ringSchedule,
  segmentRanges,
  simulateRing,
} from '../../worker/collective/ring.ts';

test('chunk ranges cover the buffer exactly, as evenly as possible', () => {
  assert.equal(chunkRanges(10, 3), [
    { start: 0, end: 4 },
    { start: 4, end: 7 },
    { start: 7, end: 10 },
  ]);
  assert.equal(chunkRanges(2, 4), [
    { start: 0, end: 1 },
    { start: 1, end: 2 },
    { start: 2, end: 2 },
    { start: 2, end: 2 },
  ]);
  assert.equal(chunkRanges(5, 1), [{ start: 0, end: 5 }]);
});

test('segments split a chunk for pipelining', () => {
  assert.equal(segmentRanges({ start: 4, end: 11 }, 3), [
    { start: 4, end: 7 },
    { start: 7, end: 10 },
    { start: 10, end: 11 },
  ]);
  assert.equal(segmentRanges({ start: 3, end: 3 }, 3), []);
});

const scheduleTable: [number, number, [number, number, string][]][] = [
  [
    0,
    3,
    [
      [0, 2, 'reduce'],
      [2, 1, 'reduce'],
      [1, 0, 'copy'],
      [0, 2, 'copy'],
    ],
  ],
  [
    1,
    3,
    [
      [1, 0, 'reduce'],
      [0, 2, 'reduce'],
      [2, 1, 'copy'],
      [1, 0, 'copy'],
    ],
  ],
  [
    2,
    3,
    [
      [2, 1, 'reduce'],
      [1, 0, 'reduce'],
      [0, 2, 'copy'],
      [2, 1, 'copy'],
    ],
  ],
  [
    0,
    2,
    [
      [0, 1, 'reduce'],
      [1, 0, 'copy'],
    ],
  ],
  [0, 1, []],
];

for (const [rank, size, expected] of scheduleTable) {
  test(`ring schedule: rank ${rank} of ${size}`, () => {
    assert.equal(
      ringSchedule(rank, size).map((s) => [s.sendChunk, s.receiveChunk, s.mode]),
      expected,
    );
  });
}

test('what a rank sends at step s+1 is what it received at step s', () => {
  for (const size of [2, 3, 4, 7]) {
    for (let rank = 0; rank < size; rank++) {
      const steps = ringSchedule(rank, size);
      for (let s = 0; s + 1 < steps.length; s++) assert.is(steps[s + 1]?.sendChunk, steps[s]?.receiveChunk);
    }
  }
});

test('simulated ring: every rank ends with the element-wise sum (sizes 1..6, odd lengths)', () => {
  for (let size = 1; size <= 6; size++) {
    for (const length of [1, 5, 17, 64]) {
      const buffers = Array.from({ length: size }, (_, r) =>
        Float64Array.from({ length }, (_, i) => (r + 1) * 1000 + i),
      );
      const expected = Float64Array.from({ length }, (_, i) =>
        buffers.reduce((sum, b) => sum + (b[i] ?? 0), 0),
      );
      for (const result of simulateRing(buffers)) assert.equal(Array.from(result), Array.from(expected));
    }
  }
});

test('the bound: 2(n-1)/n of the buffer per rank', () => {
  assert.is(ringBytesPerRank(1000, 1), 0);
  assert.is(ringBytesPerRank(1000, 2), 1000);
  assert.is(ringBytesPerRank(1000, 4), 1500);
});

test('half precision: exact where representable, nearest-even otherwise, overflow to infinity', () => {
  const table: [number, number][] = [
    [0, 0],
    [1, 1],
    [-2, -2],
    [0.5, 0.5],
    [65504, 65504],
    [1e6, Number.POSITIVE_INFINITY],
    [2 ** -24, 2 ** -24],
    [2 ** -26, 0],
    [1 + 2 ** -11, 1],
    [1 + 3 * 2 ** -11, 1 + 2 ** -9],
  ];
  for (const [input, expected] of table)
    assert.is(fromHalfBits(toHalfBits(input)), expected, `half(${input})`);
  assert.ok(Number.isNaN(fromHalfBits(toHalfBits(Number.NaN))));
  for (let i = 0; i < 1000; i++) {
    const x = (Math.sin(i) * 10) ** 3;
    const back = fromHalfBits(toHalfBits(x));
    assert.ok(Math.abs(back - x) <= Math.abs(x) * 2 ** -11 + 2 ** -24, `relative error of ${x}`);
  }
});

test.run();
