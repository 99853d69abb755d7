/**
 * The container images ship `tsc -p operator/tsconfig.build.json` output (operator/Dockerfile,
 * worker/Dockerfile*). With no container engine here, this builds that output and runs it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('../..', import.meta.url));
const out = mkdtempSync(join(tmpdir(), 'tensile-build-'));

test.after(() => rmSync(out, { recursive: true, force: true }));

test('the image build compiles without errors', () => {
  const tsc = join(root, 'node_modules', '.bin', 'tsc');
  const r = spawnSync(tsc, ['-p', join(root, 'operator', 'tsconfig.build.json'), '--outDir', out], {
    encoding: 'utf8',
  });
  assert.is(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.ok(existsSync(join(out, 'operator', 'main.js')));
});

test('the compiled entry point runs: tensile validate, as the images run it', () => {
  // The image layout: package.json (ESM) and node_modules beside dist/.
  copyFileSync(join(root, 'package.json'), join(out, 'package.json'));
  symlinkSync(join(root, 'node_modules'), join(out, 'node_modules'));
  const stdout = execFileSync(
    process.execPath,
    [join(out, 'operator', 'main.js'), 'validate', join(root, 'examples', 'minimal.yaml')],
    {
      encoding: 'utf8',
    },
  );
  assert.match(stdout, 'minimal: valid');
  const help = spawnSync(process.execPath, [join(out, 'operator', 'main.js'), 'operator', '--help'], {
    encoding: 'utf8',
  });
  assert.is(help.status, 0);
  assert.match(help.stdout, 'usage: tensile operator');
});

test.run();
