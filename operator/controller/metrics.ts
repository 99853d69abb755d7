/** Prometheus metrics of the operator, on one registry served at /metrics. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry, Summary } from 'prom-client';

export class OperatorMetrics {
  readonly registry = new Registry();
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
  readonly queueDepth = new Gauge({
    name: 'tensile_workqueue_depth',
    help: 'Job keys waiting to be reconciled',
    registers: [this.registry],
  });
  readonly jobsByPhase = new Gauge({
    name: 'tensile_trainingjobs',
    help: 'TrainingJobs by phase',
    labelNames: ['phase'],
    registers: [this.registry],
  });
  readonly podsCreated = new Counter({
    name: 'tensile_worker_pods_created_total',
    help: 'Worker pods created',
    registers: [this.registry],
  });
  readonly podsDeleted = new Counter({
    name: 'tensile_worker_pods_deleted_total',
    help: 'Worker pods deleted by the operator',
    registers: [this.registry],
  });
  readonly preemptions = new Counter({
    name: 'tensile_worker_preemptions_total',
    help: 'Workers lost to preemption (node reclaimed, evicted, deleted)',
    registers: [this.registry],
  });
  readonly failures = new Counter({
    name: 'tensile_worker_failures_total',
    help: 'Workers that failed',
    registers: [this.registry],
  });
  readonly leaveRequests = new Counter({
    name: 'tensile_leave_requests_total',
    help: 'Workers asked to leave before their node goes',
    registers: [this.registry],
  });
  readonly stragglers = new Counter({
    name: 'tensile_stragglers_total',
    help: 'Workers reported persistently slower than the straggler threshold of the median',
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'tensile_leader',
    help: '1 while this replica is the leader',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
}
