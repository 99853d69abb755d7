/**
 * Starts a nats-server with JetStream on loopback for `tensile run` and for tests, and cleans up after
 * itself. The port is chosen by the server (`-p -1`) and read from its log, so two runs never collide;
 * `restart()` brings the server back on the same port with the same store (for reconnect tests).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TensileError } from '../api/errors.ts';

export class NatsServerError extends TensileError {
  override readonly name = 'NatsServerError';
  readonly classification = 'retryable';
}

export interface NatsServer extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  /**
   * Kills the server (SIGKILL) and starts it again on the same port and store, after `down`
   * milliseconds or once `down` settles (a test keeps it down until it has seen the outage).
   */
  restart(down?: number | PromiseLike<unknown>): Promise<void>;
  stop(): Promise<void>;
}

export const NATS_INSTALL_HINT =
  'install it with: sudo apt-get install -y nats-server (or bash hack/install-tools.sh)';

export function natsServerBinary(): string {
  const override = process.env['TENSILE_NATS_SERVER'];
  if (override !== undefined && override !== '') return override;
  const found = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  if (found.status !== 0 || path === '')
    throw new NatsServerError(`nats-server not found on PATH; ${NATS_INSTALL_HINT}`);
  return path;
}

function launch(
  binary: string,
  port: number,
  storeDir: string,
  configFile?: string,
): Promise<{ child: ChildProcess; port: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      binary,
      [
        ...(configFile === undefined ? [] : ['-c', configFile]),
        ...['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir, '--server_name', 'tensile-local'],
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let log = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new NatsServerError(`nats-server did not become ready in 15 s:\n${log.slice(-2000)}`));
    }, 15_000);
    child.stderr?.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      const listening = /Listening for client connections on [^:\s]+:(\d+)/.exec(log);
      if (listening?.[1] !== undefined && /Server is ready/.test(log)) {
        clearTimeout(timer);
        child.stderr?.removeAllListeners('data');
        child.stderr?.resume();
        resolve({ child, port: Number(listening[1]) });
      }
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(
        new NatsServerError(`cannot start nats-server (${binary}): ${error.message}; ${NATS_INSTALL_HINT}`, {
          cause: error,
        }),
      );
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(
        new NatsServerError(`nats-server exited with code ${code} before it was ready:\n${log.slice(-2000)}`),
      );
    });
  });
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startNatsServer(
  /** `configFile`: a server configuration (authentication, say); the flags here take precedence. */
  options: { storeDir?: string; configFile?: string } = {},
): Promise<NatsServer> {
  const binary = natsServerBinary();
  const ownStore = options.storeDir === undefined;
  const storeDir = options.storeDir ?? mkdtempSync(join(tmpdir(), 'tensile-nats-'));
  let { child, port } = await launch(binary, -1, storeDir, options.configFile);
  const stop = async () => {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await waitExit(child);
    clearTimeout(timer);
  };
  const cleanup = () => child.kill('SIGKILL');
  process.once('exit', cleanup);
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    async restart(down = 0) {
      child.kill('SIGKILL');
      await waitExit(child);
      if (typeof down !== 'number') await down;
      else if (down > 0) await sleep(down);
      ({ child, port } = await launch(binary, port, storeDir, options.configFile));
    },
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
      process.removeListener('exit', cleanup);
      if (ownStore) rmSync(storeDir, { recursive: true, force: true });
    },
  };
}
