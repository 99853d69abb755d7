/**
 * What the workers report over NATS, kept per job for the reconciler: the latest progress, a completion,
 * and whether the world is re-forming. Messages are validated on receipt; a malformed one is logged and
 * dropped. Each report asks for a reconcile, delayed so that status is written at most every few seconds.
 *
 * Reports are kept per incarnation (the job uid each message carries): the workers of a deleted job
 * may still be reporting when a job of the same name starts, and its status must not take theirs.
 */
import type { NatsConnection, Subscription } from 'nats';
import type { Logger } from 'winston';
import {
  type CompletedMessage,
  decodeMessage,
  JobEventSchema,
  MetricsMessageSchema,
  type ProgressMessage,
  type RescaleEvent,
} from '../api/contract.ts';
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

/** Where messages without a job uid are kept: never handed out for a job whose uid is asked for. */
const NO_UID = '';

export class ProgressTracker implements AsyncDisposable {
  /** By job key, then by incarnation (job uid). */
  private readonly jobs = new Map<string, Map<string, JobObservations>>();
  private readonly subscriptions: Subscription[] = [];

  constructor(
    private readonly listener: ProgressListener,
    private readonly log: Logger,
  ) {}

  /** What the workers of incarnation `uid` of the job reported; without a uid, what came without one. */
  observations(key: string, uid?: string): JobObservations | undefined {
    return this.jobs.get(key)?.get(uid ?? NO_UID);
  }

  forget(key: string): void {
    this.jobs.delete(key);
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
    byUid.set(uid, change(byUid.get(uid) ?? {}));
  }

  /** Applies one message; exported for tests of the bookkeeping without a server. */
  receive(subject: string, data: Uint8Array): void {
    const key = subjectKey(subject);
    if (key === undefined) return;
    if (subject.endsWith('.metrics')) {
      const decoded = decodeMessage(MetricsMessageSchema, data);
      if (!decoded.ok) {
        this.log.warn('dropped a malformed metrics message', { subject, error: decoded.error });
        return;
      }
      const message = decoded.value;
      const uid = message.jobUid ?? NO_UID;
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
        this.update(key, uid, (o) => ({ ...o, completed: message }));
        this.listener.changed(key, 0);
      }
    } else if (subject.endsWith('.events')) {
      const decoded = decodeMessage(JobEventSchema, data);
      if (!decoded.ok) {
        this.log.warn('dropped a malformed event message', { subject, error: decoded.error });
        return;
      }
      const event = decoded.value;
      const uid = event.jobUid ?? NO_UID;
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

  subscribe(connection: NatsConnection): void {
    for (const subject of ['tensile.*.*.metrics', 'tensile.*.*.events']) {
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
