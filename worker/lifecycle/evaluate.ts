/**
 * Evaluation sharded over the ranks of a world and summed with the same collective as the gradients,
 * so that every rank sees the same result and takes the same stopping decision.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { JoinedWorld } from '../elastic/membership.ts';
import { emit } from '../log.ts';
import type { EvalResult } from '../train/policy.ts';
import type { Session } from './session.ts';

const EVAL_BATCH = 1000;

/** This rank's share of the evaluation set: [from, to). */
export function evaluationShard(size: number, rank: number, ranks: number): { from: number; to: number } {
  return { from: Math.floor((size * rank) / ranks), to: Math.floor((size * (rank + 1)) / ranks) };
}

/** Null when there is no evaluation set or the world changed during it; a CollectiveError when a peer failed. */
export async function evaluate(session: Session, active: JoinedWorld): Promise<EvalResult | null> {
  const { dataset, trainer, state } = session;
  if (dataset.eval === undefined || dataset.eval.size === 0) return null;
  const t = performance.now();
  const size = dataset.eval.size;
  const { from, to } = evaluationShard(size, active.rank, active.size);
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
  const total = await active.reducer.allReduce(Float32Array.from([sums.loss, sums.correct]), active.changed);
  const result = {
    step: state.step,
    epoch: state.epoch,
    loss: (total[0] as number) / size,
    accuracy: (total[1] as number) / size,
    samples: size,
  };
  state.lastEval = result;
  emit(session.facts.log, 'info', 'evaluation', {
    event: 'eval',
    ...result,
    seconds: Math.round(performance.now() - t) / 1000,
  });
  return result;
}
