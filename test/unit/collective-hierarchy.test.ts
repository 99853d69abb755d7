import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  hierarchyPays,
  hierarchySchedule,
  nodeGroups,
  simulateHierarchy,
} from '../../worker/collective/hierarchy.ts';
import { ringBytesPerRank } from '../../worker/collective/ring.ts';

/** Rank r's buffer: r·1000 + i, so the sum at i is known in closed form. */
function inputs(n: number, length: number): Float64Array[] {
  return Array.from({ length: n }, (_, r) => Float64Array.from({ length }, (_, i) => r * 1000 + i));
}

for (const groups of [[2, 2], [3, 1, 2], [1, 1, 1], [4], [2, 2, 2, 2], [1, 3]]) {
  test(`every rank ends with the sum, node groups ${JSON.stringify(groups)}`, () => {
    const n = groups.reduce((a, b) => a + b, 0);
    const length = 11;
    const { buffers } = simulateHierarchy(inputs(n, length), groups);
    const expected = Array.from({ length }, (_, i) => (1000 * n * (n - 1)) / 2 + n * i);
    for (const b of buffers) assert.equal([...b], expected);
  });
}

test('only the leaders ring crosses nodes: 2(G − 1)/G of the buffer per link between nodes', () => {
  const length = 1200;
  const groups = [2, 2];
  const { sent } = simulateHierarchy(inputs(4, length), groups);
  // Ranks 0,1 on node a, 2,3 on node b: the links between nodes are 1→2 and 3→0.
  assert.is(sent.get('1->2'), length);
  assert.is(sent.get('3->0'), length);
  assert.is(sent.get('2->1') ?? 0, 0, 'nothing goes back across nodes');
  assert.is(sent.get('0->3') ?? 0, 0);
  // A flat ring of 4 moves 2·3/4 = 1.5 buffers over each of those links.
  assert.is(ringBytesPerRank(length, 4), 1.5 * length);
  // Inside a node: the partial sum forward, the leaders' messages forwarded, the result back.
  assert.is(sent.get('0->1'), length + length);
  assert.is(sent.get('1->0'), length);
});

test('the schedule: a non-leader adds nothing in the leaders ring, it forwards', () => {
  assert.equal(hierarchySchedule(0, [2, 2]), [
    { op: 'send', to: 'right', chunk: 0 },
    { op: 'send', to: 'right', chunk: 1 },
    { op: 'forward', chunk: 1 },
    { op: 'forward', chunk: 0 },
    { op: 'receive', from: 'right', chunk: 0, mode: 'copy' },
    { op: 'receive', from: 'right', chunk: 1, mode: 'copy' },
  ]);
  assert.equal(hierarchySchedule(1, [2, 2]), [
    { op: 'receive', from: 'left', chunk: 0, mode: 'add' },
    { op: 'receive', from: 'left', chunk: 1, mode: 'add' },
    { op: 'send', to: 'right', chunk: 0 },
    { op: 'receive', from: 'left', chunk: 1, mode: 'add' },
    { op: 'send', to: 'right', chunk: 1 },
    { op: 'receive', from: 'left', chunk: 0, mode: 'copy' },
    { op: 'send', to: 'left', chunk: 0 },
    { op: 'send', to: 'left', chunk: 1 },
  ]);
});

test('node groups: adjacent members of a node form a group; scattered or unknown nodes stay flat', () => {
  const m = (...nodes: (string | undefined)[]) => nodes.map((node) => ({ node }));
  assert.equal(nodeGroups(m('a', 'a', 'b', 'b', 'b')), [2, 3]);
  assert.is(nodeGroups(m('a', 'b', 'a')), undefined);
  assert.is(nodeGroups(m('a', undefined)), undefined);
  assert.ok(hierarchyPays([2, 2]));
  assert.not.ok(hierarchyPays([1, 1, 1]), 'one worker per node: the flat ring already is the leaders ring');
  assert.not.ok(hierarchyPays([4]), 'one node: nothing to save');
  assert.not.ok(hierarchyPays(undefined));
});

test.run();
