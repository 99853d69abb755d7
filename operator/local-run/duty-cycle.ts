/**
 * Slows a process down to a fraction of its speed without its cooperation: within every period it
 * runs for `factor` of it and is stopped (SIGSTOP) for the rest, then continued (SIGCONT). Every
 * thread of the process stops, so compute and communication alike run at `factor` of their speed,
 * like a worker on a slower or noisier machine. `tensile run --chaos slow:W:F` drives it.
 */

/** Short against a step (tens to hundreds of ms), long against the cost of two signals. */
export const DUTY_PERIOD_MS = 10;

export interface DutyCycle extends Disposable {
  readonly factor: number;
}

/**
 * Starts the cycle on `pid`; disposing it (or the process exiting) ends it and leaves the process
 * running. `signal` sends a signal (process.kill by default; a test may watch the calls).
 */
export function startDutyCycle(
  pid: number,
  factor: number,
  periodMs = DUTY_PERIOD_MS,
  signal: (pid: number, name: NodeJS.Signals) => void = (p, s) => process.kill(p, s),
): DutyCycle {
  if (!(factor > 0 && factor <= 1)) throw new RangeError(`a slow-down factor is in (0, 1], got ${factor}`);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let ended = false;
  const send = (name: NodeJS.Signals): boolean => {
    try {
      signal(pid, name);
      return true;
    } catch {
      // The process is gone: nothing left to slow down.
      ended = true;
      return false;
    }
  };
  const runFor = factor * periodMs;
  const stopFor = periodMs - runFor;
  const tick = () => {
    if (ended) return;
    if (stopped) {
      stopped = !send('SIGCONT');
      timer = setTimeout(tick, runFor);
    } else {
      stopped = send('SIGSTOP');
      timer = setTimeout(tick, stopFor);
    }
    timer.unref();
  };
  if (factor < 1) {
    timer = setTimeout(tick, runFor);
    timer.unref();
  }
  return {
    factor,
    [Symbol.dispose]() {
      if (timer !== undefined) clearTimeout(timer);
      if (stopped && !ended) send('SIGCONT');
      ended = true;
    },
  };
}
