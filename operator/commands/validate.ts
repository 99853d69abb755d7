import { formatManifestProblem, type ManifestProblem, validateManifestText } from '../api/validate.ts';
import { type CommandIo, type CommandSpec, commandLine, STDIN_NAME, UsageError } from './args.ts';

export interface ValidateIo extends CommandIo {
  readFile(file: string): Promise<string>;
  /** Standard input, read to its end: FILE `-`. */
  readStdin(): Promise<string>;
}

export const VALIDATE_COMMAND = {
  command: 'tensile validate',
  synopsis: 'FILE... [options]',
  description: `Checks the TrainingJob manifests in each YAML FILE (several documents each, other kinds skipped)
against the schema and prints one line per problem; - reads standard input. Exit 0 when every
TrainingJob is valid, 1 on any problem.`,
  options: {},
  positionals: true,
} as const satisfies CommandSpec;

/** `tensile validate FILE...`: one line per problem; exit 0 only when every TrainingJob is valid. */
export async function runValidate(args: readonly string[], io: ValidateIo): Promise<number> {
  const line = commandLine(VALIDATE_COMMAND, args, io, (_values, files) => {
    if (files.length === 0)
      throw new UsageError('missing FILE (YAML files holding TrainingJob manifests, - for standard input)');
    if (files.filter((f) => f === '-').length > 1)
      throw new UsageError('- (standard input) can be read only once');
    return files;
  });
  if ('exit' in line) return line.exit;
  let errors = 0;
  let valid = 0;
  for (const file of line.parsed) {
    const name = file === '-' ? STDIN_NAME : file;
    let text: string;
    try {
      text = file === '-' ? await io.readStdin() : await io.readFile(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const reason =
        code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : String(error);
      io.err(`${name}: cannot read: ${reason}`);
      errors++;
      continue;
    }
    const report = validateManifestText(text, name);
    const problems: readonly ManifestProblem[] = report.problems;
    for (const problem of problems) {
      (problem.severity === 'error' ? io.err : io.out)(formatManifestProblem(problem));
      if (problem.severity === 'error') errors++;
    }
    valid += report.jobs.length;
    for (const job of report.jobs) io.out(`${name}: ${job.metadata.name}: valid`);
  }
  if (errors > 0) io.err(`${errors} problem${errors === 1 ? '' : 's'} found`);
  return errors > 0 || valid === 0 ? 1 : 0;
}
