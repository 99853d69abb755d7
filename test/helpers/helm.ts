/** Runs the helm binary built by hack/install-tools.sh; a missing one says how to build it. */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { toolDirs } from '../../hack/cluster/tools.ts';

/** Kubernetes version helm assumes: a `go install`ed helm knows none and would assume 1.20. */
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
