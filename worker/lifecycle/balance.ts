/**
 * Carries the balancing planner's inputs in and its decisions out (worker/balance/planner.ts): the
 * per-rank compute times every step reduced go into the state's estimates, the split of the global
 * batch follows them at generation boundaries and, on drift, at step boundaries. Every rank runs
 * this after every committed step with the same inputs, so every rank changes the split at the same
 * step; every change is a `balance` event and a plan in the state (broadcast and checkpointed).
 */
import type { BalancingSpec } from '../../operator/api/training-job.ts';
import {
  type BalanceState,
  driftPlansIn,
  EMPTY_BALANCE,
  median,
  observe,
  planBalance,
  stragglers,
  withPlan,
} from '../balance/planner.ts';
import { emit } from '../log.ts';
import type { StepResult } from '../train/trainer.ts';
import type { Session } from './session.ts';

/** Even split for the records of earlier versions, which carry no balancing settings. */
export const EVEN: BalancingSpec = {
  mode: 'even',
  smoothing: 0.9,
  driftThreshold: 0.1,
  minIntervalSteps: 50,
  warmupSteps: 10,
  minShare: 0.1,
  stragglerThreshold: 0.5,
  stragglerSteps: 100,
  evictStragglers: false,
};

export interface BalanceContext {
  readonly spec: BalancingSpec;
  readonly generation: number;
  readonly members: readonly string[];
}

function stateOf(session: Session): BalanceState {
  return session.state.balancing ?? EMPTY_BALANCE;
}

/**
 * The split of a new generation: the policy's (`perWorker`) re-cut by the estimates the state
 * carries for its members, when balancing is proportional and every member is measured.
 */
export function balanceGeneration(
  session: Session,
  context: BalanceContext,
  perWorker: readonly number[],
): readonly number[] {
  const state = stateOf(session);
  const step = session.state.step;
  const plan = planBalance({
    spec: context.spec,
    members: context.members,
    current: perWorker,
    estimates: state.estimates,
    step,
    lastPlanStep: state.lastPlanStep,
    boundary: true,
  });
  session.state.balancing = { ...state, perWorker: undefined };
  if (plan === undefined) return perWorker;
  record(session, context, perWorker, { ...plan, reason: 'generation' });
  return plan.perWorker;
}

/**
 * After a committed step: fold its times into the estimates, mark stragglers, and return the split
 * of the next step when it changes (undefined otherwise).
 */
export function balanceAfterStep(
  session: Session,
  context: BalanceContext,
  split: { readonly used: readonly number[]; readonly current: readonly number[] },
  result: StepResult,
): { perWorker: readonly number[] | undefined; stragglers: string[] } {
  const state = stateOf(session);
  const step = session.state.step;
  const observed = observe(
    state.estimates,
    {
      members: context.members,
      perWorker: split.used,
      computeSeconds: result.computeSeconds,
      waitSeconds: result.waitSeconds,
      updateSeconds: result.updateSeconds,
    },
    context.spec.smoothing,
    context.spec.warmupSteps,
  );
  const marked = stragglers(observed, context.spec, step);
  session.state.balancing = { ...state, estimates: marked.estimates };
  const plan = planBalance({
    spec: context.spec,
    members: context.members,
    current: split.current,
    estimates: marked.estimates,
    step,
    lastPlanStep: state.lastPlanStep,
    driftPlans: driftPlansIn(state.plans, context.generation),
    boundary: false,
  });
  if (plan === undefined) return { perWorker: undefined, stragglers: marked.persistent };
  record(session, context, split.current, { ...plan, reason: 'drift' });
  return { perWorker: plan.perWorker, stragglers: marked.persistent };
}

function record(
  session: Session,
  context: BalanceContext,
  before: readonly number[],
  plan: { perWorker: number[]; predictedBefore: number; predicted: number; reason: 'generation' | 'drift' },
): void {
  const state = stateOf(session);
  const step = session.state.step;
  session.state.balancing = {
    ...state,
    perWorker: plan.reason === 'drift' ? plan.perWorker : undefined,
    lastPlanStep: step,
    plans: withPlan(state.plans, { step, generation: context.generation, ...plan }),
  };
  emit(session.facts.log, 'info', 'batch split changed', {
    event: 'balance',
    step,
    members: context.members,
    perWorker: plan.perWorker,
    before,
    predictedSeconds: round(plan.predicted),
    predictedBeforeSeconds: round(plan.predictedBefore),
    reason: plan.reason,
  });
}

function round(seconds: number): number {
  return Math.round(seconds * 1e5) / 1e5;
}

/** Each member's batch, compute throughput and wait per step, from the estimates, for progress reports. */
export function workerLoads(
  session: Session,
  members: readonly string[],
  perWorker: readonly number[],
): { worker: string; batch: number; samplesPerSecond: number; waitSeconds: number }[] {
  const byWorker = new Map(stateOf(session).estimates.map((e) => [e.worker, e]));
  return members.map((worker, rank) => {
    const e = byWorker.get(worker);
    const rate = e === undefined || e.secondsPerSample <= 0 ? 0 : 1 / e.secondsPerSample;
    return {
      worker,
      batch: perWorker[rank] ?? 0,
      samplesPerSecond: Math.round(rate * 10) / 10,
      waitSeconds: Math.round((e?.waitSeconds ?? 0) * 1e4) / 1e4,
    };
  });
}

/** The median compute throughput of the measured members. */
export function medianThroughput(session: Session): number {
  return median(stateOf(session).estimates.map((e) => (e.secondsPerSample > 0 ? 1 / e.secondsPerSample : 0)));
}
