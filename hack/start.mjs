#!/usr/bin/env node
// `npm start`: the first ten minutes. Installs what the demo needs, then trains
// examples/fashion-mnist-mlp.yaml on this machine with elastic workers, a local nats-server and
// simulated spot reclaims, and writes a report. Plain JavaScript on purpose: it runs on a fresh clone
// before `npm install` has brought TypeScript tooling.
//
//   npm start                      2 workers, one reclaim with notice and one without, replacements
//   npm start -- --no-chaos        no reclaims
//   npm start -- --workers 3 --file other.yaml --out DIR
//
// Ctrl-C: the workers checkpoint and everything stops; `npm start` again resumes.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DATASET = '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz';

// Plain JavaScript cannot import operator/commands/args.ts (no tsx yet), so this repeats its shape and
// wording: the same --help layout, `npm start: unknown option --x` and the usage line.
const USAGE_LINE = 'usage: npm start -- [options]';
const HELP = `${USAGE_LINE}

Trains a TrainingJob (default examples/fashion-mnist-mlp.yaml) on this machine with elastic workers, a
local nats-server and simulated spot reclaims, and writes a report. Ctrl-C checkpoints and stops
(exit 130); npm start again resumes.

options:
  --no-chaos        no simulated reclaims
  --workers N       worker processes (default 2)
  --file MANIFEST   the TrainingJob to train (default examples/fashion-mnist-mlp.yaml)
  --out DIR         output directory (default .tensile/runs/demo)
  -h, --help        show this help`;

const OPTIONS = {
  'no-chaos': { type: 'boolean' },
  workers: { type: 'string', value: 'N' },
  file: { type: 'string', value: 'MANIFEST' },
  out: { type: 'string', value: 'DIR' },
  help: { type: 'boolean', short: 'h' },
};

function usageError(message) {
  console.error(`npm start: ${message}\n${USAGE_LINE} (npm start -- --help for more)`);
  process.exit(2);
}

function parse(argv) {
  const { tokens } = parseArgs({
    args: argv,
    options: OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help')) {
    console.log(HELP);
    process.exit(0);
  }
  const values = {};
  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') usageError(`unexpected argument ${token.value}`);
    const option = OPTIONS[token.name];
    if (option === undefined) usageError(`unknown option ${token.rawName}`);
    if (option.type === 'boolean') {
      if (token.value !== undefined) usageError(`${token.rawName} takes no value`);
      values[token.name] = true;
    } else {
      const needs = `${token.rawName} needs a value (${option.value})`;
      if (token.value === undefined || token.value === '') usageError(needs);
      if (!token.inlineValue && token.value.startsWith('-') && token.value !== '-')
        usageError(`${needs}, got the option ${token.value}`);
      values[token.name] = token.value;
    }
  }
  const workers = values.workers ?? '2';
  if (!/^\d+$/.test(workers) || Number(workers) < 1)
    usageError(`--workers needs a positive number, got ${workers}`);
  return {
    chaos: values['no-chaos'] !== true,
    workers: Number(workers),
    file: values.file ?? 'examples/fashion-mnist-mlp.yaml',
    out: values.out,
  };
}

function step(message) {
  console.log(`\n▶ ${message}`);
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  return result.status === 0;
}

function has(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/** nats-server and the Fashion-MNIST files come from Debian packages; install them where we can. */
function ensureSystemPackages() {
  const missing = [];
  if (!has('nats-server')) missing.push('nats-server');
  if (!existsSync(DATASET)) missing.push('dataset-fashion-mnist');
  if (missing.length === 0) return;
  const canApt = has('apt-get') && typeof process.getuid === 'function' && process.getuid() === 0;
  if (!canApt) {
    console.error(
      `npm start needs ${missing.join(' and ')}. On Debian or Ubuntu: sudo apt-get install -y ${missing.join(' ')}` +
        (missing.includes('nats-server')
          ? '\nElsewhere: install nats-server from https://nats.io and put it on PATH.'
          : ''),
    );
    process.exit(1);
  }
  step(`installing ${missing.join(', ')} with apt-get`);
  if (!run('apt-get', ['install', '-y', '--no-install-recommends', ...missing])) {
    if (
      !run('apt-get', ['update']) ||
      !run('apt-get', ['install', '-y', '--no-install-recommends', ...missing])
    ) {
      console.error(`npm start: apt-get could not install ${missing.join(' ')}`);
      process.exit(1);
    }
  }
}

/**
 * The native TensorFlow backend (libtensorflow from PyPI, the addon built here; cached in
 * ~/.cache/tensile, a warm run is instant). Without it the demo still trains, on wasm.
 */
function ensureNativeBackend() {
  step('native TensorFlow backend (hack/install-tensorflow.sh; the first run downloads ~275 MB from PyPI)');
  if (!run('bash', [join(root, 'hack/install-tensorflow.sh')]))
    console.warn('npm start: the native backend is not installed (see above); training runs on wasm instead');
}

const options = parse(process.argv.slice(2));
const started = Date.now();
if (!existsSync(join(root, 'node_modules', 'tsx'))) {
  step('installing npm packages (npm install)');
  if (!run('npm', ['install', '--no-audit', '--no-fund'])) process.exit(1);
}
ensureSystemPackages();
ensureNativeBackend();

// Two reclaims, as spot capacity does it: one node with notice (a graceful leave), one without
// (kill -9); each time the "autoscaler" brings a replacement worker a little later.
const chaos = options.chaos ? ['--chaos', 'leave:600,join:800,kill:1600,join:1800'] : [];
const out = options.out ?? join('.tensile', 'runs', 'demo');
step(
  `training ${options.file} with ${options.workers} workers${options.chaos ? ', with simulated spot reclaims (--no-chaos turns them off)' : ''}; Ctrl-C stops and checkpoints, npm start resumes`,
);
const child = spawn(
  process.execPath,
  [
    join(root, 'operator/bin/tensile.mjs'),
    'run',
    options.file,
    '--workers',
    String(options.workers),
    '--out',
    out,
    ...chaos,
  ],
  { cwd: root, stdio: 'inherit' },
);
// Ctrl-C reaches every process of the terminal's group; `tensile run` does the stopping, we wait.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => child.kill('SIGTERM'));
// tensile run's code is ours: 130 after Ctrl-C (128 + SIGINT), as shells report an interrupted command.
child.on('close', (code, signal) => {
  const minutes = ((Date.now() - started) / 60000).toFixed(1);
  const how = code === 0 ? 'finished' : code === 130 || code === 143 ? 'interrupted' : 'ended';
  console.log(`\nnpm start: ${how} after ${minutes} min`);
  process.exit(code ?? (signal === null ? 1 : 128 + (constants.signals[signal] ?? 0)));
});
