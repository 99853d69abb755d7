/**
 * A real MongoDB-protocol server for a test: FerretDB (built by hack/install-tools.sh) on an SQLite
 * folder of its own, on free loopback ports, telemetry off; stopped and its folder removed on dispose.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { toolDirs } from '../../hack/cluster/tools.ts';
import { freePorts } from '../../hack/lib/processes.ts';
import { eventually } from './eventually.ts';

export interface MongoServer extends AsyncDisposable {
  /** mongodb://127.0.0.1:PORT */
  readonly url: string;
}

function ferretdbBinary(): string {
  for (const dir of toolDirs()) {
    const candidate = join(dir, 'ferretdb');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new Error('ferretdb is missing; build it with: bash hack/install-tools.sh');
}

export async function startMongoServer(): Promise<MongoServer> {
  const folder = mkdtempSync(join(tmpdir(), 'tensile-ferretdb-'));
  const [port, debugPort] = (await freePorts(2)) as [number, number];
  const child: ChildProcess = spawn(
    ferretdbBinary(),
    [
      '--handler=sqlite',
      `--sqlite-url=file:${folder}/`,
      `--state-dir=${folder}`,
      `--listen-addr=127.0.0.1:${port}`,
      `--debug-addr=127.0.0.1:${debugPort}`,
      '--telemetry=disable',
      '--test-telemetry-url=http://127.0.0.1:9/',
      '--log-level=ERROR',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const url = `mongodb://127.0.0.1:${port}`;
  await eventually(
    () =>
      `ferretdb on ${url} (${child.exitCode === null ? 'running' : `exited ${child.exitCode}`}: ${stderr.slice(-500)})`,
    async () => {
      if (child.exitCode !== null) throw new Error(`ferretdb exited: ${stderr}`);
      const client = new MongoClient(url, { serverSelectionTimeoutMS: 1000 });
      try {
        await client.db('admin').command({ ping: 1 });
        return true;
      } finally {
        await client.close();
      }
    },
    30_000,
  );
  return {
    url,
    async [Symbol.asyncDispose]() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(folder, { recursive: true, force: true });
    },
  };
}
