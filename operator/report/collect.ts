/**
 * Reads a run directory for `tensile report`; the parsing is in data.ts, so this stays file access only.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { JOB_RECORD, WORKER_LOGS_DIR } from '../api/model-output.ts';
import { assembleReport, type ReportData, ReportError } from './data.ts';

export type { ReportData } from './data.ts';
export { ReportError } from './data.ts';

/** worker-2.log before worker-10.log. */
const byIndex = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });

/**
 * The data of the run in `dir`: the --out folder of `tensile run`, or a checkpoint volume's folder
 * (where the workers of a cluster job keep `logs/<worker>.jsonl` and `job.json`). Throws ReportError
 * when there is neither a summary.json nor any worker log to report on.
 */
export function collectReport(dir: string): ReportData {
  const root = resolve(dir);
  const summaryFile = join(root, 'summary.json');
  if (!existsSync(root) || !statSync(root).isDirectory())
    throw new ReportError(
      `${summaryFile}: ${existsSync(root) ? `${root} is not a directory` : `no such directory ${root}`}; run \`tensile run FILE --out ${dir}\` first`,
    );
  let summaryText: string | undefined;
  try {
    summaryText = readFileSync(summaryFile, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new ReportError(`${summaryFile}: cannot read (${code ?? String(error)})`);
  }
  const localLogs = readdirSync(root)
    .filter((name) => /^worker-.*\.log$/.test(name))
    .sort(byIndex)
    .map((name) => join(root, name));
  const volumeLogs = join(root, WORKER_LOGS_DIR);
  const podLogs = existsSync(volumeLogs)
    ? readdirSync(volumeLogs)
        .filter((name) => name.endsWith('.jsonl'))
        .sort(byIndex)
        .map((name) => join(volumeLogs, name))
    : [];
  const logs = [...localLogs, ...podLogs].map((file) => ({ file, text: readFileSync(file, 'utf8') }));
  if (summaryText === undefined && logs.length === 0)
    throw new ReportError(
      `${summaryFile}: not found, and no worker logs (${WORKER_LOGS_DIR}/*.jsonl) either; run \`tensile run FILE --out ${dir}\` first (a run that has not finished has no summary yet), or give the folder of a job's checkpoint volume`,
    );
  const eventsFile = join(root, 'events.jsonl');
  const eventsText = existsSync(eventsFile) ? readFileSync(eventsFile, 'utf8') : undefined;
  const jobFile = [join(root, JOB_RECORD), join(root, 'checkpoints', JOB_RECORD)].find((f) => existsSync(f));
  const jobText = jobFile === undefined ? undefined : readFileSync(jobFile, 'utf8');
  return assembleReport({ dir: root, summaryFile, summaryText, jobText, logs, eventsText });
}
