/**
 * tfjs-node's own test suite against the addon hack/install-tensorflow.sh built on libtensorflow
 * 2.21: the package's specs and tfjs-core's op suites (tfjs-node-specs-runner.ts), once as the
 * package ships and once with the project's corrections, every failure classified:
 *  - missing fixture: the spec reads test_objects/, which the npm tarball does not ship;
 *  - known change, fixed: fails without worker/backend/tensorflow-fixes.ts, passes with it;
 *  - unexplained: anything else (expected to be none).
 * jasmine (and the specs' helpers tmp and node-fetch), devDependencies of tfjs-node, are installed
 * into ${TENSILE_CACHE:-~/.cache/tensile}/tfjs-node-specs, never into the project.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HELPERS = ['jasmine@4.2.1', 'tmp@0.0.33', 'node-fetch@2.6.13'];
const prefix = join(process.env['TENSILE_CACHE'] ?? join(homedir(), '.cache', 'tensile'), 'tfjs-node-specs');
const runner = fileURLToPath(new URL('./tfjs-node-specs-runner.ts', import.meta.url));

interface Outcome {
  name: string;
  status: string;
  message?: string;
}

function ensureHelpers(): void {
  if (existsSync(join(prefix, 'node_modules', 'jasmine', 'package.json'))) return;
  mkdirSync(prefix, { recursive: true });
  if (!existsSync(join(prefix, 'package.json')))
    writeFileSync(join(prefix, 'package.json'), '{"private":true}\n');
  const npm = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--prefix', prefix, ...HELPERS], {
    stdio: 'inherit',
  });
  if (npm.status !== 0) throw new Error(`npm install --prefix ${prefix} ${HELPERS.join(' ')} failed`);
}

function runSpecs(fixes: boolean): { outcomes: Outcome[]; ignored: number; seconds: number } {
  const out = join(mkdtempSync(join(tmpdir(), 'tfjs-node-specs-')), 'results.json');
  const started = performance.now();
  const child = spawnSync(process.execPath, ['--import', 'tsx', runner, out], {
    encoding: 'utf8',
    env: {
      ...process.env,
      NODE_PATH: join(prefix, 'node_modules'),
      TF_CPP_MIN_LOG_LEVEL: '2',
      TENSILE_TF_FIXES: fixes ? '1' : '0',
    },
    timeout: 15 * 60_000,
  });
  if (child.status !== 0 || !existsSync(out))
    throw new Error(
      `the spec runner failed (exit ${child.status}); is tfjs-node built? bash hack/install-tensorflow.sh\n${child.stderr.slice(-3000)}`,
    );
  const parsed = JSON.parse(readFileSync(out, 'utf8')) as { ignoreListEntries: number; results: Outcome[] };
  return {
    outcomes: parsed.results,
    ignored: parsed.ignoreListEntries,
    seconds: (performance.now() - started) / 1000,
  };
}

const count = (outcomes: Outcome[], status: string) => outcomes.filter((o) => o.status === status).length;

export default async function bench(): Promise<object> {
  ensureHelpers();
  const shipped = runSpecs(false);
  const fixed = runSpecs(true);
  const failedWith = new Map(fixed.outcomes.filter((o) => o.status === 'failed').map((o) => [o.name, o]));
  const missingFixture = [...failedWith.values()].filter((o) => /test_objects/.test(o.message ?? ''));
  const unexplained = [...failedWith.values()].filter((o) => !/test_objects/.test(o.message ?? ''));
  const knownChanges = shipped.outcomes.filter((o) => o.status === 'failed' && !failedWith.has(o.name));
  const ran = fixed.outcomes.length - count(fixed.outcomes, 'excluded');
  return {
    figures: {
      passRateWithFixes: Math.round((count(fixed.outcomes, 'passed') / ran) * 10_000) / 10_000,
      unexplainedFailures: unexplained.length,
    },
    targets: { unexplainedFailures: 0 },
    measured: {
      specsRun: ran,
      excludedByUpstreamIgnoreList: count(fixed.outcomes, 'excluded'),
      upstreamIgnoreListEntries: fixed.ignored,
      pending: count(fixed.outcomes, 'pending'),
      asShipped: { passed: count(shipped.outcomes, 'passed'), failed: count(shipped.outcomes, 'failed') },
      withFixes: { passed: count(fixed.outcomes, 'passed'), failed: count(fixed.outcomes, 'failed') },
      seconds: { asShipped: Math.round(shipped.seconds), withFixes: Math.round(fixed.seconds) },
      failures: {
        missingFixture: {
          count: missingFixture.length,
          why: 'reads test_objects/ (images, SavedModels), which the npm tarball does not ship',
          suites: [...new Set(missingFixture.map((o) => o.name.split(' ').slice(0, 2).join(' ')))],
        },
        knownChangeFixed: knownChanges.map((o) => ({ spec: o.name, asShipped: o.message })),
        unexplained: unexplained.map((o) => ({ spec: o.name, message: o.message })),
      },
    },
  };
}
