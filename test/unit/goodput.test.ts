/** Goodput (operator/api/goodput.ts): the one computation behind `tensile run` and the e2e verdict. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type GenerationEnd,
  type GenerationStart,
  generationEnds,
  goodputReport,
} from '../../operator/api/goodput.ts';
import { decodeWorkerRecords } from '../../operator/api/worker-events.ts';

const end = (
  generation: number,
  firstStep: number,
  lastStep: number,
  stepSeconds: number,
): GenerationEnd => ({
  generation,
  firstStep,
  lastStep,
  stepSeconds,
});
const start = (generation: number, firstStep: number): GenerationStart => ({ generation, firstStep });

// [name, ends, history, wall seconds, goodput, useful seconds per generation, kept until per generation]
const cases: [string, GenerationEnd[], GenerationStart[], number, number, number[], number[]][] = [
  ['one generation, all steps count', [end(1, 0, 100, 9)], [start(1, 0)], 10, 0.9, [9], [100]],
  [
    'the slowest member speaks for a generation; steps a later one redid do not count',
    [end(1, 0, 50, 5), end(1, 0, 50, 4), end(2, 40, 100, 3)],
    [start(1, 0), start(2, 40)],
    10,
    0.7,
    [4, 3],
    [40, 100],
  ],
  ['a generation lost with its state counts for nothing', [end(3, 0, 10, 5)], [start(1, 0)], 10, 0, [0], [0]],
  ['a generation that ran no step counts for nothing', [end(1, 5, 5, 2)], [start(1, 5)], 10, 0, [0], [5]],
  [
    'a later generation that started earlier (a restore) cuts the earlier one there',
    [end(1, 0, 100, 10), end(2, 100, 150, 5), end(3, 80, 180, 10)],
    [start(1, 0), start(2, 100), start(3, 80)],
    40,
    18 / 40,
    [8, 0, 10],
    [80, 100, 180],
  ],
  ['no wall time: no goodput', [end(1, 0, 10, 1)], [start(1, 0)], 0, 0, [1], [10]],
  ['never above one (clocks of different processes)', [end(1, 0, 10, 12)], [start(1, 0)], 10, 1, [12], [10]],
];
for (const [name, ends, history, wall, ratio, useful, kept] of cases) {
  test(`goodput: ${name}`, () => {
    const report = goodputReport(ends, history, wall);
    assert.ok(Math.abs(report.goodput - ratio) < 1e-9, String(report.goodput));
    assert.equal(
      report.generations.map((g) => Math.round(g.usefulSeconds * 1e9) / 1e9),
      useful,
    );
    assert.equal(
      report.generations.map((g) => g.keptUntil),
      kept,
    );
  });
}

test('generationEnds reads the generation from the line envelope; a line outside any generation has none', () => {
  const { events } = decodeWorkerRecords([
    { event: 'generation-end', generation: 2, firstStep: 0, lastStep: 10, stepSeconds: 1 },
    { event: 'generation-end', firstStep: 0, lastStep: 10, stepSeconds: 1 },
    { event: 'progress', generation: 2, step: 10 },
  ]);
  assert.equal(generationEnds(events), [end(2, 0, 10, 1)]);
});

test.run();
