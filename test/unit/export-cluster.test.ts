/** Where `tensile export JOB` reads a model from: status.model.uri, and nothing outside the claim. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseModelUri } from '../../operator/commands/export-cluster.ts';

test('pvc://<claim>/<path> gives the claim and the folder in it', () => {
  assert.equal(parseModelUri('pvc://models/team-a/fashion'), { claim: 'models', path: 'team-a/fashion' });
  assert.equal(parseModelUri('pvc://job-checkpoints/model'), { claim: 'job-checkpoints', path: 'model' });
  assert.equal(parseModelUri('pvc://m/a/./b/'), { claim: 'm', path: 'a/b/' });
});

test('anything else is refused with the form it must have', () => {
  for (const uri of ['s3://bucket/model', 'pvc://models', 'pvc://Models/x', 'models/x'])
    assert.throws(() => parseModelUri(uri), /is not pvc:\/\/<claim>\/<path>/, uri);
  for (const uri of ['pvc://models/../secrets', 'pvc://models/a/../../b'])
    assert.throws(() => parseModelUri(uri), /leaves the claim/, uri);
});

test.run();
