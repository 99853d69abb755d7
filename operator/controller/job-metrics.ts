/**
 * The training metrics of each job, as the operator knows them: its status and the newest progress its
 * workers reported. Pure, so that what a scrape shows is a table test away from the inputs.
 */
import type { CompletedMessage, ProgressMessage } from '../api/contract.ts';
import type { TrainingJobStatus } from '../api/training-job.ts';

/**
 * Time in steps that moved the job past its furthest step so far, added up from consecutive progress
 * reports of one world: steps redone after a restore, re-forming and start-up add nothing.
 */
export interface UsefulTime {
  readonly seconds: number;
  readonly furthestStep: number;
  readonly last: { readonly generation: number; readonly step: number; readonly timeMs: number };
}

export function advanceUsefulTime(previous: UsefulTime | undefined, report: ProgressMessage): UsefulTime {
  const timeMs = Date.parse(report.time);
  const last = { generation: report.generation, step: report.step, timeMs };
  if (previous === undefined) return { seconds: 0, furthestStep: report.step, last };
  let seconds = previous.seconds;
  const p = previous.last;
  if (p.generation === report.generation && report.step > p.step && timeMs > p.timeMs) {
    const fresh = report.step - Math.max(p.step, previous.furthestStep);
    if (fresh > 0) seconds += ((timeMs - p.timeMs) / 1000) * (fresh / (report.step - p.step));
  }
  return { seconds, furthestStep: Math.max(previous.furthestStep, report.step), last };
}

export interface JobMetricInput {
  readonly namespace: string;
  readonly name: string;
  readonly status: TrainingJobStatus | undefined;
  readonly progress?: ProgressMessage | undefined;
  readonly useful?: UsefulTime | undefined;
  /** The workers' completion (message or record): its useful seconds outlast this operator's view. */
  readonly completed?: Pick<CompletedMessage, 'usefulSeconds'> | undefined;
}

/** Gauge and counter names (without the `tensile_trainingjob_` prefix) to values; absent: not known. */
export interface JobMetricValues {
  step?: number;
  epoch?: number;
  loss?: number;
  accuracy_ratio?: number;
  throughput_samples_per_second?: number;
  world_size_workers?: number;
  rendezvous_generation?: number;
  goodput_ratio?: number;
  preemptions_total: number;
  restarts_total: number;
  last_checkpoint_age_seconds?: number;
  last_checkpoint_step?: number;
  autoscaling_replicas_workers?: number;
  autoscaling_global_batch?: number;
  autoscaling_predicted_goodput_samples_per_second?: number;
  autoscaling_noise_scale_samples?: number;
  autoscaling_changes_total?: number;
}

const ended = (s: TrainingJobStatus | undefined) => s?.phase === 'Succeeded' || s?.phase === 'Failed';

export function jobMetricValues(input: JobMetricInput, nowMs: number): JobMetricValues {
  const { status: s, progress: p } = input;
  // Progress is the fresher of the two while the job runs; once it ended, status holds the last word.
  const live = p !== undefined && !ended(s) && (s?.step === undefined || p.step >= s.step) ? p : undefined;
  const out: JobMetricValues = { preemptions_total: s?.preemptions ?? 0, restarts_total: s?.restarts ?? 0 };
  const set = <K extends keyof JobMetricValues>(key: K, value: JobMetricValues[K] | undefined) => {
    if (value !== undefined && Number.isFinite(value)) out[key] = value;
  };
  set('step', live?.step ?? s?.step);
  set('epoch', live?.epoch ?? s?.epoch);
  set('loss', live?.loss ?? s?.loss);
  set('accuracy_ratio', live?.accuracy ?? s?.accuracy);
  set('throughput_samples_per_second', ended(s) ? 0 : (live?.samplesPerSecond ?? s?.samplesPerSecond));
  set('world_size_workers', ended(s) ? 0 : (live?.worldSize ?? s?.worldSize));
  set('rendezvous_generation', live?.generation ?? s?.generation);
  const checkpoint = newest(s?.lastCheckpoint, live?.lastCheckpoint);
  if (checkpoint !== undefined) {
    set('last_checkpoint_step', checkpoint.step);
    set('last_checkpoint_age_seconds', Math.max(0, (nowMs - Date.parse(checkpoint.time)) / 1000));
  }
  const start = s?.startTime === undefined ? undefined : Date.parse(s.startTime);
  const end = s?.completionTime === undefined ? nowMs : Date.parse(s.completionTime);
  // Both undercount: this operator misses the reports of times it did not follow, the writer the
  // generations it was not in. The larger is the nearer; neither known, there is no estimate.
  const usefulSeconds = maxDefined(input.useful?.seconds, input.completed?.usefulSeconds);
  if (start !== undefined && usefulSeconds !== undefined && end > start)
    set('goodput_ratio', Math.min(1, usefulSeconds / ((end - start) / 1000)));
  const a = s?.autoscaling;
  if (a !== undefined && !ended(s)) {
    set('autoscaling_replicas_workers', a.replicas);
    set('autoscaling_global_batch', a.chosenBatch?.globalBatch ?? a.globalBatch);
    set(
      'autoscaling_predicted_goodput_samples_per_second',
      a.options?.find((o) => o.replicas === a.replicas)?.goodput,
    );
    set('autoscaling_noise_scale_samples', a.noiseScale);
  }
  if (a !== undefined) set('autoscaling_changes_total', a.changes ?? 0);
  return out;
}

function maxDefined(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.max(a, b);
}

type CheckpointRef = { step: number; path: string; time: string };
function newest(a: CheckpointRef | undefined, b: CheckpointRef | undefined): CheckpointRef | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return b.step > a.step ? b : a;
}

/** Help text and kind of each job metric, in the order they are registered. */
export const JOB_METRICS: Record<keyof JobMetricValues, { help: string; counter?: true }> = {
  step: { help: 'Global training step the job reached' },
  epoch: { help: 'Epoch the job is in' },
  loss: { help: 'Training loss of the newest reported step' },
  accuracy_ratio: { help: 'Newest evaluation accuracy (0 to 1)' },
  throughput_samples_per_second: { help: 'Training samples per second of the whole world' },
  world_size_workers: { help: 'Workers in the current world' },
  rendezvous_generation: { help: 'Rendezvous round (generation) of the current world' },
  goodput_ratio: {
    help: 'Time in steps that advanced the job past its furthest step, over the time since it started (estimated from progress reports since this operator started, or from the workers’ completion)',
  },
  preemptions_total: { help: 'Workers lost to preemption (never counted as failures)', counter: true },
  restarts_total: { help: 'Workers that failed and were replaced', counter: true },
  last_checkpoint_age_seconds: { help: 'Seconds since the newest checkpoint was written' },
  last_checkpoint_step: { help: 'Step of the newest checkpoint' },
  autoscaling_replicas_workers: {
    help: 'Workers the goodput policy chose (spec.autoscaling.policy goodput)',
  },
  autoscaling_global_batch: { help: 'Global batch the goodput policy chose, or predicts its choice at' },
  autoscaling_predicted_goodput_samples_per_second: {
    help: 'Predicted goodput of the chosen worker count (base-batch-equivalent samples per second: throughput × statistical efficiency)',
  },
  autoscaling_noise_scale_samples: { help: 'Gradient noise scale the workers measured, in samples' },
  autoscaling_changes_total: {
    help: 'Changes of the worker count or global batch the goodput policy made',
    counter: true,
  },
};
