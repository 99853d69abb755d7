/** The operator's log: winston JSON lines with namespace and job on every line about a job. */
import type winston from 'winston';
import { createJsonLogger } from './api/logging.ts';

export function createOperatorLogger(
  level = 'info',
  defaultMeta: Record<string, string> = {},
): winston.Logger {
  return createJsonLogger({ level, defaultMeta: { component: 'operator', ...defaultMeta } });
}
