/**
 * The import rules of the README ("Import rules"), enforced by biome.json's noRestrictedImports
 * overrides in `biome check .` (the lint step of `npm test`). Lints probe files with the repository's
 * biome.json in a scratch directory: each rule must reject the import it forbids and let the ones the
 * layout needs through, so a loosened or mistyped pattern fails here and not in review.
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
const dir = mkdtempSync(join(tmpdir(), 'tensile-imports-'));

test.after(() => rmSync(dir, { recursive: true, force: true }));

/** [file, import specifier, allowed] */
const PROBES: readonly (readonly [string, string, boolean])[] = [
  ['operator/api/probe-a.ts', './training-job.ts', true],
  ['operator/api/probe-b.ts', '../controller/plan.ts', false],
  ['operator/api/probe-c.ts', '../../worker/config.ts', false],
  ['operator/controller/probe-a.ts', '../api/worker-env.ts', true],
  ['operator/controller/probe-b.ts', '../../worker/config.ts', false],
  ['operator/controller/probe-c.ts', '../local-run/run.ts', false],
  ['operator/report/probe-a.ts', '../../worker/result.ts', false],
  ['operator/report/probe-b.ts', '../local-run/run.ts', false],
  ['operator/report/probe-c.ts', '../api/errors.ts', true],
  ['operator/commands/probe-a.ts', '../../worker/config.ts', true],
  ['operator/local-run/probe-a.ts', '../../worker/result.ts', true],
  ['operator/local-run/probe-b.ts', '../../hack/lib/processes.ts', false],
  ['worker/probe-a.ts', '../operator/api/contract.ts', true],
  ['worker/data/probe-b.ts', '../../operator/controller/plan.ts', false],
  ['worker/data/probe-c.ts', '../../operator/commands/args.ts', false],
  ['hack/node-agent/probe-a.ts', '../lib/processes.ts', true],
  ['hack/node-agent/probe-b.ts', '../cluster/launcher.ts', false],
  ['hack/cluster/probe-a.ts', '../node-agent/config.ts', true],
  ['hack/cluster/probe-b.ts', '../node-agent/pods.ts', false],
  ['hack/lib/probe-a.ts', '../cluster/launcher.ts', false],
];

function lint(): string {
  copyFileSync(join(root, 'biome.json'), join(dir, 'biome.json'));
  for (const [file, specifier] of PROBES) {
    const path = join(dir, file);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `import { x } from '${specifier}';\n\nexport const y = x;\n`);
  }
  const r = spawnSync(biome, ['lint', '--vcs-enabled=false', '--max-diagnostics=none', '.'], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  return `${r.stdout}${r.stderr}`;
}

test('each folder imports only what the README allows', () => {
  const output = lint();
  const rejected = new Set(
    [...output.matchAll(/^(\S+\.ts):\d+:\d+ lint\/style\/noRestrictedImports/gm)].map((m) => m[1]),
  );
  for (const [file, specifier, allowed] of PROBES) {
    assert.is(!rejected.has(file), allowed, `${file} importing ${specifier}:\n${output}`);
  }
});

test.run();
