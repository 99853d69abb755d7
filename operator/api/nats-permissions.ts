/**
 * What one job's workers may do on NATS, and what the operator may: the subjects each identity may
 * publish and subscribe to. Pure; the operator mints credentials carrying them (one identity per job,
 * controller/nats-credentials.ts), so a worker of one job can neither steer nor read another.
 *
 * A worker needs its job's progress and event subjects (publish), its control subject (subscribe), its
 * rendezvous bucket (the `$KV.<bucket>.>` subjects and the JetStream API calls on stream `KV_<bucket>`),
 * and replies to its own requests: those arrive on the job's inbox prefix, which the worker connects
 * with, so no job can subscribe to another's replies.
 */
import { jobSubjects, rendezvousBucket } from './contract.ts';

export interface SubjectPermissions {
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
}

/** Where the replies to a job's workers' requests go (nats `inboxPrefix`). */
export function jobInboxPrefix(namespace: string, job: string): string {
  return `_INBOX.tensile.${namespace}.${job}`;
}

/** The JetStream calls of a key-value bucket a worker opens, reads, watches and writes. */
function bucketApi(bucket: string): string[] {
  const stream = `KV_${bucket}`;
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.CREATE.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.DELETE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.>`,
    `$JS.FC.${stream}.>`,
    `$JS.ACK.${stream}.>`,
  ];
}

export function jobPermissions(namespace: string, job: string, uid: string): SubjectPermissions {
  const subjects = jobSubjects(namespace, job);
  const bucket = rendezvousBucket(namespace, job, uid);
  return {
    publish: [subjects.metrics, subjects.events, `$KV.${bucket}.>`, '$JS.API.INFO', ...bucketApi(bucket)],
    subscribe: [subjects.control, `${jobInboxPrefix(namespace, job)}.>`],
  };
}

/**
 * A site of a federated job (`siteJob` = `<job>-<site>`): its own job's subjects and rendezvous, so no
 * site reads or steers another's; and the job's federation bucket, which every site reads (the masked
 * inputs are the protocol's), but where it writes only the keys of its own index
 * (`r<round>.a<attempt>.<phase>.<index>`, its input chunks `….input.<index>.<chunk>`).
 */
export function sitePermissions(
  namespace: string,
  siteJob: string,
  uid: string,
  federationBucket: string,
  siteIndex: number,
): SubjectPermissions {
  const own = jobPermissions(namespace, siteJob, uid);
  return {
    publish: [
      ...own.publish,
      `$KV.${federationBucket}.*.*.*.${siteIndex}`,
      `$KV.${federationBucket}.*.*.input.${siteIndex}.*`,
      ...bucketApi(federationBucket),
    ],
    subscribe: own.subscribe,
  };
}

/**
 * The operator's own identity: it reads every job's progress and events, steers every job through
 * its control subject, and manages rendezvous buckets (reads completion records, deletes orphans).
 * It subscribes to nothing else: not to control subjects, not to other inboxes.
 */
export const OPERATOR_INBOX_PREFIX = '_INBOX.tensile-operator';

export function operatorPermissions(): SubjectPermissions {
  return {
    publish: ['tensile.*.*.control', '$JS.API.>', '$KV.>'],
    subscribe: ['tensile.*.*.metrics', 'tensile.*.*.events', `${OPERATOR_INBOX_PREFIX}.>`],
  };
}
