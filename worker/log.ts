/**
 * The worker's structured log: winston JSON lines on stdout, one object per event, with the job,
 * worker and generation on every line so that logs of many workers can be merged and filtered.
 * `tensile run` reads these lines to show progress; the operator's log collection does the same.
 */
import winston from 'winston';
import { createJsonLogger } from '../operator/api/logging.ts';
import type { WorkerEventInput } from '../operator/api/worker-events.ts';

export type WorkerLogger = winston.Logger;

export interface LogContext {
  readonly job: string;
  readonly namespace?: string;
  readonly worker: string;
  readonly generation?: number;
}

export function createWorkerLogger(
  context: LogContext,
  level = 'info',
  stream: NodeJS.WritableStream = process.stdout,
): WorkerLogger {
  return createJsonLogger({ level, defaultMeta: { ...context }, stream, stack: false });
}

/** A logger that drops everything: for tests and benchmarks that measure, not watch. */
export function silentLogger(): WorkerLogger {
  return winston.createLogger({
    silent: true,
    transports: [new winston.transports.Console({ silent: true })],
  });
}

/** The message of an unknown thrown value, for a log field (winston serialises nested Errors as {}). */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * Writes one event of the worker's log protocol (operator/api/worker-events.ts): the only way a
 * worker logs an `event`, so that what it writes is what the consumers decode.
 */
export function emit(log: WorkerLogger, level: LogLevel, message: string, event: WorkerEventInput): void {
  log.log(level, message, event);
}
