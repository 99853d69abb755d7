/** One job, several incarnations: the names of their NATS state, and which of it is left over. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  bucketOwner,
  InvalidJobUidError,
  orphanedBuckets,
  rendezvousBucket,
} from '../../operator/api/contract.ts';
import { MAX_JOB_NAME_LENGTH } from '../../operator/api/training-job.ts';
import { loadWorkerConfig, WorkerConfigError, workerEnvironment } from '../../worker/config.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const UID_1 = '0b6f3a52-9c1e-4d1b-8f0a-6f1d2c3b4a01';
const UID_2 = '0b6f3a52-9c1e-4d1b-8f0a-6f1d2c3b4a02';

test('each incarnation has its own bucket, and the name says whose it is', () => {
  const first = rendezvousBucket('team-a', 'fashion', UID_1);
  const second = rendezvousBucket('team-a', 'fashion', UID_2);
  assert.is(first, `tensile_team-a_fashion_${UID_1}`);
  assert.is.not(first, second);
  assert.equal(bucketOwner(first), { namespace: 'team-a', job: 'fashion', uid: UID_1 });
  assert.ok(/^[-\w]+$/.test(first), 'a valid JetStream bucket name');
});

test('the longest namespace, job name and uid still make a valid stream name', () => {
  const name = rendezvousBucket('n'.repeat(63), 'j'.repeat(MAX_JOB_NAME_LENGTH), 'u'.repeat(64));
  assert.ok(`KV_${name}`.length <= 255, `${name.length} characters`);
});

test('a uid that would not make a bucket name is refused', () => {
  for (const uid of ['', 'a.b', 'a_b', 'x'.repeat(65), '-leading'])
    assert.throws(
      () => rendezvousBucket('ns', 'job', uid),
      (e: unknown) => e instanceof InvalidJobUidError,
    );
});

const owners: { bucket: string; owner: ReturnType<typeof bucketOwner> }[] = [
  { bucket: `tensile_ns_job_${UID_1}`, owner: { namespace: 'ns', job: 'job', uid: UID_1 } },
  { bucket: 'tensile_ns_job', owner: { namespace: 'ns', job: 'job', uid: undefined } },
  { bucket: 'tensile_contract_1', owner: { namespace: 'contract', job: '1', uid: undefined } },
  { bucket: 'other_ns_job', owner: undefined },
  { bucket: 'tensile_NS_job', owner: undefined },
  { bucket: 'tensile_ns', owner: undefined },
  { bucket: 'tensile_ns_job_uid_more', owner: undefined },
];
for (const c of owners) {
  test(`bucket ${c.bucket} belongs to ${JSON.stringify(c.owner)}`, () => {
    assert.equal(bucketOwner(c.bucket), c.owner);
  });
}

test('orphaned: buckets of gone jobs, of earlier incarnations, and of the old layout when the name is free', () => {
  const live = [
    { namespace: 'team-a', name: 'fashion', uid: UID_2 },
    { namespace: 'team-b', name: 'kept', uid: UID_1 },
  ];
  const buckets = [
    rendezvousBucket('team-a', 'fashion', UID_2), // the live incarnation
    rendezvousBucket('team-a', 'fashion', UID_1), // the one before it (same name)
    rendezvousBucket('team-a', 'gone', '5e0c'), // a job deleted while no operator watched
    'tensile_team-b_kept', // old layout, its job still there: its workers may still use it
    'tensile_team-b_old', // old layout, no such job left
    'KV_unrelated',
    'orders',
  ];
  assert.equal(orphanedBuckets(buckets, live), [
    rendezvousBucket('team-a', 'fashion', UID_1),
    rendezvousBucket('team-a', 'gone', '5e0c'),
    'tensile_team-b_old',
  ]);
  assert.equal(orphanedBuckets([], live), []);
});

test('a worker with NATS needs the job uid; a standalone worker does not', () => {
  const spec = ownedJob().spec;
  const base = { jobName: 'job', namespace: 'default', spec, replicaIndex: 0, checkpointDir: '/ckpt' };
  assert.throws(
    () => loadWorkerConfig(workerEnvironment({ ...base, natsUrl: 'nats://127.0.0.1:4222' })),
    (e: unknown) => e instanceof WorkerConfigError && /TENSILE_JOB_UID: required with NATS/.test(e.message),
  );
  assert.is(
    loadWorkerConfig(workerEnvironment({ ...base, natsUrl: 'nats://127.0.0.1:4222', jobUid: UID_1 })).jobUid,
    UID_1,
  );
  assert.is(loadWorkerConfig(workerEnvironment(base)).jobUid, undefined);
  assert.throws(
    () => loadWorkerConfig(workerEnvironment({ ...base, jobUid: 'not a uid' })),
    (e: unknown) => e instanceof WorkerConfigError && /TENSILE_JOB_UID/.test(e.message),
  );
});

test.run();
