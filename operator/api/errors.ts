/**
 * The one error base of worker/ and operator/, and the one classification every caller reads:
 *   terminal   the input is wrong; a retry or restart with the same input fails the same way
 *   retryable  something outside is down or slow (network, NATS, the API server); try again later
 *   conflict   someone else wrote first (a lost compare-and-set, a stale resourceVersion); read again
 * An error is classified once, where it is made (from a status or code, never from message text);
 * `classify` follows `cause`, so wrapping an error does not lose what it is.
 */

export type ErrorClass = 'terminal' | 'retryable' | 'conflict';

export abstract class TensileError extends Error {
  abstract readonly classification: ErrorClass;
}

/** Causes deeper than this are not followed: a cycle of causes must not hang a classifier. */
const MAX_CAUSES = 16;

/**
 * The class of anything thrown: the first TensileError along the `cause` chain decides; a NATS error
 * (nats.js NatsError) is classified by its code; anything else is retryable, since a restart is the
 * safe answer to the unknown.
 */
export function classify(error: unknown): ErrorClass {
  let current = error;
  for (let depth = 0; depth < MAX_CAUSES && current !== undefined && current !== null; depth++) {
    if (current instanceof TensileError) return current.classification;
    const nats = natsErrorClass(current);
    if (nats !== undefined) return nats;
    current = (current as { cause?: unknown }).cause;
  }
  return 'retryable';
}

export function isTerminal(error: unknown): boolean {
  return classify(error) === 'terminal';
}

/** JetStream's "wrong last sequence": a compare-and-set (KV create or update) lost. */
export const NATS_WRONG_LAST_SEQUENCE = 10071;

/** nats.js ErrorCode values meaning the server or the connection is (for now) not there. */
const NATS_UNAVAILABLE = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_DRAINING',
  'CONNECTION_REFUSED',
  'CONNECTION_TIMEOUT',
  'DISCONNECT',
  'TIMEOUT',
  // No responders, or JetStream not (yet) enabled: the server is starting or the stream's leader moving.
  '503',
  '408',
]);

/** nats.js ErrorCode values meaning the request itself is refused: retrying it cannot help. */
const NATS_REFUSED = new Set([
  'AUTHORIZATION_VIOLATION',
  'PERMISSIONS_VIOLATION',
  'BAD_AUTHENTICATION',
  'BAD_CREDS',
  'BAD_SUBJECT',
  'BAD_PAYLOAD',
  'MAX_PAYLOAD_EXCEEDED',
  'INVALID_OPTION',
]);

interface NatsLike {
  readonly name?: unknown;
  readonly code?: unknown;
  readonly api_error?: { readonly code?: unknown; readonly err_code?: unknown };
}

/**
 * The class of a nats.js error from its codes (NatsError.code, and for JetStream API errors
 * api_error.err_code and the HTTP-like api_error.code); undefined for anything that is not one.
 */
export function natsErrorClass(error: unknown): ErrorClass | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const nats = error as NatsLike;
  if (nats.name !== 'NatsError') return undefined;
  const api = nats.api_error;
  if (api?.err_code === NATS_WRONG_LAST_SEQUENCE) return 'conflict';
  if (typeof api?.code === 'number') return httpStatusClass(api.code);
  if (typeof nats.code === 'string') {
    if (NATS_UNAVAILABLE.has(nats.code)) return 'retryable';
    if (NATS_REFUSED.has(nats.code)) return 'terminal';
    // '404' (no messages, no such stream or key) and the other HTTP-like codes nats.js uses.
    if (/^\d{3}$/.test(nats.code)) return httpStatusClass(Number(nats.code));
  }
  return 'retryable';
}

/**
 * The class of an HTTP status (the Kubernetes API server's, JetStream's): 409 is a conflict, throttling
 * and server trouble (and 0: no answer at all) are retryable, any other 4xx is terminal.
 */
export function httpStatusClass(status: number): ErrorClass {
  if (status === 409) return 'conflict';
  if (status === 0 || status === 408 || status === 429 || status >= 500) return 'retryable';
  if (status >= 400) return 'terminal';
  return 'retryable';
}
