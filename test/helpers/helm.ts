/** Runs the helm binary built by hack/install-tools.sh; a missing one says how to build it. */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { toolDirs } from '../../hack/cluster/tools.ts';

/**
 * A Kubernetes version for tests that render as if for a given cluster. hack/install-tools.sh builds helm
 * with its own default (client-go's), so plain `helm template` works too (test/unit/helm-chart.test.ts).
 */
export const KUBE_VERSION = '1.36.3';

export function helmBinary(): string {
  for (const dir of toolDirs()) {
    const candidate = join(dir, 'helm');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new Error('helm is missing; build it with: bash hack/install-tools.sh');
}

export function helm(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      helmBinary(),
      args,
      { maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...env } },
      (error, stdout, stderr) => {
        resolve({
          code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1,
          stdout,
          stderr,
        });
      },
    );
  });
}
