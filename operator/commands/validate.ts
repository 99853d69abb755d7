import { formatManifestProblem, type ManifestProblem, validateManifestText } from '../api/validate.ts';

export interface ValidateIo {
  readFile(file: string): Promise<string>;
  out(line: string): void;
  err(line: string): void;
}

/** `tensile validate FILE...`: one line per problem; exit 0 only when every TrainingJob is valid. */
export async function runValidate(files: string[], io: ValidateIo): Promise<number> {
  if (files.length === 0) {
    io.err('usage: tensile validate FILE... (YAML files holding TrainingJob manifests)');
    return 2;
  }
  let errors = 0;
  let valid = 0;
  for (const file of files) {
    let text: string;
    try {
      text = await io.readFile(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const reason =
        code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : String(error);
      io.err(`${file}: cannot read: ${reason}`);
      errors++;
      continue;
    }
    const report = validateManifestText(text, file);
    const problems: readonly ManifestProblem[] = report.problems;
    for (const problem of problems) {
      (problem.severity === 'error' ? io.err : io.out)(formatManifestProblem(problem));
      if (problem.severity === 'error') errors++;
    }
    valid += report.jobs.length;
    for (const job of report.jobs) io.out(`${file}: ${job.metadata.name}: valid`);
  }
  if (errors > 0) io.err(`${errors} problem${errors === 1 ? '' : 's'} found`);
  return errors > 0 || valid === 0 ? 1 : 0;
}
