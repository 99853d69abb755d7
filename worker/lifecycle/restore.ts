/** Resuming from the newest valid checkpoint: refused, with the way out, when it cannot continue this job. */
import { CheckpointError } from '../errors.ts';
import { emit, errorMessage } from '../log.ts';
import type { TrainingState } from '../train/snapshot.ts';
import type { Session } from './session.ts';

/** Why a checkpoint cannot continue this job's training, or undefined when it can. */
export function incompatibility(saved: TrainingState, fresh: TrainingState): string | undefined {
  const a = saved.dataset;
  const b = fresh.dataset;
  if (a.trainSamples !== b.trainSamples || a.featureSize !== b.featureSize || a.classes !== b.classes) {
    return `it was written for ${a.trainSamples} training samples of ${a.featureSize} values in ${a.classes} classes, the dataset now has ${b.trainSamples} of ${b.featureSize} in ${b.classes}`;
  }
  if (saved.shuffleSeed !== fresh.shuffleSeed)
    return `its dataset.shuffleSeed is ${saved.shuffleSeed}, the spec says ${fresh.shuffleSeed}`;
  if (saved.modelSeed !== fresh.modelSeed)
    return `its model.seed is ${saved.modelSeed}, the spec says ${fresh.modelSeed}`;
  return undefined;
}

/** A newer checkpoint in checkpoint.objectStore than on the volume (a new node's disk) comes down first. */
async function pullFromObjectStore(session: Session): Promise<void> {
  const { mirror, store } = session;
  if (mirror === undefined) return;
  const pulled = await mirror.pullNewer(store.directory, (await store.list())[0]?.step);
  for (const step of pulled)
    emit(session.facts.log, 'info', 'checkpoint downloaded from the object store', {
      event: 'checkpoint-downloaded',
      step,
      url: session.spec.checkpoint.objectStore?.url ?? '',
    });
}

/** Loads the newest valid checkpoint into the session's trainer; false when there is none. */
export async function restoreLatest(session: Session): Promise<boolean> {
  const log = session.facts.log;
  await pullFromObjectStore(session);
  const restored = await session.store.latest((ref, reason) =>
    emit(log, 'warn', 'skipping invalid checkpoint', {
      event: 'checkpoint-skipped',
      path: ref.path,
      step: ref.step,
      reason,
    }),
  );
  if (restored === undefined) return false;
  const problem = incompatibility(restored.snapshot.state, session.fresh);
  if (problem !== undefined) {
    throw new CheckpointError(
      `cannot resume from ${restored.ref.path}: ${problem}; use another checkpoint directory (or delete these checkpoints) to start over`,
      true,
    );
  }
  try {
    session.holder.restore(restored.snapshot);
  } catch (error) {
    throw new CheckpointError(
      `cannot resume from ${restored.ref.path}: ${errorMessage(error)}; was it written for another model?`,
      true,
      { cause: error },
    );
  }
  session.facts.resumedFrom = restored.ref;
  const state = session.state;
  emit(log, 'info', 'resumed from checkpoint', {
    event: 'resumed',
    path: restored.ref.path,
    step: state.step,
    epoch: state.epoch,
    cursor: state.cursor,
  });
  return true;
}
