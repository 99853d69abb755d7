/**
 * Processes of a local cluster: each runs in its own process group and is recorded in a pid file under
 * `<state>/pids/`, so whoever stops the cluster (the test fixture, `hack/cluster.sh down`, the
 * watchdog) can kill every group it started, and only those: a pid file also records the process start
 * time, so a pid reused by an unrelated process after a reboot is never signalled.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export class ClusterProcessError extends Error {
  override readonly name = 'ClusterProcessError';
}

function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined when the pid is gone. */
export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.[19];
}

export function pidDir(stateDir: string): string {
  return join(stateDir, 'pids');
}

export interface PidRecord {
  readonly file: string;
  readonly pid: number;
  readonly startTime: string;
}

export function writePidFile(stateDir: string, name: string, pid: number): string {
  const dir = pidDir(stateDir);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.pid`);
  writeFileSync(file, `${pid} ${processStartTime(pid) ?? ''}\n`);
  return file;
}

export function readPidFiles(stateDir: string): PidRecord[] {
  let names: string[];
  try {
    names = readdirSync(pidDir(stateDir));
  } catch {
    return [];
  }
  const out: PidRecord[] = [];
  for (const name of names.filter((n) => n.endsWith('.pid'))) {
    const file = join(pidDir(stateDir), name);
    try {
      const [pid, startTime] = readFileSync(file, 'utf8').trim().split(' ');
      if (pid !== undefined && /^\d+$/.test(pid))
        out.push({ file, pid: Number(pid), startTime: startTime ?? '' });
    } catch {
      // Removed while we listed: that process has already been reaped.
    }
  }
  return out;
}

/** True when the recorded process still runs (same pid AND same start time). */
export function isAlive(record: Pick<PidRecord, 'pid' | 'startTime'>): boolean {
  const stat = procStat(record.pid);
  // A zombie has exited; only its parent's bookkeeping is left (PID 1 of a container may reap late).
  if (stat === undefined || stat[0] === 'Z') return false;
  return record.startTime === '' || stat[19] === record.startTime;
}

/** Signals the process group led by `pid`; false when there is no such group any more. */
export function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * True while a process of the group runs. Zombies do not count: an exited process whose parent (here
 * often PID 1 of a container, which reaps slowly) has not collected it yet is dead for our purposes.
 */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // After the command name: state, ppid, pgrp, …
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') return true;
    } catch {
      // Gone while we looked.
    }
  }
  return false;
}

/**
 * Stops the groups of the given records: `signal` first, SIGKILL for what is left after `graceMs`.
 * Records whose process is no longer the one recorded are skipped (their group may still hold children
 * of the original leader, which is why a group is checked, not only the leader).
 */
export async function stopGroups(
  records: readonly PidRecord[],
  options: { signal?: NodeJS.Signals; graceMs?: number } = {},
): Promise<void> {
  const signal = options.signal ?? 'SIGKILL';
  const ours = records.filter(
    (r) => isAlive(r) || (r.startTime !== '' && groupAlive(r.pid) && leaderGone(r)),
  );
  for (const r of ours) signalGroup(r.pid, signal);
  if (signal !== 'SIGKILL') {
    const deadline = Date.now() + (options.graceMs ?? 3000);
    while (Date.now() < deadline && ours.some((r) => groupAlive(r.pid))) await sleep(50);
    for (const r of ours) if (groupAlive(r.pid)) signalGroup(r.pid, 'SIGKILL');
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && ours.some((r) => groupAlive(r.pid))) await sleep(20);
  for (const r of records) rmSync(r.file, { force: true });
}

/** The leader exited but left members behind: the group id cannot have been reused while they live. */
function leaderGone(record: PidRecord): boolean {
  const stat = procStat(record.pid);
  return stat === undefined || stat[0] === 'Z';
}

/** Ports that are free right now on 127.0.0.1, all distinct (they are held until all are found). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<import('node:net').Server>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (address === null || typeof address === 'string') throw new ClusterProcessError('no port');
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

export interface StartedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code (or signal) when the process ends. */
  readonly exited: Promise<string>;
}

/**
 * Starts `command` in a new process group with stdout and stderr appended to `<state>/logs/<name>.log`,
 * and records it in `<state>/pids/<name>.pid`.
 */
export function startProcess(
  stateDir: string,
  name: string,
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<StartedProcess> {
  const logDir = join(stateDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const logFile = join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? stateDir,
      env: options.env ?? process.env,
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    const exited = new Promise<string>((done) => {
      child.once('exit', (code, signal) => done(signal ?? `exit code ${code}`));
    });
    child.once('error', (error) => {
      closeSync(fd);
      reject(
        new ClusterProcessError(`cannot start ${name} (${command}): ${error.message}`, { cause: error }),
      );
    });
    child.once('spawn', () => {
      closeSync(fd);
      const pid = child.pid as number;
      writePidFile(stateDir, name, pid);
      resolve({ name, child, pid, logFile, exited });
    });
  });
}

export function logTail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * A process kept running as a Deployment keeps its pod's container running (restartPolicy Always):
 * when it exits on its own it is started again after `delayMs`. `kill` is an exit asked for (a fault
 * that restarts it itself, or the end of the run) and is not followed by a restart; `stop` ends the
 * supervision for good.
 */
export class Supervised {
  private process: StartedProcess;
  private readonly asked = new WeakSet<StartedProcess>();
  private stopped = false;
  private restartCount = 0;

  private constructor(
    first: StartedProcess,
    private readonly start: () => Promise<StartedProcess>,
    private readonly options: { delayMs: number; onExit?: (how: string) => void },
  ) {
    this.process = first;
    this.watch(first);
  }

  static async start(
    start: () => Promise<StartedProcess>,
    options: { delayMs: number; onExit?: (how: string) => void },
  ): Promise<Supervised> {
    return new Supervised(await start(), start, options);
  }

  get current(): StartedProcess {
    return this.process;
  }

  /** Restarts after exits nobody asked for. */
  get restarts(): number {
    return this.restartCount;
  }

  /** Signals the current process; its exit is not restarted. */
  kill(signal: NodeJS.Signals): void {
    this.asked.add(this.process);
    this.process.child.kill(signal);
  }

  /** Starts it again at once (after a `kill`). */
  async restart(): Promise<StartedProcess> {
    this.process = await this.start();
    this.watch(this.process);
    return this.process;
  }

  stop(): void {
    this.stopped = true;
  }

  private watch(p: StartedProcess): void {
    void p.exited.then(async (how) => {
      if (this.asked.has(p) || this.stopped) return;
      this.options.onExit?.(how);
      await new Promise((resolve) => setTimeout(resolve, this.options.delayMs));
      if (this.stopped || this.process !== p) return;
      this.restartCount++;
      await this.restart().catch((error: unknown) =>
        this.options.onExit?.(`not started again: ${(error as Error).message}`),
      );
    });
  }
}
