/**
 * The steps of one generation, until training ends, this worker is asked to leave, or the world ends
 * (a newer one formed, a peer failed). A stop is honoured at a step boundary: the step in flight is
 * finished (or given up after STOP_GRACE_MS when its peers stopped first), then the loop returns.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { CollectiveError } from '../collective/transport.ts';
import { emit, errorMessage } from '../log.ts';
import { evaluationDue, stepWorld, stopReason } from '../train/policy.ts';
import { type GradientReducer, LocalReducer } from '../train/reducer.ts';
import type { StepResult } from '../train/trainer.ts';
import { balanceAfterStep, medianThroughput, workerLoads } from './balance.ts';
import { snapshotDue } from './checkpoint-schedule.ts';
import { evaluate } from './evaluate.ts';
import type { Generation } from './generation.ts';
import { ProgressWindow } from './progress-window.ts';
import type { Session } from './session.ts';

export interface GenerationOutcome {
  /** Why training is over (a stopping condition held); undefined when it is not. */
  readonly reason: string | undefined;
  /** Why the world ended under this worker; undefined when it did not. */
  readonly worldEnded: string | undefined;
}

interface Run {
  readonly window: ProgressWindow;
  stepSeconds: number;
  /** Whether this generation reported progress yet: its first step is reported at once (recovery). */
  progressReported: boolean;
  /** The split of the global batch in effect: the generation's, until balancing re-plans it. */
  perWorker: readonly number[];
  /** Persistent stragglers, and those already reported. */
  stragglers: readonly string[];
  readonly reported: Set<string>;
  /** This rank since its last `rank-progress` line: the per-worker view of the report. */
  readonly rank: RankWindow;
  /** Goodput autoscaling's measurement of this world: steps after the first few, their time and samples. */
  readonly measured: {
    steps: number;
    seconds: number;
    samples: number;
    skipped: number;
    noiseScale?: number;
  };
}

/** The first steps of a world are slow (caches, the first all-reduce): left out of its step time. */
const MEASURE_AFTER_STEPS = 5;

interface RankWindow {
  start: number;
  steps: number;
  samples: number;
  stepSeconds: number;
  /** Time in the all-reduce: the wire, and waiting for slower ranks. */
  reduceSeconds: number;
}

/** Each rank's own figures go out at most this often (its progress interval, if longer). */
const RANK_PROGRESS_MIN_MS = 1000;

/** The reducer of a step, timed: what this rank spent in the all-reduce goes to `rank`. */
function timedReducer(reducer: GradientReducer, rank: RankWindow): GradientReducer {
  // A world of one reduces nothing; the trainer's direct path for it needs the LocalReducer itself.
  if (reducer instanceof LocalReducer) return reducer;
  return {
    async allReduce(buffer, signal, options) {
      const t = performance.now();
      try {
        return await reducer.allReduce(buffer, signal, options);
      } finally {
        rank.reduceSeconds += (performance.now() - t) / 1000;
      }
    },
    async allGather(bytes, signal) {
      const t = performance.now();
      try {
        return await reducer.allGather(bytes, signal);
      } finally {
        rank.reduceSeconds += (performance.now() - t) / 1000;
      }
    },
  };
}

const NEWER_WORLD = 'a newer world formed';

export async function runGeneration(session: Session, g: Generation): Promise<GenerationOutcome> {
  const { state } = session;
  const firstStep = state.step;
  const started = performance.now();
  const now = performance.now();
  const run: Run = {
    window: new ProgressWindow(now),
    stepSeconds: 0,
    progressReported: false,
    rank: { start: now, steps: 0, samples: 0, stepSeconds: 0, reduceSeconds: 0 },
    perWorker: g.world.perWorker,
    stragglers: [],
    reported: new Set(),
    measured: { steps: 0, seconds: 0, samples: 0, skipped: 0 },
  };
  let reason = stopReason(g.settings.stopping, state, state.lastEval);
  let worldEnded: string | undefined;
  while (reason === undefined && !session.leaving.aborted) {
    if (g.active.changed.aborted) {
      worldEnded = NEWER_WORLD;
      break;
    }
    const stepped = await trainStep(session, g, run);
    if (typeof stepped === 'string') {
      worldEnded = stepped;
      break;
    }
    const after = await afterStep(session, g, run, stepped);
    if ('worldEnded' in after) {
      worldEnded = after.worldEnded;
      break;
    }
    reason = after.reason;
    // Lets signals, timers, NATS and the background checkpoint write make progress between steps.
    await yieldToEventLoop();
  }
  const stepSeconds = Math.round(run.stepSeconds * 1000) / 1000;
  session.facts.generationEnds.push({ generation: g.number, firstStep, lastStep: state.step, stepSeconds });
  emit(g.log, 'info', 'generation ended', {
    event: 'generation-end',
    firstStep,
    lastStep: state.step,
    stepSeconds,
    wallSeconds: Math.round((performance.now() - started) / 10) / 100,
    why: reason ?? worldEnded ?? 'stop requested',
  });
  return { reason, worldEnded };
}

/** One step; a string says why the world ended instead (the step is not applied anywhere). */
async function trainStep(session: Session, g: Generation, run: Run): Promise<StepResult | string> {
  const { state, trainer, clock, config } = session;
  const { active } = g;
  const world = {
    ...stepWorld(
      session.spec.optimizer,
      g.settings.batch,
      { ...g.world, perWorker: run.perWorker },
      state,
      g.plannedSteps,
    ),
    // Agreed, as the fused buffer's layout depends on it; local SGD carries no per-step gradients.
    measureNoise:
      g.settings.autoscaling?.policy === 'goodput' && (g.settings.communication?.localSteps ?? 1) === 1,
  };
  const stepStarted = performance.now();
  let result: StepResult;
  try {
    // The stop signal is not passed down: a step is finished, then the worker leaves.
    // Local SGD averages before an evaluation and at the end, so both see the world's weights.
    const next = state.step + 1;
    const averageNow =
      next >= g.plannedSteps || evaluationDue(g.settings.evaluation.intervalSteps, next, false, false);
    session.federated?.beforeStep(session.built.model.weights, trainer);
    result = await trainer.step(world, timedReducer(active.reducer, run.rank), active.changed, {
      averageNow,
    });
  } catch (error) {
    if (!(error instanceof CollectiveError)) throw error;
    clock.lostStepSeconds += (performance.now() - stepStarted) / 1000;
    if (active.changed.aborted) return NEWER_WORLD;
    await session.membership.failed(active.round);
    return errorMessage(error);
  }
  const took = (performance.now() - stepStarted) / 1000;
  clock.stepSeconds += took;
  run.stepSeconds += took;
  session.membership.progress(trainer.committedStep);
  if (config.checksumEvery > 0 && state.step % config.checksumEvery === 0 && trainer.synced)
    emit(g.log, 'info', 'weights checksum', {
      event: 'checksum',
      step: state.step,
      checksum: trainer.weightsChecksum(),
      weights: trainer.checksummedWeights,
    });
  clock.sessionSamples += result.samples;
  run.window.add(result);
  run.rank.steps++;
  run.rank.samples += result.localSamples;
  run.rank.stepSeconds += took;
  // A round ends with the same step on every rank of the site: all of them take part, then evaluate.
  // Its time is not the step's: throughput and balancing see the training alone.
  if (session.federated?.due(state.step)) {
    trainer.untimedGap();
    await session.federated.endRound(
      state.step,
      g.writer,
      session.dataset.train.size,
      session.built.model.weights,
      trainer,
      g.log,
    );
  }
  measure(run.measured, took, result);
  rebalance(session, g, run, world.perWorker, result);
  return result;
}

function measure(measured: Run['measured'], took: number, result: StepResult): void {
  if (result.noiseScale !== undefined) measured.noiseScale = result.noiseScale;
  if (measured.skipped < MEASURE_AFTER_STEPS) {
    measured.skipped++;
    return;
  }
  measured.steps++;
  measured.seconds += took;
  measured.samples += result.samples;
}

/** What the operator's goodput autoscaler needs of this world, once some steps are measured. */
function goodputReport(measured: Run['measured'], worldSize: number) {
  if (measured.steps === 0 || measured.seconds <= 0) return undefined;
  return {
    perWorkerBatch: measured.samples / measured.steps / worldSize,
    stepSeconds: measured.seconds / measured.steps,
    steps: measured.steps,
    ...(measured.noiseScale === undefined ? {} : { noiseScale: measured.noiseScale }),
  };
}

/** The balancing planner after a committed step: the next step's split, stragglers reported once. */
function rebalance(
  session: Session,
  g: Generation,
  run: Run,
  used: readonly number[],
  result: StepResult,
): void {
  const balanced = balanceAfterStep(session, g.balance, { used, current: run.perWorker }, result);
  if (balanced.perWorker !== undefined) {
    run.perWorker = balanced.perWorker;
    if (g.writer)
      session.membership.publish('events', {
        type: 'balance',
        generation: g.number,
        step: session.state.step,
        members: [...g.balance.members],
        perWorker: [...balanced.perWorker],
        reason: 'drift',
        time: new Date().toISOString(),
      });
  }
  run.stragglers = balanced.stragglers;
  for (const worker of balanced.stragglers) {
    if (run.reported.has(worker)) continue;
    run.reported.add(worker);
    reportStraggler(session, g, run, worker);
  }
}

function reportStraggler(session: Session, g: Generation, run: Run, worker: string): void {
  const evict = g.balance.spec.evictStragglers;
  const rank = g.balance.members.indexOf(worker);
  const load = workerLoads(session, g.balance.members, run.perWorker)[rank];
  const samplesPerSecond = load?.samplesPerSecond ?? 0;
  const medianSamplesPerSecond = Math.round(medianThroughput(session) * 10) / 10;
  emit(g.log, 'warn', 'straggler', {
    event: 'straggler',
    step: session.state.step,
    straggler: worker,
    samplesPerSecond,
    medianSamplesPerSecond,
    evict,
  });
  if (g.writer)
    session.membership.publish('events', {
      type: 'straggler',
      generation: g.number,
      step: session.state.step,
      worker,
      samplesPerSecond,
      medianSamplesPerSecond,
      evict,
      time: new Date().toISOString(),
    });
  // Eviction is the operator's (or `tensile run`'s): it asks the straggler to leave and starts a
  // replacement, as for a worker on a going node. A worker leaving on its own would look finished.
}

/** Evaluation, progress report and checkpoint snapshot after a step, each when due. */
async function afterStep(
  session: Session,
  g: Generation,
  run: Run,
  result: StepResult,
): Promise<{ reason: string | undefined } | { worldEnded: string }> {
  const { state } = session;
  const stopping = g.settings.stopping;
  const ending = stopReason(stopping, state, null) !== undefined;
  if (evaluationDue(g.settings.evaluation.intervalSteps, state.step, result.endedEpoch, ending)) {
    // An evaluation is not a step's fixed work: the balancing planner must not count it as such.
    session.trainer.untimedGap();
    try {
      await evaluate(session, g.active);
    } catch (error) {
      if (!(error instanceof CollectiveError)) throw error;
      // As after a failed step: ask for a new round. Without it an evaluation cut by a partition (no
      // peer died, no probe was refused) left every rank waiting for a world nobody proposed, for
      // good (chaos seed 4, 20 minutes, an epoch's evaluation).
      if (g.active.changed.aborted) return { worldEnded: NEWER_WORLD };
      await session.membership.failed(g.active.round);
      return { worldEnded: errorMessage(error) };
    }
  }
  const reason = stopReason(stopping, state, state.lastEval);
  const now = performance.now();
  if (
    run.window.due(
      now,
      session.config.progressMs,
      reason !== undefined || state.lastEval?.step === state.step || !run.progressReported,
    )
  ) {
    run.progressReported = true;
    reportProgress(session, g, run, result, now);
  }
  if (
    now - run.rank.start >= Math.max(RANK_PROGRESS_MIN_MS, session.config.progressMs) ||
    reason !== undefined
  )
    reportRank(g, state.step, run.rank, now);
  snapshotIfDue(session, g, reason !== undefined);
  return { reason };
}

/** This rank's throughput and waits since its last line, then a new window. */
function reportRank(g: Generation, step: number, rank: RankWindow, now: number): void {
  if (rank.steps === 0) return;
  const seconds = (now - rank.start) / 1000;
  const ms = (total: number) => Math.round((total / rank.steps) * 1e4) / 10;
  emit(g.log, 'info', 'rank progress', {
    event: 'rank-progress',
    step,
    rank: g.world.rank,
    steps: rank.steps,
    samplesPerSecond: seconds > 0 ? Math.round((rank.samples / seconds) * 10) / 10 : 0,
    stepMs: ms(rank.stepSeconds),
    allReduceMs: ms(rank.reduceSeconds),
  });
  Object.assign(rank, { start: now, steps: 0, samples: 0, stepSeconds: 0, reduceSeconds: 0 });
}

function reportProgress(session: Session, g: Generation, run: Run, result: StepResult, now: number) {
  const { state, facts } = session;
  const figures = run.window.take(now);
  facts.lastLoss = figures.loss;
  facts.lastThroughput = figures.samplesPerSecond;
  if (!g.writer) return;
  const goodput =
    g.settings.autoscaling?.policy === 'goodput' ? goodputReport(run.measured, g.world.size) : undefined;
  emit(g.log, 'info', 'progress', {
    event: 'progress',
    step: state.step,
    epoch: state.epoch,
    cursor: state.cursor,
    loss: figures.loss,
    accuracy: figures.accuracy,
    samplesPerSecond: figures.samplesPerSecond,
    learningRate: result.learningRate,
    ...(result.gain === 1 ? {} : { gain: result.gain, progress: state.progress }),
    worldSize: g.world.size,
    plannedSteps: g.plannedSteps,
    ...(g.world.size > 1 ? { workers: workerLoads(session, g.balance.members, run.perWorker) } : {}),
    ...(goodput === undefined ? {} : { goodput }),
  });
  const lastCheckpoint = session.checkpoints.last;
  session.membership.publish('metrics', {
    type: 'progress',
    worker: session.config.workerId,
    generation: g.number,
    worldSize: g.world.size,
    step: state.step,
    epoch: state.epoch,
    loss: figures.loss,
    ...(state.lastEval === null ? {} : { accuracy: state.lastEval.accuracy }),
    samplesPerSecond: figures.samplesPerSecond,
    workers: workerLoads(session, g.balance.members, run.perWorker),
    ...(run.stragglers.length === 0 ? {} : { stragglers: [...run.stragglers] }),
    ...(goodput === undefined ? {} : { goodput }),
    ...(lastCheckpoint === undefined
      ? {}
      : {
          lastCheckpoint: {
            step: lastCheckpoint.step,
            path: lastCheckpoint.path,
            time: new Date(facts.lastCheckpointTime).toISOString(),
          },
        }),
    time: new Date().toISOString(),
  });
}

function snapshotIfDue(session: Session, g: Generation, ending: boolean): void {
  const { checkpoints, facts, state } = session;
  const due = snapshotDue({
    writer: g.writer,
    ending,
    busy: checkpoints.busy,
    requested: facts.checkpointRequested,
    settings: g.settings.checkpoint,
    // Local SGD snapshots its last averaging: a checkpoint is due by that step, not by the local one.
    step: session.trainer.committedStep,
    lastStep: checkpoints.last?.step ?? 0,
    lastTime: facts.lastCheckpointTime,
    now: Date.now(),
  });
  if (!due) return;
  facts.checkpointRequested = false;
  session.trainer.untimedGap();
  const { snapshot, blockingMs } = session.takeSnapshot();
  checkpoints.start(snapshot);
  facts.lastCheckpointTime = Date.now();
  emit(g.log, 'debug', 'checkpoint snapshot', { event: 'snapshot', step: state.step, blockingMs });
}
