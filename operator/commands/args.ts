/**
 * Every command line of the project (tensile and its commands, hack/cluster.sh, the simulators) is
 * parsed here, on node:util parseArgs, so that each has the same `--help` shape and the same words for
 * a mistake: `COMMAND: unknown option --x`, then the usage line and where the help is. hack/start.mjs,
 * plain JavaScript, repeats the wording.
 *
 * Parsing is pure: it returns the values, or that help was asked for, or throws a UsageError.
 */
import { parseArgs } from 'node:util';
import { TensileError } from '../api/errors.ts';

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  /** The name of a string option's value in the help and in errors: N, DIR, FILE. */
  readonly value?: string;
  readonly multiple?: boolean;
  /** Its line in the help; `\n` continues it on the next line, aligned. */
  readonly help: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

export interface CommandSpec<O extends OptionSpecs = OptionSpecs> {
  /** As the user types it: `tensile run`, `hack/cluster.sh up`. */
  readonly command: string;
  /** What follows the command on the usage line: `FILE [options]`. */
  readonly synopsis: string;
  /** The paragraph under the usage line. */
  readonly description: string;
  readonly options: O;
  /** Whether arguments other than options are accepted (default no). */
  readonly positionals?: boolean;
  /** Where the help is, when not `COMMAND --help` (npm start needs `--` before its options). */
  readonly helpHint?: string;
}

type ValueOf<S extends OptionSpec> = S['type'] extends 'boolean'
  ? S['multiple'] extends true
    ? boolean[]
    : boolean
  : S['multiple'] extends true
    ? string[]
    : string;

export type OptionValues<O extends OptionSpecs> = { -readonly [K in keyof O]?: ValueOf<O[K]> };

export type ParsedCommand<O extends OptionSpecs> =
  | { readonly help: true }
  | { readonly help: false; readonly values: OptionValues<O>; readonly positionals: string[] };

/** A mistake on the command line; the message names the argument and what it should be. */
export class UsageError extends TensileError {
  override readonly name = 'UsageError';
  readonly classification = 'terminal';
}

const HELP: OptionSpec = { type: 'boolean', short: 'h', help: 'show this help' };

/** Parses `argv` against `spec`; `-h`/`--help` anywhere (before `--`) wins over every other mistake. */
export function parseCommand<O extends OptionSpecs>(
  spec: CommandSpec<O>,
  argv: readonly string[],
): ParsedCommand<O> {
  const options: Record<string, OptionSpec> = { ...spec.options, help: HELP };
  const config = Object.fromEntries(
    Object.entries(options).map(([name, o]) => [
      name,
      {
        type: o.type,
        ...(o.short === undefined ? {} : { short: o.short }),
        ...(o.multiple ? { multiple: true } : {}),
      },
    ]),
  );
  // Not strict: parseArgs' own errors do not name the value an option needs; these checks do.
  const { tokens } = parseArgs({
    args: [...argv],
    options: config,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help')) return { help: true };
  const values: Record<string, string | boolean | (string | boolean)[]> = {};
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') {
      if (spec.positionals !== true) throw new UsageError(`unexpected argument ${token.value}`);
      positionals.push(token.value);
      continue;
    }
    const option = options[token.name];
    if (option === undefined) throw new UsageError(`unknown option ${token.rawName}`);
    let value: string | boolean;
    if (option.type === 'boolean') {
      if (token.value !== undefined) throw new UsageError(`${token.rawName} takes no value`);
      value = true;
    } else {
      const needs = `${token.rawName} needs a value (${option.value ?? 'VALUE'})`;
      if (token.value === undefined || token.value === '') throw new UsageError(needs);
      // `--out --workers 2`: the next option is not the value of the one before.
      if (!token.inlineValue && token.value.startsWith('-') && token.value !== '-')
        throw new UsageError(`${needs}, got the option ${token.value}`);
      value = token.value;
    }
    const seen = values[token.name];
    values[token.name] = option.multiple ? [...(Array.isArray(seen) ? seen : []), value] : value;
  }
  return { help: false, values: values as OptionValues<O>, positionals };
}

/** The help of a command (no final newline): usage line, description, `options:` and an aligned row each. */
export function formatHelp(spec: CommandSpec): string {
  const rows = Object.entries({ ...spec.options, help: HELP }).map(([name, o]) => {
    const flag = `${o.short === undefined ? '' : `-${o.short}, `}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
    return [flag, o.help] as const;
  });
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
  const lines = rows.flatMap(([flag, help]) =>
    help.split('\n').map((text, i) => `  ${(i === 0 ? flag : '').padEnd(width)}${text}`.trimEnd()),
  );
  return `usage: ${spec.command} ${spec.synopsis}\n\n${spec.description}\n\noptions:\n${lines.join('\n')}`;
}

/** The two lines of a usage error (no final newline): what is wrong, the usage line and where the help is. */
export function formatUsageError(spec: CommandSpec, message: string): string {
  const hint = spec.helpHint ?? `${spec.command} --help`;
  return `${spec.command}: ${message}\nusage: ${spec.command} ${spec.synopsis} (${hint} for more)`;
}

/** Line-wise output, as console.log and console.error write it. */
export interface CommandIo {
  out(line: string): void;
  err(line: string): void;
}

export type CommandLine<T> = { readonly parsed: T } | { readonly exit: number };

/**
 * Parses and answers `--help` and mistakes: the parsed command line, or the exit code to return (0
 * after the help, 2 after a usage error). `check` turns the values into the command's options and
 * throws UsageError for a bad one.
 */
export function commandLine<O extends OptionSpecs, T>(
  spec: CommandSpec<O>,
  argv: readonly string[],
  io: CommandIo,
  check: (values: OptionValues<O>, positionals: string[]) => T,
): CommandLine<T> {
  try {
    const parsed = parseCommand(spec, argv);
    if (parsed.help) {
      io.out(formatHelp(spec));
      return { exit: 0 };
    }
    return { parsed: check(parsed.values, parsed.positionals) };
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(formatUsageError(spec, error.message));
    return { exit: 2 };
  }
}

/** Reads standard input to its end: what `-` names where a command reads a file. */
export async function readStandardInput(input: NodeJS.ReadableStream = process.stdin): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** How `-` is shown in messages. */
export const STDIN_NAME = '<stdin>';
