/**
 * Runs @tensorflow/tfjs-node's own specs (dist/**\/*_test.js in the npm tarball) and tfjs-core's op
 * suites against the addon hack/install-tensorflow.sh built, the way the package's run_tests.js does
 * (its test environment and its IGNORE_LIST, read from that file), and writes every spec's outcome
 * to the JSON file given as argv[2]. With TENSILE_TF_FIXES=1 the project's corrections
 * (worker/backend/tensorflow-fixes.ts) are registered first.
 *
 * Run by tfjs-node-specs.bench.ts under tsx, which lets the CommonJS specs require tfjs-core's ES
 * module build, with NODE_PATH holding jasmine (a devDependency of tfjs-node, not of this project).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { applyTensorflowFixes } from '../../worker/backend/tensorflow-fixes.ts';

interface SpecResult {
  fullName: string;
  status: string;
  failedExpectations: { message: string }[];
}
interface JasmineRunner {
  loadConfig(config: object): void;
  addReporter(reporter: object): void;
  exitOnCompletion: boolean;
  execute(): Promise<unknown>;
  env: { configure(options: object): void };
}

const out = process.argv[2];
if (out === undefined) throw new Error('usage: tfjs-node-specs-runner.ts OUT.json');
const packageJson = createRequire(import.meta.url).resolve('@tensorflow/tfjs-node/package.json');
const packageDir = dirname(packageJson);
const require = createRequire(packageJson);

/** The package's own list of specs it does not run, from its run_tests.js. */
function upstreamIgnoreList(): string[] {
  const source = readFileSync(`${packageDir}/dist/run_tests.js`, 'utf8');
  const block = /var IGNORE_LIST = \[([\s\S]*?)\];/.exec(source)?.[1];
  if (block === undefined) throw new Error(`no IGNORE_LIST in ${packageDir}/dist/run_tests.js`);
  return [...block.matchAll(/^\s*'([^']*)',?\s*$/gm)].map((m) => m[1] as string);
}

require('./dist/index');
require('@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops');
require('@tensorflow/tfjs-core/dist/register_all_gradients');
const jasmineUtil = require('@tensorflow/tfjs-core/dist/jasmine_util') as {
  setTestEnvs(envs: object[]): void;
};
if (process.env['TENSILE_TF_FIXES'] === '1') applyTensorflowFixes();
jasmineUtil.setTestEnvs([
  { name: 'test-tensorflow', backendName: 'tensorflow', flags: {}, isDataSync: true },
]);

const Jasmine = require('jasmine') as new (options: object) => JasmineRunner;
const runner = new Jasmine({ projectBaseDir: packageDir });
runner.loadConfig({ spec_files: ['dist/**/*_test.js'], random: false, jsLoader: 'require' });
require('@tensorflow/tfjs-core/dist/tests');
const ignore = upstreamIgnoreList();
runner.env.configure({
  specFilter: (spec: { getFullName(): string }) =>
    !ignore.some((entry) => spec.getFullName().includes(entry)),
});
const results: { name: string; status: string; message?: string }[] = [];
runner.addReporter({
  specDone: (r: SpecResult) =>
    results.push({
      name: r.fullName,
      status: r.status,
      ...(r.status === 'failed' ? { message: r.failedExpectations[0]?.message.split('\n')[0] ?? '' } : {}),
    }),
});
runner.exitOnCompletion = false;
await runner.execute();
writeFileSync(out, JSON.stringify({ ignoreListEntries: ignore.length, results }));
process.exit(0);
