/**
 * A real S3-compatible server for a test: tensile-s3 (gofakes3, in memory), built by
 * hack/install-tools.sh, listening on a free loopback port; stopped (and its data gone) on dispose.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { toolDirs } from '../../hack/cluster/tools.ts';

export interface S3Server extends AsyncDisposable {
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
}

export function s3Binary(): string {
  for (const dir of toolDirs()) {
    const candidate = join(dir, 'tensile-s3');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new Error('tensile-s3 is missing; build it with: bash hack/install-tools.sh');
}

export async function startS3Server(): Promise<S3Server> {
  const child: ChildProcess = spawn(s3Binary(), ['-addr', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /listening on (\S+)/.exec(out);
      if (match?.[1] !== undefined) resolve(`http://${match[1]}`);
    });
    child.once('exit', (code) => reject(new Error(`tensile-s3 exited (${code}): ${stderr}`)));
    child.once('error', reject);
  });
  return {
    endpoint,
    async [Symbol.asyncDispose]() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
