/**
 * The worker's log protocol: every JSON line a worker writes with an `event` field is one of these,
 * next to the NATS messages of contract.ts. The worker writes them through one `emit()`
 * (worker/log.ts); the local runner, the report, the e2e analysis and the tests read them through
 * `decodeWorkerLine`/`decodeWorkerRecord`, so renaming a field is a type error in every consumer.
 *
 * Required fields are what a consumer may rely on; optional ones are there for people reading logs
 * (and older logs may lack them). A line that is not JSON, names an event not listed here, or has a
 * known event of the wrong shape is `invalid`: consumers count and report those, never drop them
 * silently. A JSON line without `event` is a plain log message.
 */
import { z } from 'zod';

/**
 * Goodput autoscaling's inputs, for a world so far (its first steps excluded): the mean step time at
 * its mean per-worker batch, and the gradient noise scale in samples when measured. In the progress
 * event and, the same, in the NATS progress message.
 */
export const GoodputObservationSchema = z.object({
  perWorkerBatch: z.number().positive(),
  stepSeconds: z.number().positive(),
  steps: z.int().min(1),
  noiseScale: z.number().min(0).optional(),
});

const count = z.int().min(0);
/** JSON writes NaN and Infinity (a diverged loss) as null. */
const measure = z.number().nullable();

/** What winston and the worker's logger put on every line (worker/log.ts). */
const envelope = {
  timestamp: z.string().optional(),
  level: z.string().optional(),
  message: z.string().optional(),
  job: z.string().optional(),
  namespace: z.string().optional(),
  worker: z.string().optional(),
  /** The generation (world) the line belongs to: set on every line once a world formed. */
  generation: count.optional(),
};

const workerLoad = z.object({
  worker: z.string(),
  batch: count,
  samplesPerSecond: z.number(),
  waitSeconds: z.number(),
});

const event = <N extends string, S extends z.ZodRawShape>(name: N, shape: S) =>
  z.object({ ...envelope, event: z.literal(name), ...shape });

const outcome = {
  step: count,
  reason: z.string(),
  epoch: count.optional(),
  accuracy: measure.optional(),
  loss: measure.optional(),
  checkpoint: z.string().optional(),
  seconds: z.number().optional(),
};

export const WorkerEventSchema = z.discriminatedUnion('event', [
  event('backend', {
    backend: z.string(),
    via: z.string().optional(),
    addedKernels: z.array(z.string()).readonly().optional(),
    /** The earlier backends of the chain that did not load, each with its reason (and fix). */
    skipped: z
      .array(z.object({ backend: z.string(), via: z.string(), reason: z.string() }))
      .readonly()
      .optional(),
  }),
  event('dataset', {
    trainSamples: count,
    evalSamples: count.optional(),
    format: z.string().optional(),
    featureShape: z.array(count).readonly().optional(),
    sampleShape: z.array(count).readonly().optional(),
    classes: count.optional(),
    stored: z.string().optional(),
    residentMiB: z.number().optional(),
    pcaComponents: count.optional(),
    pcaExplained: z.number().optional(),
  }),
  event('model', {
    kind: z.string(),
    parameters: count.optional(),
    inputShape: z.array(z.number().nullable()).readonly().optional(),
  }),
  // How a micro-batch's forward and backward pass runs: one TensorFlow function (native backend,
  // supported layers) or tfjs's per-op tape, with the reason.
  event('train-step', { path: z.enum(['function', 'per-op']), reason: z.string().optional() }),
  event('checkpoint-skipped', { path: z.string(), step: count.optional(), reason: z.string() }),
  event('resumed', {
    step: count,
    path: z.string(),
    epoch: count.optional(),
    cursor: count.optional(),
  }),
  event('checkpoint', { step: count, path: z.string(), writeMs: z.number().optional() }),
  event('checkpoint-failed', { step: count.optional(), error: z.string() }),
  /** checkpoint.objectStore: a checkpoint reached the store (manifest last), or did not. */
  event('checkpoint-uploaded', { step: count, url: z.string(), uploadMs: z.number() }),
  event('checkpoint-upload-failed', { step: count, error: z.string() }),
  /** The store held a newer checkpoint than the volume: downloaded, then restored like any other. */
  event('checkpoint-downloaded', { step: count, url: z.string() }),
  /** The trained model was written for serving (worker/export/model-export.ts). */
  event('model-exported', {
    step: count,
    dir: z.string(),
    uri: z.string().optional(),
    accuracy: measure.optional(),
  }),
  event('model-export-failed', { error: z.string() }),
  event('snapshot', { step: count, blockingMs: z.number().optional() }),
  event('already-completed', { step: count.optional(), reason: z.string() }),
  event('spec-changed', {
    step: count.optional(),
    from: z.int(),
    to: z.int(),
    changed: z.array(z.string()).readonly(),
  }),
  event('rendezvous', { address: z.string().optional(), bucket: z.string().optional() }),
  /** What this worker's rendezvous agent decided, when that changed ("standby: …" while not needed). */
  event('rendezvous-decision', { decision: z.string(), round: count.optional() }),
  /** Input this worker threw away (operator/api/drops.ts): reported at the 1st, 2nd, 4th, … of a reason. */
  event('dropped', {
    channel: z.enum(['nats', 'collective']),
    reason: z.string(),
    total: count,
    source: z.string().optional(),
    detail: z.string().optional(),
  }),
  event('nats-disconnect', { server: z.string().optional() }),
  event('nats-reconnect', { server: z.string().optional() }),
  event('control', { type: z.string(), reason: z.string().optional() }),
  event('control-rejected', { error: z.string() }),
  /** A control message or completion record of another incarnation of the job (another uid). */
  event('control-ignored', { jobUid: z.string() }),
  event('completion-ignored', { jobUid: z.string() }),
  event('spec-offered', { revision: z.int(), from: z.int().optional() }),
  event('spec-rejected', { revision: z.int(), fields: z.array(z.string()).readonly().optional() }),
  event('world-failed', {
    round: count.optional(),
    error: z.string().optional(),
    reason: z.string().optional(),
  }),
  /**
   * A neighbour's TCP link broke (`cause: 'link'`); `probe` is what its collective port answered:
   * `refused` (its process is gone: reported lost, the round drops it now), `open` (alive, it moved
   * on) or `unknown` (no answer: the heartbeat timeout decides).
   */
  event('peer-lost', {
    peer: z.string(),
    round: count,
    cause: z.enum(['link']),
    probe: z.enum(['refused', 'open', 'unknown']),
    probeMs: z.number().optional(),
    error: z.string().optional(),
  }),
  /** After the last step, the writer of the last world was lost before it recorded the completion. */
  event('writer-lost', { writer: z.string(), step: count }),
  /** A world formed and this worker is one of its ranks. */
  event('generation', {
    worldSize: count,
    firstStep: count,
    /** Scale-invariant iterations when it began (AdaScale). */
    firstProgress: z.number().optional(),
    rank: count.optional(),
    members: z.array(z.string()).readonly().optional(),
    perWorker: z.array(count).readonly().optional(),
    globalBatch: count.optional(),
    learningRate: z.number().optional(),
    specRevision: z.int().optional(),
    reason: z.string().optional(),
    stateFrom: z.string().optional(),
  }),
  event('progress', {
    step: count,
    epoch: count.optional(),
    cursor: count.optional(),
    loss: measure.optional(),
    accuracy: measure.optional(),
    samplesPerSecond: measure.optional(),
    learningRate: z.number().optional(),
    gain: z.number().optional(),
    /** Scale-invariant iterations after the step (AdaScale only). */
    progress: z.number().optional(),
    worldSize: count.optional(),
    plannedSteps: count.optional(),
    /** Per worker, in rank order: batch, compute throughput (samples/s, waiting excluded), wait per step. */
    workers: z.array(workerLoad).readonly().optional(),
    /** spec.autoscaling goodput: this world's mean step time, per-worker batch and noise scale (as on NATS). */
    goodput: GoodputObservationSchema.optional(),
  }),
  /** The split of the global batch changed (spec.balancing: proportional): at a generation or a step boundary. */
  event('balance', {
    step: count,
    members: z.array(z.string()).readonly(),
    perWorker: z.array(count).readonly(),
    before: z.array(count).readonly().optional(),
    predictedSeconds: z.number().optional(),
    predictedBeforeSeconds: z.number().optional(),
    reason: z.enum(['generation', 'drift']),
  }),
  /** A worker stayed below the straggler threshold of the median throughput for stragglerSteps. */
  event('straggler', {
    step: count,
    straggler: z.string(),
    samplesPerSecond: z.number(),
    medianSamplesPerSecond: z.number(),
    evict: z.boolean(),
  }),
  /** Every rank's own figures since its previous line: throughput, step time, time in the all-reduce. */
  event('rank-progress', {
    step: count,
    rank: count.optional(),
    steps: count,
    samplesPerSecond: z.number(),
    stepMs: z.number(),
    allReduceMs: z.number(),
  }),
  event('eval', {
    step: count,
    epoch: count.optional(),
    loss: measure,
    accuracy: measure,
    samples: count.optional(),
    seconds: z.number().optional(),
  }),
  /** A federated round ended at this rank: the sample-weighted mean delta of `sites` was applied. */
  event('federation-round', {
    round: count,
    step: count,
    site: z.string(),
    attempt: count,
    sites: z.array(count).readonly(),
    dropped: z.array(count).readonly(),
    secure: z.boolean(),
    bytesSent: count,
    seconds: z.number(),
    /** A checksum of the applied mean: equal on every rank of every site that summed the same inputs. */
    checksum: z.string(),
    /** differentialPrivacy: the ε this site has spent after this round, at `privacyDelta`. */
    epsilon: z.number().optional(),
    privacyDelta: z.number().optional(),
  }),
  event('federation-round-failed', { round: count, step: count, site: z.string(), error: z.string() }),
  event('checksum', { step: count, checksum: z.string(), weights: count.optional() }),
  /** This worker's part of a generation ended; `lastStep` is exclusive. */
  event('generation-end', {
    firstStep: count,
    lastStep: count,
    stepSeconds: z.number(),
    wallSeconds: z.number().optional(),
    why: z.string().optional(),
  }),
  event('completed', outcome),
  event('stopped', outcome),
  event('left', outcome),
  event('signal', { signal: z.string(), graceSeconds: z.number().optional() }),
  event('grace-exceeded', { graceSeconds: z.number().optional() }),
  event('failed', { error: z.string(), terminal: z.boolean().optional() }),
]);

export type WorkerEvent = z.output<typeof WorkerEventSchema>;
export type WorkerEventName = WorkerEvent['event'];
export type WorkerEventOf<N extends WorkerEventName> = Extract<WorkerEvent, { event: N }>;
/** What the worker emits: an event without the envelope its logger adds. */
export type WorkerEventInput = DistributiveOmit<z.input<typeof WorkerEventSchema>, keyof typeof envelope>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export type WorkerLine =
  | { readonly kind: 'event'; readonly event: WorkerEvent }
  /** A JSON log line without `event`: for people, no consumer acts on it. */
  | {
      readonly kind: 'message';
      readonly level: string | undefined;
      readonly message: string | undefined;
      readonly worker: string | undefined;
      /** Why, when a warning or an error says. */
      readonly reason: string | undefined;
    }
  /**
   * Not JSON: the process's standard error, which shares the log (a library's start-up banner,
   * a stack trace) or a line torn by a SIGKILL mid-write. Text for people, not a broken protocol.
   */
  | { readonly kind: 'text'; readonly text: string }
  /** JSON that is not a worker event nor a plain message: a broken protocol, reported. */
  | { readonly kind: 'invalid'; readonly problem: string };

/** One parsed JSON value of a worker's log. */
export function decodeWorkerRecord(value: unknown): WorkerLine {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { kind: 'invalid', problem: 'not a JSON object' };
  const record = value as Record<string, unknown>;
  if (!('event' in record)) {
    const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
    return {
      kind: 'message',
      level: text(record['level']),
      message: text(record['message']),
      worker: text(record['worker']),
      reason: text(record['reason']),
    };
  }
  const parsed = WorkerEventSchema.safeParse(record);
  if (parsed.success) return { kind: 'event', event: parsed.data };
  const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(line)'}: ${i.message}`).join('; ');
  return { kind: 'invalid', problem: `event ${JSON.stringify(record['event'])}: ${issues}` };
}

/** One line of a worker's log as written. */
export function decodeWorkerLine(text: string): WorkerLine {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'text', text };
  }
  return decodeWorkerRecord(value);
}

export interface DecodedWorkerLog {
  readonly events: WorkerEvent[];
  /** JSON lines that were not a worker event nor a plain log message. */
  readonly invalid: number;
  /** Non-empty lines that were not JSON (standard error). */
  readonly text: number;
}

/** Every non-empty line of a log text. */
export function decodeWorkerLog(text: string): DecodedWorkerLog {
  return collect(
    text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => decodeWorkerLine(line.trim())),
  );
}

/** Records already parsed (or built by a test). */
export function decodeWorkerRecords(records: readonly unknown[]): DecodedWorkerLog {
  return collect(records.map(decodeWorkerRecord));
}

function collect(lines: readonly WorkerLine[]): DecodedWorkerLog {
  const events: WorkerEvent[] = [];
  let invalid = 0;
  let text = 0;
  for (const line of lines) {
    if (line.kind === 'event') events.push(line.event);
    else if (line.kind === 'invalid') invalid++;
    else if (line.kind === 'text') text++;
  }
  return { events, invalid, text };
}

/** The events of one kind, typed. */
export function eventsOf<N extends WorkerEventName>(
  events: readonly WorkerEvent[],
  name: N,
): WorkerEventOf<N>[] {
  return events.filter((e): e is WorkerEventOf<N> => e.event === name);
}
