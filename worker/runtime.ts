/**
 * The worker's life: backend, data, model, then generations — a world is joined (alone, or by
 * rendezvous with the other workers), its state made consistent (restored from a checkpoint or
 * received from the most advanced member), and steps run in it until training ends, a stop is
 * requested, or the world changes (a member lost, leaving or joining): then the next world is joined
 * at a step boundary, without restarting the process.
 *
 * Rank 0 of each world is its only checkpoint writer and publishes progress; evaluation is sharded
 * over the ranks and summed with the same collective as the gradients, so every rank sees the same
 * result and takes the same stopping decision.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import * as tf from '@tensorflow/tfjs';
import type { TrainingJobSpec } from '../operator/api/training-job.ts';
import { type SelectedBackend, selectBackend } from './backend/select.ts';
import { BackgroundCheckpointer, type CheckpointRef, CheckpointStore } from './checkpoint/store.ts';
import { CollectiveError } from './collective/transport.ts';
import type { WorkerConfig } from './config.ts';
import { AuditLog } from './data/audit.ts';
import { type Dataset, loadDataset } from './data/dataset.ts';
import {
  ElasticMembership,
  type JoinedWorld,
  LocalMembership,
  type Membership,
} from './elastic/membership.ts';
import { CheckpointError } from './errors.ts';
import { emit, errorMessage, type WorkerLogger } from './log.ts';
import { buildModel } from './model/build.ts';
import { soleAgreement, specOffer } from './rendezvous/agreement.ts';
import { type WorkerResult, writeWorkerResult } from './result.ts';
import { type GenerationPlan, planGeneration } from './train/generation-plan.ts';
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
import type { Snapshot, TrainingState } from './train/snapshot.ts';
import { Trainer } from './train/trainer.ts';

const EVAL_BATCH = 1000;

/** How long a step in flight may go on after a stop request before it is given up. */
const STOP_GRACE_MS = 500;

export interface WorkerRuntimeOptions {
  readonly config: WorkerConfig;
  readonly log: WorkerLogger;
  /** Aborted on SIGTERM/SIGINT: checkpoint at the next step boundary and return. */
  readonly stop: AbortSignal;
  /** Defaults to the elastic membership when TENSILE_NATS_URL is set, a world of one otherwise. */
  readonly membership?: Membership;
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

/**
 * The plan of the generation `active` starts, from what its world agreed, or from this worker's own
 * spec when it is alone, and the state every rank received.
 */
function generationPlan(
  spec: TrainingJobSpec,
  specRevision: number,
  active: JoinedWorld,
  generation: number,
  state: TrainingState,
): GenerationPlan {
  return planGeneration({
    agreement: active.agreement ?? soleAgreement(specOffer(spec, specRevision)),
    batches: active.batches,
    optimizer: spec.optimizer,
    generation,
    rank: active.rank,
    size: active.size,
    step: state.step,
    previous:
      state.generations.length === 0 ? undefined : { policy: state.policy, agreement: state.agreement },
  });
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
  const { config } = options;
  const spec = config.spec;
  let log = options.log;
  const started = performance.now();
  // The worker reports its backend itself; tfjs's console banners ("install tfjs-node …") are noise.
  tf.enableProdMode();

  const backend: SelectedBackend = await selectBackend(config.backend ?? spec.worker.backend);
  for (const skipped of backend.skipped)
    log.info('backend skipped', { backend: skipped.backend, via: skipped.via, reason: skipped.reason });
  emit(log, 'info', 'backend selected', {
    event: 'backend',
    backend: backend.backend,
    via: backend.via,
    addedKernels: backend.addedKernels,
  });

  const dataset = await loadDataset(spec.dataset, (message, fields) => log.info(message, fields));
  emit(log, 'info', 'dataset ready', {
    event: 'dataset',
    ...dataset.describe,
    trainSamples: dataset.train.size,
  });
  const built = await buildModel(spec.model, dataset.sampleShape, dataset.classes);
  emit(log, 'info', 'model built', {
    event: 'model',
    kind: built.kind,
    parameters: built.parameters,
    inputShape: built.inputShape,
  });

  const store = new CheckpointStore(config.checkpointDir, spec.checkpoint.keep);
  await store.ensureDirectory();
  const fresh = initialState(spec, dataset);
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
  let trained = false;
  let resumedFrom: CheckpointRef | undefined;
  const holder = {
    snapshot: () => trainer.snapshot(),
    restore: (snapshot: Snapshot) => {
      trainer.restore(snapshot);
      trained = true;
    },
    get hasTrained() {
      return trained;
    },
    get step() {
      return trainer.state.step;
    },
  };
  const restore = async (): Promise<boolean> => {
    const restored = await store.latest((ref, reason) =>
      emit(log, 'warn', 'skipping invalid checkpoint', {
        event: 'checkpoint-skipped',
        path: ref.path,
        step: ref.step,
        reason,
      }),
    );
    if (restored === undefined) return false;
    const problem = incompatibility(restored.snapshot.state, fresh);
    if (problem !== undefined) {
      throw new CheckpointError(
        `cannot resume from ${restored.ref.path}: ${problem}; use another checkpoint directory (or delete these checkpoints) to start over`,
        true,
      );
    }
    try {
      holder.restore(restored.snapshot);
    } catch (error) {
      throw new CheckpointError(
        `cannot resume from ${restored.ref.path}: ${errorMessage(error)}; was it written for another model?`,
        true,
        { cause: error },
      );
    }
    resumedFrom = restored.ref;
    emit(log, 'info', 'resumed from checkpoint', {
      event: 'resumed',
      path: restored.ref.path,
      step: trainer.state.step,
      epoch: trainer.state.epoch,
      cursor: trainer.state.cursor,
    });
    return true;
  };

  // A leave request (SIGTERM in a pod, or the operator's control message before a node goes away)
  // ends this worker's part; `stop` (from the operator) ends the whole job's training for now.
  const leaving = new AbortController();
  options.stop.addEventListener('abort', () => leaving.abort(), { once: true });
  let stopAll = false;
  let checkpointRequested = false;
  let membership: Membership;
  try {
    membership =
      options.membership ??
      (config.natsUrl === undefined ? new LocalMembership() : await ElasticMembership.open(config, log));
  } catch (error) {
    audit.close();
    trainer.dispose();
    built.model.dispose();
    dataset.close();
    throw error;
  }
  membership.onControl((message) => {
    if (message.type === 'checkpoint') checkpointRequested = true;
    // A newer spec is the rendezvous's business: the next world follows it.
    else if (message.type === 'spec') return;
    else {
      if (message.type === 'stop') stopAll = true;
      leaving.abort();
    }
  });
  const stop = leaving.signal;
  const state = trainer.state;

  const checkpoints = new BackgroundCheckpointer(
    store,
    {
      written: (ref, millis) => {
        emit(log, 'info', 'checkpoint written', {
          event: 'checkpoint',
          step: ref.step,
          path: ref.path,
          writeMs: Math.round(millis),
        });
        membership.publish('events', {
          type: 'checkpoint',
          worker: config.workerId,
          step: ref.step,
          path: ref.path,
          time: new Date().toISOString(),
        });
      },
      failed: (step, error) =>
        emit(log, 'error', 'checkpoint failed; training goes on', {
          event: 'checkpoint-failed',
          step,
          error: errorMessage(error),
        }),
    },
    () => audit.descriptor,
  );
  const trainSecondsBefore = () => state.trainSeconds;
  let sessionSamples = 0;
  let stepSeconds = 0;
  let lostStepSeconds = 0;
  const loopStarted = performance.now();
  let sessionBase = 0;
  const takeSnapshot = (): { snapshot: Snapshot; blockingMs: number } => {
    const t = performance.now();
    state.trainSeconds = sessionBase + (performance.now() - loopStarted) / 1000;
    const snapshot = trainer.snapshot();
    return { snapshot, blockingMs: performance.now() - t };
  };
  let lastCheckpointTime = Date.now();
  let outcome: 'completed' | 'stopped' | 'left' = 'stopped';
  let lastWorld: JoinedWorld | undefined;
  let lastLoss: number | undefined;
  let lastThroughput: number | undefined;

  try {
    for (;;) {
      const joined = await membership.join(holder, restore, stop);
      if (joined.kind === 'stopped') break;
      if (joined.kind === 'completed') {
        emit(log, 'info', 'the job has completed', {
          event: 'already-completed',
          step: joined.step,
          reason: joined.reason,
        });
        outcome = 'completed';
        if (state.completed === null) state.completed = joined.reason;
        break;
      }
      const active = joined.world;
      lastWorld = active;
      // A stop lets the step in flight finish; peers that stopped at the boundary never join it, so a
      // step still waiting for them after a moment is given up (it is not applied anywhere).
      const giveUp = () => setTimeout(() => active.abort(), STOP_GRACE_MS).unref();
      if (stop.aborted) giveUp();
      else stop.addEventListener('abort', giveUp, { once: true });
      // Survivors and newcomers alike continue from the world's state: redo nothing it already has.
      const cut = audit.truncateFrom(state.step);
      if (cut.dropped > 0) log.debug('audit records dropped', { step: state.step, dropped: cut.dropped });
      sessionBase = state.trainSeconds - (performance.now() - loopStarted) / 1000;
      if (active.stateFrom === 'checkpoint') checkpoints.last = resumedFrom;
      if (state.completed !== null) {
        emit(log, 'info', 'training already completed', {
          event: 'already-completed',
          reason: state.completed,
        });
        outcome = 'completed';
        await active.end();
        break;
      }
      const generation = Math.max(active.round, state.generations.length === 0 ? 0 : state.generation + 1);
      const formed = generationPlan(spec, config.specRevision, active, generation, state);
      // Every rank evaluates, checkpoints and stops by the world's settings, never its own spec's.
      const settings = formed.agreement.settings;
      store.keep = settings.checkpoint.keep;
      trainer.maxPerWorker = settings.batch.maxPerWorker;
      let world: World = formed.world;
      const globalBatch = formed.globalBatch;
      const specRevision = formed.agreement.revision;
      state.generation = generation;
      state.worldSize = world.size;
      state.policy = formed.policy;
      state.agreement = formed.agreement;
      state.generations = [
        ...state.generations,
        {
          generation,
          worldSize: world.size,
          globalBatch,
          learningRate: world.learningRate,
          firstStep: state.step,
          // Revision 0 is a worker given none (`tensile run`): nothing to tell apart.
          ...(specRevision === 0 ? {} : { specRevision }),
        },
      ];
      trained = true;
      log = options.log.child({ generation });
      if (formed.change !== undefined)
        emit(log, 'info', 'spec changed', { event: 'spec-changed', step: state.step, ...formed.change });
      const writer = active.rank === 0;
      emit(log, 'info', 'world formed', {
        event: 'generation',
        worldSize: world.size,
        rank: world.rank,
        members: active.members,
        perWorker: world.perWorker,
        globalBatch,
        learningRate: world.learningRate,
        firstStep: state.step,
        specRevision,
        reason: active.reason,
        stateFrom: active.stateFrom,
      });
      if (writer)
        membership.publish('events', {
          type: 'rescale',
          generation,
          worldSize: world.size,
          members: active.members,
          globalBatch,
          learningRate: world.learningRate,
          step: state.step,
          specRevision,
          ...(formed.change === undefined ? {} : { specChanged: formed.change.changed }),
          ...(lastLoss === undefined ? {} : { loss: lastLoss }),
          ...(lastThroughput === undefined ? {} : { samplesPerSecond: lastThroughput }),
          reason: active.reason,
          time: new Date().toISOString(),
        });

      const evaluate = async (): Promise<EvalResult | null> => {
        if (dataset.eval === undefined || dataset.eval.size === 0) return null;
        const t = performance.now();
        const size = dataset.eval.size;
        const from = Math.floor((size * active.rank) / active.size);
        const to = Math.floor((size * (active.rank + 1)) / active.size);
        const sums = { loss: 0, correct: 0 };
        for (let start = from; start < to; start += EVAL_BATCH) {
          const end = Math.min(to, start + EVAL_BATCH);
          const part = trainer.evaluateSums(dataset.eval, start, end, EVAL_BATCH, active.changed);
          if (part === undefined) return null;
          sums.loss += part.loss;
          sums.correct += part.correct;
          // Heartbeats run on this thread: an evaluation of seconds must not look like a dead worker.
          await yieldToEventLoop();
        }
        const total = await active.reducer.allReduce(
          Float32Array.from([sums.loss, sums.correct]),
          active.changed,
        );
        const result = {
          step: state.step,
          epoch: state.epoch,
          loss: (total[0] as number) / size,
          accuracy: (total[1] as number) / size,
          samples: size,
        };
        state.lastEval = result;
        emit(log, 'info', 'evaluation', {
          event: 'eval',
          ...result,
          seconds: Math.round(performance.now() - t) / 1000,
        });
        return result;
      };

      const planned = plannedSteps(settings.stopping, dataset.train.size, globalBatch);
      const firstStep = state.step;
      const generationStarted = performance.now();
      let generationStepSeconds = 0;
      let windowStart = performance.now();
      let windowSamples = 0;
      let windowLoss = 0;
      let windowAccuracy = 0;
      let windowSteps = 0;
      let reason: string | undefined = stopReason(settings.stopping, state, state.lastEval);
      let worldEnded: string | undefined;
      while (reason === undefined && !stop.aborted) {
        if (active.changed.aborted) {
          worldEnded = 'a newer world formed';
          break;
        }
        world = { ...world, learningRate: learningRateAt(spec.optimizer, state.policy, state.step, planned) };
        const stepStarted = performance.now();
        let result: Awaited<ReturnType<Trainer['step']>>;
        try {
          // The stop signal is not passed down: a step is finished, then the worker leaves.
          result = await trainer.step(world, active.reducer, active.changed);
        } catch (error) {
          if (!(error instanceof CollectiveError)) throw error;
          lostStepSeconds += (performance.now() - stepStarted) / 1000;
          worldEnded = active.changed.aborted ? 'a newer world formed' : errorMessage(error);
          if (!active.changed.aborted) await membership.failed(active.round);
          break;
        }
        const took = (performance.now() - stepStarted) / 1000;
        stepSeconds += took;
        generationStepSeconds += took;
        membership.progress(state.step);
        if (config.checksumEvery > 0 && state.step % config.checksumEvery === 0)
          emit(log, 'info', 'weights checksum', {
            event: 'checksum',
            step: state.step,
            checksum: trainer.weightsChecksum(),
            weights: trainer.checksummedWeights,
          });
        sessionSamples += result.samples;
        windowSamples += result.samples;
        windowLoss += result.loss;
        windowAccuracy += result.accuracy;
        windowSteps++;
        const ending = stopReason(settings.stopping, state, null) !== undefined;
        if (evaluationDue(settings.evaluation.intervalSteps, state.step, result.endedEpoch, ending)) {
          try {
            await evaluate();
          } catch (error) {
            if (!(error instanceof CollectiveError)) throw error;
            worldEnded = errorMessage(error);
            break;
          }
        }
        reason = stopReason(settings.stopping, state, state.lastEval);
        const now = performance.now();
        if (
          now - windowStart >= config.progressMs ||
          reason !== undefined ||
          state.lastEval?.step === state.step
        ) {
          const samplesPerSecond = Math.round((windowSamples / (now - windowStart)) * 1000 * 10) / 10;
          lastLoss = windowLoss / windowSteps;
          lastThroughput = samplesPerSecond;
          if (writer) {
            emit(log, 'info', 'progress', {
              event: 'progress',
              step: state.step,
              epoch: state.epoch,
              cursor: state.cursor,
              loss: lastLoss,
              accuracy: windowAccuracy / windowSteps,
              samplesPerSecond,
              learningRate: result.learningRate,
              ...(result.gain === 1 ? {} : { gain: result.gain }),
              worldSize: world.size,
              plannedSteps: planned,
            });
            const lastCheckpoint = checkpoints.last;
            membership.publish('metrics', {
              type: 'progress',
              worker: config.workerId,
              generation,
              worldSize: world.size,
              step: state.step,
              epoch: state.epoch,
              loss: lastLoss,
              ...(state.lastEval === null ? {} : { accuracy: state.lastEval.accuracy }),
              samplesPerSecond,
              ...(lastCheckpoint === undefined
                ? {}
                : {
                    lastCheckpoint: {
                      step: lastCheckpoint.step,
                      path: lastCheckpoint.path,
                      time: new Date(lastCheckpointTime).toISOString(),
                    },
                  }),
              time: new Date().toISOString(),
            });
          }
          windowStart = now;
          windowSamples = 0;
          windowLoss = 0;
          windowAccuracy = 0;
          windowSteps = 0;
        }
        if (
          writer &&
          reason === undefined &&
          !checkpoints.busy &&
          (checkpointRequested ||
            checkpointDue(settings.checkpoint, {
              step: state.step,
              lastStep: checkpoints.last?.step ?? 0,
              lastTime: lastCheckpointTime,
              now: Date.now(),
            }))
        ) {
          checkpointRequested = false;
          const { snapshot, blockingMs } = takeSnapshot();
          checkpoints.start(snapshot);
          lastCheckpointTime = Date.now();
          emit(log, 'debug', 'checkpoint snapshot', { event: 'snapshot', step: state.step, blockingMs });
        }
        // Lets signals, timers, NATS and the background checkpoint write make progress between steps.
        await yieldToEventLoop();
      }
      emit(log, 'info', 'generation ended', {
        event: 'generation-end',
        firstStep,
        lastStep: state.step,
        stepSeconds: Math.round(generationStepSeconds * 1000) / 1000,
        wallSeconds: Math.round((performance.now() - generationStarted) / 10) / 100,
        why: reason ?? worldEnded ?? 'stop requested',
      });
      if (worldEnded !== undefined && reason === undefined && !stop.aborted) {
        membership.publish('events', {
          type: 'rescaling',
          worker: config.workerId,
          generation,
          reason: worldEnded,
          time: new Date().toISOString(),
        });
        await active.end();
        continue;
      }
      if (reason !== undefined) {
        state.completed = reason;
        outcome = 'completed';
        if (state.lastEval?.step !== state.step) {
          try {
            await evaluate();
          } catch (error) {
            if (!(error instanceof CollectiveError)) throw error;
          }
        }
      } else outcome = stopAll || active.size === 1 ? 'stopped' : 'left';
      await active.end();
      break;
    }

    // The final checkpoint: by the writer (rank 0) of the last world, or by the last worker standing.
    const isWriter = lastWorld !== undefined && (lastWorld.rank === 0 || lastWorld.size === 1);
    await checkpoints.idle();
    let finalRef: CheckpointRef | undefined = checkpoints.last;
    if (isWriter && trained && state.step > 0 && finalRef?.step !== state.step) {
      const { snapshot, blockingMs } = takeSnapshot();
      emit(log, 'debug', 'final snapshot', { event: 'snapshot', step: state.step, blockingMs });
      finalRef = await checkpoints.writeNow(snapshot);
    }
    if (outcome === 'completed' && isWriter) {
      await membership.complete(state.step, state.completed ?? 'completed');
      membership.publish('metrics', {
        type: 'completed',
        worker: config.workerId,
        step: state.step,
        epoch: state.epoch,
        loss: state.lastEval?.loss ?? lastLoss ?? 0,
        ...(state.lastEval === null ? {} : { accuracy: state.lastEval.accuracy }),
        ...(finalRef === undefined
          ? {}
          : { lastCheckpoint: { step: finalRef.step, path: finalRef.path, time: new Date().toISOString() } }),
        reason: state.completed ?? 'completed',
        time: new Date().toISOString(),
      });
    }
    if (outcome !== 'completed') await membership.leave();
    const sessionSeconds = (performance.now() - loopStarted) / 1000;
    await checkpoints.close();
    const result: WorkerResult = {
      status: outcome,
      reason:
        outcome === 'completed'
          ? (state.completed ?? 'completed')
          : outcome === 'left'
            ? 'left the world; the others go on'
            : stopAll
              ? 'stopped by the operator'
              : 'stopped by signal',
      worker: config.workerId,
      step: state.step,
      epoch: state.epoch,
      samples: state.samples,
      eval: state.lastEval,
      backend: backend.backend,
      generations: state.generations,
      trainSeconds: Math.max(trainSecondsBefore(), sessionBase + sessionSeconds),
      sessionSamplesPerSecond: sessionSeconds > 0 ? sessionSamples / sessionSeconds : 0,
      stepSeconds,
      lostStepSeconds,
      checkpoint: finalRef ?? null,
      resumedFrom: resumedFrom ?? null,
      trainSamples: dataset.train.size,
      auditFile: audit.file,
    };
    emit(log, 'info', outcome, {
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
  } finally {
    try {
      await membership[Symbol.asyncDispose]();
    } catch (error) {
      log.debug('membership close failed', { error: errorMessage(error) });
    }
    audit.close();
    trainer.dispose();
    built.model.dispose();
    dataset.close();
    log.debug('tensors left', { numTensors: tf.memory().numTensors });
  }
}
