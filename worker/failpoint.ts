/**
 * Failpoints: places where a test makes a worker die as a node loss would (SIGKILL: no cleanup, no
 * last words), at a moment no outside observer can hit reliably — e.g. the writer between the last
 * step and its final checkpoint. Armed with TENSILE_FAILPOINT, never in production; unset, a
 * failpoint costs a string comparison.
 *   <name>@<worker id>     that worker dies there
 *   <name>@once:<file>     the first worker to get there dies (it creates <file>), not the one that
 *                          takes over after it
 */
import { openSync } from 'node:fs';

export const FAILPOINTS = ['before-final-checkpoint'] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export function failpoint(name: Failpoint, armed: string | undefined, workerId: string): void {
  if (armed === undefined || !armed.startsWith(`${name}@`)) return;
  const target = armed.slice(name.length + 1);
  if (target.startsWith('once:')) {
    try {
      openSync(target.slice('once:'.length), 'wx');
    } catch {
      return;
    }
  } else if (target !== workerId) return;
  process.kill(process.pid, 'SIGKILL');
}
