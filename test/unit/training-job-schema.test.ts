import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { datasetOptions, desiredReplicas, elasticRange } from '../../operator/api/training-job.ts';
import { validateTrainingJob } from '../../operator/api/validate.ts';
import { invalidManifests as invalid } from '../helpers/invalid-manifests.ts';
import { validManifest, withField } from '../helpers/job-builder.ts';

test(`at least 40 invalid manifests are tabled (${invalid.length})`, () => {
  assert.ok(invalid.length >= 40);
});

for (const c of invalid) {
  test(`rejects: ${c.name}`, () => {
    const result = validateTrainingJob(c.manifest);
    assert.not.ok(result.ok, 'expected the manifest to be rejected');
    if (result.ok) return;
    const named = result.problems.filter((p) => p.path === c.field);
    assert.ok(
      named.length > 0,
      `expected a problem at ${c.field}, got: ${result.problems.map((p) => `${p.path}: ${p.message}`).join(' | ')}`,
    );
    if (c.message !== undefined) {
      const pattern = c.message;
      assert.ok(
        named.some((p) => pattern.test(p.message)),
        `expected ${pattern} in: ${named.map((p) => p.message).join(' | ')}`,
      );
    }
  });
}

test('a valid manifest gets the documented defaults', () => {
  const result = validateTrainingJob(validManifest());
  assert.ok(result.ok);
  if (!result.ok) return;
  const { spec } = result.job;
  assert.is(spec.batch.policy, 'fixedGlobalBatch');
  assert.is(spec.batch.global, 128);
  assert.equal(spec.model.mlp?.activation, 'relu');
  assert.is(spec.worker.terminationGracePeriodSeconds, 30);
  assert.is(spec.worker.backend, 'auto');
  assert.is(spec.runPolicy.suspend, false);
  assert.is(spec.runPolicy.backoffLimit, 6);
  assert.is(spec.checkpoint.path, '/checkpoints');
  assert.equal(
    spec.checkpoint.volume.claimTemplate?.accessModes,
    ['ReadWriteOnce'],
    "every cluster's default storage class offers ReadWriteOnce",
  );
  assert.is(spec.worker.gpus, undefined, 'GPUs are opt-in');
  assert.is(spec.worker.spot, undefined, 'spot is opt-in');
  assert.is(datasetOptions(spec.dataset).idx.trainImages, 'train-images-idx3-ubyte.gz');
  assert.is(spec.dataset.csv, undefined, 'options of other formats stay out of the object');
  assert.is(spec.rendezvous.timeoutMillis, 3000);
});

test('quantities accept the forms the API server accepts', () => {
  for (const q of [1, '1', '500m', '16Gi', '1.5', '2e3', '0']) {
    const result = validateTrainingJob(withField('spec.worker', { resources: { limits: { memory: q } } }));
    assert.ok(result.ok, `quantity ${String(q)} should be valid`);
  }
});

test('elastic range: maxReplicas defaults to replicas, desired is clamped', () => {
  const cases: [number, number, number | undefined, { min: number; max: number }, number][] = [
    [3, 1, undefined, { min: 1, max: 3 }, 3],
    [3, 1, 5, { min: 1, max: 5 }, 3],
    [9, 1, 5, { min: 1, max: 5 }, 5],
    [1, 2, 5, { min: 2, max: 5 }, 2],
  ];
  for (const [replicas, minReplicas, maxReplicas, range, desired] of cases) {
    const spec = { replicas, minReplicas, maxReplicas };
    assert.equal(elasticRange(spec), range);
    assert.is(desiredReplicas(spec), desired);
  }
});

test.run();
