import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { crossings, ringOrder } from '../../worker/collective/topology.ts';

const w = (id: string, node?: string, zone?: string) => ({ id, node, zone });

const cases: [string, ReturnType<typeof w>[], string[], { zone: number; node: number }][] = [
  [
    '4 workers on 2 nodes in 2 zones, joined alternately: grouped, the ring crosses zones twice',
    [w('a', 'n1', 'z1'), w('b', 'n2', 'z2'), w('c', 'n1', 'z1'), w('d', 'n2', 'z2')],
    ['a', 'c', 'b', 'd'],
    { zone: 2, node: 2 },
  ],
  [
    'two nodes in one zone and one in another: nodes stay whole inside their zone',
    [w('a', 'n1', 'z1'), w('b', 'n3', 'z2'), w('c', 'n2', 'z1'), w('d', 'n1', 'z1'), w('e', 'n3', 'z2')],
    ['a', 'd', 'c', 'b', 'e'],
    { zone: 2, node: 3 },
  ],
  ['no placement known: the order is kept', [w('c'), w('a'), w('b')], ['c', 'a', 'b'], { zone: 0, node: 0 }],
  ['one node: the order is kept', [w('b', 'n1', 'z1'), w('a', 'n1', 'z1')], ['b', 'a'], { zone: 0, node: 0 }],
  [
    'unknown zone forms a group of its own',
    [w('a', 'n1'), w('b', 'n2', 'z1'), w('c', 'n1')],
    ['a', 'c', 'b'],
    { zone: 2, node: 2 },
  ],
  ['a world of one crosses nothing', [w('a', 'n1', 'z1')], ['a'], { zone: 0, node: 0 }],
];

for (const [name, members, order, expected] of cases) {
  test(name, () => {
    const ring = ringOrder(members);
    assert.equal(
      ring.map((m) => m.id),
      order,
    );
    assert.equal({ zone: crossings(ring, 'zone'), node: crossings(ring, 'node') }, expected);
  });
}

test('the alternating order itself crosses zones four times (what ordering saves)', () => {
  const members = [w('a', 'n1', 'z1'), w('b', 'n2', 'z2'), w('c', 'n1', 'z1'), w('d', 'n2', 'z2')];
  assert.is(crossings(members, 'zone'), 4);
});

test.run();
