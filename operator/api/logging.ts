/**
 * The one winston setup of the operator, the worker and the node agent: JSON lines, one object per
 * event, with a timestamp and the fields of `defaultMeta` on every line, so that the logs of many
 * processes can be merged and filtered by the same tools.
 */
import winston from 'winston';

export interface JsonLoggerOptions {
  readonly level?: string;
  readonly defaultMeta?: Record<string, unknown>;
  readonly stream?: NodeJS.WritableStream;
  /** Stack traces in error lines: for operators and agents, not for the worker's user-facing failures. */
  readonly stack?: boolean;
}

export function createJsonLogger(options: JsonLoggerOptions = {}): winston.Logger {
  return winston.createLogger({
    level: options.level ?? 'info',
    format: winston.format.combine(
      winston.format.errors({ stack: options.stack ?? true }),
      winston.format.timestamp(),
      winston.format.json(),
    ),
    defaultMeta: { ...options.defaultMeta },
    transports: [new winston.transports.Stream({ stream: options.stream ?? process.stdout })],
  });
}
