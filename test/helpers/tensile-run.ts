/**
 * `tensile run` as a child process for tests: its output lines, waiting for a line, its summary.
 *
 * Every wait has a deadline, a safety net and never a verdict on speed: minutes, where a run of these
 * tests takes seconds to a minute on a loaded 2-core machine. A run that hangs (a rendezvous that
 * never forms, survivors waiting for a worker that is gone) is then killed with its process group
 * and fails its test with the last lines of each worker's log, instead of eating the file's timeout
 * with nothing to show.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import { type RunSummary, RunSummarySchema } from '../../operator/api/run-summary.ts';
import { decodeWorkerLine, eventsOf, type WorkerEvent } from '../../operator/api/worker-events.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'operator/bin/tensile.mjs');

/** How long a test waits for a line or the end of a run by default (a safety net, see above). */
export const DEFAULT_DEADLINE_MS = 8 * 60_000;

export interface RunningTensile {
  readonly child: ChildProcess;
  readonly out: string;
  readonly lines: string[];
  readonly done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The first line matching `pattern`; fails when the run ends without it or at the deadline. */
  waitFor(pattern: RegExp, deadlineMs?: number): Promise<string>;
}

/** The last lines of each worker log in `out` (and of the run's own output): what a hang leaves. */
export function lastLogLines(out: string, lines: readonly string[] = [], count = 12): string {
  const cut = (l: string) => (l.length > 400 ? `${l.slice(0, 400)}…` : l);
  const logs = existsSync(out) ? readdirSync(out).filter((n) => /^worker-\d+\.log$/.test(n)) : [];
  const parts = logs.sort().map((name) => {
    const text = readFileSync(join(out, name), 'utf8').trimEnd().split('\n');
    return `--- ${name} (last ${Math.min(count, text.length)} of ${text.length} lines)\n${text.slice(-count).map(cut).join('\n')}`;
  });
  if (lines.length > 0) parts.unshift(`--- tensile run\n${lines.slice(-count).map(cut).join('\n')}`);
  return parts.join('\n');
}

/**
 * `promise`, or at `deadlineMs` a rejection saying what was awaited, after `onDeadline` (which kills
 * what hangs); `describe` adds what it left behind.
 */
export async function withDeadline<T>(
  promise: Promise<T>,
  what: string,
  deadlineMs: number,
  onDeadline: () => void,
  describe: () => string = () => '',
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onDeadline();
      reject(
        new Error(`${what}: still waiting after ${deadlineMs / 1000} s (a hang); killed it\n${describe()}`),
      );
    }, deadlineMs);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** kill -9 of the run's process group: `tensile run`, its workers and its nats-server. */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** Writes a TrainingJob manifest named `name` with `spec` to `file`; returns `file`. */
export function writeJobManifest(file: string, name: string, spec: Record<string, unknown>): string {
  writeFileSync(
    file,
    stringify({ apiVersion: 'tensile.dev/v1alpha1', kind: 'TrainingJob', metadata: { name }, spec }),
  );
  return file;
}

export function tensileRun(
  file: string,
  out: string,
  extra: readonly string[] = [],
  env: Record<string, string> = {},
  /** The `tensile` entry point: the sources' bin, or a compiled dist/operator/main.js. */
  entry: string = bin,
): RunningTensile {
  // Its own process group, so that kill -9 takes the workers down with it, as a node crash would.
  const child = spawn(process.execPath, [entry, 'run', file, '--out', out, ...extra], {
    cwd: root,
    detached: true,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  // A line can arrive split across chunks: the unfinished tail waits for the rest of it.
  const partial = new Map<NodeJS.ReadableStream, string>();
  const onText = (stream: NodeJS.ReadableStream) => (chunk: Buffer) => {
    const text = (partial.get(stream) ?? '') + chunk.toString();
    const parts = text.split('\n');
    partial.set(stream, parts.pop() ?? '');
    for (const line of parts.filter(Boolean)) {
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.pattern.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  };
  for (const stream of [child.stdout, child.stderr]) stream?.on('data', onText(stream));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    out,
    lines,
    done,
    waitFor: (pattern, deadlineMs = DEFAULT_DEADLINE_MS) =>
      withDeadline(
        new Promise<string>((resolve, reject) => {
          const seen = lines.find((l) => pattern.test(l));
          if (seen !== undefined) return resolve(seen);
          waiters.push({ pattern, resolve });
          void done.then(() =>
            reject(new Error(`ended without ${pattern}:\n${lines.slice(-30).join('\n')}`)),
          );
        }),
        `tensile run ${out}: waiting for ${pattern}`,
        deadlineMs,
        () => killGroup(child),
        () => lastLogLines(out, lines),
      ),
  };
}

/** Waits for the run (killing it at the deadline), asserts it exited 0 and returns its summary.json. */
export async function finished(run: RunningTensile, deadlineMs = DEFAULT_DEADLINE_MS): Promise<RunSummary> {
  const { code } = await withDeadline(
    run.done,
    `tensile run ${run.out}: waiting for its end`,
    deadlineMs,
    () => killGroup(run.child),
    () => lastLogLines(run.out, run.lines),
  );
  assert.is(code, 0, run.lines.slice(-30).join('\n'));
  // Read by the one schema it is written by: a field the writer drops or renames fails here.
  return RunSummarySchema.parse(JSON.parse(readFileSync(join(run.out, 'summary.json'), 'utf8')));
}

/**
 * Ctrl-C for a run that trains until told otherwise (so that what a test does mid-run happens mid-run
 * on any machine): SIGINT, the end awaited, exit 130, and the summary it wrote on the way out.
 */
export async function interrupted(
  run: RunningTensile,
  deadlineMs = DEFAULT_DEADLINE_MS,
): Promise<RunSummary> {
  run.child.kill('SIGINT');
  const { code } = await withDeadline(
    run.done,
    `tensile run ${run.out}: waiting for its end after SIGINT`,
    deadlineMs,
    () => killGroup(run.child),
    () => lastLogLines(run.out, run.lines),
  );
  assert.is(code, 130, run.lines.slice(-30).join('\n'));
  const summary = RunSummarySchema.parse(JSON.parse(readFileSync(join(run.out, 'summary.json'), 'utf8')));
  // Each worker gets SIGTERM: it stops, or leaves a moment before the others do.
  assert.ok(summary.status === 'stopped' || summary.status === 'left', summary.status);
  return summary;
}

/** An interrupted run's epochs: all but the cut last one complete, and nothing trained twice in any. */
export function assertEpochsOnce(summary: RunSummary, samples: number): void {
  const complete = summary.epochs.slice(0, -1);
  for (const e of complete)
    assert.equal([e.seen, e.duplicated, e.missing], [samples, 0, 0], `epoch ${e.epoch}`);
  assert.is(summary.epochs.at(-1)?.duplicated, 0, 'the last (cut) epoch');
}

/**
 * The events of the workers of a run (all of them, or worker-<index>), decoded by the protocol's one
 * decoder (operator/api/worker-events.ts); a JSON line that is not an event of it fails the test.
 * Lines that are not JSON objects are the workers' standard error, which shares the log file.
 */
export function workerEvents(out: string, index?: number): WorkerEvent[] {
  const files = readdirSync(out).filter((n) =>
    index === undefined ? /^worker-\d+\.log$/.test(n) : n === `worker-${index}.log`,
  );
  return files.flatMap((name) =>
    readFileSync(join(out, name), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l): WorkerEvent[] => {
        const line = decodeWorkerLine(l);
        if (line.kind === 'invalid') throw new Error(`${name}: ${line.problem}: ${l}`);
        return line.kind === 'event' ? [line.event] : [];
      }),
  );
}

/**
 * Asserts that every (generation, step) whose weights more than one worker checked has one checksum;
 * returns how many steps were checked on more than one worker.
 */
export function assertLockstep(events: readonly WorkerEvent[]): number {
  const sums = new Map<string, Set<string>>();
  const counts = new Map<string, number>();
  for (const e of eventsOf(events, 'checksum')) {
    const key = `${e.generation}@${e.step}`;
    sums.set(key, (sums.get(key) ?? new Set()).add(e.checksum));
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  for (const [key, set] of sums) assert.is(set.size, 1, `weights differ at ${key}`);
  return [...counts.values()].filter((n) => n > 1).length;
}
