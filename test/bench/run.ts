/**
 * `npm run bench [-- filter...]`: runs every test/bench/*.bench.ts whose name contains all filters,
 * each in its own process (backends and kernels are process-wide), prints one JSON document with
 * every result and writes each to `${TENSILE_BENCH_OUT:-$TMPDIR/tensile-bench}/<name>.json`.
 *
 * A bench file default-exports `async () => object`: figures, each a ratio to a baseline measured in
 * the same run (never an absolute time checked against a constant), plus the raw measurements.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type CommandSpec, commandLine } from '../../operator/commands/args.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const MARKER = '@@tensile-bench-result@@';

async function child(file: string): Promise<void> {
  const module = (await import(pathToFileURL(file).href)) as { default?: () => Promise<unknown> };
  if (typeof module.default !== 'function') throw new Error(`${file} must default-export an async function`);
  const result = await module.default();
  process.stdout.write(`\n${MARKER}${JSON.stringify(result)}\n`);
}

function runOne(
  file: string,
): Promise<{ name: string; ok: boolean; seconds: number; result?: unknown; error?: string }> {
  const name = basename(file).replace(/\.bench\.ts$/, '');
  const started = performance.now();
  return new Promise((resolve) => {
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', file],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    proc.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    proc.on('close', (code) => {
      const seconds = Math.round((performance.now() - started) / 100) / 10;
      const line = out.split('\n').find((l) => l.startsWith(MARKER));
      if (code !== 0 || line === undefined) {
        resolve({
          name,
          ok: false,
          seconds,
          error: `exit ${code}: ${out.trim().split('\n').slice(-5).join(' | ')}`,
        });
        return;
      }
      resolve({ name, ok: true, seconds, result: JSON.parse(line.slice(MARKER.length)) });
    });
  });
}

const BENCH_COMMAND = {
  command: 'npm run bench',
  synopsis: '-- [FILTER...]',
  description: `Runs every test/bench/*.bench.ts whose name contains every FILTER, each in its own process, and
prints one JSON document with every result (also written to $TENSILE_BENCH_OUT, default
$TMPDIR/tensile-bench).`,
  options: {
    child: {
      type: 'string',
      value: 'FILE',
      help: 'run the one bench FILE in this process (how each is started)',
    },
  },
  positionals: true,
  helpHint: 'npm run bench -- --help',
} as const satisfies CommandSpec;

async function main(): Promise<number> {
  const line = commandLine(
    BENCH_COMMAND,
    process.argv.slice(2),
    { out: console.log, err: console.error },
    (values, filters) => ({ child: values.child, filters }),
  );
  if ('exit' in line) return line.exit;
  const { child: only, filters: args } = line.parsed;
  if (only !== undefined) {
    await child(only);
    return 0;
  }
  const files = readdirSync(here)
    .filter((f) => f.endsWith('.bench.ts'))
    .filter((f) => args.every((needle) => f.includes(needle)))
    .sort()
    .map((f) => join(here, f));
  if (files.length === 0) {
    process.stderr.write(`no benchmark matches ${args.join(' ')}\n`);
    return 1;
  }
  const outDir = process.env['TENSILE_BENCH_OUT'] ?? join(process.env['TMPDIR'] ?? tmpdir(), 'tensile-bench');
  mkdirSync(outDir, { recursive: true });
  const results = [];
  for (const file of files) {
    process.stderr.write(`bench ${basename(file)} …\n`);
    const outcome = await runOne(file);
    const record = { ...outcome, time: new Date().toISOString() };
    writeFileSync(join(outDir, `${outcome.name}.json`), `${JSON.stringify(record, null, 2)}\n`);
    process.stderr.write(
      `bench ${outcome.name}: ${outcome.ok ? 'ok' : `FAILED ${outcome.error}`} (${outcome.seconds} s)\n`,
    );
    results.push(record);
  }
  process.stdout.write(`${JSON.stringify({ outDir, results }, null, 2)}\n`);
  return results.every((r) => r.ok) ? 0 : 1;
}

process.exitCode = await main();
