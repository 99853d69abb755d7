/**
 * `tensile run` under `spec.autoscaling.policy: goodput`: the operator's decision (operator/api/
 * autoscaling.ts) fed from the lead worker's progress lines instead of NATS, its status kept in
 * memory. The runner starts or stops worker processes to follow it.
 */
import { type AutoscaleResult, autoscale } from '../api/autoscaling.ts';
import type { AutoscalingStatus, TrainingJobSpec } from '../api/training-job.ts';
import { elasticRange } from '../api/training-job.ts';
import type { WorkerEvent } from '../api/worker-events.ts';

type ProgressLine = Extract<WorkerEvent, { event: 'progress' }>;

export class LocalAutoscaler {
  private status: AutoscalingStatus | undefined;
  private readonly spec: TrainingJobSpec;

  /** `started`: the workers the run began with; the policy starts from them (within the range). */
  constructor(spec: TrainingJobSpec, started: number) {
    const { min, max } = elasticRange(spec);
    this.spec = { ...spec, replicas: Math.min(max, Math.max(min, started)) };
  }

  get replicas(): number {
    return this.status?.replicas ?? this.spec.replicas;
  }

  get last(): AutoscalingStatus | undefined {
    return this.status;
  }

  /** One progress line of the lead worker; `pending`: workers started that are not in a world yet. */
  observe(line: ProgressLine, pending: number, now: Date): AutoscaleResult | undefined {
    if (line.goodput === undefined || line.worldSize === undefined || line.generation === undefined)
      return undefined;
    const result = autoscale({
      spec: this.spec,
      status: this.status,
      report: { generation: line.generation, worldSize: line.worldSize, goodput: line.goodput },
      pending,
      now,
    });
    this.status = result.status;
    return result;
  }
}
