/**
 * Reads a run directory for `tensile report`; the parsing is in data.ts, so this stays file access only.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { assembleReport, type ReportData, ReportError } from './data.ts';

export type { ReportData } from './data.ts';
export { ReportError } from './data.ts';

/** worker-2.log before worker-10.log. */
const byIndex = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });

/** The data of the run in `dir`; throws ReportError when there is no summary.json to report on. */
export function collectReport(dir: string): ReportData {
  const root = resolve(dir);
  const summaryFile = join(root, 'summary.json');
  let summaryText: string;
  try {
    summaryText = readFileSync(summaryFile, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const what = !existsSync(root)
      ? `no such directory ${root}`
      : !statSync(root).isDirectory()
        ? `${root} is not a directory`
        : code === 'ENOENT'
          ? 'not found'
          : `cannot read (${code ?? String(error)})`;
    throw new ReportError(
      `${summaryFile}: ${what}; run \`tensile run FILE --out ${dir}\` first (a run that has not finished has no summary yet)`,
    );
  }
  const logs = readdirSync(root)
    .filter((name) => /^worker-.*\.log$/.test(name))
    .sort(byIndex)
    .map((name) => ({ file: join(root, name), text: readFileSync(join(root, name), 'utf8') }));
  const eventsFile = join(root, 'events.jsonl');
  const eventsText = existsSync(eventsFile) ? readFileSync(eventsFile, 'utf8') : undefined;
  return assembleReport({ dir: root, summaryFile, summaryText, logs, eventsText });
}
