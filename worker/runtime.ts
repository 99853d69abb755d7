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
 *
 * The states and their order: lifecycle/states.ts; what the worker holds meanwhile: lifecycle/session.ts.
 */
import { openSession, type SessionOptions } from './lifecycle/session.ts';
import { runLifecycle } from './lifecycle/states.ts';
import type { WorkerResult } from './result.ts';

export { incompatibility } from './lifecycle/restore.ts';

export type WorkerRuntimeOptions = SessionOptions;

export async function runWorker(options: WorkerRuntimeOptions): Promise<WorkerResult> {
  const started = performance.now();
  const session = await openSession(options);
  try {
    return await runLifecycle(session, started);
  } finally {
    await session[Symbol.asyncDispose]();
  }
}
