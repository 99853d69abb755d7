/**
 * The worker's life as a state machine, in the style of torch elastic's agent: each state is one
 * function that does its part and returns the next state.
 *
 *   joining ──world──▶ running ──the world ended──▶ joining
 *      │                  ├──training is over──────▶ finishing ──▶ done
 *      └──stopped─────────┴──stop or leave request──▶ leaving ───▶ done
 *
 * SIGTERM mid-step: the signal aborts `session.leaving` (session.ts); the step in flight finishes, or
 * is given up after STOP_GRACE_MS (generation.ts `enterWorld`); the generation loop returns at the
 * boundary (generation-loop.ts); `running` ends the world and goes to `leaving`, which writes the
 * final checkpoint (if this worker is the writer), leaves the rendezvous and reports the result.
 */

import { setTimeout as delay } from 'node:timers/promises';
import type { CompletionRecord } from '../../operator/api/contract.ts';
import { goodputReport } from '../../operator/api/goodput.ts';
import { modelLocation } from '../../operator/api/model-output.ts';
import type { CheckpointRef } from '../checkpoint/store.ts';
import { CollectiveError } from '../collective/transport.ts';
import type { JoinedWorld } from '../elastic/membership.ts';
import { CheckpointError } from '../errors.ts';
import { writeModelExport } from '../export/model-export.ts';
import { failpoint } from '../failpoint.ts';
import { emit } from '../log.ts';
import { type WorkerResult, writeWorkerResult } from '../result.ts';
import { evaluate } from './evaluate.ts';
import { enterWorld, formGeneration } from './generation.ts';
import { runGeneration } from './generation-loop.ts';
import type { Session } from './session.ts';

export type LifecycleState =
  | { readonly name: 'joining' }
  | { readonly name: 'running'; readonly world: JoinedWorld }
  | { readonly name: 'leaving'; readonly outcome: 'stopped' | 'left' }
  | { readonly name: 'finishing' }
  | { readonly name: 'done'; readonly result: WorkerResult };

/** Runs the states from `joining` to `done`; `started` is when the worker started (for its last line). */
export async function runLifecycle(session: Session, started: number): Promise<WorkerResult> {
  let state: LifecycleState = { name: 'joining' };
  while (state.name !== 'done') state = await next(session, state, started);
  return state.result;
}

function next(session: Session, state: LifecycleState, started: number): Promise<LifecycleState> {
  switch (state.name) {
    case 'joining':
      return joining(session);
    case 'running':
      return running(session, state.world);
    case 'leaving':
      return leaving(session, state.outcome, started);
    case 'finishing':
      return finishing(session, started);
    case 'done':
      return Promise.resolve(state);
  }
}

/** Waits for a world this worker belongs to, whose state the membership makes this worker's. */
export async function joining(session: Session): Promise<LifecycleState> {
  const joined = await session.membership.join(session.holder, () => session.restore(), session.leaving);
  if (joined.kind === 'stopped') return { name: 'leaving', outcome: 'stopped' };
  if (joined.kind === 'completed') {
    emit(session.facts.log, 'info', 'the job has completed', {
      event: 'already-completed',
      step: joined.step,
      reason: joined.reason,
    });
    if (session.state.completed === null) session.state.completed = joined.reason;
    return { name: 'finishing' };
  }
  return { name: 'running', world: joined.world };
}

/** Runs one generation in `world`, then ends this worker's part of it. */
export async function running(session: Session, world: JoinedWorld): Promise<LifecycleState> {
  const { state, facts } = session;
  enterWorld(session, world);
  if (state.completed !== null) {
    emit(facts.log, 'info', 'training already completed', {
      event: 'already-completed',
      reason: state.completed,
    });
    await world.end();
    return { name: 'finishing' };
  }
  const generation = formGeneration(session, world);
  const { reason, worldEnded } = await runGeneration(session, generation);
  if (worldEnded !== undefined && reason === undefined && !session.leaving.aborted) {
    session.membership.publish('events', {
      type: 'rescaling',
      worker: session.config.workerId,
      generation: generation.number,
      reason: worldEnded,
      time: new Date().toISOString(),
    });
    await world.end();
    return { name: 'joining' };
  }
  if (reason === undefined) {
    await world.end();
    return { name: 'leaving', outcome: facts.stopAll || world.size === 1 ? 'stopped' : 'left' };
  }
  state.completed = reason;
  facts.reachedTheEnd = true;
  if (state.lastEval?.step !== state.step) {
    try {
      await evaluate(session, world);
    } catch (error) {
      // The result stands without its last evaluation: the world is over anyway.
      if (!(error instanceof CollectiveError)) throw error;
    }
  }
  await world.end();
  return { name: 'finishing' };
}

/** This worker's part ends before training does: final checkpoint, then the others re-form without it. */
export async function leaving(
  session: Session,
  outcome: 'stopped' | 'left',
  started: number,
): Promise<LifecycleState> {
  const finalRef = await finalCheckpoint(session);
  await session.membership.leave();
  return { name: 'done', result: await conclude(session, outcome, finalRef, started) };
}

/** Training is over: final checkpoint, and the writer records the completion for late and standby workers. */
export async function finishing(session: Session, started: number): Promise<LifecycleState> {
  const { state, facts, membership, config } = session;
  if (!isWriter(session) && (await writerLost(session))) return { name: 'joining' };
  if (isWriter(session)) failpoint('before-final-checkpoint', config.failpoint, config.workerId);
  const finalRef = await finalCheckpoint(session);
  if (isWriter(session)) {
    const reason = state.completed ?? 'completed';
    const model = exportModel(session);
    const now = new Date().toISOString();
    const figures: CompletionRecord = {
      worker: config.workerId,
      step: state.step,
      epoch: state.epoch,
      loss: state.lastEval?.loss ?? facts.lastLoss ?? 0,
      ...(state.lastEval === null ? {} : { accuracy: state.lastEval.accuracy }),
      ...(finalRef === undefined
        ? {}
        : { lastCheckpoint: { step: finalRef.step, path: finalRef.path, time: now } }),
      ...(model === undefined ? {} : { model }),
      usefulSeconds: goodputReport(facts.generationEnds, state.generations, 0).usefulSeconds,
      reason,
      time: now,
    };
    // The record first: it outlives the message (core NATS keeps nothing for a leader elected later).
    await membership.complete(figures);
    membership.publish('metrics', { type: 'completed', ...figures });
  }
  return { name: 'done', result: await conclude(session, 'completed', finalRef, started) };
}

/**
 * A rank that does not write stays until the writer recorded the completion: a writer killed during
 * the final checkpoint would otherwise leave a job that Succeeded without its last steps or its
 * model. When the writer is lost first, the survivors (their state is the final one) re-form, and the
 * new world's writer writes them.
 */
async function writerLost(session: Session): Promise<boolean> {
  const writer = session.facts.lastWorld?.members[0];
  if (writer === undefined || !session.facts.reachedTheEnd) return false;
  const outcome = await session.membership.awaitCompletion(writer, session.leaving);
  if (outcome !== 'writer-lost') return false;
  emit(
    session.facts.log,
    'warn',
    `the writer ${writer} was lost before it recorded the completion; re-forming`,
    {
      event: 'writer-lost',
      writer,
      step: session.state.step,
    },
  );
  return true;
}

/**
 * The writer exports the trained model for serving. A failure is reported but does not fail the job:
 * the weights are in the final checkpoint, and `tensile export` can write the model from it.
 */
function exportModel(
  session: Session,
): { uri: string; step: number; accuracy?: number; time: string } | undefined {
  const { config, facts, state } = session;
  if (!facts.reachedTheEnd || state.step === 0) return undefined;
  const job = { name: config.jobName, namespace: config.namespace, uid: config.jobUid };
  const location = modelLocation(job, config.spec);
  const dir = config.modelDir ?? location.dir;
  // `tensile run` (an output folder of its own) has no claims to name.
  const uri = config.outDir === undefined ? location.uri : undefined;
  try {
    const written = writeModelExport(dir, {
      snapshot: session.takeSnapshot().snapshot,
      // The fit the model was trained with: a resumed checkpoint's, whatever this data would fit.
      dataset: { ...session.dataset, ...session.trainer.preprocessing },
      job,
      spec: config.spec,
      uri,
    });
    emit(facts.log, 'info', `model exported to ${dir}`, {
      event: 'model-exported',
      step: written.step,
      dir,
      ...(uri === undefined ? {} : { uri }),
      ...(written.accuracy === undefined ? {} : { accuracy: written.accuracy }),
    });
    return {
      uri: uri ?? dir,
      step: written.step,
      time: written.time,
      ...(written.accuracy === undefined ? {} : { accuracy: written.accuracy }),
    };
  } catch (error) {
    emit(facts.log, 'error', `could not export the model to ${dir}`, {
      event: 'model-export-failed',
      error: (error as Error).message,
    });
    return undefined;
  }
}

/** The writer of the last world (its rank 0, or the last worker standing) writes the final checkpoint. */
function isWriter(session: Session): boolean {
  const last = session.facts.lastWorld;
  return last !== undefined && (last.rank === 0 || last.size === 1);
}

async function finalCheckpoint(session: Session): Promise<CheckpointRef | undefined> {
  const { checkpoints, state, facts } = session;
  await checkpoints.idle();
  await auditWritten(session);
  const last = checkpoints.last;
  if (!isWriter(session) || !facts.trained || state.step === 0 || last?.step === state.step) return last;
  for (;;) {
    const { snapshot, blockingMs } = session.takeSnapshot();
    emit(facts.log, 'debug', 'final snapshot', { event: 'snapshot', step: state.step, blockingMs });
    try {
      return await checkpoints.writeNow(snapshot);
    } catch (error) {
      // The final state is only in memory: a full volume is waited out, not a reason to lose it.
      if (!(error instanceof CheckpointError) || session.leaving.aborted) throw error;
      emit(facts.log, 'error', 'final checkpoint failed; trying again', {
        event: 'checkpoint-failed',
        step: state.step,
        error: error.message,
      });
      await pause(FINAL_RETRY_MS, session.leaving);
      await auditWritten(session);
    }
  }
}

const FINAL_RETRY_MS = 1000;

const pause = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);

/**
 * Before the end, the audit records a full volume held back are written (a worker that exits with
 * them loses them: its steps would read as never trained). Waits for room, until asked to stop.
 */
async function auditWritten(session: Session): Promise<void> {
  let said = false;
  for (;;) {
    session.audit.flush();
    if (session.audit.behind === 0 || session.leaving.aborted) return;
    if (!said)
      emit(session.facts.log, 'warn', 'waiting for room on the volume for the audit log', {
        event: 'checkpoint-failed',
        step: session.state.step,
        error: `the audit log is ${session.audit.behind} bytes behind (its volume is full)`,
      });
    said = true;
    await pause(FINAL_RETRY_MS, session.leaving);
  }
}

const REASONS = {
  left: 'left the world; the others go on',
  stoppedByOperator: 'stopped by the operator',
  stoppedBySignal: 'stopped by signal',
} as const;

/** Closes the checkpoint writer, then reports, logs and (with an output directory) writes the result. */
async function conclude(
  session: Session,
  outcome: WorkerResult['status'],
  finalRef: CheckpointRef | undefined,
  started: number,
): Promise<WorkerResult> {
  const { state, clock, facts, config } = session;
  const sessionSeconds = clock.sessionSeconds();
  await session.checkpoints.close();
  // The final checkpoint is the one a new node resumes from or exports: in the store before the end.
  await session.mirror?.idle();
  const result: WorkerResult = {
    status: outcome,
    reason:
      outcome === 'completed'
        ? (state.completed ?? 'completed')
        : outcome === 'left'
          ? REASONS.left
          : facts.stopAll
            ? REASONS.stoppedByOperator
            : REASONS.stoppedBySignal,
    worker: config.workerId,
    step: state.step,
    epoch: state.epoch,
    samples: state.samples,
    eval: state.lastEval,
    backend: session.backend.backend,
    generations: state.generations,
    trainSeconds: Math.max(state.trainSeconds, clock.trainSecondsAt(sessionSeconds)),
    sessionSamplesPerSecond: sessionSeconds > 0 ? clock.sessionSamples / sessionSeconds : 0,
    stepSeconds: clock.stepSeconds,
    lostStepSeconds: clock.lostStepSeconds,
    checkpoint: finalRef ?? null,
    resumedFrom: facts.resumedFrom ?? null,
    trainSamples: session.dataset.train.size,
    auditFile: session.audit.file,
  };
  emit(facts.log, 'info', outcome, {
    event: outcome,
    step: result.step,
    epoch: result.epoch,
    reason: result.reason,
    accuracy: result.eval?.accuracy,
    loss: result.eval?.loss,
    checkpoint: result.checkpoint?.path,
    seconds: Math.round(performance.now() - started) / 1000,
  });
  if (config.outDir !== undefined) writeWorkerResult(config.outDir, result);
  return result;
}
