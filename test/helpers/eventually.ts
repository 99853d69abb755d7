/**
 * Waiting in tests without guessing how fast the machine is: `eventually` polls until a condition
 * holds (the deadline is generous: it only bounds a hang, it is not what the test checks), and
 * `consistently` checks that a condition keeps holding over a window (for "nothing happens").
 */
import { setTimeout as delay } from 'node:timers/promises';

export interface EventuallyOptions {
  /** Give up after this long; a failure names `what` and the probe's last error. Default 60 s. */
  readonly timeoutMs?: number;
  /** Between two probes. Default 100 ms. */
  readonly intervalMs?: number;
}

/**
 * Resolves with the probe's first value that is neither `undefined` nor `false`. A probe that throws
 * counts as "not yet" (an API server still starting, a file half written); its last error is reported
 * if the deadline passes, with `what` (a function: described as things stand then).
 */
export async function eventually<T>(
  what: string | (() => string),
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  options: EventuallyOptions | number = {},
): Promise<T> {
  const { timeoutMs = 60_000, intervalMs = 100 } =
    typeof options === 'number' ? { timeoutMs: options } : options;
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (performance.now() >= deadline) break;
    await delay(intervalMs);
  }
  const cause =
    last === undefined ? '' : ` (last error: ${last instanceof Error ? last.message : String(last)})`;
  const name = typeof what === 'string' ? what : what();
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${name}${cause}`);
}

export interface ConsistentlyOptions {
  /** How long the condition must hold. */
  readonly forMs: number;
  /** Between two probes. Default 100 ms. */
  readonly intervalMs?: number;
}

/**
 * Probes throughout `forMs` (at least twice: at the start and at the end) and throws at the first
 * probe that returns false or throws. A slow machine probes less often, never wrongly.
 */
export async function consistently(
  what: string,
  probe: () => boolean | Promise<boolean>,
  options: ConsistentlyOptions,
): Promise<void> {
  const { forMs, intervalMs = 100 } = options;
  const started = performance.now();
  for (;;) {
    const elapsed = performance.now() - started;
    let held: boolean;
    try {
      held = await probe();
    } catch (error) {
      throw new Error(`${what} stopped holding after ${Math.round(elapsed)} ms: ${String(error)}`, {
        cause: error,
      });
    }
    if (!held) throw new Error(`${what} stopped holding after ${Math.round(elapsed)} ms`);
    if (elapsed >= forMs) return;
    await delay(Math.min(intervalMs, Math.max(0, forMs - elapsed)));
  }
}
