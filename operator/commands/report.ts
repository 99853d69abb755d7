/**
 * `tensile report DIR [--out FILE]`: a self-contained HTML report of the local run in DIR (the output
 * directory of `tensile run`), written to DIR/report.html unless --out says otherwise.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { collectReport, ReportError } from '../report/collect.ts';
import { renderReport } from '../report/render.ts';
import { type CommandIo, type CommandSpec, commandLine, UsageError } from './args.ts';

export const REPORT_COMMAND = {
  command: 'tensile report',
  synopsis: 'DIR [options]',
  description: `Writes an HTML report (curves, events, sample audit) of the run in DIR, the --out directory of
tensile run, and prints its path.`,
  options: {
    out: { type: 'string', value: 'FILE', help: 'where to write it (default DIR/report.html)' },
  },
  positionals: true,
} as const satisfies CommandSpec;

export type ReportIo = CommandIo;

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

export async function runReport(args: readonly string[], io: ReportIo): Promise<number> {
  const line = commandLine(REPORT_COMMAND, args, io, (values, positionals) => {
    const [dir, other] = positionals;
    if (dir === undefined) throw new UsageError('missing DIR (the --out directory of tensile run)');
    if (other !== undefined) throw new UsageError(`one run directory at a time (got ${dir} and ${other})`);
    return { dir, out: values.out };
  });
  if ('exit' in line) return line.exit;
  const options = line.parsed;
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
