/** Which revocation list an ended job's user joins (withRevoked, pure). */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { withRevoked } from '../../operator/controller/nats-revocation.ts';

const cases: [string, Record<string, number> | undefined, string[], Record<string, number> | undefined][] = [
  ['the first revocation', undefined, ['UA'], { UA: 100 }],
  ['added beside the earlier ones, which keep their time', { UB: 7 }, ['UA'], { UB: 7, UA: 100 }],
  ['already revoked: nothing to push', { UA: 7 }, ['UA'], undefined],
  ['no keys: nothing to push', { UA: 7 }, [], undefined],
  ['only the new of several', { UA: 7 }, ['UA', 'UC'], { UA: 7, UC: 100 }],
];

for (const [name, current, keys, expected] of cases)
  test(name, () => {
    assert.equal(withRevoked(current, keys, 100), expected);
  });

test('the list it was given is left as it was', () => {
  const current = { UB: 7 };
  withRevoked(current, ['UA'], 100);
  assert.equal(current, { UB: 7 });
});

test.run();
