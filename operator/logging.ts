/** The operator's log: winston JSON lines with namespace and job on every line about a job. */
import winston from 'winston';

export function createOperatorLogger(
  level = 'info',
  defaultMeta: Record<string, string> = {},
): winston.Logger {
  return winston.createLogger({
    level,
    format: winston.format.combine(
      winston.format.errors({ stack: true }),
      winston.format.timestamp(),
      winston.format.json(),
    ),
    defaultMeta: { component: 'operator', ...defaultMeta },
    transports: [new winston.transports.Stream({ stream: process.stdout })],
  });
}
