/**
 * `tensile run FILE --workers N --out DIR`: trains a TrainingJob manifest on this machine, with the
 * workers as child processes configured exactly as the operator configures pods (workerEnvironment),
 * and writes DIR/summary.json. Running it again with the same DIR resumes from the newest checkpoint.
 *
 * Layout of DIR: checkpoints/ (unless --checkpoints), audit/<worker>.bin, worker-<i>.log (the raw JSON
 * logs), result-<worker>.json (what each worker reported), summary.json.
 *
 * One worker for now. The plan (planLocalRun) already lists workers with their environments; the
 * elastic issue adds a local nats-server, sets TENSILE_NATS_URL for every worker and starts N.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { workerEnvironment } from '../../worker/config.ts';
import { auditEpochs, readAuditFile } from '../../worker/data/audit.ts';
import { readWorkerResult, resultFile, type WorkerResult } from '../../worker/result.ts';
import { BACKENDS, type BackendChoice, type TrainingJob } from '../api/training-job.ts';
import { formatManifestProblem, validateManifestText } from '../api/validate.ts';

export interface RunOptions {
  readonly file: string;
  readonly workers: number;
  readonly out: string | undefined;
  readonly backend: BackendChoice | undefined;
  readonly checkpoints: string | undefined;
}

export const RUN_USAGE = `usage: tensile run FILE [--workers N] [--out DIR] [--backend auto|tensorflow|wasm|cpu] [--checkpoints DIR]

Trains the TrainingJob in FILE on this machine and writes DIR/summary.json.
  --workers N        worker processes (1 for now)
  --out DIR          output directory (default .tensile/runs/<job name>); running again resumes
  --backend B        force a TensorFlow.js backend (default: spec.worker.backend)
  --checkpoints DIR  checkpoint directory (default DIR/checkpoints)`;

/** Parses the arguments; returns a message for the user when they are wrong. */
export function parseRunArgs(args: readonly string[]): RunOptions | string {
  let file: string | undefined;
  let workers = 1;
  let out: string | undefined;
  let backend: BackendChoice | undefined;
  let checkpoints: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    const [flag, inline] =
      arg.startsWith('--') && arg.includes('=')
        ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
        : [arg, undefined];
    const value = (): string | undefined => inline ?? args[++i];
    switch (flag) {
      case '--workers': {
        const v = value();
        if (v === undefined || !/^\d+$/.test(v) || Number(v) < 1)
          return `--workers needs a positive number, got ${v ?? 'nothing'}`;
        workers = Number(v);
        break;
      }
      case '--out':
        out = value();
        if (out === undefined || out === '') return '--out needs a directory';
        break;
      case '--checkpoints':
        checkpoints = value();
        if (checkpoints === undefined || checkpoints === '') return '--checkpoints needs a directory';
        break;
      case '--backend': {
        const v = value();
        if (!BACKENDS.includes(v as BackendChoice))
          return `--backend must be one of ${BACKENDS.join(', ')}, got ${v ?? 'nothing'}`;
        backend = v as BackendChoice;
        break;
      }
      default:
        if (arg.startsWith('-')) return `unknown option ${arg}`;
        if (file !== undefined) return `one manifest at a time (got ${file} and ${arg})`;
        file = arg;
    }
  }
  if (file === undefined) return 'missing FILE (a TrainingJob manifest)';
  if (workers > 1) {
    return `--workers ${workers}: several local workers need the elastic runtime (rendezvous over NATS), which is not built yet; use --workers 1`;
  }
  return { file, workers, out, backend, checkpoints };
}

export interface LocalWorkerPlan {
  readonly id: string;
  readonly index: number;
  readonly env: Record<string, string>;
  readonly log: string;
}

export interface LocalRunPlan {
  readonly job: TrainingJob;
  readonly out: string;
  readonly checkpointDir: string;
  readonly workers: readonly LocalWorkerPlan[];
}

/** Paths in a manifest are relative to the manifest's directory, as in other tools' config files. */
export function resolveManifestPaths(job: TrainingJob, base: string): TrainingJob {
  const at = (path: string) => (isAbsolute(path) ? path : resolve(base, path));
  const spec = structuredClone(job.spec);
  spec.dataset.path = at(spec.dataset.path);
  if (spec.model.layers?.path !== undefined) spec.model.layers.path = at(spec.model.layers.path);
  return { ...job, spec };
}

/** What to start, pure: the worker processes and the environment of each. */
export function planLocalRun(job: TrainingJob, options: RunOptions, cwd: string): LocalRunPlan {
  const out = resolve(cwd, options.out ?? join('.tensile', 'runs', job.metadata.name));
  const checkpointDir = resolve(cwd, options.checkpoints ?? join(out, 'checkpoints'));
  const workers = Array.from({ length: options.workers }, (_, index) => {
    const id = `${job.metadata.name}-worker-${index}`;
    const env = workerEnvironment({
      jobName: job.metadata.name,
      namespace: job.metadata.namespace ?? 'default',
      spec: job.spec,
      workerId: id,
      replicaIndex: index,
      checkpointDir,
      outDir: out,
      ...(options.backend === undefined ? {} : { backend: options.backend }),
    });
    return { id, index, env, log: join(out, `worker-${index}.log`) };
  });
  return { job, out, checkpointDir, workers };
}

export interface RunSummary {
  readonly job: string;
  readonly status: WorkerResult['status'];
  readonly reason: string;
  readonly step: number;
  readonly epoch: number;
  readonly eval: WorkerResult['eval'];
  readonly wallSeconds: number;
  readonly trainSeconds: number;
  readonly samplesPerSecond: number;
  readonly backend: string;
  readonly workers: number;
  readonly epochs: { epoch: number; seen: number; duplicated: number; missing: number; complete: boolean }[];
  readonly generations: WorkerResult['generations'];
  readonly checkpoint: WorkerResult['checkpoint'];
  readonly resumedFrom: WorkerResult['resumedFrom'];
}

/** The summary of a finished run, from the workers' results and audit files; pure but for reading them. */
export function summarize(
  job: string,
  results: readonly WorkerResult[],
  auditFiles: readonly string[],
  wallSeconds: number,
): RunSummary {
  const lead = results[0];
  if (lead === undefined) throw new Error('no worker result');
  const records = auditFiles.flatMap((file) => readAuditFile(file));
  const epochs = auditEpochs(records, lead.trainSamples).map((e) => ({
    ...e,
    complete: e.epoch < lead.epoch,
  }));
  return {
    job,
    status: lead.status,
    reason: lead.reason,
    step: lead.step,
    epoch: lead.epoch,
    eval: lead.eval,
    wallSeconds: Math.round(wallSeconds * 10) / 10,
    trainSeconds: Math.round(lead.trainSeconds * 10) / 10,
    samplesPerSecond: Math.round(results.reduce((sum, r) => sum + r.sessionSamplesPerSecond, 0) * 10) / 10,
    backend: lead.backend,
    workers: results.length,
    epochs,
    generations: lead.generations,
    checkpoint: lead.checkpoint,
    resumedFrom: lead.resumedFrom,
  };
}

export interface RunIo {
  out(line: string): void;
  err(line: string): void;
}

interface LogLine {
  level?: string;
  message?: string;
  event?: string;
  [key: string]: unknown;
}

const fixed = (value: unknown, digits: number) => (typeof value === 'number' ? value.toFixed(digits) : '?');

/** One line of human progress for a worker log line, or undefined to stay quiet. */
export function describeLogLine(line: LogLine): string | undefined {
  switch (line.event) {
    case 'backend':
      return `backend ${line['backend']} (${line['via']})`;
    case 'dataset':
      return `dataset: ${line['trainSamples']} training, ${line['evalSamples']} evaluation samples of [${String(line['sampleShape'])}], ${line['classes']} classes (${line['residentMiB']} MiB in memory)`;
    case 'model':
      return `model: ${line['kind']}, ${line['parameters']} parameters`;
    case 'resumed':
      return `resumed from ${line['path']} at step ${line['step']} (epoch ${line['epoch']}, cursor ${line['cursor']})`;
    case 'generation':
      return `generation ${line['generation']}: ${line['worldSize']} worker(s), global batch ${line['globalBatch']}, learning rate ${line['learningRate']}, from step ${line['firstStep']}`;
    case 'progress':
      return `step ${line['step']}/${line['plannedSteps']}  epoch ${line['epoch']}  loss ${fixed(line['loss'], 4)}  accuracy ${fixed(line['accuracy'], 4)}  ${fixed(line['samplesPerSecond'], 0)} samples/s`;
    case 'eval':
      return `evaluation at step ${line['step']}: accuracy ${fixed(line['accuracy'], 4)}, loss ${fixed(line['loss'], 4)} (${line['samples']} samples)`;
    case 'checkpoint':
      return `checkpoint at step ${line['step']}: ${line['path']}`;
    case 'completed':
    case 'stopped':
      return `${line.event}: ${line['reason']} at step ${line['step']}`;
    default:
      if (line.level === 'warn' || line.level === 'error')
        return `${line.level}: ${line.message ?? ''}${line['reason'] ? ` (${line['reason']})` : ''}`;
      return undefined;
  }
}

const here = dirname(fileURLToPath(import.meta.url));
const TENSILE_BIN = join(here, '..', 'bin', 'tensile.mjs');

function startWorker(plan: LocalWorkerPlan, io: RunIo, onError: (message: string) => void): ChildProcess {
  const logFile = createWriteStream(plan.log, { flags: 'a' });
  const child = spawn(process.execPath, [TENSILE_BIN, 'worker'], {
    env: { ...process.env, ...plan.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on('line', (text) => {
    logFile.write(`${text}\n`);
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      io.err(text);
      return;
    }
    if (line.event === 'failed' && typeof line['error'] === 'string') onError(line['error']);
    const human = describeLogLine(line);
    if (human !== undefined) io.out(human);
  });
  const errors = createInterface({ input: child.stderr as NodeJS.ReadableStream });
  errors.on('line', (text) => {
    logFile.write(`${text}\n`);
    io.err(text);
  });
  child.on('close', () => logFile.end());
  return child;
}

export async function runRun(args: string[], io: RunIo, cwd = process.cwd()): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(RUN_USAGE);
    return 0;
  }
  const options = parseRunArgs(args);
  if (typeof options === 'string') {
    io.err(`tensile run: ${options}`);
    io.err(RUN_USAGE);
    return 2;
  }
  const started = performance.now();
  const file = resolve(cwd, options.file);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    io.err(`${options.file}: cannot read: ${code === 'ENOENT' ? 'no such file' : String(error)}`);
    return 2;
  }
  const report = validateManifestText(text, options.file);
  const errors = report.problems.filter((p) => p.severity === 'error');
  for (const problem of errors) io.err(formatManifestProblem(problem));
  if (errors.length > 0) return 2;
  const [first, ...others] = report.jobs;
  if (first === undefined) return 2;
  if (others.length > 0) {
    io.err(
      `${options.file}: holds ${report.jobs.length} TrainingJobs; tensile run trains one (split the file)`,
    );
    return 2;
  }
  const job = resolveManifestPaths(first, dirname(file));
  const plan = planLocalRun(job, options, cwd);
  mkdirSync(plan.out, { recursive: true });
  const resuming =
    existsSync(plan.checkpointDir) && readdirSync(plan.checkpointDir).some((n) => n.startsWith('ckpt-'));
  io.out(
    `${job.metadata.name}: ${plan.workers.length} worker(s), output in ${plan.out}${resuming ? ' (resuming)' : ''}`,
  );

  let lastError: string | undefined;
  const children = plan.workers.map((worker) => startWorker(worker, io, (message) => (lastError = message)));
  const forward = (signal: NodeJS.Signals) => {
    io.err(`${signal}: asking the workers to checkpoint and stop`);
    for (const child of children) child.kill('SIGTERM');
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  const exits = await Promise.all(
    children.map(
      (child) =>
        new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
          child.on('close', (code, signal) => done({ code, signal })),
        ),
    ),
  );
  process.off('SIGINT', forward);
  process.off('SIGTERM', forward);

  const failed = exits.find((e) => e.code !== 0);
  if (failed !== undefined) {
    const how = failed.signal !== null ? `was killed by ${failed.signal}` : `exited with code ${failed.code}`;
    io.err(`tensile run: a worker ${how}${lastError === undefined ? '' : `: ${lastError}`}`);
    io.err(`logs: ${plan.workers.map((w) => w.log).join(', ')}`);
    return failed.code === 2 ? 2 : 1;
  }
  let results: WorkerResult[];
  try {
    results = plan.workers.map((w) => readWorkerResult(resultFile(plan.out, w.id)));
  } catch (error) {
    io.err(`tensile run: the worker ended without a valid result (${(error as Error).message})`);
    return 1;
  }
  const auditDir = join(plan.out, 'audit');
  const auditFiles = existsSync(auditDir)
    ? readdirSync(auditDir)
        .filter((n) => n.endsWith('.bin'))
        .map((n) => join(auditDir, n))
    : [];
  const summary = summarize(job.metadata.name, results, auditFiles, (performance.now() - started) / 1000);
  const summaryFile = join(plan.out, 'summary.json');
  writeFileSync(`${summaryFile}.tmp`, `${JSON.stringify(summary, null, 2)}\n`);
  renameSync(`${summaryFile}.tmp`, summaryFile);
  if (summary.status === 'stopped') {
    io.out(`stopped at step ${summary.step}; run the same command again to resume (${summaryFile})`);
  } else {
    const accuracy =
      summary.eval === null
        ? 'no evaluation'
        : `accuracy ${summary.eval.accuracy.toFixed(4)}, loss ${summary.eval.loss.toFixed(4)}`;
    io.out(`done: ${summary.reason}; ${accuracy}; ${summary.wallSeconds} s; ${summaryFile}`);
  }
  return 0;
}
