import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DropCounter, type DropReport } from '../../operator/api/drops.ts';

test('every drop is counted by channel and reason; reports come at the 1st, 2nd, 4th, 8th, …', () => {
  const reports: DropReport[] = [];
  const drops = new DropCounter((r) => reports.push(r));
  for (let i = 0; i < 1000; i++) drops.drop({ channel: 'nats', reason: 'schema', source: `s${i}` });
  drops.drop({ channel: 'collective', reason: 'bad token', source: '10.0.0.9:4000' });
  assert.equal(drops.totals(), { 'nats:schema': 1000, 'collective:bad token': 1 });
  assert.is(drops.total, 1001);
  assert.equal(
    reports.filter((r) => r.channel === 'nats').map((r) => r.total),
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
  );
  const token = reports.find((r) => r.reason === 'bad token');
  assert.equal(token, { channel: 'collective', reason: 'bad token', source: '10.0.0.9:4000', total: 1 });
});

test.run();
