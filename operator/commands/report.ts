/**
 * `tensile report DIR... [--out FILE]`: a self-contained HTML report of the run in DIR (the output
 * directory of `tensile run`, or a cluster job's checkpoint volume), written to DIR/report.html unless
 * --out says otherwise; with two or more folders, the runs side by side (default FIRST/compare.html).
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { collectReport, ReportError } from '../report/collect.ts';
import { renderComparison, renderReport } from '../report/render.ts';
import { type CommandIo, type CommandSpec, commandLine, UsageError } from './args.ts';

export const REPORT_COMMAND = {
  command: 'tensile report',
  synopsis: 'DIR [DIR...] [options]',
  description: `Writes an HTML report (curves, per-worker view, hyperparameters, events, sample audit) of the
run in DIR and prints its path. DIR is the --out directory of tensile run, or the folder of a cluster
job's checkpoint volume (its workers keep logs/ and job.json there). With two or more DIRs: one page
with the runs side by side.`,
  options: {
    out: {
      type: 'string',
      value: 'FILE',
      help: 'where to write it (default DIR/report.html; FIRST/compare.html for several runs)',
    },
  },
  positionals: true,
} as const satisfies CommandSpec;

export type ReportIo = CommandIo;

/** Writes the report of the run in `dir` (to `out`, default DIR/report.html) and returns its absolute path. */
export function writeReport(dir: string, out?: string): string {
  return writeHtml(renderReport(collectReport(dir)), resolve(out ?? join(dir, 'report.html')));
}

/** Writes the runs in `dirs` side by side (to `out`, default FIRST/compare.html); returns its path. */
export function writeComparison(dirs: readonly string[], out?: string): string {
  const runs = dirs.map((d) => collectReport(d));
  return writeHtml(renderComparison(runs), resolve(out ?? join(dirs[0] ?? '.', 'compare.html')));
}

function writeHtml(html: string, file: string): string {
  // A reader (a browser refreshing the page) never sees half a report.
  const temporary = `${file}.tmp-${process.pid}`;
  writeFileSync(temporary, html);
  renameSync(temporary, file);
  return file;
}

export async function runReport(args: readonly string[], io: ReportIo): Promise<number> {
  const line = commandLine(REPORT_COMMAND, args, io, (values, positionals) => {
    if (positionals.length === 0) throw new UsageError('missing DIR (the --out directory of tensile run)');
    return { dirs: [...positionals], out: values.out };
  });
  if ('exit' in line) return line.exit;
  const options = line.parsed;
  try {
    const [dir] = options.dirs;
    io.out(
      options.dirs.length === 1 && dir !== undefined
        ? writeReport(dir, options.out)
        : writeComparison(options.dirs, options.out),
    );
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
