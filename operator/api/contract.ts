/**
 * What the operator and the workers agree on besides the TrainingJob itself: pod labels, NATS subjects
 * and bucket names, and the messages on those subjects. Every message is validated on receipt; a
 * malformed one is logged and dropped, never fatal.
 */
import { z } from 'zod';
import { TrainingJobSpecSchema } from './training-job.ts';

export const LABEL_JOB_NAME = 'tensile.dev/job-name';
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

/** JetStream KV bucket names allow letters, digits, '-' and '_'; namespaces and job names are DNS labels. */
export function rendezvousBucket(namespace: string, job: string): string {
  return `tensile_${namespace}_${job}`;
}

const time = z.iso.datetime();
const nonNegativeInt = z.int().min(0);

export const CheckpointRefSchema = z.object({ step: nonNegativeInt, path: z.string(), time });

/** Worker → operator, on `.metrics`: the progress of the world, sent by rank 0. */
export const ProgressMessageSchema = z.object({
  type: z.literal('progress'),
  worker: z.string().min(1),
  generation: nonNegativeInt,
  worldSize: nonNegativeInt,
  step: nonNegativeInt,
  epoch: nonNegativeInt,
  loss: z.number(),
  accuracy: z.number().optional(),
  samplesPerSecond: z.number().min(0),
  lastCheckpoint: CheckpointRefSchema.optional(),
  time,
});

/** Worker → operator, on `.metrics`: training reached its stopping condition. */
export const CompletedMessageSchema = z.object({
  type: z.literal('completed'),
  worker: z.string().min(1),
  step: nonNegativeInt,
  epoch: nonNegativeInt,
  loss: z.number(),
  accuracy: z.number().optional(),
  lastCheckpoint: CheckpointRefSchema.optional(),
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
  worker: z.string(),
  step: nonNegativeInt,
  path: z.string(),
  time,
});

/** Worker → anyone, on `.events`: the world broke (a member lost, leaving or joining) and is re-forming. */
export const RescalingEventSchema = z.object({
  type: z.literal('rescaling'),
  worker: z.string(),
  /** The generation that ended. */
  generation: nonNegativeInt,
  reason: z.string(),
  time,
});

export const JobEventSchema = z.discriminatedUnion('type', [
  RescaleEventSchema,
  RescalingEventSchema,
  CheckpointEventSchema,
]);

/** Operator → workers, on `.control`. `workers` empty means every worker. */
export const ControlMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('leave'), workers: z.array(z.string()), reason: z.string() }),
  z.object({ type: z.literal('checkpoint'), reason: z.string() }),
  z.object({ type: z.literal('stop'), reason: z.string() }),
  /**
   * The job's spec changed (its metadata.generation is `revision`): running workers offer it to the
   * rendezvous, and the next world, formed for it, follows it on every rank at once. Pods embed the
   * spec of their creation; without this message an edit reaches the world with the next new pod.
   */
  z.object({
    type: z.literal('spec'),
    revision: nonNegativeInt,
    spec: TrainingJobSpecSchema,
    reason: z.string(),
  }),
]);

export type ProgressMessage = z.output<typeof ProgressMessageSchema>;
export type CompletedMessage = z.output<typeof CompletedMessageSchema>;
export type MetricsMessage = z.output<typeof MetricsMessageSchema>;
export type RescaleEvent = z.output<typeof RescaleEventSchema>;
export type CheckpointEvent = z.output<typeof CheckpointEventSchema>;
export type RescalingEvent = z.output<typeof RescalingEventSchema>;
export type JobEvent = z.output<typeof JobEventSchema>;
export type ControlMessage = z.output<typeof ControlMessageSchema>;

export type Decoded<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: string };

/** Decodes a NATS payload; never throws, so a bad message cannot take a process down. */
export function decodeMessage<T>(schema: z.ZodType<T>, payload: Uint8Array): Decoded<T> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(payload));
  } catch (error) {
    return { ok: false, error: `not JSON: ${(error as Error).message}` };
  }
  const result = schema.safeParse(json);
  if (result.success) return { ok: true, value: result.data };
  return {
    ok: false,
    error: result.error.issues.map((i) => `${i.path.join('.') || '(message)'}: ${i.message}`).join('; '),
  };
}

export function encodeMessage(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}
