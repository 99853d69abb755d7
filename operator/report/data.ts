/**
 * What `tensile report` shows, and the pure parsing that builds it from the text of a run directory's
 * files (summary.json, worker-*.log, events.jsonl). Everything here is tolerant: a log line that is not
 * JSON, or an event without the fields it needs, is counted and skipped, never fatal, because a report
 * is most wanted precisely for the runs that went wrong.
 */
import { z } from 'zod';
import { TensileError } from '../api/errors.ts';
import { EpochRecordSchema, GenerationRecordSchema, RunSummarySchema } from '../api/run-summary.ts';
import { decodeWorkerLine, type WorkerEvent } from '../api/worker-events.ts';

/** A report cannot be made; the message says which file and what to do. */
export class ReportError extends TensileError {
  override readonly name = 'ReportError';
  readonly classification = 'terminal';
}

const known = RunSummarySchema.shape;

/**
 * summary.json read by the one schema `tensile run` writes it by (api/run-summary.ts), each field
 * falling back when it is missing or malformed: a report is wanted most for runs that went wrong, and
 * older versions wrote fewer fields.
 */
const SummarySchema = z.object({
  job: known.job,
  status: z.string().catch('unknown'),
  reason: known.reason.catch(''),
  step: known.step.catch(0),
  epoch: known.epoch.catch(0),
  eval: known.eval.catch(null),
  wallSeconds: known.wallSeconds.nullable().catch(null),
  trainSeconds: known.trainSeconds.nullable().catch(null),
  samplesPerSecond: known.samplesPerSecond.nullable().catch(null),
  backend: known.backend.catch('unknown'),
  workers: known.workers.catch(0),
  epochs: z.array(EpochRecordSchema.extend({ complete: z.boolean().catch(false) })).catch([]),
  generations: z
    .array(GenerationRecordSchema.extend({ firstProgress: z.number().nullable().catch(null).default(null) }))
    .catch([]),
  checkpoint: known.checkpoint.catch(null),
  resumedFrom: known.resumedFrom.catch(null),
});

type KnownSummary = z.output<typeof SummarySchema>;

export interface ReportSummary extends KnownSummary {
  /** Fields this version does not know (goodput, chaos, …), shown as they are. */
  readonly extra: Readonly<Record<string, unknown>>;
}

export type EpochAudit = ReportSummary['epochs'][number];

export interface ProgressPoint {
  readonly step: number;
  /** Milliseconds since the epoch; null when the line had no valid timestamp. */
  readonly time: number | null;
  readonly worker: string | null;
  readonly generation: number | null;
  readonly epoch: number | null;
  readonly loss: number | null;
  readonly accuracy: number | null;
  readonly samplesPerSecond: number | null;
  readonly learningRate: number | null;
  readonly worldSize: number | null;
  readonly plannedSteps: number | null;
  /** Scale-invariant iterations after the step (AdaScale only; null otherwise). */
  readonly progress: number | null;
  /** Each worker's batch, compute throughput and wait per step (worlds of more than one); null otherwise. */
  readonly workers: readonly WorkerLoadPoint[] | null;
}

export interface WorkerLoadPoint {
  readonly worker: string;
  readonly batch: number;
  readonly samplesPerSecond: number;
  readonly waitSeconds: number;
}

export interface EvalPoint {
  readonly step: number;
  readonly time: number | null;
  readonly epoch: number | null;
  readonly loss: number | null;
  readonly accuracy: number | null;
  readonly samples: number | null;
  readonly seconds: number | null;
}

export interface GenerationInfo {
  readonly generation: number;
  readonly worldSize: number;
  readonly globalBatch: number | null;
  readonly learningRate: number | null;
  readonly firstStep: number;
  /** Scale-invariant iterations when it began (AdaScale), or null. */
  readonly firstProgress: number | null;
  /** AdaScale: the mean gain over its steps (progress made / steps taken), or null. */
  readonly gain: number | null;
  readonly time: number | null;
}

/**
 * One thing that happened: a world formed, a checkpoint, a kill or a join from events.jsonl, …
 * `kind` is the log event or the events.jsonl type as written, unknown ones included.
 */
export interface TimelineEvent {
  readonly kind: string;
  readonly time: number | null;
  readonly step: number | null;
  /** The step was not recorded and is the last progress step logged before `time`. */
  readonly approximate: boolean;
  readonly worker: string | null;
  readonly detail: string;
  readonly source: 'log' | 'events';
}

/** One rank's own figures over a window of steps (`rank-progress`): the per-worker view. */
export interface RankPoint {
  readonly worker: string;
  readonly step: number;
  readonly time: number | null;
  readonly generation: number | null;
  readonly rank: number | null;
  readonly samplesPerSecond: number;
  readonly stepMs: number;
  readonly allReduceMs: number;
}

export interface ReportData {
  readonly dir: string;
  readonly summary: ReportSummary;
  /** The summary was pieced together from the logs (a cluster job's volume has no summary.json). */
  readonly summaryFromLogs: boolean;
  /** The job's spec (job.json beside the checkpoints), when there is one. */
  readonly spec: Readonly<Record<string, unknown>> | null;
  readonly ranks: readonly RankPoint[];
  /** Training progress, one point per step, in step order. */
  readonly progress: readonly ProgressPoint[];
  readonly evals: readonly EvalPoint[];
  readonly generations: readonly GenerationInfo[];
  /** In time order (events without a time by step, at the end). */
  readonly events: readonly TimelineEvent[];
  /** Worker ids seen in the logs. */
  readonly workers: readonly string[];
  readonly logFiles: readonly string[];
  /** Lines of the logs and events.jsonl that could not be read. */
  readonly skippedLines: number;
}

type Json = Record<string, unknown>;

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const isStep = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const parseTime = (v: unknown): number | null => {
  if (typeof v !== 'string') return null;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
};

/** summary.json as written by `tensile run`; unknown fields go to `extra`. */
export function parseSummary(text: string, file: string): ReportSummary {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ReportError(`${file}: not valid JSON (${(error as Error).message}); run \`tensile run\` again`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ReportError(`${file}: not a run summary (expected a JSON object)`);
  const parsed = SummarySchema.safeParse(raw);
  if (!parsed.success) throw new ReportError(`${file}: not a run summary (no "job" name)`);
  const known = new Set(Object.keys(SummarySchema.shape));
  const extra = Object.fromEntries(Object.entries(raw).filter(([key]) => !known.has(key)));
  return { ...parsed.data, extra };
}

/** JSON objects of a JSON-lines text, and how many non-empty lines were not objects. */
export function parseJsonLines(text: string): { records: Json[]; skipped: number } {
  const records: Json[] = [];
  let skipped = 0;
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    try {
      const value: unknown = JSON.parse(trimmed);
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) records.push(value as Json);
      else skipped++;
    } catch {
      skipped++;
    }
  }
  return { records, skipped };
}

interface Timed<T> {
  readonly value: T;
  readonly time: number | null;
  readonly order: number;
}

/** Keeps one value per key: the one with the latest timestamp, the later line on a tie. */
function latestByKey<T>(items: readonly Timed<T>[], key: (value: T) => number): T[] {
  const best = new Map<number, Timed<T>>();
  for (const item of items) {
    const k = key(item.value);
    const held = best.get(k);
    const t = item.time ?? Number.NEGATIVE_INFINITY;
    const heldTime = held?.time ?? Number.NEGATIVE_INFINITY;
    if (held === undefined || t > heldTime || (t === heldTime && item.order > held.order)) best.set(k, item);
  }
  return [...best.values()].map((item) => item.value).sort((a, b) => key(a) - key(b));
}

/** The last progress step logged at or before `time`. */
function stepAt(progress: readonly ProgressPoint[], time: number): number | null {
  let step: number | null = null;
  let latest = Number.NEGATIVE_INFINITY;
  for (const p of progress) {
    if (p.time === null || p.time > time) continue;
    if (p.time >= latest) {
      latest = p.time;
      step = p.step;
    }
  }
  return step;
}

function basename(path: string): string {
  return path.split('/').filter(Boolean).pop() ?? path;
}

function scalarDetail(record: Json, skip: readonly string[]): string {
  return Object.entries(record)
    .filter(
      ([k, v]) =>
        !skip.includes(k) && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'),
    )
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
}

/** The last step logged with its scale-invariant progress, if any was. */
function lastProgress(points: readonly ProgressPoint[]): { step: number; progress: number } | undefined {
  let last: { step: number; progress: number } | undefined;
  for (const p of points)
    if (p.progress !== null && (last === undefined || p.step > last.step))
      last = { step: p.step, progress: p.progress };
  return last;
}

/**
 * Each generation's mean AdaScale gain: the scale-invariant iterations it made over the steps it
 * took, up to the next generation's start (or the last progress logged, for the last one).
 */
export function withGains(
  generations: readonly GenerationInfo[],
  last: { step: number; progress: number } | undefined,
): GenerationInfo[] {
  return generations.map((g, i) => {
    const next = generations[i + 1];
    const end =
      next?.firstProgress !== undefined && next.firstProgress !== null
        ? { step: next.firstStep, progress: next.firstProgress }
        : next === undefined
          ? last
          : undefined;
    const steps = end === undefined ? 0 : end.step - g.firstStep;
    const gain =
      g.firstProgress === null || end === undefined || steps <= 0
        ? null
        : (end.progress - g.firstProgress) / steps;
    return { ...g, gain };
  });
}

/** What the timeline says of a log event besides generations and checkpoints; undefined: not shown. */
function timelineDetail(r: WorkerEvent): string | undefined {
  switch (r.event) {
    case 'resumed':
      return `resumed from ${basename(r.path)} at step ${String(r.step)}`;
    case 'completed':
    case 'stopped':
      return `${r.event}: ${r.reason}`;
    case 'checkpoint-failed':
      return `checkpoint failed: ${r.error}`;
    case 'world-failed':
      return `world failed: ${r.error ?? r.reason ?? r.message ?? ''}`;
    case 'failed':
      return `failed: ${r.error}`;
    case 'grace-exceeded':
      return 'termination grace period exceeded';
    case 'spec-changed':
      return `spec revision ${String(r.from)} → ${String(r.to)}: ${r.changed.join(', ')}`;
    case 'signal':
      return `signal ${r.signal}`;
    case 'balance':
      return `batch split ${r.before === undefined ? '' : `${r.before.join('/')} → `}${r.perWorker.join('/')} (${r.reason}; ${r.members.join(', ')})`;
    case 'straggler':
      return `straggler ${r.straggler}: ${r.samplesPerSecond} samples/s against a median of ${r.medianSamplesPerSecond}${r.evict ? '; asked to leave' : ''}`;
    default:
      return undefined;
  }
}

export interface RunFiles {
  readonly dir: string;
  readonly summaryFile: string;
  /** Absent for a checkpoint volume: the summary is then pieced together from the logs. */
  readonly summaryText: string | undefined;
  /** job.json beside the checkpoints. */
  readonly jobText?: string | undefined;
  readonly logs: readonly { readonly file: string; readonly text: string }[];
  /** events.jsonl, when the run wrote one. */
  readonly eventsText: string | undefined;
}

/** The report's data from the text of a run directory's files. */
export function assembleReport(files: RunFiles): ReportData {
  const job = parseJobRecord(files.jobText);
  let summary =
    files.summaryText === undefined
      ? emptySummary(job?.name ?? basename(files.dir))
      : parseSummary(files.summaryText, files.summaryFile);
  const outcomes: WorkerEvent[] = [];
  const ranks: RankPoint[] = [];
  let skipped = 0;
  let order = 0;
  const progressRaw: Timed<ProgressPoint>[] = [];
  const evalRaw: Timed<EvalPoint>[] = [];
  const generationRaw: Timed<GenerationInfo>[] = [];
  const checkpointRaw: Timed<TimelineEvent>[] = [];
  const events: TimelineEvent[] = [];
  const workers = new Set<string>();
  const sharedSeen = new Set<string>();
  // A world that re-forms from an earlier step (a resume, a restore) redoes the steps after it:
  // progress logged before that moment beyond that step was rolled back.
  const rollbacks: { time: number; step: number }[] = [];

  for (const log of files.logs) {
    for (const text of log.text.split('\n')) {
      if (text.trim() === '') continue;
      const line = decodeWorkerLine(text.trim());
      if (line.kind === 'invalid' || line.kind === 'text') {
        skipped++;
        continue;
      }
      order++;
      if (line.kind === 'message') {
        if (line.worker !== undefined) workers.add(line.worker);
        continue;
      }
      const r = line.event;
      const time = parseTime(r.timestamp);
      const worker = r.worker ?? null;
      if (worker !== null) workers.add(worker);
      if (['completed', 'stopped', 'left', 'failed', 'backend'].includes(r.event)) outcomes.push(r);
      switch (r.event) {
        case 'rank-progress':
          ranks.push({
            worker: worker ?? log.file,
            step: r.step,
            time,
            generation: r.generation ?? null,
            rank: r.rank ?? null,
            samplesPerSecond: r.samplesPerSecond,
            stepMs: r.stepMs,
            allReduceMs: r.allReduceMs,
          });
          break;
        case 'progress':
          progressRaw.push({
            time,
            order,
            value: {
              step: r.step,
              time,
              worker,
              generation: r.generation ?? null,
              epoch: r.epoch ?? null,
              loss: r.loss ?? null,
              accuracy: r.accuracy ?? null,
              samplesPerSecond: r.samplesPerSecond ?? null,
              learningRate: r.learningRate ?? null,
              worldSize: r.worldSize ?? null,
              plannedSteps: r.plannedSteps ?? null,
              progress: r.progress ?? null,
              workers: r.workers ?? null,
            },
          });
          break;
        case 'eval':
          evalRaw.push({
            time,
            order,
            value: {
              step: r.step,
              time,
              epoch: r.epoch ?? null,
              loss: r.loss,
              accuracy: r.accuracy,
              samples: r.samples ?? null,
              seconds: r.seconds ?? null,
            },
          });
          break;
        case 'generation': {
          if (r.generation === undefined) {
            skipped++;
            break;
          }
          if (time !== null) rollbacks.push({ time, step: r.firstStep });
          // Every rank logs its world; the earliest line says when the world formed.
          generationRaw.push({
            time: time === null ? null : -time,
            order: -order,
            value: {
              generation: r.generation,
              worldSize: r.worldSize,
              globalBatch: r.globalBatch ?? null,
              learningRate: r.learningRate ?? null,
              firstStep: r.firstStep,
              firstProgress: r.firstProgress ?? null,
              gain: null,
              time,
            },
          });
          break;
        }
        case 'checkpoint':
          checkpointRaw.push({
            time: time === null ? null : -time,
            order: -order,
            value: {
              kind: 'checkpoint',
              time,
              step: r.step,
              approximate: false,
              worker,
              detail: `${basename(r.path)}${r.writeMs === undefined ? '' : ` written in ${r.writeMs} ms`}`,
              source: 'log',
            },
          });
          break;
        default: {
          const detail = timelineDetail(r);
          if (detail === undefined) break;
          const step = 'step' in r && r.step !== undefined ? r.step : null;
          // Every rank logs the world's balancing decisions: one line each.
          const key = `${r.event}@${step}:${detail}`;
          if ((r.event === 'balance' || r.event === 'straggler') && sharedSeen.has(key)) break;
          sharedSeen.add(key);
          if (r.event === 'resumed' && time !== null) rollbacks.push({ time, step: r.step });
          events.push({
            kind: r.event,
            time,
            step,
            approximate: false,
            worker,
            detail: detail.trim(),
            source: 'log',
          });
        }
      }
    }
  }

  const rolledBack = (p: { step: number; time: number | null }) =>
    p.time !== null && rollbacks.some((b) => b.time > (p.time as number) && p.step > b.step);
  const progress = latestByKey(
    progressRaw.filter((p) => !rolledBack(p.value)),
    (p) => p.step,
  );
  const evals = latestByKey(
    evalRaw.filter((e) => !rolledBack(e.value)),
    (e) => e.step,
  );
  if (evals.length === 0 && summary.eval !== null) evals.push({ ...summary.eval, time: null, seconds: null });

  // The logs know when each world formed; the summary also lists generations of earlier sessions
  // whose logs may be gone.
  const fromLogs = latestByKey(generationRaw, (g) => g.generation);
  const known = [...fromLogs];
  for (const g of summary.generations)
    if (!known.some((h) => h.generation === g.generation)) known.push({ ...g, gain: null, time: null });
  known.sort((a, b) => a.generation - b.generation);
  const generations = withGains(known, lastProgress(progress));
  for (const g of generations)
    events.push({
      kind: 'generation',
      time: g.time,
      step: g.firstStep,
      approximate: false,
      worker: null,
      detail: `generation ${g.generation}: ${g.worldSize} worker${g.worldSize === 1 ? '' : 's'}${g.globalBatch === null ? '' : `, global batch ${g.globalBatch}`}${g.learningRate === null ? '' : `, learning rate ${Number(g.learningRate.toPrecision(4))}`}`,
      source: 'log',
    });
  // A checkpoint is written once, by one rank; keep the first line of each step.
  events.push(...latestByKey(checkpointRaw, (c) => c.step ?? 0));

  if (files.eventsText !== undefined) {
    const parsed = parseJsonLines(files.eventsText);
    skipped += parsed.skipped;
    for (const r of parsed.records) {
      const type = str(r['type']);
      const time = parseTime(r['time']);
      if (type === null || (time === null && !isStep(r['step']))) {
        skipped++;
        continue;
      }
      const step = isStep(r['step']) ? r['step'] : null;
      const worker = str(r['worker']);
      // A checkpoint the logs already show is not repeated.
      if (
        type === 'checkpoint' &&
        step !== null &&
        events.some((e) => e.kind === 'checkpoint' && e.step === step)
      )
        continue;
      events.push({
        kind: type,
        time,
        step,
        approximate: false,
        worker,
        detail: str(r['detail']) ?? scalarDetail(r, ['time', 'type', 'step', 'worker']),
        source: 'events',
      });
    }
  }

  const placed = events.map((e) =>
    e.step === null && e.time !== null ? { ...e, step: stepAt(progress, e.time), approximate: true } : e,
  );
  placed.sort((a, b) => {
    if (a.time !== null && b.time !== null) return a.time - b.time;
    if (a.time !== null) return -1;
    if (b.time !== null) return 1;
    return (a.step ?? 0) - (b.step ?? 0);
  });

  if (files.summaryText === undefined)
    summary = summaryFromLogs(summary, outcomes, progress, evals, generations, workers.size);
  return {
    dir: files.dir,
    summary,
    summaryFromLogs: files.summaryText === undefined,
    spec: job?.spec ?? null,
    ranks: ranks.sort((a, b) => (a.time ?? 0) - (b.time ?? 0) || a.step - b.step),
    progress,
    evals,
    generations,
    events: placed,
    workers: [...workers].sort(),
    logFiles: files.logs.map((l) => l.file),
    skippedLines: skipped,
  };
}

/** job.json as the workers write it beside the checkpoints; null when absent or unreadable. */
export function parseJobRecord(
  text: string | undefined,
): { name: string; spec: Readonly<Record<string, unknown>> } | null {
  if (text === undefined) return null;
  try {
    const raw = JSON.parse(text) as { name?: unknown; spec?: unknown };
    if (typeof raw.name !== 'string' || typeof raw.spec !== 'object' || raw.spec === null) return null;
    return { name: raw.name, spec: raw.spec as Record<string, unknown> };
  } catch {
    return null;
  }
}

function emptySummary(job: string): ReportSummary {
  return { ...SummarySchema.parse({ job }), extra: {} };
}

/** What summary.json would say, from the workers' own lines: a cluster job's volume has only those. */
function summaryFromLogs(
  base: ReportSummary,
  outcomes: readonly WorkerEvent[],
  progress: readonly ProgressPoint[],
  evals: readonly EvalPoint[],
  generations: readonly GenerationInfo[],
  workers: number,
): ReportSummary {
  let status = progress.length > 0 ? 'running' : 'unknown';
  let reason = 'no worker reported an end (still running, or its pods were lost)';
  let backend = base.backend;
  for (const o of outcomes) {
    if (o.event === 'backend') backend = o.backend;
    else if (o.event === 'completed') [status, reason] = ['completed', o.reason];
    else if (status !== 'completed' && o.event === 'failed') [status, reason] = ['failed', o.error];
    else if (status !== 'completed' && o.event === 'stopped') [status, reason] = ['stopped', o.reason];
  }
  const last = progress[progress.length - 1];
  const lastEval = evals[evals.length - 1];
  const times = progress.flatMap((p) => (p.time === null ? [] : [p.time]));
  const first = times.length > 0 ? Math.min(...times) : undefined;
  const end = times.length > 0 ? Math.max(...times) : undefined;
  return {
    ...base,
    status,
    reason,
    step: last?.step ?? 0,
    epoch: last?.epoch ?? 0,
    eval:
      lastEval === undefined || lastEval.loss === null || lastEval.accuracy === null
        ? null
        : {
            step: lastEval.step,
            epoch: lastEval.epoch ?? 0,
            loss: lastEval.loss,
            accuracy: lastEval.accuracy,
            samples: lastEval.samples ?? 0,
          },
    wallSeconds: first === undefined || end === undefined ? null : Math.round((end - first) / 100) / 10,
    backend,
    workers,
    generations: generations.map((g) => ({
      generation: g.generation,
      worldSize: g.worldSize,
      globalBatch: g.globalBatch ?? 0,
      learningRate: g.learningRate ?? 0,
      firstStep: g.firstStep,
      firstProgress: g.firstProgress,
    })),
  };
}

const FederatedRoundSchema = z.object({
  round: z.number(),
  step: z.number().catch(0),
  accuracy: z.number().nullable().catch(null),
  loss: z.number().nullable().catch(null),
  seconds: z.number().nullable().catch(null),
  bytes: z.number().nullable().catch(null),
  sites: z.array(z.number()).catch([]),
  dropped: z.array(z.number()).catch([]),
  agreed: z.boolean().nullable().catch(null),
  epsilon: z.number().nullable().catch(null).default(null),
});

const FederationSummarySchema = z.object({
  sites: z.array(
    z.object({ name: z.string(), workers: z.number().catch(0), samples: z.number().nullable().catch(null) }),
  ),
  rounds: z.array(FederatedRoundSchema),
  secure: z.boolean().catch(false),
  aggregation: z.string().catch('unknown'),
  privacy: z
    .object({ clipNorm: z.number(), noiseMultiplier: z.number(), delta: z.number(), epsilon: z.number() })
    .nullable()
    .catch(null)
    .default(null),
});
export type FederationSummary = z.output<typeof FederationSummarySchema>;

/** A federated run's part of summary.json (`tensile run` of spec.federation), or null for any other run. */
export function federationOf(extra: Readonly<Record<string, unknown>>): FederationSummary | null {
  const parsed = FederationSummarySchema.safeParse(extra);
  return parsed.success ? parsed.data : null;
}
