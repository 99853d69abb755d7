/**
 * Typed errors of the worker, under the one error base (operator/api/errors.ts) and classified at the
 * process boundary: a terminal error (bad input that a restart cannot fix), itself or as the cause of
 * another, exits with EXIT_TERMINAL so that the operator fails the job instead of restarting the pod in
 * a loop; anything else exits with EXIT_RETRYABLE.
 */
import { type ErrorClass, isTerminal, TensileError } from '../operator/api/errors.ts';

export const EXIT_OK = 0;
export const EXIT_RETRYABLE = 1;
export const EXIT_TERMINAL = 2;

export abstract class WorkerError extends TensileError {}

/** A dataset file is missing, truncated or malformed; the message names the file and the problem. */
export class DatasetError extends WorkerError {
  override readonly name = 'DatasetError';
  readonly classification = 'terminal';
  constructor(
    readonly file: string,
    readonly problem: string,
    options?: ErrorOptions,
  ) {
    super(`${file}: ${problem}`, options);
  }
}

/** The model in the spec cannot be built or does not fit the data. */
export class ModelError extends WorkerError {
  override readonly name = 'ModelError';
  readonly classification = 'terminal';
}

/** The requested TensorFlow.js backend cannot be used. */
export class BackendError extends WorkerError {
  override readonly name = 'BackendError';
  readonly classification = 'terminal';
}

/** A checkpoint cannot be written, or the directory holds checkpoints of another model or dataset. */
export class CheckpointError extends WorkerError {
  override readonly name = 'CheckpointError';
  readonly classification: ErrorClass;
  constructor(message: string, terminal: boolean, options?: ErrorOptions) {
    super(message, options);
    this.classification = terminal ? 'terminal' : 'retryable';
  }
}

/**
 * The world this worker was to join trains another model, dataset or optimizer: a restart with the
 * same configuration cannot fix it.
 */
export class SpecMismatchError extends WorkerError {
  override readonly name = 'SpecMismatchError';
  readonly classification = 'terminal';
}

export function exitCodeFor(error: unknown): number {
  return isTerminal(error) ? EXIT_TERMINAL : EXIT_RETRYABLE;
}
