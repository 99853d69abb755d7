/**
 * The worker's life: backend, data, model, restore, the training loop with evaluation and background
 * checkpoints, and the end — completed, or stopped by SIGTERM after a final checkpoint.
 *
 * One worker, one rank: the world is formed locally and the reducer is the identity. The elastic
 * runtime replaces `formWorld` (rendezvous over NATS) and the reducer (ring all-reduce); the loop
 * already takes the world as an input of every step and re-reads it at step boundaries.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import * as tf from '@tensorflow/tfjs';
import type { TrainingJobSpec } from '../operator/api/training-job.ts';
import { type SelectedBackend, selectBackend } from './backend/select.ts';
import { BackgroundCheckpointer, type CheckpointRef, CheckpointStore } from './checkpoint/store.ts';
import type { WorkerConfig } from './config.ts';
import { AuditLog } from './data/audit.ts';
import { type Dataset, loadDataset } from './data/dataset.ts';
import { CheckpointError } from './errors.ts';
import { errorMessage, type WorkerLogger } from './log.ts';
import { buildModel } from './model/build.ts';
import { type WorkerResult, writeWorkerResult } from './result.ts';
import {
  checkpointDue,
  type EvalResult,
  evaluationDue,
  learningRateAt,
  plannedSteps,
  stopReason,
  type World,
  worldFor,
} from './train/policy.ts';
import { type GradientReducer, LocalReducer } from './train/reducer.ts';
import type { Snapshot, TrainingState } from './train/snapshot.ts';
import { Trainer } from './train/trainer.ts';

/** At most one progress line per interval (plus one per evaluation and checkpoint). */
const PROGRESS_INTERVAL_MS = 2000;

export interface WorkerRuntimeOptions {
  readonly config: WorkerConfig;
  readonly log: WorkerLogger;
  /** Aborted on SIGTERM/SIGINT: checkpoint at the next step boundary and return. */
  readonly stop: AbortSignal;
  readonly reducer?: GradientReducer;
}

function initialState(spec: TrainingJobSpec, dataset: Dataset): TrainingState {
  const { policy } = worldFor(spec, 0, 0, 1, 0, undefined);
  return {
    step: 0,
    epoch: 0,
    cursor: 0,
    samples: 0,
    shuffleSeed: spec.dataset.shuffleSeed,
    modelSeed: spec.model.seed,
    worldSize: 1,
    generation: 0,
    generations: [],
    policy,
    lastEval: null,
    trainSeconds: 0,
    dataset: { ...dataset.fingerprint },
    completed: null,
  };
}

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

export async function runWorker(options: WorkerRuntimeOptions): Promise<WorkerResult> {
  const { config, stop } = options;
  const spec = config.spec;
  let log = options.log;
  const started = performance.now();
  // The worker reports its backend itself; tfjs's console banners ("install tfjs-node …") are noise.
  tf.enableProdMode();

  const backend: SelectedBackend = await selectBackend(config.backend ?? spec.worker.backend);
  for (const skipped of backend.skipped)
    log.info('backend skipped', { backend: skipped.backend, via: skipped.via, reason: skipped.reason });
  log.info('backend selected', {
    event: 'backend',
    backend: backend.backend,
    via: backend.via,
    addedKernels: backend.addedKernels,
  });

  const dataset = await loadDataset(spec.dataset, (message, fields) => log.info(message, fields));
  log.info('dataset ready', { event: 'dataset', ...dataset.describe });
  const built = await buildModel(spec.model, dataset.sampleShape, dataset.classes);
  log.info('model built', {
    event: 'model',
    kind: built.kind,
    parameters: built.parameters,
    inputShape: built.inputShape,
  });

  const store = new CheckpointStore(config.checkpointDir, spec.checkpoint.keep);
  await store.ensureDirectory();
  const fresh = initialState(spec, dataset);
  const restored = await store.latest((ref, reason) =>
    log.warn('skipping invalid checkpoint', {
      event: 'checkpoint-skipped',
      path: ref.path,
      step: ref.step,
      reason,
    }),
  );
  if (restored !== undefined) {
    const problem = incompatibility(restored.snapshot.state, fresh);
    if (problem !== undefined) {
      throw new CheckpointError(
        `cannot resume from ${restored.ref.path}: ${problem}; use another checkpoint directory (or delete these checkpoints) to start over`,
        true,
      );
    }
  }

  const auditDirectory = join(config.outDir ?? config.checkpointDir, 'audit');
  mkdirSync(auditDirectory, { recursive: true });
  const audit = new AuditLog(join(auditDirectory, `${config.workerId}.bin`));
  const trainer = new Trainer({
    model: built,
    optimizer: spec.optimizer,
    dataset,
    maxPerWorker: spec.batch.maxPerWorker,
    state: fresh,
    audit,
  });
  const reducer = options.reducer ?? new LocalReducer();
  try {
    if (restored !== undefined) {
      try {
        trainer.restore(restored.snapshot);
      } catch (error) {
        throw new CheckpointError(
          `cannot resume from ${restored.ref.path}: ${errorMessage(error)}; was it written for another model?`,
          true,
          { cause: error },
        );
      }
      const cut = audit.truncateFrom(trainer.state.step);
      log.info('resumed from checkpoint', {
        event: 'resumed',
        path: restored.ref.path,
        step: trainer.state.step,
        epoch: trainer.state.epoch,
        cursor: trainer.state.cursor,
        auditRecordsDropped: cut.dropped,
      });
    } else {
      audit.truncateFrom(0);
    }

    // The world of this generation: one rank here; the elastic runtime forms it by rendezvous.
    const state = trainer.state;
    // A restart is a new generation (a new rendezvous round), unless there is nothing left to train.
    const generation =
      restored === undefined ? 0 : state.completed === null ? state.generation + 1 : state.generation;
    const formed = worldFor(
      spec,
      generation,
      0,
      1,
      state.step,
      restored === undefined ? undefined : state.policy,
    );
    let world: World = formed.world;
    const globalBatch = world.perWorker.reduce((a, b) => a + b, 0);
    state.generation = generation;
    state.worldSize = world.size;
    state.policy = formed.policy;
    if (state.completed === null) {
      state.generations = [
        ...state.generations,
        {
          generation,
          worldSize: world.size,
          globalBatch,
          learningRate: world.learningRate,
          firstStep: state.step,
        },
      ];
    }
    log = log.child({ generation });
    if (state.completed === null)
      log.info('world formed', {
        event: 'generation',
        worldSize: world.size,
        rank: world.rank,
        perWorker: world.perWorker,
        globalBatch,
        learningRate: world.learningRate,
        firstStep: state.step,
      });

    const checkpoints = new BackgroundCheckpointer(
      store,
      {
        written: (ref, millis) =>
          log.info('checkpoint written', {
            event: 'checkpoint',
            step: ref.step,
            path: ref.path,
            writeMs: Math.round(millis),
          }),
        failed: (step, error) =>
          log.error('checkpoint failed; training goes on', {
            event: 'checkpoint-failed',
            step,
            error: errorMessage(error),
          }),
      },
      () => audit.descriptor,
    );
    checkpoints.last = restored?.ref;
    let lastCheckpointTime = Date.now();
    const trainSecondsBefore = state.trainSeconds;
    const loopStarted = performance.now();
    const takeSnapshot = (): { snapshot: Snapshot; blockingMs: number } => {
      const t = performance.now();
      state.trainSeconds = trainSecondsBefore + (performance.now() - loopStarted) / 1000;
      const snapshot = trainer.snapshot();
      return { snapshot, blockingMs: performance.now() - t };
    };

    const evaluate = (): EvalResult | null => {
      if (dataset.eval === undefined || dataset.eval.size === 0) return null;
      const t = performance.now();
      const measured = trainer.evaluate(dataset.eval, 1000, stop);
      if (measured === undefined) return null;
      const result = { step: state.step, epoch: state.epoch, ...measured };
      state.lastEval = result;
      log.info('evaluation', { event: 'eval', ...result, seconds: Math.round(performance.now() - t) / 1000 });
      return result;
    };

    const planned = plannedSteps(spec.stopping, dataset.train.size, globalBatch);
    let sessionSamples = 0;
    let windowStart = performance.now();
    let windowSamples = 0;
    let windowLoss = 0;
    let windowAccuracy = 0;
    let windowSteps = 0;
    const alreadyCompleted = state.completed !== null;
    let reason: string | undefined = state.completed ?? stopReason(spec.stopping, state, state.lastEval);
    if (alreadyCompleted)
      log.info('training already completed', { event: 'already-completed', reason: state.completed });

    while (reason === undefined && !stop.aborted) {
      world = {
        ...world,
        learningRate: learningRateAt(spec.optimizer, state.policy, state.step, planned),
      };
      // The stop signal is not passed down: a step is finished, then the worker checkpoints and leaves.
      const result = await trainer.step(world, reducer);
      sessionSamples += result.samples;
      windowSamples += result.samples;
      windowLoss += result.loss;
      windowAccuracy += result.accuracy;
      windowSteps++;
      const ending = stopReason(spec.stopping, state, null) !== undefined;
      if (evaluationDue(spec.evaluation.intervalSteps, state.step, result.endedEpoch, ending)) evaluate();
      reason = stopReason(spec.stopping, state, state.lastEval);
      const now = performance.now();
      if (
        now - windowStart >= PROGRESS_INTERVAL_MS ||
        reason !== undefined ||
        state.lastEval?.step === state.step
      ) {
        log.info('progress', {
          event: 'progress',
          step: state.step,
          epoch: state.epoch,
          cursor: state.cursor,
          loss: windowLoss / windowSteps,
          accuracy: windowAccuracy / windowSteps,
          samplesPerSecond: Math.round((windowSamples / (now - windowStart)) * 1000 * 10) / 10,
          learningRate: result.learningRate,
          plannedSteps: planned,
        });
        windowStart = now;
        windowSamples = 0;
        windowLoss = 0;
        windowAccuracy = 0;
        windowSteps = 0;
      }
      if (
        reason === undefined &&
        !checkpoints.busy &&
        checkpointDue(spec.checkpoint, {
          step: state.step,
          lastStep: checkpoints.last?.step ?? 0,
          lastTime: lastCheckpointTime,
          now: Date.now(),
        })
      ) {
        const { snapshot, blockingMs } = takeSnapshot();
        checkpoints.start(snapshot);
        lastCheckpointTime = Date.now();
        log.debug('checkpoint snapshot', { event: 'snapshot', step: state.step, blockingMs });
      }
      // Lets signals, timers and the background checkpoint write make progress between steps.
      await yieldToEventLoop();
    }

    const stopped = reason === undefined;
    if (stopped) log.info('stop requested; checkpointing', { event: 'stopping', step: state.step });
    else if (!alreadyCompleted) {
      state.completed = reason ?? null;
      if (state.lastEval?.step !== state.step) evaluate();
    }
    await checkpoints.idle();
    let finalRef: CheckpointRef | undefined = checkpoints.last;
    // Completed: the final checkpoint records it (and the final evaluation). Stopped: unless the last
    // checkpoint is already at this step. Nothing to save before the first step.
    const needsFinal = stopped ? finalRef?.step !== state.step : !alreadyCompleted;
    if (needsFinal && state.step > 0) {
      const { snapshot, blockingMs } = takeSnapshot();
      log.debug('final snapshot', { event: 'snapshot', step: state.step, blockingMs });
      finalRef = await checkpoints.writeNow(snapshot);
    }
    const sessionSeconds = (performance.now() - loopStarted) / 1000;
    await checkpoints.close();
    const result: WorkerResult = {
      status: stopped ? 'stopped' : 'completed',
      reason: stopped ? 'stopped by signal' : (state.completed ?? 'completed'),
      worker: config.workerId,
      step: state.step,
      epoch: state.epoch,
      samples: state.samples,
      eval: state.lastEval,
      backend: backend.backend,
      generations: state.generations,
      trainSeconds: trainSecondsBefore + sessionSeconds,
      sessionSamplesPerSecond: sessionSeconds > 0 ? sessionSamples / sessionSeconds : 0,
      checkpoint: finalRef ?? null,
      resumedFrom: restored?.ref ?? null,
      trainSamples: dataset.train.size,
      auditFile: audit.file,
    };
    log.info(stopped ? 'stopped' : 'completed', {
      event: stopped ? 'stopped' : 'completed',
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
  } finally {
    audit.close();
    trainer.dispose();
    built.model.dispose();
    dataset.close();
    log.debug('tensors left', { numTensors: tf.memory().numTensors });
  }
}
