/**
 * What the operator and the workers agree on besides the TrainingJob itself: pod labels, NATS subjects
 * and bucket names, and the messages on those subjects. Every message is validated on receipt; a
 * malformed one is logged and dropped, never fatal.
 */
import { z } from 'zod';
import { TrainingJobSpecSchema } from './training-job.ts';
import { GoodputObservationSchema } from './worker-events.ts';

export const LABEL_JOB_NAME = 'tensile.dev/job-name';
/** On a node that ran an evicted straggler: the annotation holds the reason, the label lets pods avoid it. */
export const ANNOTATION_SLOW = 'tensile.dev/slow';
export const LABEL_ROLE = 'tensile.dev/role';
export const LABEL_REPLICA_INDEX = 'tensile.dev/replica-index';
export const ROLE_WORKER = 'worker';
/** Keeps a finished worker pod around until the operator has counted it (restarts or preemptions). */
export const FINALIZER_ACCOUNTING = 'tensile.dev/accounting';

export interface JobSubjects {
  readonly metrics: string;
  readonly control: string;
  readonly events: string;
}

export function jobSubjects(namespace: string, job: string): JobSubjects {
  const base = `tensile.${namespace}.${job}`;
  return { metrics: `${base}.metrics`, control: `${base}.control`, events: `${base}.events` };
}

/**
 * The identity of one incarnation of a job: its Kubernetes uid (or, for `tensile run`, a uuid kept in
 * the run's output directory). A job deleted and created again under the same name is another
 * incarnation, and must never read the state or act on the messages of the first.
 */
export const JOB_UID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

/** JetStream's own limit on stream names; a KV bucket is the stream `KV_<bucket>`. */
const MAX_STREAM_NAME = 255;
const BUCKET_PREFIX = 'tensile_';

export class InvalidJobUidError extends Error {
  override readonly name = 'InvalidJobUidError';
}

/**
 * The rendezvous bucket of one incarnation: `tensile_<namespace>_<job>_<uid>`. Bucket names allow
 * letters, digits, '-' and '_'; namespaces and job names are DNS labels (no '_'), so the parts split
 * back apart. At most 8 + 63 + 1 + 52 + 1 + 64 characters, well within JetStream's 255 with `KV_`.
 */
export function rendezvousBucket(namespace: string, job: string, uid: string): string {
  if (!JOB_UID_PATTERN.test(uid))
    throw new InvalidJobUidError(`job uid "${uid}": expected letters, digits and '-' (at most 64)`);
  const name = `${BUCKET_PREFIX}${namespace}_${job}_${uid}`;
  if (name.length + 'KV_'.length > MAX_STREAM_NAME)
    throw new InvalidJobUidError(`rendezvous bucket ${name}: longer than JetStream allows`);
  return name;
}

export interface BucketOwner {
  readonly namespace: string;
  readonly job: string;
  /** Undefined for a bucket of the layout before incarnations (`tensile_<namespace>_<job>`). */
  readonly uid: string | undefined;
}

/** Whose bucket this is; undefined for a bucket that is not a rendezvous bucket. */
export function bucketOwner(bucket: string): BucketOwner | undefined {
  if (!bucket.startsWith(BUCKET_PREFIX)) return undefined;
  const parts = bucket.slice(BUCKET_PREFIX.length).split('_');
  const label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
  const [namespace, job, uid] = parts;
  if (namespace === undefined || job === undefined || !label.test(namespace) || !label.test(job))
    return undefined;
  if (parts.length === 2) return { namespace, job, uid: undefined };
  if (parts.length === 3 && uid !== undefined && JOB_UID_PATTERN.test(uid)) return { namespace, job, uid };
  return undefined;
}

/**
 * The rendezvous buckets no live job owns: those of another incarnation, of a job that is gone, and
 * of the old layout when no job of that name is left. Pure; the operator deletes what it returns.
 */
export function orphanedBuckets(
  buckets: readonly string[],
  liveJobs: readonly { readonly namespace: string; readonly name: string; readonly uid: string }[],
): string[] {
  const names = new Set(liveJobs.map((j) => `${j.namespace}/${j.name}`));
  const incarnations = new Set(liveJobs.map((j) => `${j.namespace}/${j.name}/${j.uid}`));
  return buckets.filter((bucket) => {
    const owner = bucketOwner(bucket);
    if (owner === undefined) return false;
    const name = `${owner.namespace}/${owner.job}`;
    return owner.uid === undefined ? !names.has(name) : !incarnations.has(`${name}/${owner.uid}`);
  });
}

const time = z.iso.datetime();
const nonNegativeInt = z.int().min(0);
/**
 * Every message names the incarnation it belongs to; the receiver ignores another's. Optional in the
 * schema so that a message without one still decodes, but it is never taken for a known incarnation's.
 */
const jobUid = z.string().min(1).optional();

export const CheckpointRefSchema = z.object({ step: nonNegativeInt, path: z.string(), time });

export const WorkerLoadSchema = z.object({
  worker: z.string(),
  batch: nonNegativeInt,
  samplesPerSecond: z.number().min(0),
  waitSeconds: z.number().min(0),
});
export type WorkerLoad = z.output<typeof WorkerLoadSchema>;

/** Worker → operator, on `.metrics`: the progress of the world, sent by rank 0. */
export const ProgressMessageSchema = z.object({
  type: z.literal('progress'),
  jobUid,
  worker: z.string().min(1),
  generation: nonNegativeInt,
  worldSize: nonNegativeInt,
  step: nonNegativeInt,
  epoch: nonNegativeInt,
  loss: z.number(),
  accuracy: z.number().optional(),
  samplesPerSecond: z.number().min(0),
  /** Per worker, in rank order: its batch, compute throughput (waiting excluded) and wait per step. */
  workers: z.array(WorkerLoadSchema).optional(),
  /** Workers persistently slower than the straggler threshold of the median. */
  stragglers: z.array(z.string()).optional(),
  /**
   * Goodput autoscaling's inputs, for this world so far (its first steps excluded): the mean step
   * time at its mean per-worker batch, and the gradient noise scale in samples when measured.
   */
  goodput: GoodputObservationSchema.optional(),
  lastCheckpoint: CheckpointRefSchema.optional(),
  time,
});

/** Worker → operator, on `.metrics`: training reached its stopping condition. */
export const CompletedMessageSchema = z.object({
  type: z.literal('completed'),
  jobUid,
  worker: z.string().min(1),
  step: nonNegativeInt,
  epoch: nonNegativeInt,
  loss: z.number(),
  accuracy: z.number().optional(),
  lastCheckpoint: CheckpointRefSchema.optional(),
  /** The exported model (status.model). */
  model: z
    .object({ uri: z.string(), step: nonNegativeInt, accuracy: z.number().optional(), time })
    .optional(),
  /**
   * Seconds of the writer's steps the final state kept (operator/api/goodput.ts over its own
   * generations): a lower bound of the job's useful time for the goodput metric, known to whichever
   * operator reads it, however many progress reports that operator missed.
   */
  usefulSeconds: z.number().min(0).optional(),
  reason: z.string(),
  time,
});

export const MetricsMessageSchema = z.discriminatedUnion('type', [
  ProgressMessageSchema,
  CompletedMessageSchema,
]);

/** Worker → anyone, on `.events`: a new world was formed (N, B, lr) and why. */
export const RescaleEventSchema = z.object({
  type: z.literal('rescale'),
  jobUid,
  generation: nonNegativeInt,
  worldSize: z.int().min(1),
  members: z.array(z.string()),
  globalBatch: z.int().min(1),
  learningRate: z.number().positive(),
  step: nonNegativeInt,
  /** The spec revision the world follows; `specChanged` lists the settings it changed, if any. */
  specRevision: nonNegativeInt.optional(),
  specChanged: z.array(z.string()).optional(),
  loss: z.number().optional(),
  samplesPerSecond: z.number().min(0).optional(),
  reason: z.string(),
  time,
});

export const CheckpointEventSchema = z.object({
  type: z.literal('checkpoint'),
  jobUid,
  worker: z.string(),
  step: nonNegativeInt,
  path: z.string(),
  time,
});

/** Worker → anyone, on `.events`: the world broke (a member lost, leaving or joining) and is re-forming. */
export const RescalingEventSchema = z.object({
  type: z.literal('rescaling'),
  jobUid,
  worker: z.string(),
  /** The generation that ended. */
  generation: nonNegativeInt,
  reason: z.string(),
  time,
});

/** Worker → anyone, on `.events`: the split of the global batch changed, or a straggler was found. */
export const BalanceEventSchema = z.object({
  type: z.literal('balance'),
  jobUid,
  generation: nonNegativeInt,
  step: nonNegativeInt,
  members: z.array(z.string()),
  perWorker: z.array(nonNegativeInt),
  reason: z.string(),
  time,
});

export const StragglerEventSchema = z.object({
  type: z.literal('straggler'),
  jobUid,
  generation: nonNegativeInt,
  step: nonNegativeInt,
  worker: z.string(),
  samplesPerSecond: z.number().min(0),
  medianSamplesPerSecond: z.number().min(0),
  evict: z.boolean(),
  time,
});

export const JobEventSchema = z.discriminatedUnion('type', [
  RescaleEventSchema,
  BalanceEventSchema,
  StragglerEventSchema,
  RescalingEventSchema,
  CheckpointEventSchema,
]);

/**
 * Operator → workers, on `.control`. `workers` empty means every worker. The operator stamps the
 * job's uid when it publishes; a worker acts only on messages of its own incarnation.
 */
export const ControlMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('leave'), jobUid, workers: z.array(z.string()), reason: z.string() }),
  z.object({ type: z.literal('checkpoint'), jobUid, reason: z.string() }),
  z.object({ type: z.literal('stop'), jobUid, reason: z.string() }),
  /**
   * The job's spec changed (its metadata.generation is `revision`): running workers offer it to the
   * rendezvous, and the next world, formed for it, follows it on every rank at once. Pods embed the
   * spec of their creation; without this message an edit reaches the world with the next new pod.
   */
  z.object({
    type: z.literal('spec'),
    jobUid,
    revision: nonNegativeInt,
    spec: TrainingJobSpecSchema,
    reason: z.string(),
  }),
]);

/** The rendezvous bucket's key the writer of the last world records the job's completion in. */
export const COMPLETED_KEY = 'completed';

/** The rendezvous bucket's key the operator (or `tensile run`) writes the chosen global batch to. */
export const AUTOSCALING_KEY = 'autoscaling';

/**
 * What the `autoscaling` key holds: the global batch the goodput policy chose (status.autoscaling.
 * chosenBatch). Workers re-form for a newer revision; the next world trains at it.
 */
export const AutoscalingRecordSchema = z.object({
  jobUid,
  globalBatch: z.int().min(1),
  revision: z.int().min(1),
  /**
   * The worker count chosen with it: a world of another size re-forms for that change anyway (and
   * takes the batch up then), so only a world of this size re-forms for the batch alone.
   */
  replicas: z.int().min(1).optional(),
  reason: z.string().optional(),
});
export type AutoscalingRecord = z.output<typeof AutoscalingRecordSchema>;

/**
 * What the rendezvous bucket's `completed` key holds: the job's stopping point, for late workers, and
 * the figures of the `completed` message, for an operator that never received it (core NATS keeps
 * nothing, and a replica elected after the workers ended must still fill in the final status). Only
 * step and reason are required: records written by earlier workers hold those alone and still decode.
 */
export const CompletionRecordSchema = CompletedMessageSchema.omit({ type: true }).partial({
  worker: true,
  epoch: true,
  loss: true,
  time: true,
});
export type CompletionRecord = z.output<typeof CompletionRecordSchema>;

/** The part of the record a worker stops by: figures it cannot read must not keep it training. */
export const CompletionMarkerSchema = CompletionRecordSchema.pick({ jobUid: true, step: true, reason: true });

/**
 * The `completed` message a record stands for, so that it is used exactly as one; undefined for a
 * record without the figures (an earlier worker's), which tells the operator nothing new.
 */
export function completionFromRecord(record: CompletionRecord): CompletedMessage | undefined {
  const parsed = CompletedMessageSchema.safeParse({ ...record, type: 'completed' });
  return parsed.success ? parsed.data : undefined;
}

export type ProgressMessage = z.output<typeof ProgressMessageSchema>;
export type CompletedMessage = z.output<typeof CompletedMessageSchema>;
export type MetricsMessage = z.output<typeof MetricsMessageSchema>;
export type RescaleEvent = z.output<typeof RescaleEventSchema>;
export type CheckpointEvent = z.output<typeof CheckpointEventSchema>;
export type RescalingEvent = z.output<typeof RescalingEventSchema>;
export type JobEvent = z.output<typeof JobEventSchema>;
export type ControlMessage = z.output<typeof ControlMessageSchema>;

/**
 * The largest message any receiver decodes (NATS's default max_payload): a spec with an inline
 * Layers topology fits; anything larger is dropped before it is parsed.
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/** The largest progress report, job event or member record: small by construction, so a tight bound. */
export const MAX_REPORT_BYTES = 64 * 1024;

export type DecodeFailure = 'oversized' | 'not json' | 'schema';

export type Decoded<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: DecodeFailure; readonly error: string };

/** Decodes a NATS payload; never throws, so a bad message cannot take a process down. */
export function decodeMessage<T>(
  schema: z.ZodType<T>,
  payload: Uint8Array,
  maxBytes = MAX_MESSAGE_BYTES,
): Decoded<T> {
  if (payload.byteLength > maxBytes)
    return { ok: false, reason: 'oversized', error: `${payload.byteLength} bytes, at most ${maxBytes}` };
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(payload));
  } catch (error) {
    return { ok: false, reason: 'not json', error: `not JSON: ${(error as Error).message}` };
  }
  const result = schema.safeParse(json);
  if (result.success) return { ok: true, value: result.data };
  return {
    ok: false,
    reason: 'schema',
    error: result.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join('.') || '(message)'}: ${i.message}`)
      .join('; '),
  };
}

export function encodeMessage(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}
