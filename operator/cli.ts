/**
 * `tensile`: one command for every part, so that the images, `npm start` and a developer's shell
 * run the same code. Subcommands load their modules lazily: `tensile validate` never loads TensorFlow.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type CommandSpec,
  formatHelp,
  formatUsageError,
  parseCommand,
  readStandardInput,
  UsageError,
} from './commands/args.ts';

export const TENSILE_COMMAND = {
  command: 'tensile',
  synopsis: 'COMMAND [options]',
  description: `commands:
  validate FILE...     check TrainingJob manifests against the schema (exit 1 on any problem)
  run FILE             train a TrainingJob on this machine
  report DIR           write an HTML report of a tensile run output directory (DIR/report.html)
  export DIR           write the trained model of a run (tfjs Layers format, preprocessing, labels)
  worker               run one training worker, configured from TENSILE_* variables
  operator             run the operator
  nats-trust           create the NATS keys for per-job credentials (a directory or a Secret)
  help [COMMAND]       show this text, or the help of COMMAND (as COMMAND --help)

tensile COMMAND --help shows the options of each.`,
  options: {
    version: { type: 'boolean', help: 'print the version of tensile' },
  },
} as const satisfies CommandSpec;

const io = { out: console.log, err: console.error };

type Command = (args: string[]) => Promise<number>;

const commands: Record<string, Command> = {
  validate: async (args) => {
    const { runValidate } = await import('./commands/validate.ts');
    return runValidate(args, {
      ...io,
      readFile: (file) => readFile(file, 'utf8'),
      readStdin: readStandardInput,
    });
  },
  operator: async (args) => {
    const { runOperator } = await import('./commands/operator.ts');
    return runOperator(args);
  },
  'nats-trust': async (args) => {
    const { runNatsTrust } = await import('./commands/nats-trust.ts');
    return runNatsTrust(args, io);
  },
  run: async (args) => {
    const { runRun } = await import('./local-run/run.ts');
    return runRun(args, io);
  },
  report: async (args) => {
    const { runReport } = await import('./commands/report.ts');
    return runReport(args, io);
  },
  export: async (args) => {
    const { runExport } = await import('./commands/export.ts');
    return runExport(args, io);
  },
  worker: async (args) => {
    const { runWorkerCommand } = await import('./commands/worker.ts');
    const code = await runWorkerCommand(args, { ...io, env: process.env });
    // A worker's life ends with its work: a socket or timer a library keeps (NATS reconnects, a
    // peer's half-closed link) must not hold the pod, or the run, open.
    process.exit(code);
  },
  help: async (args) => {
    const [name, other] = args;
    if (name === undefined) {
      io.out(formatHelp(TENSILE_COMMAND));
      return 0;
    }
    const command = commands[name];
    if (command === undefined || name === 'help' || other !== undefined) {
      io.err(formatUsageError(TENSILE_COMMAND, `help: no command "${args.join(' ')}"`));
      return 2;
    }
    return command(['--help']);
  },
};

/** The version in package.json: the repository's from the sources, /app/package.json in the images. */
export function tensileVersion(moduleUrl: string = import.meta.url): string {
  for (let dir = dirname(fileURLToPath(moduleUrl)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'tensile' && typeof pkg.version === 'string') return pkg.version;
    }
    if (dirname(dir) === dir) return 'unknown';
  }
}

export async function main(argv: string[]): Promise<number> {
  // Options before the command are tensile's own; everything from the command on is the command's.
  const at = argv.findIndex((arg) => !arg.startsWith('-') || arg === '-');
  const own = at < 0 ? argv : argv.slice(0, at);
  const [name, ...rest] = at < 0 ? [] : argv.slice(at);
  try {
    const parsed = parseCommand(TENSILE_COMMAND, own);
    if (parsed.help) {
      io.out(formatHelp(TENSILE_COMMAND));
      return 0;
    }
    if (parsed.values.version) {
      io.out(`tensile ${tensileVersion()}`);
      return 0;
    }
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(formatUsageError(TENSILE_COMMAND, error.message));
    return 2;
  }
  if (name === undefined) {
    io.err(formatUsageError(TENSILE_COMMAND, 'missing COMMAND'));
    return 2;
  }
  const command = commands[name];
  if (command === undefined) {
    io.err(formatUsageError(TENSILE_COMMAND, `unknown command "${name}"`));
    return 2;
  }
  return command(rest);
}
