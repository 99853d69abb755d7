/**
 * A generation: one world of the training's history, from the world the rendezvous formed (its
 * round) and the state every rank received. "generation" means this number everywhere in the worker
 * (logs, state, results, goodput); the rendezvous's own counter is its `round`.
 */

import type { JoinedWorld } from '../elastic/membership.ts';
import { emit, type WorkerLogger } from '../log.ts';
import type { Settings } from '../rendezvous/agreement.ts';
import { soleAgreement, specOffer } from '../rendezvous/agreement.ts';
import { type GenerationPlan, planGeneration } from '../train/generation-plan.ts';
import { plannedSteps, type World } from '../train/policy.ts';
import type { TrainingState } from '../train/snapshot.ts';
import { type BalanceContext, balanceGeneration, EVEN } from './balance.ts';
import type { Session } from './session.ts';

/** How long a step in flight may go on after a stop request before it is given up. */
export const STOP_GRACE_MS = 500;

export interface Generation {
  readonly number: number;
  readonly active: JoinedWorld;
  /** The world's settings: every rank evaluates, checkpoints and stops by these, never its own spec's. */
  readonly settings: Settings;
  /** The world as the plan shaped it; the learning rate of each step follows the schedule. */
  readonly world: World;
  readonly globalBatch: number;
  /** Rank 0: the only checkpoint writer and the one that reports progress. */
  readonly writer: boolean;
  readonly plannedSteps: number;
  readonly log: WorkerLogger;
  /** The world's balancing settings, its generation and members in rank order. */
  readonly balance: BalanceContext;
}

/**
 * The number of the generation a world of rendezvous round `round` starts: the round, unless the
 * state already went through that many (a resumed job in a fresh rendezvous bucket, or a world of one,
 * whose round is always 0): then the one after the state's last.
 */
export function generationNumber(
  round: number,
  state: Pick<TrainingState, 'generation' | 'generations'>,
): number {
  return Math.max(round, state.generations.length === 0 ? 0 : state.generation + 1);
}

/**
 * Joining a world: a stop from now on gives up a step still waiting for peers that stopped at the
 * boundary (it is not applied anywhere), and survivors and newcomers alike continue from the world's
 * state, redoing nothing it already has.
 */
export function enterWorld(session: Session, active: JoinedWorld): void {
  const { state, leaving, facts } = session;
  facts.lastWorld = active;
  // Before the audit is cut: local SGD rolls back to its last averaging, whose later steps are redone.
  session.trainer.beginWorld(
    active.agreement === undefined ? session.spec.communication : active.agreement.settings.communication,
    active.size,
  );
  const giveUp = () => setTimeout(() => active.abort(), STOP_GRACE_MS).unref();
  if (leaving.aborted) giveUp();
  else leaving.addEventListener('abort', giveUp, { once: true });
  const cut = session.audit.truncateFrom(state.step);
  if (cut.dropped > 0) facts.log.debug('audit records dropped', { step: state.step, dropped: cut.dropped });
  session.clock.rebase(state.trainSeconds);
  if (active.stateFrom === 'checkpoint') session.checkpoints.last = facts.resumedFrom;
}

/** The plan of the generation `active` starts, from what its world agreed, or from this worker's own spec when alone. */
function plan(session: Session, active: JoinedWorld, generation: number): GenerationPlan {
  const { spec, state } = session;
  return planGeneration({
    agreement: active.agreement ?? soleAgreement(specOffer(spec, session.config.specRevision)),
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

/** Plans the generation, records it in the state and tells the logs and the operator. */
export function formGeneration(session: Session, active: JoinedWorld): Generation {
  const { state, facts } = session;
  const number = generationNumber(active.round, state);
  const formed = plan(session, active, number);
  const settings = formed.agreement.settings;
  session.store.keep = settings.checkpoint.keep;
  session.trainer.maxPerWorker = settings.batch.maxPerWorker;
  const specRevision = formed.agreement.revision;
  state.generation = number;
  state.worldSize = formed.world.size;
  state.policy = formed.policy;
  state.agreement = formed.agreement;
  facts.log = session.baseLog.child({ generation: number });
  const balance: BalanceContext = {
    spec: settings.balancing ?? EVEN,
    generation: number,
    members: active.members,
  };
  // The policy's split, re-cut by measured throughput: B, and so the learning rate, stay the policy's.
  const perWorker = balanceGeneration(session, balance, formed.world.perWorker);
  const world = perWorker === formed.world.perWorker ? formed.world : { ...formed.world, perWorker };
  state.generations = [
    ...state.generations,
    {
      generation: number,
      worldSize: formed.world.size,
      globalBatch: formed.globalBatch,
      learningRate: formed.world.learningRate,
      firstStep: state.step,
      // Only where AdaScale stretched the schedule does progress differ from the step count.
      ...(state.progress === undefined || state.progress === state.step
        ? {}
        : { firstProgress: state.progress }),
      // Revision 0 is a worker given none (`tensile run`): nothing to tell apart.
      ...(specRevision === 0 ? {} : { specRevision }),
      ...(world === formed.world ? {} : { perWorker: [...perWorker] }),
    },
  ];
  facts.trained = true;
  const generation: Generation = {
    number,
    active,
    settings,
    world,
    globalBatch: formed.globalBatch,
    writer: active.rank === 0,
    plannedSteps: plannedSteps(settings.stopping, session.dataset.train.size, formed.globalBatch, {
      batch: settings.batch,
      perWorker: formed.world.perWorker,
    }),
    log: facts.log,
    balance,
  };
  announce(session, generation, formed);
  return generation;
}

function announce(session: Session, g: Generation, formed: GenerationPlan): void {
  const { state, facts } = session;
  const { active, world } = g;
  const specRevision = formed.agreement.revision;
  if (formed.change !== undefined)
    emit(g.log, 'info', 'spec changed', { event: 'spec-changed', step: state.step, ...formed.change });
  emit(g.log, 'info', 'world formed', {
    event: 'generation',
    worldSize: world.size,
    rank: world.rank,
    members: active.members,
    perWorker: world.perWorker,
    globalBatch: g.globalBatch,
    learningRate: world.learningRate,
    firstStep: state.step,
    firstProgress: state.progress ?? state.step,
    specRevision,
    reason: active.reason,
    stateFrom: active.stateFrom,
  });
  if (!g.writer) return;
  session.membership.publish('events', {
    type: 'rescale',
    generation: g.number,
    worldSize: world.size,
    members: active.members,
    globalBatch: g.globalBatch,
    learningRate: world.learningRate,
    step: state.step,
    specRevision,
    ...(formed.change === undefined ? {} : { specChanged: formed.change.changed }),
    ...(facts.lastLoss === undefined ? {} : { loss: facts.lastLoss }),
    ...(facts.lastThroughput === undefined ? {} : { samplesPerSecond: facts.lastThroughput }),
    reason: active.reason,
    time: new Date().toISOString(),
  });
}
