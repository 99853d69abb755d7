/**
 * The one backoff formula of the operator, the worker and the node agent: `baseMs` doubled per
 * attempt (attempt 0 waits `baseMs`), capped at `maxMs`. Pure, so each caller keeps its own count.
 */
export function exponentialBackoffMs(
  attempt: number,
  baseMs: number,
  maxMs = Number.POSITIVE_INFINITY,
): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
}
