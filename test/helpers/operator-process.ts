/** Runs `tensile operator` as a real child process for integration tests, and reads its JSON log. */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../operator/bin/tensile.mjs', import.meta.url));

export interface OperatorProcess extends AsyncDisposable {
  readonly id: string;
  readonly child: ChildProcess;
  readonly log: Record<string, unknown>[];
  readonly file: string;
  /** The port of /healthz, /readyz and /metrics. */
  port(): Promise<number>;
  /** Resolves when a log line matches. */
  waitFor(
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  kill(signal: NodeJS.Signals): Promise<number | null>;
}

export interface OperatorLaunch {
  /** A different entry point, e.g. the compiled dist/operator/main.js. */
  readonly entry?: string;
  readonly env?: NodeJS.ProcessEnv;
}

export function startOperator(id: string, args: string[], launch: OperatorLaunch = {}): OperatorProcess {
  const child = spawn(
    process.execPath,
    [launch.entry ?? bin, 'operator', '--id', id, '--http-port', '0', ...args],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...launch.env },
    },
  );
  const log: Record<string, unknown>[] = [];
  /** Every line also goes to a file, for reading after a failed run. */
  const file = join(tmpdir(), `tensile-operator-${id}-${process.pid}.log`);
  const listeners = new Set<(line: Record<string, unknown>) => void>();
  let buffer = '';
  const onText = (text: string) => {
    buffer += text;
    let newline = buffer.indexOf('\n');
    while (newline >= 0) {
      const raw = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
      appendFileSync(file, `${raw}\n`);
      try {
        const line = JSON.parse(raw) as Record<string, unknown>;
        log.push(line);
        for (const listener of listeners) listener(line);
      } catch {
        if (process.env['TENSILE_TEST_VERBOSE']) process.stderr.write(`[${id}] ${raw}\n`);
      }
    }
  };
  child.stdout?.on('data', (chunk: Buffer) => onText(chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(`[${id} stderr] ${chunk.toString()}`));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const waitFor = (predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 30_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const found = log.find(predicate);
      if (found !== undefined) return resolve(found);
      const timer = setTimeout(() => {
        listeners.delete(listener);
        reject(new Error(`operator ${id}: no matching log line within ${timeoutMs} ms`));
      }, timeoutMs);
      const listener = (line: Record<string, unknown>) => {
        if (!predicate(line)) return;
        clearTimeout(timer);
        listeners.delete(listener);
        resolve(line);
      };
      listeners.add(listener);
    });
  return {
    id,
    child,
    log,
    file,
    waitFor,
    async port() {
      const line = await waitFor(
        (l) => typeof l['port'] === 'number' && String(l['message']).includes('/metrics'),
      );
      return line['port'] as number;
    },
    async kill(signal) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    async [Symbol.asyncDispose]() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
