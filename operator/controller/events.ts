/** Records Kubernetes Events (events.k8s.io/v1) about TrainingJobs, without repeating itself. */
import { V1MicroTime } from '@kubernetes/client-node';
import type { Logger } from 'winston';
import { API_GROUP_VERSION, KIND } from '../api/training-job.ts';
import type { KubeClient } from './kube.ts';
import type { JobEventRecord } from './plan.ts';

const REPEAT_WINDOW_MS = 5 * 60_000;

export interface JobRef {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
}

export class EventRecorder {
  private readonly recent = new Map<string, number>();
  private sequence = 0;

  constructor(
    private readonly kube: KubeClient,
    private readonly controller: string,
    private readonly instance: string,
    private readonly log: Logger,
  ) {}

  private readonly backlog: (() => Promise<void>)[] = [];
  private writing = 0;

  /**
   * Best effort and off the reconcile path: events are written in the background, a few at a time; one
   * that cannot be written is logged, never fails a reconcile. Resolves when it is queued.
   */
  record(job: JobRef, event: JobEventRecord, now = new Date()): Promise<void> {
    this.backlog.push(() => this.write(job, event, now));
    this.pump();
    return Promise.resolve();
  }

  private pump(): void {
    while (this.writing < 4 && this.backlog.length > 0) {
      const next = this.backlog.shift() as () => Promise<void>;
      this.writing++;
      void next().finally(() => {
        this.writing--;
        this.pump();
      });
    }
  }

  private async write(job: JobRef, event: JobEventRecord, now: Date): Promise<void> {
    const key = `${job.uid}\u0000${event.reason}\u0000${event.message}`;
    const last = this.recent.get(key);
    if (last !== undefined && now.getTime() - last < REPEAT_WINDOW_MS) return;
    this.recent.set(key, now.getTime());
    if (this.recent.size > 10_000) {
      for (const [k, t] of this.recent) if (now.getTime() - t >= REPEAT_WINDOW_MS) this.recent.delete(k);
    }
    try {
      await this.kube.createEvent(job.namespace, {
        // Named like client-go's recorder: <object>.<hex nanoseconds>, unique without a round trip.
        metadata: {
          name: `${job.name}.${(BigInt(now.getTime()) * 1_000_000n + BigInt(this.sequence++ % 1_000_000)).toString(16)}`,
          namespace: job.namespace,
        },
        eventTime: new V1MicroTime(now.getTime()),
        reportingController: this.controller,
        reportingInstance: this.instance.slice(0, 128),
        action: event.reason.slice(0, 128),
        reason: event.reason.slice(0, 128),
        note: event.message.slice(0, 1024),
        type: event.type,
        regarding: {
          apiVersion: API_GROUP_VERSION,
          kind: KIND,
          name: job.name,
          namespace: job.namespace,
          uid: job.uid,
        },
      });
    } catch (error) {
      this.log.warn('could not record event', {
        namespace: job.namespace,
        job: job.name,
        reason: event.reason,
        error: (error as Error).message,
      });
    }
  }
}
