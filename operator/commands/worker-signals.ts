/**
 * How `tensile worker` answers SIGTERM and SIGINT. While it trains, the first signal asks it to
 * checkpoint at the next step boundary and return (and starts the grace period that Kubernetes would
 * enforce), a second one soon after is the same request (Ctrl-C reaches the whole process group and
 * `tensile run` forwards SIGTERM too), a later one exits at once. Once the work is over the process is
 * only flushing its log on its way out: a signal then changes nothing, so a worker that completed is
 * not turned into exit 143 — a failed pod — by the operator deleting it as the job ends.
 */
import { EXIT_TERMINAL } from '../../worker/errors.ts';
import { emit, type WorkerLogger } from '../../worker/log.ts';

/** Signals this close together are one stop request. */
const SAME_REQUEST_MS = 1000;

export interface StopSignalsOptions {
  readonly log: WorkerLogger;
  readonly graceSeconds: number;
  /** process.exit, unless a test watches it. */
  readonly exit?: (code: number) => void;
  readonly now?: () => number;
}

export interface StopSignals {
  /** Aborted by the first signal while the work runs. */
  readonly signal: AbortSignal;
  /** What the process's SIGTERM and SIGINT listeners call. */
  handle(signal: NodeJS.Signals): void;
  /** The work is over: from now on a signal is ignored, the exit is already under way. */
  finished(): void;
  /** Stops the grace timer. */
  [Symbol.dispose](): void;
}

export function stopSignals(options: StopSignalsOptions): StopSignals {
  const { log, graceSeconds } = options;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const now = options.now ?? (() => performance.now());
  const controller = new AbortController();
  let firstSignal = 0;
  let done = false;
  let graceTimer: NodeJS.Timeout | undefined;
  return {
    signal: controller.signal,
    handle(signal) {
      if (done) return;
      if (controller.signal.aborted) {
        if (now() - firstSignal < SAME_REQUEST_MS) return;
        log.warn('second signal; exiting without waiting', { signal });
        exit(EXIT_TERMINAL);
        return;
      }
      firstSignal = now();
      emit(log, 'info', 'signal received; will checkpoint at the next step boundary', {
        event: 'signal',
        signal,
        graceSeconds,
      });
      controller.abort();
      // Outside Kubernetes nothing enforces the grace period; keep the promise the manifest makes.
      graceTimer = setTimeout(() => {
        emit(log, 'error', 'grace period exceeded before the checkpoint finished', {
          event: 'grace-exceeded',
          graceSeconds,
        });
        exit(1);
      }, graceSeconds * 1000).unref();
    },
    finished() {
      done = true;
      clearTimeout(graceTimer);
    },
    [Symbol.dispose]() {
      clearTimeout(graceTimer);
    },
  };
}
