/**
 * `npm test`: installs the test tools (hack/install-tools.sh, cached outside the checkout) and the
 * native TensorFlow backend (hack/install-tensorflow.sh: the training tests run on it), runs the
 * linter and the type checker, then every test file in its own process, and ends with
 * `N passed, N failed`. A file fails when it exits non-zero, runs no test, skips one, or reports fewer
 * passes than tests (uvu exits 0 when a `before` hook throws, so the counts are checked, not the code).
 *
 *   npm test                      everything
 *   npm test -- unit              only files whose path contains "unit"
 *   npm test -- --no-tools        skip hack/install-tools.sh (when you know the tools are there)
 *   npm test -- --no-tensorflow   skip hack/install-tensorflow.sh (a warm run takes well under a second)
 */
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CommandSpec, commandLine } from '../operator/commands/args.ts';

const TEST_COMMAND = {
  command: 'npm test',
  synopsis: '-- [options] [FILTER...]',
  description: `Installs the test tools, runs the linter and the type checker, then every test file (those whose
path contains every FILTER) in its own process, and ends with \`N passed, N failed\`.`,
  options: {
    'no-tools': { type: 'boolean', help: 'skip hack/install-tools.sh (when you know the tools are there)' },
    'no-static': { type: 'boolean', help: 'skip the linter and the type checker' },
    'no-tensorflow': {
      type: 'boolean',
      help: 'skip hack/install-tensorflow.sh (training tests then fall back to wasm)',
    },
  },
  positionals: true,
  helpHint: 'npm test -- --help',
} as const satisfies CommandSpec;

const root = fileURLToPath(new URL('..', import.meta.url));
const line = commandLine(
  TEST_COMMAND,
  process.argv.slice(2),
  { out: console.log, err: console.error },
  (values, filters) => ({
    skipTools: values['no-tools'] === true,
    skipStatic: values['no-static'] === true,
    skipTensorflow: values['no-tensorflow'] === true,
    filters,
  }),
);
if ('exit' in line) process.exit(line.exit);
const { skipTools, skipStatic, skipTensorflow, filters } = line.parsed;

interface Outcome {
  readonly name: string;
  readonly passed: number;
  readonly failed: number;
  readonly seconds: number;
  readonly output: string;
  readonly problem?: string;
}

function run(
  name: string,
  command: string,
  commandArgs: string[],
  options: { timeoutMs: number; env?: NodeJS.ProcessEnv } = { timeoutMs: 600_000 },
): Promise<{ code: number | null; output: string; seconds: number; timedOut: boolean }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(command, commandArgs, {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // The whole process group: a test's servers must not outlive it.
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    }, options.timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // Group already gone: nothing left behind.
        }
      }
      resolve({ code, output, seconds: (performance.now() - started) / 1000, timedOut });
      void name;
    });
  });
}

function findTests(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...findTests(path));
    else if (entry.endsWith('.test.ts')) out.push(path);
  }
  return out.sort();
}

/** Tests that start a control plane or many processes; they run one at a time, after the rest. */
function isHeavy(file: string): boolean {
  return /\/(integration|e2e)\//.test(file);
}

function parseUvu(output: string): { total: number; passed: number; skipped: number } | undefined {
  const total = /Total:\s+(\d+)/.exec(output);
  const passed = /Passed:\s+(\d+)/.exec(output);
  const skipped = /Skipped:\s+(\d+)/.exec(output);
  if (total?.[1] === undefined || passed?.[1] === undefined) return undefined;
  return { total: Number(total[1]), passed: Number(passed[1]), skipped: Number(skipped?.[1] ?? 0) };
}

async function runTestFile(file: string): Promise<Outcome> {
  const name = relative(root, file);
  // A safety net, never a verdict on speed: the longest heavy file (real-node, ~4 min when it
  // rebuilds the images; chaos ~150 s, the e2e ~90 s on 2026-12-01) gets over 3× that. The waits of
  // test/helpers/tensile-run.ts end a hung run sooner, with its workers' last log lines.
  const timeoutMs = isHeavy(file) ? 15 * 60_000 : 10 * 60_000;
  const result = await run(name, process.execPath, ['--import', 'tsx', file], { timeoutMs });
  const counts = parseUvu(result.output);
  const base = { name, seconds: result.seconds, output: result.output };
  if (result.timedOut)
    return { ...base, passed: 0, failed: 1, problem: `timed out after ${timeoutMs / 1000} s` };
  if (counts === undefined)
    return { ...base, passed: 0, failed: 1, problem: `no uvu summary (exit ${result.code})` };
  const failed = counts.total - counts.passed;
  if (counts.total === 0) return { ...base, passed: 0, failed: 1, problem: 'ran no test' };
  if (counts.skipped > 0)
    return {
      ...base,
      passed: counts.passed,
      failed: Math.max(1, failed),
      problem: `${counts.skipped} skipped`,
    };
  if (result.code !== 0 && failed === 0)
    return {
      ...base,
      passed: counts.passed,
      failed: 1,
      problem: `exit code ${result.code} after all tests passed`,
    };
  return failed > 0
    ? { ...base, passed: counts.passed, failed, problem: `${failed} failed` }
    : { ...base, passed: counts.passed, failed: 0 };
}

async function runCheck(
  name: string,
  command: string,
  commandArgs: string[],
  timeoutMs = 900_000,
): Promise<Outcome> {
  const result = await run(name, command, commandArgs, { timeoutMs });
  const ok = result.code === 0;
  return {
    name,
    passed: ok ? 1 : 0,
    failed: ok ? 0 : 1,
    seconds: result.seconds,
    output: result.output,
    ...(ok ? {} : { problem: result.timedOut ? 'timed out' : `exit code ${result.code}` }),
  };
}

function report(outcome: Outcome): void {
  const mark = outcome.failed === 0 ? 'ok  ' : 'FAIL';
  const counts =
    outcome.failed === 0 ? `${outcome.passed} passed` : `${outcome.passed} passed, ${outcome.problem}`;
  console.log(`${mark} ${outcome.name}  ${counts}  (${outcome.seconds.toFixed(1)} s)`);
  // An end-to-end run's figures (accuracy against its reference, lost time against its budgets) are
  // what it is for: shown when it passes too.
  if (outcome.failed > 0 || /(^|\/)e2e\//.test(outcome.name)) {
    const tail = outcome.output.split('\n').slice(-120).join('\n');
    console.log(tail.replace(/^/gm, '     | '));
  }
}

async function pool<T, R>(items: T[], size: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(size, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        const item = items[index] as T;
        results[index] = await work(item);
      }
    }),
  );
  return results;
}

async function main(): Promise<number> {
  const outcomes: Outcome[] = [];
  const record = (outcome: Outcome) => {
    report(outcome);
    outcomes.push(outcome);
  };
  if (!skipTools) {
    console.log('tools: hack/install-tools.sh (cached in ~/.cache/tensile; the first run builds Kubernetes)');
    const tools = await run('tools', 'bash', ['hack/install-tools.sh'], { timeoutMs: 75 * 60_000 });
    process.stdout.write(tools.output.split('\n').slice(-15).join('\n'));
    if (tools.code !== 0) {
      record({
        name: 'hack/install-tools.sh',
        passed: 0,
        failed: 1,
        seconds: tools.seconds,
        output: '',
        problem: `exit code ${tools.code}`,
      });
    }
  }
  if (!skipTensorflow) {
    const native = await run('tensorflow', 'bash', ['hack/install-tensorflow.sh'], {
      timeoutMs: 30 * 60_000,
    });
    process.stdout.write(native.output.split('\n').slice(-8).join('\n'));
    if (native.code !== 0) {
      record({
        name: 'hack/install-tensorflow.sh',
        passed: 0,
        failed: 1,
        seconds: native.seconds,
        output: native.output,
        problem: `exit code ${native.code}`,
      });
    }
  }
  if (!skipStatic && filters.length === 0) {
    const bin = join(root, 'node_modules', '.bin');
    const [lint, types] = await Promise.all([
      runCheck('lint (biome check)', join(bin, 'biome'), ['check', '.']),
      runCheck('typecheck (tsc --noEmit)', join(bin, 'tsc'), ['--noEmit', '-p', '.']),
    ]);
    record(lint);
    record(types);
  }
  const files = findTests(join(root, 'test')).filter((f) => filters.every((needle) => f.includes(needle)));
  const light = files.filter((f) => !isHeavy(f));
  const heavy = files.filter(isHeavy);
  const width = Math.max(1, Math.min(2, cpus().length));
  await pool(light, width, async (file) => record(await runTestFile(file)));
  await pool(heavy, 1, async (file) => record(await runTestFile(file)));
  const passed = outcomes.reduce((sum, o) => sum + o.passed, 0);
  const failed = outcomes.reduce((sum, o) => sum + o.failed, 0);
  const failedFiles = outcomes.filter((o) => o.failed > 0).map((o) => o.name);
  if (failedFiles.length > 0) console.log(`\nfailed: ${failedFiles.join(', ')}`);
  if (files.length === 0) console.log('no test file matched');
  console.log(`\n${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

process.exitCode = await main();
