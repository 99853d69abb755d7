/**
 * Kubernetes API errors, classified once from the status the API server answered (ApiException.code),
 * for the operator (operator/controller/kube.ts) and the node agent (hack/node-agent/kube.ts) alike:
 * 409 conflict, 429 and 5xx (and no answer at all) retryable, any other 4xx terminal.
 */
import { ApiException } from '@kubernetes/client-node';
import { type ErrorClass, httpStatusClass, TensileError } from './errors.ts';

export class KubeApiError extends TensileError {
  override readonly name = 'KubeApiError';
  readonly classification: ErrorClass;
  constructor(
    message: string,
    /** The HTTP status; 0 when the API server never answered (network). */
    readonly status: number,
    /** The Status object's reason (AlreadyExists, Conflict, NotFound...), '' when it had none. */
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.classification = httpStatusClass(status);
  }
}

/** Turns anything the client throws into a KubeApiError; network errors are retryable. */
export function toKubeError(error: unknown, what: string): KubeApiError {
  if (error instanceof KubeApiError) return error;
  if (error instanceof ApiException) {
    const code = error.code;
    let reason = '';
    let detail = '';
    const body: unknown = error.body;
    try {
      const parsed = (typeof body === 'string' ? JSON.parse(body) : body) as
        | { reason?: string; message?: string }
        | undefined;
      reason = parsed?.reason ?? '';
      detail = parsed?.message ?? '';
    } catch {
      detail = typeof body === 'string' ? body.slice(0, 300) : '';
    }
    return new KubeApiError(`${what}: ${code} ${reason}${detail ? `: ${detail}` : ''}`, code, reason, {
      cause: error,
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new KubeApiError(`${what}: ${message}`, 0, 'NetworkError', { cause: error });
}

export const isNotFound = (e: unknown): e is KubeApiError => e instanceof KubeApiError && e.status === 404;
export const isAlreadyExists = (e: unknown): e is KubeApiError =>
  e instanceof KubeApiError && e.status === 409 && e.reason === 'AlreadyExists';
/** A write lost to another (a stale resourceVersion or patch precondition): read again and decide again. */
export const isConflict = (e: unknown): e is KubeApiError =>
  e instanceof KubeApiError && e.classification === 'conflict' && e.reason !== 'AlreadyExists';
