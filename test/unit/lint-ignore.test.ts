/**
 * `npm test` lints with `biome check .`; what `npm start` and the builds leave in the checkout
 * (.tensile/runs, dist/) is git-ignored and must not fail it. Runs the repository's biome.json and
 * .gitignore on a scratch git checkout, so that the verdict depends on the ignore rules alone.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('../..', import.meta.url));
const biome = join(root, 'node_modules', '.bin', 'biome');
const dir = mkdtempSync(join(tmpdir(), 'tensile-lint-'));

test.after(() => rmSync(dir, { recursive: true, force: true }));

// Both fail `biome check` wherever they are linted: wrong indentation, double quotes, one line.
const BAD_TS = 'export const   x = {a:"1",\n      b : 2}\n';
const BAD_JSON = '{"status":"completed",\n        "epochs":[ 1,2 ]}\n';

function write(path: string, text: string): string {
  const file = join(dir, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

function check(): { code: number | null; output: string } {
  const r = spawnSync(biome, ['check', '.'], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

test.before(() => {
  copyFileSync(join(root, 'biome.json'), join(dir, 'biome.json'));
  copyFileSync(join(root, '.gitignore'), join(dir, '.gitignore'));
  const git = spawnSync('git', ['init', '--quiet', dir], { encoding: 'utf8' });
  assert.is(git.status, 0, git.stderr);
  write('src/good.ts', "export const x = { a: '1', b: 2 };\n");
});

test('run output and build output (git-ignored) are not linted', () => {
  write('.tensile/runs/demo/summary.json', BAD_JSON);
  write('.tensile/runs/demo/events.ts', BAD_TS);
  write('dist/operator/main.ts', BAD_TS);
  write('coverage/lcov.json', BAD_JSON);
  const r = check();
  assert.is(r.code, 0, r.output);
});

test('the same files outside the ignored folders are linted and fail', () => {
  const ts = write('src/bad.ts', BAD_TS);
  const json = write('src/bad.json', BAD_JSON);
  const r = check();
  assert.is(r.code, 1, r.output);
  assert.match(r.output, 'src/bad.ts');
  assert.match(r.output, 'src/bad.json');
  assert.not.match(r.output, '.tensile');
  assert.not.match(r.output, 'dist/');
  rmSync(ts);
  rmSync(json);
});

test.run();
