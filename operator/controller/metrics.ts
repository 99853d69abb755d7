/** Prometheus metrics of the operator, on one registry served at /metrics. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry, Summary } from 'prom-client';
import { JOB_METRICS, type JobMetricInput, type JobMetricValues, jobMetricValues } from './job-metrics.ts';

/** Per-job series carry these labels, as kube-state-metrics names a custom resource's. */
export const JOB_LABELS = ['namespace', 'trainingjob'] as const;

export class OperatorMetrics {
  readonly registry = new Registry();
  private counter(name: string, help: string, labelNames: string[] = []): Counter {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }
  private gauge(name: string, help: string, labelNames: string[] = []): Gauge {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
  readonly reconcileDuration = new Histogram({
    name: 'tensile_reconcile_duration_seconds',
    help: 'Time to reconcile one TrainingJob',
    labelNames: ['result'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  /** The same durations as quantiles (p50/p90/p99 over the last 10 minutes), for the scale benchmark. */
  readonly reconcileQuantiles = new Summary({
    name: 'tensile_reconcile_seconds',
    help: 'Time to reconcile one TrainingJob, as quantiles',
    percentiles: [0.5, 0.9, 0.99],
    maxAgeSeconds: 600,
    ageBuckets: 5,
    registers: [this.registry],
  });
  readonly queueDepth = this.gauge('tensile_workqueue_depth', 'Job keys waiting to be reconciled');
  readonly queueAdds = this.counter('tensile_workqueue_adds_total', 'Job keys added to the work queue');
  readonly queueWait = new Histogram({
    name: 'tensile_workqueue_queue_duration_seconds',
    help: 'Time a job key waited in the work queue before a reconcile took it',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly queueRetries = this.counter(
    'tensile_workqueue_retries_total',
    'Reconciles retried with backoff after an error',
  );
  readonly jobsByPhase = this.gauge('tensile_trainingjobs', 'TrainingJobs by phase', ['phase']);
  readonly podsCreated = this.counter('tensile_worker_pods_created_total', 'Worker pods created');
  readonly podsDeleted = this.counter(
    'tensile_worker_pods_deleted_total',
    'Worker pods deleted by the operator',
  );
  readonly preemptions = this.counter(
    'tensile_worker_preemptions_total',
    'Workers lost to preemption (node reclaimed, evicted, deleted)',
  );
  readonly failures = this.counter('tensile_worker_failures_total', 'Workers that failed');
  readonly leaveRequests = this.counter(
    'tensile_leave_requests_total',
    'Workers asked to leave before their node goes',
  );
  readonly stragglers = this.counter(
    'tensile_stragglers_total',
    'Workers reported persistently slower than the straggler threshold of the median',
  );
  readonly leader = this.gauge('tensile_leader', '1 while this replica is the leader');

  /** The jobs the operator knows, read at every scrape (the controller sets it while it runs). */
  private jobSource: () => readonly JobMetricInput[] = () => [];

  constructor(private readonly now: () => number = Date.now) {
    collectDefaultMetrics({ register: this.registry });
    this.registerJobMetrics();
  }

  followJobs(source: () => readonly JobMetricInput[]): void {
    this.jobSource = source;
  }

  /**
   * One gauge (or counter) per training metric, filled at scrape time from the informer cache and
   * the workers' reports: a deleted job's series disappear with it instead of going stale.
   */
  private registerJobMetrics(): void {
    const values = () => {
      const at = this.now();
      return this.jobSource().map((job): [JobMetricInput, JobMetricValues] => [
        job,
        jobMetricValues(job, at),
      ]);
    };
    for (const [key, { help, counter }] of Object.entries(JOB_METRICS)) {
      const field = key as keyof JobMetricValues;
      const name = `tensile_trainingjob_${key}`;
      const fill = (set: (labels: Record<string, string>, v: number) => void) => {
        for (const [job, v] of values()) {
          const value = v[field];
          if (value !== undefined) set({ namespace: job.namespace, trainingjob: job.name }, value);
        }
      };
      if (counter === true)
        new Counter({
          name,
          help,
          labelNames: JOB_LABELS,
          registers: [this.registry],
          collect() {
            this.reset();
            fill((labels, v) => this.inc(labels, v));
          },
        });
      else
        new Gauge({
          name,
          help,
          labelNames: JOB_LABELS,
          registers: [this.registry],
          collect() {
            this.reset();
            fill((labels, v) => this.set(labels, v));
          },
        });
    }
  }
}
