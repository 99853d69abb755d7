/**
 * When a rank takes a checkpoint snapshot after a step: pure, over the world's checkpoint settings,
 * the step, the last checkpoint and the clock.
 */
import type { CheckpointSpec } from '../../operator/api/training-job.ts';
import { checkpointDue } from '../train/policy.ts';

export interface SnapshotQuestion {
  /** Rank 0 of its world: the only writer. */
  readonly writer: boolean;
  /** Training ends after this step: the final checkpoint is taken then, not here. */
  readonly ending: boolean;
  /** The background writer still writes the previous one. */
  readonly busy: boolean;
  /** The operator asked for one (a control message). */
  readonly requested: boolean;
  readonly settings: Pick<CheckpointSpec, 'intervalSteps' | 'intervalSeconds'>;
  readonly step: number;
  /** Step and time (ms) of the last checkpoint written or restored. */
  readonly lastStep: number;
  readonly lastTime: number;
  readonly now: number;
}

export function snapshotDue(q: SnapshotQuestion): boolean {
  if (!q.writer || q.ending || q.busy) return false;
  return (
    q.requested ||
    checkpointDue(q.settings, { step: q.step, lastStep: q.lastStep, lastTime: q.lastTime, now: q.now })
  );
}
