/**
 * What the chaos run concludes from what it watched: pure functions over the pods it saw, the memory
 * samples it took and the workers' log events, so that each rule has a table test of its own
 * (test/unit/chaos-verdict.test.ts).
 */
import type { WorkerEvent } from '../../operator/api/worker-events.ts';

/** A worker pod as the watch last saw it. */
export interface SeenPod {
  readonly uid: string;
  readonly name: string;
  readonly index: number;
  readonly phase: string | undefined;
  readonly deleting: boolean;
  /** The pod object is gone (a DELETED event, or it vanished from a relist). */
  readonly gone: boolean;
}

/** A pod can still run a process: it exists and has not reached a terminal phase. */
export function podLive(p: SeenPod): boolean {
  return !p.gone && p.phase !== 'Succeeded' && p.phase !== 'Failed';
}

/** Replica indices with more than one live pod right now, with their pod uids. */
export function duplicateIndices(pods: Iterable<SeenPod>): Map<number, string[]> {
  const live = new Map<number, string[]>();
  for (const p of pods) {
    if (!podLive(p) || p.index < 0) continue;
    live.set(p.index, [...(live.get(p.index) ?? []), `${p.name} (${p.uid.slice(0, 8)})`]);
  }
  return new Map([...live].filter(([, uids]) => uids.length > 1));
}

export interface MemorySample {
  /** Seconds since the run started. */
  readonly at: number;
  /** A long-lived component: `operator-0`, `nats-server`, `kube-apiserver`, a worker pod's name, … */
  readonly component: string;
  /** The process sampled: a replacement of a component is another process with a start-up of its own. */
  readonly pid?: number;
  readonly rssBytes: number;
}

export interface MemoryVerdict {
  readonly component: string;
  readonly samples: number;
  /** Peak of the first and of the second half of the process's life past its start-up. */
  readonly middlePeak: number;
  readonly lastPeak: number;
  readonly ok: boolean;
}

/** A process sampled past its start-up for less than this is not judged: too little to tell. */
export const MIN_JUDGED_LIFE_SECONDS = 30;

/**
 * Memory is bounded when, past its start-up, a process's second half peaks no higher than its first
 * half plus a slack (25 % and 64 MiB): a leak keeps climbing, a warm cache levels off. Start-up
 * (loading the runtime and the data) ends at the first sample of at least 0.8 of the process's median,
 * each process its own, so that a worker started late (a replacement, slowly on a busy machine) is not
 * judged by its loading.
 */
export function judgeMemory(samples: readonly MemorySample[]): MemoryVerdict[] {
  const byProcess = new Map<string, MemorySample[]>();
  for (const s of samples) {
    const key = `${s.component}\u0000${s.pid ?? ''}`;
    byProcess.set(key, [...(byProcess.get(key) ?? []), s]);
  }
  const processes = new Map<string, number>();
  for (const list of byProcess.values()) {
    const component = (list[0] as MemorySample).component;
    processes.set(component, (processes.get(component) ?? 0) + 1);
  }
  const out: MemoryVerdict[] = [];
  for (const [, unsorted] of [...byProcess].sort((a, b) => a[0].localeCompare(b[0]))) {
    const list = [...unsorted].sort((a, b) => a.at - b.at);
    const first = list[0] as MemorySample;
    const median = list.map((s) => s.rssBytes).sort((a, b) => a - b)[Math.floor(list.length / 2)] ?? 0;
    const from = list.find((s) => s.rssBytes >= 0.8 * median)?.at ?? first.at;
    const span = (list.at(-1) as MemorySample).at - from;
    if (span < MIN_JUDGED_LIFE_SECONDS) continue;
    const peak = (low: number, high: number) =>
      Math.max(0, ...list.filter((s) => s.at >= low && s.at < high).map((s) => s.rssBytes));
    const middlePeak = peak(from, from + span / 2);
    const lastPeak = peak(from + span / 2, Number.POSITIVE_INFINITY);
    if (middlePeak === 0 || lastPeak === 0) continue;
    const several = (processes.get(first.component) ?? 0) > 1 && first.pid !== undefined;
    out.push({
      component: several ? `${first.component} (pid ${first.pid})` : first.component,
      samples: list.length,
      middlePeak,
      lastPeak,
      ok: lastPeak <= middlePeak * 1.25 + 64 * 2 ** 20,
    });
  }
  return out;
}

export interface CheckpointVerdict {
  readonly resumed: number;
  /** Resumes from a path no worker ever finished writing, or from a temporary directory. */
  readonly bad: readonly string[];
  /** Checkpoints a loader refused (corrupt or torn) and skipped for an older one. */
  readonly skipped: number;
}

/** Every resume must load a checkpoint some worker logged as completely written. */
export function judgeResumes(lines: readonly WorkerEvent[]): CheckpointVerdict {
  const written = new Set<string>();
  const resumes: string[] = [];
  let skipped = 0;
  for (const line of lines) {
    if (line.event === 'checkpoint') written.add(line.path);
    if (line.event === 'resumed') resumes.push(line.path);
    if (line.event === 'checkpoint-skipped') skipped++;
  }
  const bad = resumes.filter((p) => !written.has(p) || /(^|\/)\.tmp-/.test(p));
  return { resumed: resumes.length, bad, skipped };
}

/** What the faults must have cost, against what the job's status says. */
export interface Accounting {
  /** Worker pods the faults killed (uids). */
  readonly killed: ReadonlySet<string>;
  /** Worker pods that ended Failed (uids, from the watch), with when the watch first saw it (ms). */
  readonly failed: ReadonlyMap<string, number>;
  /**
   * Worker pods that were running on a node a fault deleted, with when the watch first saw each one
   * end (ms: a terminal phase, a deletion, or gone); undefined while it was never seen to end.
   */
  readonly lost: ReadonlyMap<string, number | undefined>;
  /** status.completionTime (ms, whole seconds), once the job finished. */
  readonly completedAt: number | undefined;
}

/** A count the status must match: those that surely count, and those at the job's end that may. */
export interface ExpectedCount {
  readonly sure: number;
  /** Ended so close to the job's completion that the operator may have counted them or not. */
  readonly around: number;
}

export interface AccountingVerdict {
  readonly restarts: ExpectedCount;
  readonly preemptions: ExpectedCount;
  readonly restartsOk: boolean;
  readonly preemptionsOk: boolean;
  /** Failed pods no fault killed: a worker that crashed on its own under a fault it should survive. */
  readonly unexpected: readonly string[];
}

/**
 * The operator counts a worker when it sees the worker's pod end while the job runs; once the job has
 * finished it lets every pod go uncounted (a worker on a noticed node that was still there when
 * training completed was not lost). completionTime has whole seconds and the operator sees pods
 * through a cache, so an end within this many ms of it may fall on either side.
 */
export const COMPLETION_MARGIN_MS = 3000;

function expected(endings: Iterable<number | undefined>, completedAt: number | undefined): ExpectedCount {
  let sure = 0;
  let around = 0;
  for (const at of endings) {
    // A job still running (timed out) counts everything; a pod still running at the end is not lost.
    if (completedAt === undefined) sure++;
    if (completedAt === undefined || at === undefined) continue;
    // completionTime is truncated: the completion itself lies in [completedAt, completedAt + 1 s).
    if (at < completedAt - COMPLETION_MARGIN_MS) sure++;
    else if (at <= completedAt + 1000 + COMPLETION_MARGIN_MS) around++;
  }
  return { sure, around };
}

const within = (n: number, e: ExpectedCount) => n >= e.sure && n <= e.sure + e.around;

/**
 * status.restarts counts every pod that failed while the job ran, once; each kill is among the failed
 * pods. status.preemptions counts every worker lost with a deleted node while the job ran. Every
 * failure no fault caused is reported, whenever it happened: a worker that completed and then failed
 * on its way out is a fault of its own.
 */
export function judgeAccounting(
  a: Accounting,
  status: { restarts?: number; preemptions?: number },
): AccountingVerdict {
  const unexpected = [...a.failed.keys()].filter((uid) => !a.killed.has(uid)).sort();
  const restarts = expected(a.failed.values(), a.completedAt);
  const preemptions = expected(a.lost.values(), a.completedAt);
  return {
    restarts,
    preemptions,
    restartsOk: within(status.restarts ?? 0, restarts) && [...a.killed].every((uid) => a.failed.has(uid)),
    preemptionsOk: within(status.preemptions ?? 0, preemptions),
    unexpected,
  };
}

/** `2` or `2–3 (1 at the job's end)`. */
export function formatExpected(e: ExpectedCount): string {
  return e.around === 0 ? String(e.sure) : `${e.sure}–${e.sure + e.around} (${e.around} at the job's end)`;
}
