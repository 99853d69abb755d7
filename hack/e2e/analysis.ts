/**
 * What the end-to-end scenario concludes from what a run left behind: worker logs (goodput), the
 * training audit (samples per epoch), the TrainingJob's status and events. Pure functions over data
 * the driver (scenario.ts) collects, so that the arithmetic can be checked without a cluster.
 */
import {
  type GenerationStart,
  type GoodputReport,
  generationEnds,
  goodputReport,
} from '../../operator/api/goodput.ts';
import { decodeWorkerLog, decodeWorkerRecords, type WorkerEvent } from '../../operator/api/worker-events.ts';
import type { EpochAudit } from '../../worker/data/audit.ts';

export type { GenerationGoodput, GenerationStart, GoodputReport } from '../../operator/api/goodput.ts';

/** A worker log line as read (a decoded event, or a record a test built): decoded before use. */
export type LogLine = Record<string, unknown>;

export interface ParsedLog {
  readonly events: WorkerEvent[];
  /** JSON lines that were not events of the worker protocol nor plain messages: reported, not dropped. */
  readonly invalid: number;
  /** Lines that were not JSON: the workers' standard error (TensorFlow's start-up banner, stack traces). */
  readonly text: number;
}

/** The worker events of a log text (operator/api/worker-events.ts). */
export function parseLogLines(text: string): ParsedLog {
  return decodeWorkerLog(text);
}

/** Generations as the workers announced them (`event: 'generation'`), one per number. */
export function generationsFromLogs(lines: readonly LogLine[]): GenerationStart[] {
  const found = new Map<number, number>();
  for (const line of decodeWorkerRecords(lines).events) {
    if (line.event !== 'generation' && line.event !== 'generation-end') continue;
    if (line.generation === undefined) continue;
    found.set(line.generation, Math.min(found.get(line.generation) ?? line.firstStep, line.firstStep));
  }
  return [...found.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([generation, firstStep]) => ({
      generation,
      firstStep,
    }));
}

/** Goodput (operator/api/goodput.ts) from the workers' log lines. */
export function computeGoodput(
  lines: readonly LogLine[],
  history: readonly GenerationStart[],
  wallSeconds: number,
): GoodputReport {
  return goodputReport(generationEnds(decodeWorkerRecords(lines).events), history, wallSeconds);
}

const num = (value: unknown): number | undefined =>
  typeof value === 'number' && Number.isFinite(value) ? value : undefined;

export type LostKind = 'start-up' | 'evaluations' | 're-forming' | 'redone' | 'tail' | 'other';

export interface LostTime {
  readonly kind: LostKind;
  readonly what: string;
  readonly seconds: number;
}

const timeOf = (line: WorkerEvent): number | undefined =>
  line.timestamp === undefined ? undefined : Date.parse(line.timestamp);

/**
 * Where the wall time that was not useful went, so that a goodput below target says why: start-up
 * (job start → first world), evaluations (workers evaluate side by side: the longest per step), gaps
 * between worlds, steps done and thrown away, the tail after the last step, and the rest (checkpoint
 * snapshots, per-step bookkeeping outside `stepSeconds`, second-resolution status times).
 */
export function lostTime(
  lines: readonly LogLine[],
  report: GoodputReport,
  startMs: number,
  endMs: number,
): LostTime[] {
  const formed = new Map<number, number>();
  const ended = new Map<number, number>();
  const evals = new Map<number, number>();
  let lastEnd: number | undefined;
  for (const line of decodeWorkerRecords(lines).events) {
    const at = timeOf(line);
    const generation = line.generation;
    if (line.event === 'generation' && at !== undefined && generation !== undefined)
      formed.set(generation, Math.min(formed.get(generation) ?? at, at));
    if (line.event === 'generation-end' && at !== undefined && generation !== undefined) {
      ended.set(generation, Math.max(ended.get(generation) ?? at, at));
      lastEnd = Math.max(lastEnd ?? at, at);
    }
    if (line.event === 'eval' && line.seconds !== undefined)
      evals.set(line.step, Math.max(evals.get(line.step) ?? 0, line.seconds));
  }
  const out: LostTime[] = [];
  const first = Math.min(...formed.values());
  if (Number.isFinite(first) && Number.isFinite(startMs))
    out.push({
      kind: 'start-up',
      what: 'start-up (job start → first world)',
      seconds: Math.max(0, (first - startMs) / 1000),
    });
  out.push({
    kind: 'evaluations',
    what: 'evaluations',
    seconds: [...evals.values()].reduce((a, b) => a + b, 0),
  });
  let gaps = 0;
  const numbers = [...formed.keys()].sort((a, b) => a - b);
  for (let i = 1; i < numbers.length; i++) {
    const end = ended.get(numbers[i - 1] as number);
    const start = formed.get(numbers[i] as number);
    if (end !== undefined && start !== undefined) gaps += Math.max(0, (start - end) / 1000);
  }
  out.push({ kind: 're-forming', what: 'between worlds (re-forming)', seconds: gaps });
  const stepped = report.generations.reduce((sum, g) => sum + g.stepSeconds, 0);
  out.push({
    kind: 'redone',
    what: 'steps redone by a later world',
    seconds: Math.max(0, stepped - report.usefulSeconds),
  });
  if (lastEnd !== undefined && Number.isFinite(endMs))
    out.push({
      kind: 'tail',
      what: 'tail (last step → completionTime)',
      seconds: Math.max(0, (endMs - lastEnd) / 1000),
    });
  const accounted = out.reduce((sum, x) => sum + x.seconds, 0);
  out.push({
    kind: 'other',
    what: 'other (checkpoint snapshots, step overheads, status time rounding)',
    seconds: report.wallSeconds - report.usefulSeconds - accounted,
  });
  return out;
}

/** The mean time of a step that counts: the unit the budgets below are written in. */
export function stepTime(report: GoodputReport): number {
  const steps = report.generations.reduce((sum, g) => sum + Math.max(0, g.keptUntil - g.firstStep), 0);
  return steps > 0 ? report.usefulSeconds / steps : 0;
}

export interface BudgetContext {
  /** See `stepTime`. */
  readonly stepSeconds: number;
  readonly usefulSeconds: number;
  /** Rendezvous rounds after the first world (failed ones too): the newest generation minus the first. */
  readonly rounds: number;
  /** Workers lost without notice: each costs a loss timeout and may lose the steps since a checkpoint. */
  readonly abrupt: number;
  readonly rendezvous: { readonly timeoutMs: number; readonly lastCallMs: number };
  readonly checkpointIntervalSteps: number;
}

export interface LostBudget extends LostTime {
  /** `seconds` in step times. */
  readonly steps: number;
  readonly budgetSeconds: number;
  readonly rule: string;
  readonly ok: boolean;
}

/**
 * What each kind of lost time may cost, so that a machine's speed does not decide the verdict: waits
 * the job configures (last call, loss timeout) and the platform's own latencies are seconds on any
 * machine, work (loading the runtime and the data, evaluating, a state transfer, redone steps) is
 * counted in step times, and what grows with the run is a share of the useful time. A goodput ratio
 * alone would hold a faster machine to a stricter standard: the same fixed costs in a shorter run.
 */
export function lostBudget(kind: LostKind, c: BudgetContext): { seconds: number; rule: string } {
  const t = c.stepSeconds;
  const lastCall = c.rendezvous.lastCallMs / 1000;
  const timeout = c.rendezvous.timeoutMs / 1000;
  switch (kind) {
    case 'start-up':
      return {
        seconds: 6 + lastCall + 200 * t,
        rule: `6 s to create, schedule and start the pods + last call ${lastCall} s + 200 steps to load runtime and data`,
      };
    case 're-forming':
      return {
        seconds: c.rounds * (0.5 + 20 * t) + c.abrupt * (timeout + lastCall),
        rule: `${c.rounds} rounds × (0.5 s + 20 steps) + ${c.abrupt} lost × (timeout ${timeout} s + last call ${lastCall} s)`,
      };
    case 'redone':
      return {
        seconds: (c.abrupt * c.checkpointIntervalSteps + c.rounds * 2) * t,
        rule: `${c.abrupt} lost × ${c.checkpointIntervalSteps} steps (checkpoint interval) + ${c.rounds} rounds × 2 steps`,
      };
    case 'evaluations':
      return { seconds: 0.08 * c.usefulSeconds, rule: '8 % of the useful time' };
    case 'tail':
      return { seconds: 2 + 20 * t, rule: '2 s (status, second-resolution times) + 20 steps' };
    case 'other':
      return {
        seconds: 2 + 0.05 * c.usefulSeconds,
        rule: '2 s (second-resolution start and end) + 5 % of the useful time',
      };
  }
}

/** Every kind of lost time against its budget (see `lostBudget`). */
export function judgeLostTime(lost: readonly LostTime[], c: BudgetContext): LostBudget[] {
  return lost.map((x) => {
    const budget = lostBudget(x.kind, c);
    return {
      ...x,
      steps: c.stepSeconds > 0 ? x.seconds / c.stepSeconds : Number.POSITIVE_INFINITY,
      budgetSeconds: budget.seconds,
      rule: budget.rule,
      ok: x.seconds <= budget.seconds,
    };
  });
}

export interface EpochVerdict extends EpochAudit {
  /** The run went past this epoch (or saw all of it): every sample must be there. */
  readonly complete: boolean;
  readonly clean: boolean;
}

/**
 * No sample twice in any epoch, none missing in a complete one. An epoch is complete when the final
 * state is past it; the last one may be cut short by a target accuracy or a step limit.
 */
export function judgeEpochs(epochs: readonly EpochAudit[], finalEpoch: number): EpochVerdict[] {
  return epochs.map((e) => {
    const complete = e.epoch < finalEpoch || e.missing === 0;
    return { ...e, complete, clean: e.duplicated === 0 && (!complete || e.missing === 0) };
  });
}

export interface Evaluation {
  readonly step: number;
  readonly accuracy: number;
}

/** The evaluations of a run's logs, one per step (every rank of a world may log the same one). */
export function evaluations(lines: readonly WorkerEvent[]): Evaluation[] {
  const byStep = new Map<number, number>();
  for (const l of lines)
    if (l.event === 'eval' && l.accuracy !== null && !byStep.has(l.step)) byStep.set(l.step, l.accuracy);
  return [...byStep].map(([step, accuracy]) => ({ step, accuracy })).sort((a, b) => a.step - b.step);
}

export interface TailAccuracy {
  /** Mean test accuracy of the evaluations from `fromStep` to the end. */
  readonly mean: number;
  readonly count: number;
  readonly fromStep: number;
}

/** The share of training, from the end, whose evaluations are averaged. */
export const TAIL_FRACTION = 0.2;

/**
 * The accuracy a run ended with, as a mean over its last fifth. One evaluation moves by up to a point
 * from the one 200 steps before (0.8859 at step 4500, 0.8766 at 4690, in one seed-1 run), and two runs
 * that saw the same samples in another order differ as much at the same step: the last evaluation
 * alone measures where the noise happened to be, the mean of the tail what the training reached.
 */
export function tailAccuracy(
  evals: readonly Evaluation[],
  fraction = TAIL_FRACTION,
): TailAccuracy | undefined {
  const last = evals.at(-1);
  if (last === undefined) return undefined;
  const fromStep = Math.ceil((1 - fraction) * last.step);
  const tail = evals.filter((e) => e.step >= fromStep);
  return { mean: tail.reduce((sum, e) => sum + e.accuracy, 0) / tail.length, count: tail.length, fromStep };
}

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export function check(name: string, ok: boolean, detail: string): Check {
  return { name, ok, detail };
}

export interface KubeEvent {
  readonly type: string;
  readonly reason: string;
  readonly message: string;
  readonly count: number;
  readonly time: string;
}

/** Events of one object, oldest first (events.k8s.io or core/v1 shapes from `kubectl get -o json`). */
export function parseEvents(json: string): KubeEvent[] {
  const parsed = JSON.parse(json) as { items?: Record<string, unknown>[] };
  const events = (parsed.items ?? []).map((e) => {
    const time =
      (e['lastTimestamp'] as string | undefined) ??
      (e['eventTime'] as string | undefined) ??
      (e['metadata'] as { creationTimestamp?: string } | undefined)?.creationTimestamp ??
      '';
    return {
      type: String(e['type'] ?? ''),
      reason: String(e['reason'] ?? ''),
      message: String(e['message'] ?? e['note'] ?? ''),
      count: num(e['count']) ?? 1,
      time,
    };
  });
  return events.sort((a, b) => a.time.localeCompare(b.time));
}

/** The Events section of `kubectl describe` output. */
export function describeEvents(describe: string): string {
  const at = describe.search(/^Events:/m);
  return at < 0 ? '' : describe.slice(at).trimEnd();
}

export function percent(x: number): string {
  return `${(100 * x).toFixed(1)} %`;
}
