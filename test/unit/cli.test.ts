/**
 * Every command line as a user meets it, in real processes: `--help` of every command (same shape,
 * exit 0, nothing run), `--version`, unknown options named with the way to `--help`, `-` for standard
 * input. The hack/ scripts share the parser and the wording; none of them starts anything here.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { formatHelp, parseCommand } from '../../operator/commands/args.ts';
import { type ExitOutcome, exitOutcome, RUN_COMMAND, runExitCode } from '../../operator/local-run/run.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'operator/bin/tensile.mjs');
const scratch = mkdtempSync(join(tmpdir(), 'tensile-cli-'));
test.after(() => rmSync(scratch, { recursive: true, force: true }));

const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

interface Ran {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

function node(args: string[], input?: string): Ran {
  const r = spawnSync(process.execPath, args, {
    cwd: root,
    encoding: 'utf8',
    input: input ?? '',
    timeout: 60_000,
    // Nothing here may reach a real cluster or the shared one: a scratch state directory, no kubeconfig.
    env: { PATH: process.env['PATH'] ?? '', HOME: scratch, TENSILE_CLUSTER_DIR: join(scratch, 'cluster') },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const tensile = (args: string[], input?: string) => node([bin, ...args], input);
const tsx = (script: string, args: string[]) => node(['--import', 'tsx', join(root, script), ...args]);

/** The shape every `--help` has: the usage line, a description, then the options, --help last. */
function assertHelp(r: Ran, command: string): void {
  assert.is(r.code, 0, r.err);
  assert.is(r.err, '', 'help goes to stdout');
  const lines = r.out.trimEnd().split('\n');
  assert.ok(lines[0]?.startsWith(`usage: ${command} `), `first line of:\n${r.out}`);
  assert.is(lines[1], '', r.out);
  assert.ok(lines.includes('options:'), `no "options:" section in:\n${r.out}`);
  assert.match(lines[lines.length - 1] ?? '', /^ {2}-h, --help +show this help$/);
}

/** A mistake on the command line: exit 2, the offending flag by name, and where the help is. */
function assertUsageError(r: Ran, command: string, message: string): void {
  assert.is(r.code, 2, `${r.out}${r.err}`);
  const lines = r.err.trimEnd().split('\n');
  assert.is(lines[0], `${command}: ${message}`);
  assert.ok(lines[1]?.startsWith(`usage: ${command} `), r.err);
  assert.match(lines[1] ?? '', /--help/);
  assert.not.match(r.err, /\n\s+at /, 'no stack trace');
}

const COMMANDS = ['validate', 'run', 'report', 'worker', 'operator', 'nats-trust'];

for (const command of COMMANDS) {
  test(`tensile ${command} --help and -h: the usage, exit 0`, () => {
    assertHelp(tensile([command, '--help']), `tensile ${command}`);
    assertHelp(tensile([command, '-h']), `tensile ${command}`);
  });

  test(`tensile ${command} --bogus: exit 2 naming --bogus and --help`, () => {
    assertUsageError(tensile([command, '--bogus']), `tensile ${command}`, 'unknown option --bogus');
  });
}

test('tensile validate --help is the help, not a file named --help; -- ends the options', () => {
  const r = tensile(['validate', '--help']);
  assert.not.match(r.out + r.err, 'cannot read');
  const file = tensile(['validate', '--', '--help']);
  assert.is(file.code, 1);
  assert.match(file.err, '--help: cannot read: no such file');
});

test('tensile --version and tensile --help; tensile help COMMAND is that command`s help', () => {
  const v = tensile(['--version']);
  assert.is(v.code, 0, v.err);
  assert.is(v.out, `tensile ${version}\n`);
  assertHelp(tensile(['--help']), 'tensile');
  assertHelp(tensile(['help', 'run']), 'tensile run');
  assertUsageError(tensile(['--bogus']), 'tensile', 'unknown option --bogus');
  const unknown = tensile(['frobnicate']);
  assert.is(unknown.code, 2);
  assert.match(unknown.err, 'tensile: unknown command "frobnicate"');
});

test('a string option without its value names the option and the value it needs', () => {
  assertUsageError(tensile(['run', 'job.yaml', '--out']), 'tensile run', '--out needs a value (DIR)');
  assertUsageError(
    tensile(['run', 'job.yaml', '--out', '--workers', '2']),
    'tensile run',
    '--out needs a value (DIR), got the option --workers',
  );
  assertUsageError(tensile(['run', 'job.yaml', '--elastic=yes']), 'tensile run', '--elastic takes no value');
  assertUsageError(tensile(['worker', 'extra']), 'tensile worker', 'unexpected argument extra');
});

test('tensile nats-trust: a trust directory and the same files as a Secret; without a place to put them, exit 2', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'tensile-trust-')), 'trust');
  const r = tensile(['nats-trust', '--out', out, '--secret', 'nats-trust', '-n', 'tensile-system']);
  assert.is(r.code, 0, r.err);
  const secret = parse(r.out) as {
    kind: string;
    metadata: { namespace: string };
    stringData: Record<string, string>;
  };
  assert.is(secret.kind, 'Secret');
  assert.is(secret.metadata.namespace, 'tensile-system');
  assert.equal(Object.keys(secret.stringData).sort(), [
    'account.nk',
    'operator.nk',
    'system.nk',
    'trust.conf',
  ]);
  assert.match(secret.stringData['operator.nk'] ?? '', /^SO[A-Z2-7]+\n$/);
  assert.match(readFileSync(join(out, 'account.nk'), 'utf8'), /^SA[A-Z2-7]+\n$/);
  assert.match(readFileSync(join(out, 'trust.conf'), 'utf8'), /^operator: ey/);
  assert.is(statSync(join(out, 'system.nk')).mode & 0o077, 0, 'seeds are for their owner only');
  assertUsageError(
    tensile(['nats-trust']),
    'tensile nats-trust',
    'say where the keys go: --out DIR or --secret NAME',
  );
});

test('tensile validate - reads the manifest from standard input', () => {
  const manifest = readFileSync(join(root, 'examples/minimal.yaml'), 'utf8');
  const ok = tensile(['validate', '-'], manifest);
  assert.is(ok.code, 0, ok.err);
  assert.match(ok.out, '<stdin>: minimal: valid');
  const bad = tensile(['validate', '-'], manifest.replace('learningRate: 0.001', 'learningRate: 0'));
  assert.is(bad.code, 1);
  assert.match(bad.err, /^<stdin>:\d+: document 1: spec\.optimizer\.learningRate: must be > 0, got 0$/m);
  assertUsageError(
    tensile(['validate', '-', '-']),
    'tensile validate',
    '- (standard input) can be read only once',
  );
});

test('tensile run - reads the manifest from standard input (checked before anything starts)', () => {
  const r = tensile(
    ['run', '-', '--out', join(scratch, 'out')],
    'apiVersion: tensile.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: bad}\nspec:\n  model: {mlp: {}}\n  dataset: {format: idx, path: /x}\n  optimizer: {learningRate: 0}\n',
  );
  assert.is(r.code, 2, r.out + r.err);
  assert.match(r.err, /^<stdin>:7: document 1: spec\.optimizer\.learningRate: must be > 0/m);
});

test('hack/cluster.sh and the simulators: the same --help and the same mistakes', () => {
  for (const command of ['up', 'down', 'status']) {
    assertHelp(tsx('hack/cluster/cli.ts', [command, '--help']), `hack/cluster.sh ${command}`);
    assertUsageError(
      tsx('hack/cluster/cli.ts', [command, '--bogus']),
      `hack/cluster.sh ${command}`,
      'unknown option --bogus',
    );
  }
  assertHelp(tsx('hack/cluster/cli.ts', ['--help']), 'hack/cluster.sh');
  assertUsageError(
    tsx('hack/cluster/cli.ts', ['up', '--nodes', 'x']),
    'hack/cluster.sh up',
    '--nodes: expected a non-negative integer, got x',
  );
  for (const command of ['autoscaler', 'reclaimer']) {
    const name = `hack/simulators/cli.ts ${command}`;
    assertHelp(tsx('hack/simulators/cli.ts', [command, '--help']), name);
    assertUsageError(tsx('hack/simulators/cli.ts', [command, '--bogus']), name, 'unknown option --bogus');
    assertUsageError(
      tsx('hack/simulators/cli.ts', [command]),
      name,
      'missing --kubeconfig FILE (or $KUBECONFIG)',
    );
  }
});

test('npm test, npm run bench and the node agent: the same --help and the same mistakes', () => {
  assertHelp(tsx('test/run.ts', ['--help']), 'npm test');
  assertUsageError(tsx('test/run.ts', ['--bogus']), 'npm test', 'unknown option --bogus');
  assertHelp(tsx('test/bench/run.ts', ['--help']), 'npm run bench');
  assertUsageError(tsx('test/bench/run.ts', ['--child']), 'npm run bench', '--child needs a value (FILE)');
  const agent = 'node --import tsx hack/node-agent/main.ts';
  assertHelp(tsx('hack/node-agent/main.ts', ['--help']), agent);
  assertUsageError(tsx('hack/node-agent/main.ts', []), agent, 'missing CONFIG.json');
});

test('npm start (hack/start.mjs, plain JavaScript): the same --help and the same mistakes', () => {
  assertHelp(node([join(root, 'hack/start.mjs'), '--help']), 'npm start');
  assertUsageError(node([join(root, 'hack/start.mjs'), '--bogus']), 'npm start', 'unknown option --bogus');
  assertUsageError(
    node([join(root, 'hack/start.mjs'), '--workers', 'x']),
    'npm start',
    '--workers needs a positive number, got x',
  );
});

test('the exit code of tensile run: failures first, then 128 + the signal that interrupted it, then the outcome', () => {
  const cases: [Parameters<typeof runExitCode>[0], number][] = [
    [{ unexpectedCodes: [], interruptedBy: undefined, status: 'completed' }, 0],
    [{ unexpectedCodes: [], interruptedBy: undefined, status: 'stopped' }, 0],
    [{ unexpectedCodes: [], interruptedBy: 'SIGINT', status: 'stopped' }, 130],
    [{ unexpectedCodes: [], interruptedBy: 'SIGTERM', status: 'stopped' }, 143],
    [{ unexpectedCodes: [], interruptedBy: 'SIGINT', status: undefined }, 130],
    [{ unexpectedCodes: [1], interruptedBy: 'SIGINT', status: 'stopped' }, 1],
    [{ unexpectedCodes: [1, 2], interruptedBy: undefined, status: undefined }, 2],
    [{ unexpectedCodes: [], interruptedBy: undefined, status: undefined }, 1],
  ];
  for (const [outcome, code] of cases) assert.is(runExitCode(outcome), code, JSON.stringify(outcome));
});

test('a failed worker is replaced within backoffLimit; a terminal one ends the run when too few are left', () => {
  const base = {
    worker: 'job-worker-1',
    signal: null,
    error: 'bad input',
    minReplicas: 2,
    failures: 1,
    backoffLimit: 6,
  } as const;
  const cases: [
    Partial<Parameters<typeof exitOutcome>[0]> & { code: number | null; left: number },
    ExitOutcome['action'],
    RegExp?,
  ][] = [
    // A terminal failure with enough left: they re-form without it.
    [{ code: 2, left: 2 }, 'continue'],
    // Nobody left to wait: the run ends by itself.
    [{ code: 2, left: 0 }, 'continue'],
    // Finished cleanly: not a failure.
    [{ code: 0, left: 1 }, 'continue'],
    [
      { code: 2, left: 1 },
      'end',
      /^job-worker-1 failed terminally \(exit code 2: a restart cannot fix it\): bad input; 1 worker\(s\) left, fewer than the 2 a world needs \(spec\.minReplicas\): stopping the run$/,
    ],
    // Not terminal: replaced, whether others are left or not, up to the limit.
    [
      { code: 1, left: 1, error: undefined },
      'replace',
      /^job-worker-1 failed \(exit code 1\); starting a replacement \(failure 1 of the 6 spec\.runPolicy\.backoffLimit tolerates\)$/,
    ],
    [{ code: 1, left: 3, failures: 6 }, 'replace'],
    [
      { code: null, signal: 'SIGKILL', left: 0 },
      'replace',
      /^job-worker-1 was killed by SIGKILL: bad input; starting/,
    ],
    [
      { code: 1, left: 3, failures: 7 },
      'end',
      /; 7 failures, more than the 6 spec\.runPolicy\.backoffLimit tolerates: stopping the run$/,
    ],
    [{ code: 137, left: 1, failures: 1, backoffLimit: 0 }, 'end'],
  ];
  for (const [failure, action, message] of cases) {
    const outcome = exitOutcome({ ...base, ...failure });
    assert.is(outcome.action, action, JSON.stringify(failure));
    if (message !== undefined && outcome.action !== 'continue')
      assert.match(outcome.message, message, JSON.stringify(failure));
  }
});

test('parseCommand: --help wins over mistakes, -- ends the options, - is an argument, repeated values', () => {
  assert.equal(parseCommand(RUN_COMMAND, ['--bogus', '--help']), { help: true });
  const parsed = parseCommand(RUN_COMMAND, ['-', '--out=o', '--', '--workers']);
  assert.equal(parsed, { help: false, values: { out: 'o' }, positionals: ['-', '--workers'] });
  const multiple = parseCommand(
    {
      command: 'x',
      synopsis: '',
      description: '',
      options: { tag: { type: 'string', multiple: true, help: '' } },
    },
    ['--tag', 'a', '--tag=b'],
  );
  assert.equal(multiple, { help: false, values: { tag: ['a', 'b'] }, positionals: [] });
  // Continuation lines of an option's help line up under its first line.
  const help = formatHelp(RUN_COMMAND).split('\n');
  const at = help.findIndex((l) => l.startsWith('  --workers N'));
  assert.is(help[at + 1]?.search(/\S/), help[at]?.indexOf('worker processes'));
});

test.run();
