/**
 * `tensile`: one command for every part, so that the images, `npm start` and a developer's shell
 * run the same code. Subcommands load their modules lazily: `tensile validate` never loads TensorFlow.
 */
import { readFile } from 'node:fs/promises';

const USAGE = `usage: tensile <command> [options]

commands:
  validate FILE...     check TrainingJob manifests against the schema (exit 1 on any problem)
  run FILE [options]   train a TrainingJob on this machine (tensile run --help)
  report DIR           write an HTML report of a tensile run output directory (DIR/report.html)
  worker               run one training worker, configured from TENSILE_* variables
  operator [options]   run the operator (tensile operator --help)
  help                 show this text
`;

type Command = (args: string[]) => Promise<number>;

const commands: Record<string, Command> = {
  validate: async (args) => {
    const { runValidate } = await import('./commands/validate.ts');
    return runValidate(args, {
      readFile: (file) => readFile(file, 'utf8'),
      out: console.log,
      err: console.error,
    });
  },
  operator: async (args) => {
    const { runOperator } = await import('./commands/operator.ts');
    return runOperator(args);
  },
  run: async (args) => {
    const { runRun } = await import('./commands/run.ts');
    return runRun(args, { out: console.log, err: console.error });
  },
  report: async (args) => {
    const { runReport } = await import('./commands/report.ts');
    return runReport(args, { out: console.log, err: console.error });
  },
  worker: async (args) => {
    const { runWorkerCommand } = await import('./commands/worker.ts');
    const code = await runWorkerCommand(args, { env: process.env, err: console.error });
    // A worker's life ends with its work: a socket or timer a library keeps (NATS reconnects, a
    // peer's half-closed link) must not hold the pod, or the run, open.
    process.exit(code);
  },
  help: async () => {
    process.stdout.write(USAGE);
    return 0;
  },
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (command === undefined) {
    process.stderr.write(`tensile: unknown command "${name}"\n${USAGE}`);
    return 2;
  }
  return command(rest);
}
