/**
 * A real S3-compatible server for a test: tensile-s3 (gofakes3, in memory), built by
 * hack/install-tools.sh, listening on a free loopback port; stopped (and its data gone) on dispose.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { toolDirs } from '../../hack/cluster/tools.ts';

/** The server accepts any key; the SDK only needs one to sign with. For workers' environments. */
export const S3_TEST_CREDENTIALS = {
  AWS_ACCESS_KEY_ID: 'tensile-test',
  AWS_SECRET_ACCESS_KEY: 'tensile-test',
};

/** Creates `bucket` and uploads every file of `folder` under `prefix/`. */
export async function uploadFolder(
  client: S3Client,
  bucket: string,
  prefix: string,
  folder: string,
): Promise<void> {
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  for (const name of readdirSync(folder))
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: `${prefix}/${name}`,
        Body: readFileSync(join(folder, name)),
      }),
    );
}

/** An SDK client of the test server (path-style, as any S3-compatible server at an endpoint). */
export function s3TestClient(server: S3Server): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: 'tensile-test', secretAccessKey: 'tensile-test' },
  });
}

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
