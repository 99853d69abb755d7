/**
 * What the workers report over NATS, kept per job for the reconciler: the latest progress, a completion,
 * and whether the world is re-forming. Messages are validated on receipt; a malformed or oversized one is
 * dropped and counted (`drops`). Each report asks for a reconcile, delayed so that status is written at most every few seconds.
 *
 * Reports are kept per incarnation (the job uid each message carries): the workers of a deleted job
 * may still be reporting when a job of the same name starts, and its status must not take theirs.
 */
import type { NatsConnection, Subscription } from 'nats';
import type { Logger } from 'winston';
import {
  type CompletedMessage,
  CompletionRecordSchema,
  completionFromRecord,
  decodeMessage,
  JobEventSchema,
  MAX_REPORT_BYTES,
  MetricsMessageSchema,
  type ProgressMessage,
  type RescaleEvent,
} from '../api/contract.ts';
import { DropCounter } from '../api/drops.ts';
import { advanceUsefulTime, type UsefulTime } from './job-metrics.ts';

export interface JobObservations {
  readonly progress?: ProgressMessage;
  readonly completed?: CompletedMessage;
  /** The world broke and is re-forming (cleared by the next formed world). */
  readonly rescaling?: { readonly reason: string; readonly since: string; readonly generation: number };
  /** The newest world a worker announced as formed. */
  readonly formedGeneration?: number;
  /** Time in steps that advanced the job, for the goodput metric. */
  readonly useful?: UsefulTime;
}

export interface ProgressListener {
  /** A report arrived for the job `namespace/name`; reconcile it within `delayMs`. */
  changed(key: string, delayMs: number): void;
  /** A new world formed: worth an Event. */
  rescaled(key: string, event: RescaleEvent): void;
}

/** How often progress may reach the status of one job. */
export const PROGRESS_INTERVAL_MS = 2000;

export function subjectKey(subject: string): string | undefined {
  const parts = subject.split('.');
  if (parts.length !== 4 || parts[0] !== 'tensile') return undefined;
  return `${parts[1]}/${parts[2]}`;
}

/** A cap on (job, incarnation) entries whatever else bounds them: a report past it is dropped. */
export const MAX_TRACKED_ENTRIES = 10_000;

export interface TrackerBounds {
  /**
   * The uid of the job `namespace/name` as it exists now (the informer's cache), undefined when there
   * is no such job: reports of anything else are dropped.
   */
  readonly liveUid?: (key: string) => string | undefined;
  /**
   * Whether `liveUid` sees every job yet (the job cache has listed once). Until then a report of a
   * job it does not know is kept (within `maxEntries`): the job may merely not be listed yet, and
   * core NATS does not send a report again. A replica started while the API server was away dropped
   * the workers' final progress and completion (model, accuracy) that way, and the job Succeeded
   * without them (chaos seed 2, 20 minutes). `prune` drops what turns out to be of no live job.
   */
  readonly knowsJobs?: () => boolean;
  /** At most this many (job, incarnation) entries (default MAX_TRACKED_ENTRIES). */
  readonly maxEntries?: number;
}

/** Where messages without a job uid are kept: never handed out for a job whose uid is asked for. */
const NO_UID = '';

export class ProgressTracker implements AsyncDisposable {
  /** By job key, then by incarnation (job uid). */
  private readonly jobs = new Map<string, Map<string, JobObservations>>();
  private readonly subscriptions: Subscription[] = [];
  /** Malformed, oversized or foreign messages, counted by reason (the first few are logged). */
  readonly drops: DropCounter;

  private entries = 0;

  constructor(
    private readonly listener: ProgressListener,
    private readonly log: Logger,
    private readonly bounds: TrackerBounds = {},
  ) {
    this.drops = new DropCounter((drop) => this.log.warn(`dropped a ${drop.reason} NATS message`, drop));
  }

  /** What the workers of incarnation `uid` of the job reported; without a uid, what came without one. */
  observations(key: string, uid?: string): JobObservations | undefined {
    return this.jobs.get(key)?.get(uid ?? NO_UID);
  }

  /** The job is gone: what its workers reported goes too. */
  forget(key: string): void {
    this.entries -= this.jobs.get(key)?.size ?? 0;
    this.jobs.delete(key);
  }

  /** Drops the entries of jobs and incarnations `liveUid` does not know: once the job cache has listed. */
  prune(): void {
    const live = this.bounds.liveUid;
    if (live === undefined) return;
    for (const [key, byUid] of this.jobs) {
      const current = live(key);
      for (const uid of byUid.keys())
        if (current === undefined || (uid !== current && uid !== NO_UID)) {
          byUid.delete(uid);
          this.entries -= 1;
        }
      if (byUid.size === 0) this.jobs.delete(key);
    }
  }

  /** How many (job, incarnation) entries are held: bounded by the live jobs (`liveUid`) and `maxEntries`. */
  get size(): number {
    return this.entries;
  }

  /**
   * Whether a report for incarnation `uid` of `key` may be kept; when not, it is dropped and counted.
   * Subjects and uids come from whoever publishes, so only jobs that exist get an entry: otherwise
   * a stream of made-up names would grow the operator's memory without end.
   */
  private admit(key: string, uid: string, subject: string): boolean {
    const live = this.bounds.liveUid;
    if (live !== undefined && this.bounds.knowsJobs?.() !== false) {
      const current = live(key);
      if (current === undefined) {
        this.drops.drop({ channel: 'nats', reason: 'unknown job', source: subject });
        return false;
      }
      if (uid !== NO_UID && uid !== current) {
        this.drops.drop({ channel: 'nats', reason: 'other incarnation', source: subject, detail: uid });
        return false;
      }
    }
    const known = this.jobs.get(key)?.has(uid) === true;
    if (!known && this.entries >= (this.bounds.maxEntries ?? MAX_TRACKED_ENTRIES)) {
      this.drops.drop({ channel: 'nats', reason: 'too many jobs', source: subject });
      return false;
    }
    return true;
  }

  private get(key: string, uid: string): JobObservations | undefined {
    return this.jobs.get(key)?.get(uid);
  }

  private update(key: string, uid: string, change: (previous: JobObservations) => JobObservations): void {
    let byUid = this.jobs.get(key);
    if (byUid === undefined) {
      byUid = new Map();
      this.jobs.set(key, byUid);
    }
    // A job deleted and created again under its name: the incarnation before it is of no more use.
    const live = this.bounds.liveUid?.(key);
    if (live !== undefined)
      for (const held of byUid.keys())
        if (held !== live && held !== NO_UID && byUid.delete(held)) this.entries -= 1;
    if (!byUid.has(uid)) this.entries += 1;
    byUid.set(uid, change(byUid.get(uid) ?? {}));
  }

  /** Applies one message; exported for tests of the bookkeeping without a server. */
  receive(subject: string, data: Uint8Array): void {
    const key = subjectKey(subject);
    if (key === undefined) {
      this.drops.drop({ channel: 'nats', reason: 'unknown subject', source: subject });
      return;
    }
    if (subject.endsWith('.metrics')) {
      const decoded = decodeMessage(MetricsMessageSchema, data, MAX_REPORT_BYTES);
      if (!decoded.ok) {
        this.drops.drop({ channel: 'nats', reason: decoded.reason, source: subject, detail: decoded.error });
        return;
      }
      const message = decoded.value;
      const uid = message.jobUid ?? NO_UID;
      if (!this.admit(key, uid, subject)) return;
      if (message.type === 'progress') {
        this.update(key, uid, (prior) => {
          const o = { ...prior, useful: advanceUsefulTime(prior.useful, message) };
          // Progress from a newer world than the broken one: it has formed, even if its news was lost.
          if (o.rescaling !== undefined && message.generation > o.rescaling.generation) {
            const { rescaling: _, ...rest } = o;
            return { ...rest, progress: message };
          }
          return { ...o, progress: message };
        });
        this.listener.changed(key, PROGRESS_INTERVAL_MS);
      } else {
        // A worker that stood by learns of the completion holding an older state and may report it
        // too: the furthest completion stands, and keeps the model whichever report named it.
        this.update(key, uid, (o) => ({ ...o, completed: furthestCompletion(o.completed, message) }));
        this.listener.changed(key, 0);
      }
    } else if (subject.endsWith('.events')) {
      const decoded = decodeMessage(JobEventSchema, data, MAX_REPORT_BYTES);
      if (!decoded.ok) {
        this.drops.drop({ channel: 'nats', reason: decoded.reason, source: subject, detail: decoded.error });
        return;
      }
      const event = decoded.value;
      const uid = event.jobUid ?? NO_UID;
      if ((event.type === 'rescaling' || event.type === 'rescale') && !this.admit(key, uid, subject)) return;
      if (event.type === 'rescaling') {
        // Members leave a world after its successor formed ("a newer world formed"), and their news
        // can arrive after the successor's: an older world's end is no re-forming.
        const formed = this.get(key, uid)?.formedGeneration;
        if (formed !== undefined && event.generation < formed) return;
        this.update(key, uid, (o) => ({
          ...o,
          rescaling: { reason: event.reason, since: event.time, generation: event.generation },
        }));
        this.listener.changed(key, 0);
      } else if (event.type === 'rescale') {
        this.update(key, uid, (o) => {
          const { rescaling: _, ...rest } = o;
          return { ...rest, formedGeneration: Math.max(o.formedGeneration ?? 0, event.generation) };
        });
        this.listener.rescaled(key, event);
        this.listener.changed(key, 0);
      }
    }
  }

  /**
   * The completion record read from the rendezvous bucket of incarnation `uid`, taken exactly as a
   * `completed` message (plan.ts `wantsCompletionRecord` says when to read it). A malformed record,
   * another incarnation's, or one of an earlier worker without the figures is dropped and counted.
   * Asks for no reconcile: the reconcile that read it plans with it. Returns whether it was taken.
   */
  receiveCompletionRecord(key: string, uid: string, data: Uint8Array, source: string): boolean {
    const decoded = decodeMessage(CompletionRecordSchema, data, MAX_REPORT_BYTES);
    if (!decoded.ok) {
      this.drops.drop({ channel: 'nats', reason: decoded.reason, source, detail: decoded.error });
      return false;
    }
    // Buckets are per incarnation, so a record naming no uid is as foreign as one naming another.
    if (decoded.value.jobUid !== uid) {
      const detail = decoded.value.jobUid ?? '(none)';
      this.drops.drop({ channel: 'nats', reason: 'other incarnation', source, detail });
      return false;
    }
    const message = completionFromRecord(decoded.value);
    if (message === undefined) {
      this.drops.drop({
        channel: 'nats',
        reason: 'no figures',
        source,
        detail: 'a record of step and reason only',
      });
      return false;
    }
    if (!this.admit(key, uid, source)) return false;
    this.update(key, uid, (o) => ({ ...o, completed: furthestCompletion(o.completed, message) }));
    return true;
  }

  /** Follows every job's reports, or those of `namespace` only (single-namespace mode). */
  subscribe(connection: NatsConnection, namespace = '*'): void {
    for (const subject of [`tensile.${namespace}.*.metrics`, `tensile.${namespace}.*.events`]) {
      const sub = connection.subscribe(subject);
      this.subscriptions.push(sub);
      void (async () => {
        for await (const message of sub) this.receive(message.subject, message.data);
      })();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const sub of this.subscriptions) sub.unsubscribe();
  }
}

export function furthestCompletion(
  held: CompletedMessage | undefined,
  next: CompletedMessage,
): CompletedMessage {
  const [best, other] = held !== undefined && held.step >= next.step ? [held, next] : [next, held];
  const model = best.model ?? other?.model;
  return model === undefined ? best : { ...best, model };
}
