/**
 * `tensile report DIR [--out FILE]`: a self-contained HTML report of the local run in DIR (the output
 * directory of `tensile run`), written to DIR/report.html unless --out says otherwise.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { collectReport, ReportError } from '../report/collect.ts';
import { renderReport } from '../report/render.ts';

export const REPORT_USAGE = `usage: tensile report DIR [--out FILE]

Writes an HTML report (curves, events, sample audit) of the run in DIR, the --out directory of
tensile run, to DIR/report.html or FILE, and prints its path.`;

export interface ReportIo {
  out(line: string): void;
  err(line: string): void;
}

/** Writes the report of the run in `dir` (to `out`, default DIR/report.html) and returns its absolute path. */
export function writeReport(dir: string, out?: string): string {
  const html = renderReport(collectReport(dir));
  const file = resolve(out ?? join(dir, 'report.html'));
  // A reader (a browser refreshing the page) never sees half a report.
  const temporary = `${file}.tmp-${process.pid}`;
  writeFileSync(temporary, html);
  renameSync(temporary, file);
  return file;
}

/** The arguments, or a message for the user when they are wrong. */
export function parseReportArgs(args: readonly string[]): { dir: string; out: string | undefined } | string {
  let dir: string | undefined;
  let out: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--out' || arg.startsWith('--out=')) {
      out = arg === '--out' ? args[++i] : arg.slice('--out='.length);
      if (out === undefined || out === '') return '--out needs a file';
    } else if (arg.startsWith('-')) {
      return `unknown option ${arg}`;
    } else if (dir !== undefined) {
      return `one run directory at a time (got ${dir} and ${arg})`;
    } else {
      dir = arg;
    }
  }
  if (dir === undefined) return 'missing DIR (the --out directory of tensile run)';
  return { dir, out };
}

export async function runReport(args: string[], io: ReportIo): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(REPORT_USAGE);
    return 0;
  }
  const options = parseReportArgs(args);
  if (typeof options === 'string') {
    io.err(`tensile report: ${options}`);
    io.err(REPORT_USAGE);
    return 2;
  }
  try {
    io.out(writeReport(options.dir, options.out));
    return 0;
  } catch (error) {
    if (error instanceof ReportError) {
      io.err(`tensile report: ${error.message}`);
      return 1;
    }
    const e = error as NodeJS.ErrnoException;
    io.err(`tensile report: cannot write the report: ${e.code === undefined ? String(error) : e.message}`);
    return 1;
  }
}
