/**
 * Where a job's trained model goes: one rule for the operator (which mounts the claim and shows the
 * location in status.model) and the worker (which writes it).
 */
import { posix } from 'node:path';
import type { TrainingJobSpec } from './training-job.ts';

/** The claim a job's checkpoints live on: an existing one, or the one the operator creates. */
export function checkpointClaimName(jobName: string, spec: Pick<TrainingJobSpec, 'checkpoint'>): string {
  return spec.checkpoint.volume.claimName ?? `${jobName}-checkpoints`;
}

export interface ModelLocation {
  /** The folder inside the worker's filesystem. */
  readonly dir: string;
  /** How status.model names it: pvc://<claim>/<path inside the claim>. */
  readonly uri: string;
  /** Whether deleting the job deletes it too (the checkpoint claim the operator created). */
  readonly ownedByJob: boolean;
}

export function modelLocation(
  job: { readonly name: string; readonly namespace: string },
  spec: Pick<TrainingJobSpec, 'checkpoint' | 'output'>,
): ModelLocation {
  const out = spec.output;
  if (out?.claimName !== undefined) {
    const path = out.path ?? `${job.namespace}/${job.name}`;
    return {
      dir: posix.join(out.mountPath, path),
      uri: `pvc://${out.claimName}/${path}`,
      ownedByJob: false,
    };
  }
  return {
    dir: posix.join(spec.checkpoint.path, 'model'),
    uri: `pvc://${checkpointClaimName(job.name, spec)}/model`,
    ownedByJob: spec.checkpoint.volume.claimName === undefined,
  };
}

/** Beside the checkpoints (the volume's root in a pod): the job and spec this volume belongs to. */
export const JOB_RECORD = 'job.json';
/** Beside the checkpoints, in a pod: each worker's log lines, `<worker>.jsonl`, for `tensile report`. */
export const WORKER_LOGS_DIR = 'logs';
