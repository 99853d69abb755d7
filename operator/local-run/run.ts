/**
 * `tensile run FILE --workers N --out DIR`: trains a TrainingJob manifest on this machine, with the
 * workers as child processes configured exactly as the operator configures pods (workerEnvironment),
 * and writes DIR/summary.json. Running it again with the same DIR resumes from the newest checkpoint.
 *
 * Layout of DIR: checkpoints/ (unless --checkpoints), audit/<worker>.bin, worker-<i>.log (the raw JSON
 * logs), result-<worker>.json (what each worker reported), events.jsonl (chaos and world changes),
 * nats/ (the local nats-server's JetStream store: the rendezvous bucket outlives a Ctrl-C), job-uid
 * (this run's incarnation: kept when resuming, new when starting over),
 * summary.json and report.html.
 *
 * Several workers (or --chaos) start a local nats-server and train elastically; `--chaos` scripts
 * failures at global steps, at shares of the planned steps or at times since the first world: kill -9
 * a worker, start one more, stop one gracefully, restart NATS.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  appendFileSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, constants } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { auditEpochs, committedRecords, readAuditFile } from '../../worker/data/audit.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { runsFromSources } from '../../worker/module-url.ts';
import { readWorkerResult, resultFile, type WorkerResult } from '../../worker/result.ts';
import { JOB_UID_PATTERN } from '../api/contract.ts';
import { type GenerationEnd, generationEnds, goodput } from '../api/goodput.ts';
import type { RunSummary } from '../api/run-summary.ts';
import { BACKENDS, type BackendChoice, elasticRange, type TrainingJob } from '../api/training-job.ts';
import { formatManifestProblem, validateManifestText } from '../api/validate.ts';
import { workerEnvironment } from '../api/worker-env.ts';
import {
  decodeWorkerLine,
  decodeWorkerRecord,
  type WorkerEvent,
  type WorkerLine,
} from '../api/worker-events.ts';
import {
  type CommandIo,
  type CommandSpec,
  commandLine,
  formatHelp,
  type OptionValues,
  parseCommand,
  readStandardInput,
  STDIN_NAME,
  UsageError,
} from '../commands/args.ts';
import { LocalAutoscaler } from './autoscaler.ts';
import { ChosenBatchWriter } from './chosen-batch.ts';
import { CpuBudgets, inCgroup, parseCpuQuota } from './cpu-quota.ts';
import { type DutyCycle, startDutyCycle } from './duty-cycle.ts';
import { runFederated } from './federated-run.ts';
import { type NatsServer, startNatsServer } from './nats-server.ts';

export const CHAOS_ACTIONS = ['kill', 'join', 'leave', 'nats-restart', 'slow', 'unslow'] as const;
export type ChaosAction = (typeof CHAOS_ACTIONS)[number];

/**
 * When a scripted event is due: at (or after) a global step; at a share of the planned steps
 * (`kill:30%`: the same point of the run whatever the manifest's size or the machine's speed); or
 * `seconds` after the first world of this session formed (`kill:@20s`: start-up does not count).
 */
export type ChaosEvent = (
  | { readonly action: ChaosAction; readonly step: number }
  | { readonly action: ChaosAction; readonly percent: number }
  | { readonly action: ChaosAction; readonly seconds: number }
) /** slow and unslow: the index of the worker (worker-N) and the fraction of its speed it keeps. */ & {
  readonly target?: number;
  readonly factor?: number;
};

/** What happened: the step it happened at, and the worker it hit or started. */
export type ChaosRecord = ChaosEvent & {
  readonly step: number;
  readonly worker?: string;
  readonly time: string;
};

export interface ChaosProgress {
  readonly step: number;
  readonly plannedSteps: number | undefined;
  /** Since the first world of this session formed; undefined before. */
  readonly seconds: number | undefined;
}

/** The step an event stands for, once it can be known (a time never can). */
export function chaosStep(event: ChaosEvent, plannedSteps: number | undefined): number | undefined {
  if ('step' in event) return event.step;
  if ('percent' in event)
    return plannedSteps === undefined ? undefined : Math.ceil((event.percent / 100) * plannedSteps);
  return undefined;
}

export function chaosDue(event: ChaosEvent, progress: ChaosProgress): boolean {
  if ('seconds' in event) return progress.seconds !== undefined && progress.seconds >= event.seconds;
  const at = chaosStep(event, progress.plannedSteps);
  return at !== undefined && progress.step >= at;
}

/**
 * Whether the next event of the script may happen now: when due, and, unless it is a join itself, once
 * the workers earlier joins started are in a world (they take seconds to start, whatever a step takes).
 */
export function chaosReady(event: ChaosEvent, joinsPending: number, progress: ChaosProgress): boolean {
  return (joinsPending === 0 || event.action === 'join') && chaosDue(event, progress);
}

const describeChaos = (event: ChaosEvent): string =>
  `${event.action}:${event.target === undefined ? '' : `${event.target}:`}${event.factor === undefined ? '' : `${event.factor}:`}${'step' in event ? event.step : 'percent' in event ? `${event.percent}%` : `@${event.seconds}s`}`;

export interface RunOptions {
  readonly file: string;
  readonly workers: number;
  readonly out: string | undefined;
  readonly backend: BackendChoice | undefined;
  readonly checkpoints: string | undefined;
  readonly chaos: readonly ChaosEvent[];
  /** Seeds the choice of the worker a kill or leave hits. */
  readonly chaosSeed: number;
  /** Force the elastic runtime (NATS rendezvous) for a single worker too. */
  readonly elastic: boolean;
  /**
   * Pretend the workers run on `nodes` nodes spread over `zones` zones (worker i on node i mod
   * nodes), as the downward API tells pods: the ring order then follows the placement.
   */
  readonly fakeTopology?: { readonly nodes: number; readonly zones: number };
  /** Pin worker i to CPU i mod the CPUs (taskset), so that each worker's speed is its own. */
  readonly pinCpus?: boolean;
  /** Each worker in a cgroup of its own with this many cores of CPU time (cpu-quota.ts). */
  readonly cpuQuota?: number;
}

export const RUN_COMMAND = {
  command: 'tensile run',
  synopsis: 'FILE [options]',
  description: `Trains the TrainingJob in FILE (- reads standard input) on this machine and writes
DIR/summary.json and DIR/report.html. Ctrl-C checkpoints and stops (exit 130); the same command
again resumes from the newest checkpoint.`,
  options: {
    workers: {
      type: 'string',
      value: 'N',
      help: 'worker processes (default 1); more than one start a local nats-server and\ntrain elastically (rendezvous, ring all-reduce)',
    },
    out: {
      type: 'string',
      value: 'DIR',
      help: 'output directory (default .tensile/runs/<job name>); running again resumes',
    },
    chaos: {
      type: 'string',
      value: 'EVENTS',
      help: 'comma-separated ACTION:WHEN, e.g. kill:40,join:80,leave:120,nats-restart:150:\nkill -9 a worker, start one more, stop one gracefully, restart nats-server;\nslow:N:F[:WHEN] runs worker-N at F (0 < F ≤ 1) of its speed (a SIGSTOP/SIGCONT\nduty cycle; from the first step without WHEN), unslow:N[:WHEN] ends that;\nWHEN is a global step (40), a share of the planned steps (30%) or seconds\nafter the first world formed (@20s). Events happen in the order written\n(sorted when all are steps); joins start side by side, and any other\nevent waits until the workers they started are in a world (or standing by)',
    },
    'chaos-seed': { type: 'string', value: 'N', help: 'which workers kill and leave hit (default 1)' },
    elastic: { type: 'boolean', help: 'use the elastic runtime even with one worker' },
    'fake-topology': {
      type: 'string',
      value: 'NODES:ZONES',
      help: 'place worker i on fake node i mod NODES, the nodes spread over ZONES zones\n(what a pod learns from the downward API), e.g. 2:2',
    },
    'pin-cpus': {
      type: 'boolean',
      help: 'pin worker i to CPU i mod the number of CPUs (taskset), so that on a small\nmachine each worker computes at its own speed (benchmarks of uneven workers)',
    },
    'cpu-quota': {
      type: 'string',
      value: 'CORES',
      help: "run each worker in a cgroup of its own with a CPU quota of CORES (e.g. 0.5),\nas a Kubernetes CPU limit; slow:N:F then sets worker-N's quota to F × CORES\n(needs write access to the cgroup hierarchy: root)",
    },
    backend: {
      type: 'string',
      value: 'B',
      help: `force a TensorFlow.js backend: ${BACKENDS.join(', ')} (default spec.worker.backend)`,
    },
    checkpoints: { type: 'string', value: 'DIR', help: 'checkpoint directory (default DIR/checkpoints)' },
  },
  positionals: true,
} as const satisfies CommandSpec;

/** Parses `kill:40,join:30%,leave:@20s`; returns a message naming the bad part when it is wrong. */
export function parseChaos(text: string): ChaosEvent[] | string {
  const events: ChaosEvent[] = [];
  for (const part of text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const slowed = parseSlow(part);
    if (typeof slowed === 'string') return slowed;
    if (slowed !== undefined) {
      events.push(slowed);
      continue;
    }
    const at = part.lastIndexOf(':');
    const name = part.slice(0, at);
    const when = part.slice(at + 1);
    const bad = `--chaos: "${part}" is not ACTION:STEP with ACTION one of ${CHAOS_ACTIONS.join(', ')} (e.g. kill:40; or a share of the planned steps, kill:30%, or seconds after the first world, kill:@20s)`;
    if (at < 0 || !CHAOS_ACTIONS.includes(name as ChaosAction)) return bad;
    const action = name as ChaosAction;
    const percent = /^(\d+(?:\.\d+)?)%$/.exec(when)?.[1];
    const seconds = /^@(\d+(?:\.\d+)?)s$/.exec(when)?.[1];
    if (/^\d+$/.test(when)) events.push({ action, step: Number(when) });
    else if (percent !== undefined && Number(percent) <= 100)
      events.push({ action, percent: Number(percent) });
    else if (seconds !== undefined) events.push({ action, seconds: Number(seconds) });
    else return bad;
  }
  // Steps alone have one order; a script that mixes forms happens as written.
  return events.every((e) => 'step' in e)
    ? events.sort((a, b) => ('step' in a && 'step' in b ? a.step - b.step : 0))
    : events;
}

/** `slow:N:F[:WHEN]` and `unslow:N[:WHEN]`; undefined for another action, a message when malformed. */
function parseSlow(part: string): ChaosEvent | string | undefined {
  const [action, ...rest] = part.split(':');
  if (action !== 'slow' && action !== 'unslow') return undefined;
  const slow = action === 'slow';
  const bad = slow
    ? `--chaos: "${part}" is not slow:N:F[:WHEN] (worker-N at F of its speed, 0 < F ≤ 1; e.g. slow:1:0.5 or slow:1:0.5:100)`
    : `--chaos: "${part}" is not unslow:N[:WHEN] (e.g. unslow:1:300)`;
  const [target, factor, when] = slow ? rest : [rest[0], '1', rest[1]];
  if (rest.length > (slow ? 3 : 2) || target === undefined || !/^\d+$/.test(target)) return bad;
  const f = Number(factor);
  if (factor === undefined || !/^\d*\.?\d+$/.test(factor) || !(f > 0 && f <= 1)) return bad;
  const at = when === undefined ? [{ action, step: 0 }] : parseChaos(`kill:${when}`);
  if (typeof at === 'string' || at[0] === undefined) return bad;
  const { action: _, ...point } = at[0];
  return { ...point, action, target: Number(target), factor: f } as ChaosEvent;
}

/** The options of a run from its parsed command line; throws UsageError naming a wrong one. */
function runOptions(
  values: OptionValues<typeof RUN_COMMAND.options>,
  positionals: readonly string[],
): RunOptions {
  const [file, other] = positionals;
  if (file === undefined) throw new UsageError('missing FILE (a TrainingJob manifest, - for standard input)');
  if (other !== undefined) throw new UsageError(`one manifest at a time (got ${file} and ${other})`);
  const workers = values.workers ?? '1';
  if (!/^\d+$/.test(workers) || Number(workers) < 1)
    throw new UsageError(`--workers needs a positive number, got ${workers}`);
  const chaos = parseChaos(values.chaos ?? '');
  if (typeof chaos === 'string') throw new UsageError(chaos);
  const chaosSeed = values['chaos-seed'] ?? '1';
  if (!/^\d+$/.test(chaosSeed)) throw new UsageError(`--chaos-seed needs a number, got ${chaosSeed}`);
  const backend = values.backend;
  if (backend !== undefined && !BACKENDS.includes(backend as BackendChoice))
    throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got ${backend}`);
  const topology = values['fake-topology'];
  const placed = topology === undefined ? undefined : /^(\d+):(\d+)$/.exec(topology);
  if (placed === null || (placed !== undefined && (Number(placed[1]) < 1 || Number(placed[2]) < 1)))
    throw new UsageError(
      `--fake-topology needs NODES:ZONES, two positive numbers such as 2:2, got ${topology}`,
    );
  const quota = values['cpu-quota'] === undefined ? undefined : parseCpuQuota(values['cpu-quota']);
  if (typeof quota === 'string') throw new UsageError(quota);
  return {
    ...(placed === undefined ? {} : { fakeTopology: { nodes: Number(placed[1]), zones: Number(placed[2]) } }),
    ...(quota === undefined ? {} : { cpuQuota: quota }),
    file,
    workers: Number(workers),
    out: values.out,
    backend: backend as BackendChoice | undefined,
    checkpoints: values.checkpoints,
    chaos,
    chaosSeed: Number(chaosSeed),
    elastic: values.elastic === true || Number(workers) > 1 || chaos.length > 0,
    ...(values['pin-cpus'] === true ? { pinCpus: true } : {}),
  };
}

/** Parses the arguments; returns a message for the user when they are wrong (the help for --help). */
export function parseRunArgs(args: readonly string[]): RunOptions | string {
  try {
    const parsed = parseCommand(RUN_COMMAND, args);
    return parsed.help ? formatHelp(RUN_COMMAND) : runOptions(parsed.values, parsed.positionals);
  } catch (error) {
    if (error instanceof UsageError) return error.message;
    throw error;
  }
}

/**
 * The exit code of a run: a worker's unexpected failure first (2 when it was terminal), then an
 * interruption as shells report a signal (128 + its number: Ctrl-C is 130), then the outcome.
 */
export function runExitCode(outcome: {
  readonly unexpectedCodes: readonly (number | null)[];
  readonly interruptedBy: NodeJS.Signals | undefined;
  readonly status: WorkerResult['status'] | undefined;
}): number {
  if (outcome.unexpectedCodes.length > 0)
    return outcome.unexpectedCodes.includes(EXIT_TERMINAL) ? EXIT_TERMINAL : 1;
  if (outcome.interruptedBy !== undefined) return 128 + constants.signals[outcome.interruptedBy];
  return outcome.status === 'completed' || outcome.status === 'stopped' ? 0 : 1;
}

/** What the run does after a worker it did not stop itself exited (`exitOutcome`). */
export type ExitOutcome =
  | { readonly action: 'continue' }
  | { readonly action: 'replace'; readonly message: string }
  | { readonly action: 'end'; readonly message: string };

/**
 * What a worker's unexpected end means for the run, pure. As the operator replaces a failed pod,
 * a worker that failed (a non-zero exit or a signal it did not ask for) is replaced by a new one
 * while the failures stay within spec.runPolicy.backoffLimit. A terminal failure (exit 2) is not
 * replaced, since a restart cannot fix it: the others go on while as many as a world needs
 * (spec.minReplicas) are left, and the run ends otherwise, because nobody would bring one back and
 * the survivors would wait for a world that can never form.
 */
export function exitOutcome(failure: {
  readonly worker: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly error: string | undefined;
  /** Workers of the run still running, not counting those asked to stop. */
  readonly left: number;
  readonly minReplicas: number;
  /** Failures of the run so far, this one included. */
  readonly failures: number;
  readonly backoffLimit: number;
}): ExitOutcome {
  const { worker, code, signal, error, left, minReplicas, failures, backoffLimit } = failure;
  if (code === 0 && signal === null) return { action: 'continue' };
  const how =
    signal !== null
      ? `was killed by ${signal}`
      : code === EXIT_TERMINAL
        ? 'failed terminally (exit code 2: a restart cannot fix it)'
        : `failed (exit code ${code})`;
  const what = `${worker} ${how}${error === undefined ? '' : `: ${error}`}`;
  if (code !== EXIT_TERMINAL && failures <= backoffLimit)
    return {
      action: 'replace',
      message: `${what}; starting a replacement (failure ${failures} of the ${backoffLimit} spec.runPolicy.backoffLimit tolerates)`,
    };
  if (code !== EXIT_TERMINAL)
    return {
      action: 'end',
      message: `${what}; ${failures} failures, more than the ${backoffLimit} spec.runPolicy.backoffLimit tolerates: stopping the run`,
    };
  if (left === 0 || left >= minReplicas) return { action: 'continue' };
  return {
    action: 'end',
    message: `${what}; ${left} worker(s) left, fewer than the ${minReplicas} a world needs (spec.minReplicas): stopping the run`,
  };
}

/** The exit code of a worker whose error is terminal (worker/errors.ts EXIT_TERMINAL). */
const EXIT_TERMINAL = 2;

export interface LocalWorkerPlan {
  readonly id: string;
  readonly index: number;
  readonly env: Record<string, string>;
  readonly log: string;
  /** --pin-cpus: the one CPU the worker runs on. */
  readonly cpu?: number;
}

export interface LocalRunPlan {
  readonly job: TrainingJob;
  readonly out: string;
  readonly checkpointDir: string;
  readonly workers: readonly LocalWorkerPlan[];
}

/** Paths in a manifest are relative to the manifest's directory, as in other tools' config files. */
export function resolveManifestPaths(job: TrainingJob, base: string): TrainingJob {
  // URLs (s3://bucket/key) are not paths.
  const at = (path: string) =>
    isAbsolute(path) || /^[a-z][a-z0-9+.-]*:\/\//i.test(path) ? path : resolve(base, path);
  const spec = structuredClone(job.spec);
  spec.dataset.path = at(spec.dataset.path);
  if (spec.model.layers?.path !== undefined) spec.model.layers.path = at(spec.model.layers.path);
  for (const site of spec.federation?.sites ?? [])
    if (site.dataset !== undefined) site.dataset.path = at(site.dataset.path);
  return { ...job, spec };
}

/** What to start, pure: the worker processes and the environment of each. */
export function planLocalRun(job: TrainingJob, options: RunOptions, cwd: string): LocalRunPlan {
  const out = resolve(cwd, options.out ?? join('.tensile', 'runs', job.metadata.name));
  const checkpointDir = resolve(cwd, options.checkpoints ?? join(out, 'checkpoints'));
  const workers = Array.from({ length: options.workers }, (_, index) =>
    planLocalWorker(job, options, out, checkpointDir, index, undefined),
  );
  return { job, out, checkpointDir, workers };
}

/** One local worker: its id, log file and environment (as the operator would give a pod). */
export function planLocalWorker(
  job: TrainingJob,
  options: Pick<RunOptions, 'backend' | 'chaos' | 'fakeTopology' | 'pinCpus'>,
  out: string,
  checkpointDir: string,
  index: number,
  natsUrl: string | undefined,
  jobUid?: string,
): LocalWorkerPlan {
  const id = `${job.metadata.name}-worker-${index}`;
  const env = workerEnvironment({
    jobName: job.metadata.name,
    namespace: job.metadata.namespace ?? 'default',
    ...(jobUid === undefined ? {} : { jobUid }),
    spec: job.spec,
    workerId: id,
    replicaIndex: index,
    checkpointDir,
    outDir: out,
    modelDir: resolve(out, 'model'),
    ...(natsUrl === undefined ? {} : { natsUrl }),
    // Chaos acts at global steps: it needs to see every step.
    ...(options.chaos.length > 0 ? { progressMs: 0 } : {}),
    ...(options.backend === undefined ? {} : { backend: options.backend }),
    ...(options.fakeTopology === undefined ? {} : fakePlacement(index, options.fakeTopology)),
  });
  const log = join(out, `worker-${index}.log`);
  return {
    id,
    index,
    env,
    log,
    ...(options.pinCpus === true ? { cpu: index % availableParallelism() } : {}),
  };
}

/** Worker `index` on node index mod nodes; the nodes in contiguous blocks of zones. */
export function fakePlacement(
  index: number,
  topology: { readonly nodes: number; readonly zones: number },
): { nodeName: string; zone: string } {
  const node = index % topology.nodes;
  const zone = Math.floor((node * Math.min(topology.zones, topology.nodes)) / topology.nodes);
  return { nodeName: `fake-node-${node}`, zone: `fake-zone-${zone}` };
}

const RUN_UID_FILE = 'job-uid';

/**
 * The identity of a local run, like a TrainingJob's uid: kept in the output directory so that a
 * resumed run is the same incarnation (it finds its rendezvous state), and new when a run starts over.
 */
export function localRunUid(out: string, resuming: boolean): string {
  const file = join(out, RUN_UID_FILE);
  if (resuming && existsSync(file)) {
    const kept = readFileSync(file, 'utf8').trim();
    if (JOB_UID_PATTERN.test(kept)) return kept;
  }
  const uid = randomUUID();
  writeFileSync(`${file}.tmp`, `${uid}\n`);
  renameSync(`${file}.tmp`, file);
  return uid;
}

export type { RunSummary } from '../api/run-summary.ts';

/** The result that speaks for the run: a completed one, else the most advanced. */
export function leadResult(results: readonly WorkerResult[]): WorkerResult | undefined {
  let lead: WorkerResult | undefined;
  for (const r of results) {
    if (lead === undefined) lead = r;
    else if ((r.status === 'completed') !== (lead.status === 'completed')) {
      if (r.status === 'completed') lead = r;
    } else if (
      r.step > lead.step ||
      (r.step === lead.step && r.checkpoint !== null && lead.checkpoint === null)
    )
      lead = r;
  }
  return lead;
}

/** The summary of a finished run, from the workers' results and audit files; pure but for reading them. */
export function summarize(
  job: string,
  results: readonly WorkerResult[],
  auditFiles: readonly string[],
  wallSeconds: number,
  extra: Pick<RunSummary, 'goodput' | 'chaos'> = {},
): RunSummary {
  const lead = leadResult(results);
  if (lead === undefined) throw new Error('no worker result');
  const records = committedRecords(
    auditFiles.flatMap((file) => readAuditFile(file)),
    lead.generations,
  );
  const epochs = auditEpochs(records, lead.trainSamples).map((e) => ({
    ...e,
    complete: e.epoch < lead.epoch,
  }));
  const resumed = results.find((r) => r.resumedFrom !== null)?.resumedFrom ?? null;
  return {
    job,
    status: lead.status,
    reason: lead.reason,
    step: lead.step,
    epoch: lead.epoch,
    eval: lead.eval,
    wallSeconds: Math.round(wallSeconds * 10) / 10,
    trainSeconds: Math.round(lead.trainSeconds * 10) / 10,
    samplesPerSecond: Math.round(lead.sessionSamplesPerSecond * 10) / 10,
    backend: lead.backend,
    workers: results.length,
    epochs,
    generations: lead.generations,
    checkpoint:
      results.find((r) => r.checkpoint !== null && r.checkpoint.step === lead.step)?.checkpoint ??
      lead.checkpoint,
    resumedFrom: resumed,
    ...extra,
  };
}

export interface RunIo extends CommandIo {
  /** Standard input to its end, for FILE `-` (default: this process's). */
  readStdin?(): Promise<string>;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

const fixed = (value: number | null | undefined, digits: number) =>
  value === undefined || value === null ? '?' : value.toFixed(digits);

/** One line of human progress for a worker log record, or undefined to stay quiet. */
export function describeLogLine(record: Record<string, unknown>): string | undefined {
  return describeWorkerLine(decodeWorkerRecord(record));
}

function describeWorkerLine(line: WorkerLine): string | undefined {
  if (line.kind === 'message')
    return line.level === 'warn' || line.level === 'error'
      ? `${line.level}: ${line.message ?? ''}${line.reason ? ` (${line.reason})` : ''}`
      : undefined;
  if (line.kind === 'invalid' || line.kind === 'text') return undefined;
  const e = line.event;
  switch (e.event) {
    case 'backend':
      return `backend ${e.backend} (${e.via})${(e.skipped ?? [])
        .filter((s) => s.backend !== e.backend)
        .map((s) => `; ${s.via} skipped: ${s.reason}`)
        .join('')}`;
    case 'dataset':
      return `dataset: ${e.trainSamples} training, ${e.evalSamples} evaluation samples of [${String(e.sampleShape)}], ${e.classes} classes (${e.residentMiB} MiB in memory)`;
    case 'model':
      return `model: ${e.kind}, ${e.parameters} parameters`;
    case 'resumed':
      return `resumed from ${e.path} at step ${e.step} (epoch ${e.epoch}, cursor ${e.cursor})`;
    case 'generation':
      return `generation ${e.generation}: ${e.worldSize} worker(s), global batch ${e.globalBatch}, learning rate ${e.learningRate}, from step ${e.firstStep}`;
    case 'progress':
      return `step ${e.step}/${e.plannedSteps}  epoch ${e.epoch}  loss ${fixed(e.loss, 4)}  accuracy ${fixed(e.accuracy, 4)}  ${fixed(e.samplesPerSecond, 0)} samples/s`;
    case 'eval':
      return `evaluation at step ${e.step}: accuracy ${fixed(e.accuracy, 4)}, loss ${fixed(e.loss, 4)} (${e.samples} samples)`;
    case 'checkpoint':
      return `checkpoint at step ${e.step}: ${e.path}`;
    case 'checkpoint-uploaded':
      return `checkpoint at step ${e.step} uploaded to ${e.url} (${e.uploadMs} ms)`;
    case 'checkpoint-upload-failed':
      return `checkpoint at step ${e.step} not uploaded: ${e.error}`;
    case 'checkpoint-downloaded':
      return `checkpoint at step ${e.step} downloaded from ${e.url}`;
    case 'balance':
      return `batch split at step ${e.step}: ${e.before === undefined ? '' : `${e.before.join('/')} → `}${e.perWorker.join('/')} (${e.reason})`;
    case 'straggler':
      return `straggler at step ${e.step}: ${e.straggler} at ${e.samplesPerSecond} samples/s, median ${e.medianSamplesPerSecond}${e.evict ? ' (evicting)' : ''}`;
    case 'completed':
    case 'stopped':
      return `${e.event}: ${e.reason} at step ${e.step}`;
    default:
      if (e.level === 'warn' || e.level === 'error')
        return `${e.level}: ${e.message ?? ''}${'reason' in e && e.reason ? ` (${e.reason})` : ''}`;
      return undefined;
  }
}

/** The `tensile` entry the workers start from: the sources' bin through tsx, or the compiled main.js. */
const TENSILE_BIN = fileURLToPath(
  runsFromSources(import.meta.url)
    ? new URL('../bin/tensile.mjs', import.meta.url)
    : new URL('../main.js', import.meta.url),
);

interface RunningWorker {
  readonly plan: LocalWorkerPlan;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Set when the run itself killed or stopped it (chaos): its exit is expected. */
  expected: boolean;
}

interface WorkerLines {
  onEvent(plan: LocalWorkerPlan, event: WorkerEvent): void;
  /** A plain log message (no `event`): shown when it is a warning or an error. */
  onMessage(plan: LocalWorkerPlan, line: WorkerLine): void;
  /** A JSON line that is not an event of the protocol: counted and reported at the end. */
  onInvalid(plan: LocalWorkerPlan, problem: string): void;
}

/** --cpu-quota: the run's cgroups and the cores each worker gets. */
interface WorkerBudget {
  readonly budgets: CpuBudgets;
  readonly cores: number;
}

function startWorker(
  plan: LocalWorkerPlan,
  io: RunIo,
  sink: WorkerLines,
  budget: WorkerBudget | undefined,
): RunningWorker {
  const logFile = createWriteStream(plan.log, { flags: 'a' });
  const node = [process.execPath, TENSILE_BIN, 'worker'];
  // taskset and the cgroup's shell exec the worker in place: the pid, signals and exit are its own.
  const pinned = plan.cpu === undefined ? node : ['taskset', '-c', String(plan.cpu), ...node];
  const command =
    budget === undefined ? pinned : inCgroup(budget.budgets.assign(plan.id, budget.cores), pinned);
  const [file, ...args] = command;
  const child = spawn(file as string, args, {
    env: { ...process.env, ...plan.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  io.out(`${plan.id}: pid ${child.pid ?? '?'}`);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on('line', (text) => {
    logFile.write(`${text}\n`);
    if (!text.startsWith('{')) {
      io.err(text);
      return;
    }
    const line = decodeWorkerLine(text);
    if (line.kind === 'event') sink.onEvent(plan, line.event);
    else if (line.kind === 'message') sink.onMessage(plan, line);
    else if (line.kind === 'invalid') sink.onInvalid(plan, line.problem);
    else io.err(line.text);
  });
  const errors = createInterface({ input: child.stderr as NodeJS.ReadableStream });
  errors.on('line', (text) => {
    logFile.write(`${text}\n`);
    io.err(text);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.on('close', (code, signal) => {
      logFile.end();
      done({ code, signal });
    }),
  );
  return { plan, child, exited, expected: false };
}

/** The sampler's mulberry32 stream in [0, 1): the chaos victim choice is reproducible with --chaos-seed. */
function seededRandom(seed: number): () => number {
  const next = uint32Stream(seed);
  return () => next() / 4294967296;
}

export async function runRun(args: readonly string[], io: RunIo, cwd = process.cwd()): Promise<number> {
  const line = commandLine(RUN_COMMAND, args, io, runOptions);
  if ('exit' in line) return line.exit;
  const parsed = line.parsed;
  const started = performance.now();
  const fromStdin = parsed.file === '-';
  const name = fromStdin ? STDIN_NAME : parsed.file;
  const file = resolve(cwd, parsed.file);
  let text: string;
  try {
    text = fromStdin ? await (io.readStdin ?? readStandardInput)() : readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    io.err(`${name}: cannot read: ${code === 'ENOENT' ? 'no such file' : String(error)}`);
    return 2;
  }
  const report = validateManifestText(text, name);
  const errors = report.problems.filter((p) => p.severity === 'error');
  for (const problem of errors) io.err(formatManifestProblem(problem));
  if (errors.length > 0) return 2;
  const [first, ...others] = report.jobs;
  if (first === undefined) return 2;
  if (others.length > 0) {
    io.err(`${name}: holds ${report.jobs.length} TrainingJobs; tensile run trains one (split the file)`);
    return 2;
  }
  // A manifest from standard input has no directory of its own: its paths are the caller's.
  const job = resolveManifestPaths(first, fromStdin ? cwd : dirname(file));
  // The goodput policy starts and stops workers: that needs the elastic machinery even from one.
  const options = job.spec.autoscaling.policy === 'goodput' ? { ...parsed, elastic: true } : parsed;
  if (job.spec.federation !== undefined) {
    if (options.chaos.length > 0 || options.workers !== 1)
      io.err(
        'tensile run: a federated job takes its workers from spec.federation.sites; --workers and --chaos are ignored',
      );
    return runFederated(job, { out: options.out, backend: options.backend }, io, cwd, TENSILE_BIN);
  }
  const plan = planLocalRun(job, options, cwd);
  mkdirSync(plan.out, { recursive: true });
  const resuming =
    existsSync(plan.checkpointDir) && readdirSync(plan.checkpointDir).some((n) => n.startsWith('ckpt-'));
  // Results are per session; audit files are history, kept when resuming and dropped when starting over.
  for (const name of readdirSync(plan.out))
    if (name.startsWith('result-') && name.endsWith('.json')) rmSync(join(plan.out, name), { force: true });
  if (!resuming) {
    rmSync(join(plan.out, 'audit'), { recursive: true, force: true });
    rmSync(join(plan.out, 'nats'), { recursive: true, force: true });
    rmSync(join(plan.out, 'events.jsonl'), { force: true });
    for (const name of readdirSync(plan.out))
      if (/^worker-\d+\.log$/.test(name)) rmSync(join(plan.out, name), { force: true });
  }
  const jobUid = localRunUid(plan.out, resuming);
  io.out(
    `${job.metadata.name}: ${plan.workers.length} worker(s)${options.elastic ? ' (elastic)' : ''}, output in ${plan.out}${resuming ? ' (resuming)' : ''}`,
  );

  let budget: WorkerBudget | undefined;
  if (options.cpuQuota !== undefined) {
    try {
      budget = { budgets: CpuBudgets.create(job.metadata.name), cores: options.cpuQuota };
    } catch (error) {
      io.err(`tensile run: --cpu-quota: ${(error as Error).message}`);
      return 1;
    }
  }
  // The cgroups go when the run does, however it ends.
  using _budgets = budget?.budgets;
  let nats: NatsServer | undefined;
  if (options.elastic) {
    try {
      nats = await startNatsServer({ storeDir: join(plan.out, 'nats') });
    } catch (error) {
      io.err(`tensile run: ${(error as Error).message}`);
      return 1;
    }
    io.out(`nats-server at ${nats.url}`);
  }
  const eventsFile = join(plan.out, 'events.jsonl');
  const chaosLog: ChaosRecord[] = [];
  const recordEvent = (event: Record<string, unknown>) =>
    appendFileSync(eventsFile, `${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);

  /** The error each worker reported last (its `failed` event), by worker id. */
  const lastErrors = new Map<string, string>();
  let invalidLines = 0;
  let firstInvalid: string | undefined;
  let step = 0;
  const ends: GenerationEnd[] = [];
  const printed = new Set<string>();
  const running: RunningWorker[] = [];
  const pendingChaos = [...options.chaos];
  const random = seededRandom(options.chaosSeed);
  let nextIndex = plan.workers.length;
  let chaosBusy = false;
  let plannedSteps: number | undefined;
  /** First step and time of this session's first world: where a resumed script picks up, and @s counts from. */
  let resumedFrom: number | undefined;
  let firstWorldAt: number | undefined;
  /** Workers a join started that are not in a world yet: the next event that is not a join waits for them. */
  const joining = new Set<string>();

  const alive = () =>
    running.filter((w) => w.child.exitCode === null && w.child.signalCode === null && !w.expected);
  // A resumed run starts past the script's earlier points: those events belonged to the last session.
  const skipResumed = () => {
    if (resumedFrom === undefined || resumedFrom === 0) return;
    const from = resumedFrom;
    // A slow-down is a property of the machine, not a point of the run: it holds in a resumed one too.
    const skipped = pendingChaos.filter(
      (e) => e.target === undefined && (chaosStep(e, plannedSteps) ?? from) < from,
    );
    if (skipped.length === 0) return;
    for (const e of skipped) pendingChaos.splice(pendingChaos.indexOf(e), 1);
    io.out(`chaos: resuming at step ${from}, skipping ${skipped.map(describeChaos).join(',')}`);
  };
  /** Duty cycles of slowed workers, by worker index. */
  const slowed = new Map<number, DutyCycle>();
  const slowWorker = (event: ChaosEvent): string | undefined => {
    const index = event.target ?? -1;
    slowed.get(index)?.[Symbol.dispose]();
    slowed.delete(index);
    const worker = running.find(
      (w) => w.plan.index === index && w.child.exitCode === null && w.child.signalCode === null,
    );
    const factor = event.action === 'slow' ? (event.factor ?? 1) : 1;
    if (worker?.child.pid === undefined) {
      io.out(`chaos at step ${step}: ${describeChaos(event)} → no running worker-${index}, nothing to do`);
      return undefined;
    }
    if (budget !== undefined) {
      budget.budgets.set(worker.plan.id, budget.cores * factor);
      io.out(
        `chaos at step ${step}: ${describeChaos(event)} → ${worker.plan.id} at ${factor} of its speed (CPU quota ${round3(budget.cores * factor)})`,
      );
      return worker.plan.id;
    }
    if (factor < 1) {
      const cycle = startDutyCycle(worker.child.pid, factor);
      slowed.set(index, cycle);
      void worker.exited.then(() => cycle[Symbol.dispose]());
    }
    io.out(`chaos at step ${step}: ${describeChaos(event)} → ${worker.plan.id} at ${factor} of its speed`);
    return worker.plan.id;
  };
  const startJoiner = (): LocalWorkerPlan => {
    const worker = planLocalWorker(
      job,
      options,
      plan.out,
      plan.checkpointDir,
      nextIndex++,
      nats?.url,
      jobUid,
    );
    const started = startWorker(worker, io, sink, budget);
    running.push(started);
    joining.add(worker.id);
    // One that dies before it joins must not hold the rest of the script.
    void started.exited.then(() => {
      if (joining.delete(worker.id)) void applyChaos();
    });
    return worker;
  };
  /** spec.balancing.evictStragglers: as the operator does, the straggler leaves and another worker starts. */
  const evicted = new Set<string>();
  const evictStraggler = (id: string) => {
    if (evicted.has(id)) return;
    const victim = alive().find((w) => w.plan.id === id);
    if (victim === undefined) return;
    evicted.add(id);
    victim.expected = true;
    victim.child.kill('SIGTERM');
    const replacement = startJoiner();
    io.out(`straggler ${id}: asked to leave (SIGTERM), started ${replacement.id} in its place`);
    recordEvent({ type: 'straggler-evicted', step, worker: id, replacement: replacement.id });
  };
  /** spec.autoscaling goodput: the operator's decision on the lead's progress, carried out with processes. */
  const autoscaler =
    job.spec.autoscaling.policy === 'goodput'
      ? new LocalAutoscaler(job.spec, plan.workers.length)
      : undefined;
  const batchWriter =
    autoscaler !== undefined && nats !== undefined
      ? new ChosenBatchWriter(
          nats.url,
          { namespace: job.metadata.namespace ?? 'default', job: job.metadata.name, uid: jobUid },
          (message) => io.err(message),
        )
      : undefined;
  const followAutoscaler = (line: Extract<WorkerEvent, { event: 'progress' }>) => {
    const result = autoscaler?.observe(line, joining.size, new Date());
    if (result === undefined) return;
    const chosen = result.status.chosenBatch;
    if (chosen !== undefined) batchWriter?.write({ ...chosen, replicas: result.replicas });
    if (result.event !== undefined) {
      io.out(`goodput autoscaling at step ${line.step}: ${result.event.message}`);
      recordEvent({
        type: 'autoscale',
        step: line.step,
        replicas: result.replicas,
        ...(chosen === undefined ? {} : { globalBatch: chosen.globalBatch }),
        detail: result.event.message,
      });
    }
    scaleWorkers(result.replicas);
  };
  const scaleWorkers = (replicas: number) => {
    const live = alive();
    for (let n = live.length; n < replicas; n++) io.out(`goodput autoscaling: started ${startJoiner().id}`);
    const surplus = [...live]
      .sort((a, b) => b.plan.index - a.plan.index)
      .slice(0, Math.max(0, live.length - replicas));
    for (const victim of surplus) {
      victim.expected = true;
      victim.child.kill('SIGTERM');
      io.out(`goodput autoscaling: asked ${victim.plan.id} to leave (SIGTERM)`);
    }
  };
  const applyChaos = async () => {
    if (chaosBusy) return;
    chaosBusy = true;
    try {
      const progress = (): ChaosProgress => ({
        step,
        plannedSteps,
        seconds: firstWorldAt === undefined ? undefined : (performance.now() - firstWorldAt) / 1000,
      });
      while (pendingChaos[0] !== undefined && chaosReady(pendingChaos[0], joining.size, progress())) {
        const event = pendingChaos.shift() as ChaosEvent;
        const time = new Date().toISOString();
        if (event.action === 'join') {
          const worker = startJoiner();
          io.out(`chaos at step ${step}: join → started ${worker.id}`);
          chaosLog.push({ ...event, step, worker: worker.id, time });
          recordEvent({ type: 'join', step, worker: worker.id });
        } else if (event.action === 'slow' || event.action === 'unslow') {
          const worker = slowWorker(event);
          chaosLog.push({ ...event, step, ...(worker === undefined ? {} : { worker }), time });
          recordEvent({ type: event.action, step, worker, factor: event.factor });
        } else if (event.action === 'nats-restart') {
          io.out(`chaos at step ${step}: restarting nats-server`);
          chaosLog.push({ ...event, step, time });
          recordEvent({ type: 'nats-restart', step });
          await nats?.restart(1000);
        } else {
          const candidates = alive();
          const victim = candidates[Math.floor(random() * candidates.length)];
          if (victim === undefined) continue;
          victim.expected = true;
          victim.child.kill(event.action === 'kill' ? 'SIGKILL' : 'SIGTERM');
          io.out(
            `chaos at step ${step}: ${event.action} → ${event.action === 'kill' ? 'kill -9' : 'SIGTERM'} ${victim.plan.id}`,
          );
          chaosLog.push({ ...event, step, worker: victim.plan.id, time });
          recordEvent({ type: event.action, step, worker: victim.plan.id });
        }
      }
    } finally {
      chaosBusy = false;
    }
  };

  const show = (worker: string | undefined, line: WorkerLine) => {
    const human = describeWorkerLine(line);
    if (human !== undefined)
      io.out(
        plan.workers.length > 1 || options.elastic
          ? `[${(worker ?? '').replace(`${job.metadata.name}-`, '')}] ${human}`
          : human,
      );
  };
  const sink: WorkerLines = {
    onMessage: (_, line) => show(line.kind === 'message' ? line.worker : undefined, line),
    onInvalid: (worker, problem) => {
      invalidLines++;
      firstInvalid ??= `${worker.log}: ${problem}`;
    },
    onEvent: (worker, line) => {
      if (line.event === 'failed') lastErrors.set(worker.id, line.error);
      if (line.event === 'straggler' && line.evict) evictStraggler(line.straggler);
      if (line.event === 'progress') {
        step = Math.max(step, line.step);
        if (autoscaler !== undefined) followAutoscaler(line);
        if (line.plannedSteps !== undefined) plannedSteps = line.plannedSteps;
        if (pendingChaos.length > 0) {
          skipResumed();
          void applyChaos();
        }
      }
      const standingBy = line.event === 'rendezvous-decision' && line.decision.startsWith('standby');
      if ((line.event === 'generation' || standingBy) && joining.delete(worker.id)) void applyChaos();
      if (line.event === 'generation-end') ends.push(...generationEnds([line]));
      if (line.event === 'generation' && resumedFrom === undefined) {
        resumedFrom = line.firstStep;
        firstWorldAt = performance.now();
        skipResumed();
      }
      if (line.event === 'generation' && line.rank === 0)
        recordEvent({
          type: 'rescale',
          step: line.firstStep,
          detail: `generation ${line.generation}: ${line.worldSize} worker(s), global batch ${line.globalBatch}, lr ${line.learningRate} (${line.reason})`,
        });
      // Several workers log the same world and evaluation: show each once.
      if (
        line.event === 'generation' ||
        line.event === 'eval' ||
        line.event === 'balance' ||
        line.event === 'straggler'
      ) {
        const key = `${line.event}:${line.generation}:${line.event === 'generation' ? '' : line.step}`;
        if (printed.has(key)) return;
        printed.add(key);
      }
      // Progress lines every step (chaos) would flood the terminal: one in 25.
      if (line.event === 'progress' && options.chaos.length > 0 && line.step % 25 !== 0) return;
      show(line.worker, { kind: 'event', event: line });
    },
  };

  for (const worker of plan.workers) {
    const withNats = planLocalWorker(
      job,
      options,
      plan.out,
      plan.checkpointDir,
      worker.index,
      nats?.url,
      jobUid,
    );
    running.push(startWorker(withNats, io, sink, budget));
  }
  let interruptedBy: NodeJS.Signals | undefined;
  const forward = (signal: NodeJS.Signals) => {
    interruptedBy ??= signal;
    io.err(`${signal}: asking the workers to checkpoint and stop`);
    for (const worker of running) worker.child.kill('SIGTERM');
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  // Workers started by `join` arrive while we wait: wait until every one of them has exited.
  const exits = new Map<RunningWorker, { code: number | null; signal: NodeJS.Signals | null }>();
  const minReplicas = elasticRange(job.spec).min;
  let failures = 0;
  while (exits.size < running.length) {
    const waiting = running.filter((w) => !exits.has(w));
    const [done, exit] = await Promise.race(waiting.map((w) => w.exited.then((e) => [w, e] as const)));
    exits.set(done, exit);
    if (done.expected || interruptedBy !== undefined) continue;
    const failed = exit.code !== 0 || exit.signal !== null;
    if (failed) failures++;
    const outcome = exitOutcome({
      worker: done.plan.id,
      ...exit,
      error: lastErrors.get(done.plan.id),
      left: alive().length,
      minReplicas,
      failures,
      backoffLimit: job.spec.runPolicy.backoffLimit,
    });
    if (outcome.action === 'continue') continue;
    if (outcome.action === 'replace') {
      // Replaced, as the operator replaces a failed pod: its exit no longer fails the run.
      done.expected = true;
      const replacement = startJoiner();
      io.err(`tensile run: ${outcome.message}: ${replacement.id}`);
      recordEvent({ type: 'restart', step, worker: done.plan.id, replacement: replacement.id, failures });
      continue;
    }
    io.err(`tensile run: ${outcome.message}`);
    recordEvent({ type: 'run-failed', step, worker: done.plan.id, reason: outcome.message });
    // As on Ctrl-C: the others checkpoint at their step boundary (or stop waiting) and exit.
    for (const w of alive()) {
      w.expected = true;
      w.child.kill('SIGTERM');
    }
  }
  process.off('SIGINT', forward);
  process.off('SIGTERM', forward);
  for (const cycle of slowed.values()) cycle[Symbol.dispose]();
  await batchWriter?.[Symbol.asyncDispose]();
  await nats?.[Symbol.asyncDispose]();

  if (invalidLines > 0)
    io.err(
      `tensile run: ${invalidLines} worker log line(s) were not events of the protocol (first: ${firstInvalid})`,
    );
  const unexpected = [...exits].filter(([w, e]) => !w.expected && e.code !== 0);
  for (const [w, e] of unexpected) {
    const how = e.signal !== null ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
    io.err(
      `tensile run: ${w.plan.id} ${how}${lastErrors.has(w.plan.id) ? `: ${lastErrors.get(w.plan.id)}` : ''} (log: ${w.plan.log})`,
    );
  }
  const results: WorkerResult[] = [];
  for (const w of running) {
    const file = resultFile(plan.out, w.plan.id);
    if (!existsSync(file)) continue;
    try {
      results.push(readWorkerResult(file));
    } catch (error) {
      io.err(`tensile run: ${file}: not a valid result (${(error as Error).message})`);
    }
  }
  const unexpectedCodes = unexpected.map(([, e]) => e.code);
  if (results.length === 0) {
    io.err('tensile run: no worker ended with a result');
    return runExitCode({ unexpectedCodes, interruptedBy, status: undefined });
  }
  const auditDir = join(plan.out, 'audit');
  const auditFiles = existsSync(auditDir)
    ? readdirSync(auditDir)
        .filter((n) => n.endsWith('.bin'))
        .map((n) => join(auditDir, n))
    : [];
  const wallSeconds = (performance.now() - started) / 1000;
  const lead = leadResult(results);
  const summary = summarize(job.metadata.name, results, auditFiles, wallSeconds, {
    ...(options.elastic && lead !== undefined
      ? { goodput: Math.round(goodput(ends, lead.generations, wallSeconds) * 1000) / 1000 }
      : {}),
    ...(chaosLog.length > 0 ? { chaos: chaosLog } : {}),
  });
  const summaryFile = join(plan.out, 'summary.json');
  writeFileSync(`${summaryFile}.tmp`, `${JSON.stringify(summary, null, 2)}\n`);
  renameSync(`${summaryFile}.tmp`, summaryFile);
  try {
    const { writeReport } = await import('../commands/report.ts');
    io.out(`report: ${writeReport(plan.out)}`);
  } catch (error) {
    io.err(`tensile run: could not write the report (${(error as Error).message})`);
  }
  if (summary.status !== 'completed') {
    io.out(`stopped at step ${summary.step}; run the same command again to resume (${summaryFile})`);
  } else {
    const accuracy =
      summary.eval === null
        ? 'no evaluation'
        : `accuracy ${summary.eval.accuracy.toFixed(4)}, loss ${summary.eval.loss.toFixed(4)}`;
    io.out(
      `done: ${summary.reason}; ${accuracy}; ${summary.wallSeconds} s${summary.goodput === undefined ? '' : `; goodput ${summary.goodput}`}; ${summaryFile}`,
    );
    const model = resolve(plan.out, 'model');
    if (existsSync(join(model, 'tensile.json')))
      io.out(`model: ${model} (tf.loadLayersModel('file://${model}/model.json'))`);
  }
  return runExitCode({ unexpectedCodes, interruptedBy, status: summary.status });
}
