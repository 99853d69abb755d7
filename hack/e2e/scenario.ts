/**
 * The end-to-end scenario of issue 6 on the local control plane: a TrainingJob applied with kubectl
 * trains on fake spot GPU nodes while nodes are reclaimed (two with notice, one without) and the
 * simulated autoscaler buys new ones; then the run is judged on its status, its audit, its goodput and
 * its events. `hack/e2e.sh` and test/e2e/spot-churn.test.ts both drive it.
 *
 * Every process it starts (control plane, node agent, nats-server, operator, the workers) is recorded
 * in the cluster's pid folder, so the cluster's stop — or its watchdog, if this process dies first —
 * takes them all down.
 */
import {
  appendFileSync,
  closeSync,
  cpSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { CoreV1Api, CustomObjectsApi, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { LABEL_JOB_NAME } from '../../operator/api/contract.ts';
import {
  type TrainingJob,
  TrainingJobSchema,
  type TrainingJobStatus,
} from '../../operator/api/training-job.ts';
import { eventsOf, type WorkerEvent, type WorkerEventOf } from '../../operator/api/worker-events.ts';
import { checkpointClaimName } from '../../operator/controller/pod-builder.ts';
import { natsServerBinary } from '../../operator/local-run/nats-server.ts';
import { CheckpointStore } from '../../worker/checkpoint/store.ts';
import { auditEpochs, committedRecords, readAuditFile } from '../../worker/data/audit.ts';
import { type LaunchedCluster, launchCluster, runKubectl } from '../cluster/launcher.ts';
import { writeKubeconfig } from '../lib/kubeconfig.ts';
import { freePorts, logTail, type StartedProcess, Supervised, startProcess } from '../lib/processes.ts';
import { REPO_ROOT } from '../node-agent/config.ts';
import type { ReclaimKind } from '../simulators/decide.ts';
import { SimulatedAutoscaler, type SimulatorAction, SpotReclaimer } from '../simulators/simulators.ts';
import {
  type Check,
  check,
  computeGoodput,
  describeEvents,
  type EpochVerdict,
  evaluations,
  type GenerationStart,
  type GoodputReport,
  generationsFromLogs,
  judgeEpochs,
  judgeLostTime,
  type KubeEvent,
  type LostBudget,
  lostTime,
  parseEvents,
  parseLogLines,
  stepTime,
  type TailAccuracy,
  tailAccuracy,
} from './analysis.ts';
import {
  builtWorkerImage,
  CriLogReader,
  judgeSpread,
  loadWorkerImage,
  nodeOfKind,
  type Placement,
  REAL_NODE_CHURN,
} from './real-node.ts';
import { type Reference, referenceRun } from './reference.ts';
import { throttleWorkers } from './throttle.ts';

/** The real kubelet node (`--real-node`) or one of the node agent's. */
export type NodeKind = 'real' | 'fake';

export interface ChurnStep {
  readonly kind: ReclaimKind;
  /** Which kind of node it takes (default: any spot node running a worker). */
  readonly on?: NodeKind;
  /**
   * Due once the job's step reaches this share of its planned steps (and the world is whole): a share
   * of the run, not a step number or a time, lands at the same point of any manifest on any machine.
   */
  readonly atFraction: number;
}

/** Two reclaims with notice, then a node that vanishes without one, early enough to finish before the end. */
export const DEFAULT_CHURN: readonly ChurnStep[] = [
  { kind: 'notice', atFraction: 0.08 },
  { kind: 'notice', atFraction: 0.2 },
  { kind: 'abrupt', atFraction: 0.32 },
];

export interface ScenarioOptions {
  /** The TrainingJob manifest, applied unchanged with `kubectl apply -f`. */
  readonly manifestFile: string;
  /** Fake GPU nodes at start (one worker fits on each). Default: the job's replicas (less one beside the real node). */
  readonly nodes?: number;
  /**
   * Also the real node (hack/cluster/real-node.ts), with room for one worker: that worker runs in a
   * container of the worker image hack/images.sh builds, beside the fake nodes' processes; the churn
   * (default `REAL_NODE_CHURN`) takes both kinds. Needs root.
   */
  readonly realNode?: boolean;
  /** The simulated cloud's time to provision a node for a Pending pod. */
  readonly autoscalerDelaySeconds?: number;
  /** From the reclaim notice (taint) to the node's deletion. */
  readonly noticeSeconds?: number;
  readonly churn?: readonly ChurnStep[];
  /**
   * An absolute accuracy to reach instead of the reference's: without it the run is held to an
   * undisturbed run of the same manifest (`referenceRun`), within `accuracyTolerance`.
   */
  readonly minAccuracy?: number;
  /** How far below the undisturbed reference the accuracy may end (default 0.005, half a point). */
  readonly accuracyTolerance?: number;
  /** Train the reference again even if one is cached. */
  readonly refreshReference?: boolean;
  /**
   * A goodput ratio to reach as well. Off by default: the ratio depends on how fast the machine trains
   * (the same fixed costs weigh more in a shorter run); every lost time is held to its budget instead.
   */
  readonly minGoodput?: number;
  /** Cap the worker pods together at this many CPUs (hack/e2e/throttle.ts): a slower machine. */
  readonly workerCpus?: number;
  readonly timeoutSeconds?: number;
  /** Where logs, the summary and result.json are copied before the cluster goes. */
  readonly artifactsDir?: string;
  readonly signal?: AbortSignal;
  /** Progress lines for a person watching. */
  readonly log?: (line: string) => void;
  /** Operator replicas (leader election between them). Default 1. */
  readonly operators?: number;
  /** Faults injected while the job trains, with checks of their own (hack/chaos/). */
  readonly disturbance?: (context: ScenarioContext) => Disturbance;
}

/** What a disturbance (hack/chaos/faults.ts) may act on: the scenario's processes and objects. */
export interface ScenarioContext {
  readonly cluster: LaunchedCluster;
  readonly kc: KubeConfig;
  readonly job: TrainingJob;
  readonly namespace: string;
  readonly name: string;
  /** The checkpoint claim's folder on this machine. */
  readonly claimDir: string;
  readonly reclaimer: SpotReclaimer;
  /** The workers' log events so far (read from their files now). */
  lines(): readonly WorkerEvent[];
  /** nats-server as it runs now (a restart replaces it). */
  nats(): StartedProcess;
  /** Stops nats-server with `signal` and starts it again on the same port and JetStream store. */
  restartNats(signal: NodeJS.Signals): Promise<void>;
  /** The operator replicas by identity, as they run now. */
  operators(): ReadonlyMap<string, StartedProcess>;
  /** Kills an operator replica with `signal` and starts it again. */
  restartOperator(identity: string, signal: NodeJS.Signals): Promise<void>;
  readonly mark: (what: string) => void;
  readonly say: (line: string) => void;
  readonly signal: AbortSignal | undefined;
}

export interface Tick {
  readonly step: number;
  readonly plannedSteps: number | undefined;
  /** The world has the job's replicas, all ready, and no rescale is under way. */
  readonly whole: boolean;
  readonly generation: number;
  readonly status: TrainingJobStatus;
  readonly lines: readonly WorkerEvent[];
}

export interface Evidence {
  readonly status: TrainingJobStatus;
  readonly lines: readonly WorkerEvent[];
  /** The e2e's own checks; a disturbance returns them (some replaced) with its own. */
  readonly checks: readonly Check[];
}

export interface Disturbance {
  /** Before the job is applied (e.g. a small volume under the checkpoint claim). */
  beforeApply(): Promise<void>;
  /** Once a second while the job runs. */
  tick(tick: Tick): Promise<void>;
  /** The verdict: the e2e's checks as the disturbance judges them, and its own. */
  judge(evidence: Evidence): Promise<Check[]>;
  /** Lines for the summary. */
  report(): string[];
  [Symbol.asyncDispose](): Promise<void>;
}

export interface TimelineEntry {
  readonly seconds: number;
  readonly what: string;
}

export interface ScenarioResult {
  readonly ok: boolean;
  readonly checks: readonly Check[];
  readonly job: string;
  readonly namespace: string;
  readonly status: TrainingJobStatus;
  readonly outcome: 'Succeeded' | 'Failed' | 'timeout';
  /** The accuracy the run had to reach: the reference's less the tolerance, or `minAccuracy`. */
  readonly minAccuracy: number | undefined;
  readonly reference: (Reference & { readonly cached: boolean }) | undefined;
  /** Backends the workers logged. */
  readonly backends: readonly string[];
  readonly minGoodput: number | undefined;
  /** The mean time of a step that counts: the unit of the lost-time budgets. */
  readonly stepSeconds: number;
  readonly throttle: string | undefined;
  /** Workers that were running on a node when it was reclaimed. */
  readonly workersLost: number;
  readonly churnDone: number;
  readonly churnPlanned: number;
  readonly timeline: readonly TimelineEntry[];
  readonly simulatorActions: readonly SimulatorAction[];
  readonly epochs: readonly EpochVerdict[];
  readonly generations: readonly GenerationStart[];
  readonly goodput: GoodputReport;
  /** Worker log lines in JSON that were not events of the protocol nor plain messages. */
  readonly unreadableLogLines: number;
  /** Worker log lines that were not JSON: their standard error. */
  readonly standardErrorLines: number;
  /** Where the wall time that was not useful went, each kind against its budget. */
  readonly lost: readonly LostBudget[];
  readonly events: readonly KubeEvent[];
  readonly describeEvents: string;
  readonly seconds: { readonly cluster: number; readonly job: number; readonly total: number };
  readonly artifactsDir: string | undefined;
  /** What the disturbance reports (faults and their times), if there was one. */
  readonly disturbance: readonly string[];
  /** With the real node: where the workers ran and which kinds the reclaims took. */
  readonly placement: Placement | undefined;
}

export class ScenarioAborted extends Error {
  override readonly name = 'ScenarioAborted';
}

const OPERATOR_NAMESPACE = 'tensile-system';
const OPERATOR_ACCOUNT = 'tensile-operator';
const clusterRoleFile = join(REPO_ROOT, 'charts', 'tensile', 'files', 'operator-clusterrole.yaml');
const tensileBin = join(REPO_ROOT, 'operator', 'bin', 'tensile.mjs');

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch((error: unknown) => {
    throw signal?.aborted ? new ScenarioAborted('interrupted') : error;
  });
}

function readJob(file: string): TrainingJob {
  const jobs = parseAllDocuments(readFileSync(file, 'utf8'))
    .map((d) => d.toJS() as { kind?: string } | null)
    .filter((d) => d?.kind === 'TrainingJob');
  if (jobs.length !== 1) throw new Error(`${file}: expected exactly one TrainingJob, found ${jobs.length}`);
  return TrainingJobSchema.parse(jobs[0]);
}

/** The bytes of `file` from `offset` to its current end. */
function readFrom(file: string, offset: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size <= offset) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(size - offset);
    const read = readSync(fd, out, 0, out.length, offset);
    return out.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads the worker pods' log files as they grow, only the bytes added since the last poll; a recreated
 * pod of the same name appends to its file.
 */
export class WorkerLogs {
  private readonly offsets = new Map<string, number>();
  /** The bytes after a file's last newline: a line still being written. */
  private readonly partial = new Map<string, Buffer>();
  readonly lines: WorkerEvent[] = [];
  /** JSON lines that were not worker events nor plain messages. */
  invalid = 0;
  /** Lines that were not JSON: standard error (TensorFlow's start-up banner, stack traces, torn lines). */
  text = 0;

  /**
   * The real node's container logs (`<ns>_<pod>_<uid>/<container>/<n>.log`, CRI format), kept open:
   * the kubelet removes them with the pod, and the last lines are read after that.
   */
  private readonly cri = new Map<
    string,
    { fd: number; offset: number; reader: CriLogReader; copy: string | undefined }
  >();
  /** Worker events read from the real node's container logs, and how many of them were training steps. */
  readonly fromContainers = { events: 0, progress: 0 };

  constructor(
    private readonly dir: string,
    private readonly prefix: string,
    private readonly criDir?: string,
    /** Where the container logs' lines are copied as they are read (they go with their pods). */
    private readonly copyDir?: string,
  ) {}

  poll(): WorkerEvent[] {
    const fresh: WorkerEvent[] = [];
    const take = (text: string) => {
      const parsed = parseLogLines(text);
      fresh.push(...parsed.events);
      this.invalid += parsed.invalid;
      this.text += parsed.text;
    };
    for (const name of existsSync(this.dir) ? readdirSync(this.dir) : []) {
      if (!name.startsWith(this.prefix) || !name.endsWith('.log')) continue;
      const file = join(this.dir, name);
      const offset = this.offsets.get(file) ?? 0;
      const added = readFrom(file, offset);
      if (added.length === 0) continue;
      this.offsets.set(file, offset + added.length);
      const bytes = Buffer.concat([this.partial.get(file) ?? Buffer.alloc(0), added]);
      const cut = bytes.lastIndexOf(0x0a) + 1;
      this.partial.set(file, bytes.subarray(cut));
      take(bytes.subarray(0, cut).toString('utf8'));
    }
    this.openCriLogs();
    const chunk = this.cri.size === 0 ? Buffer.alloc(0) : Buffer.allocUnsafe(1 << 20);
    for (const log of this.cri.values()) {
      for (;;) {
        const read = readSync(log.fd, chunk, 0, chunk.length, log.offset);
        if (read === 0) break;
        log.offset += read;
        const text = log.reader.push(Buffer.from(chunk.subarray(0, read)));
        if (log.copy !== undefined) appendFileSync(log.copy, text);
        const before = fresh.length;
        take(text);
        const added = fresh.slice(before);
        this.fromContainers.events += added.length;
        // The leader logs `progress`, every other rank `rank-progress`.
        this.fromContainers.progress += added.filter(
          (e) => e.event === 'progress' || e.event === 'rank-progress',
        ).length;
      }
    }
    this.lines.push(...fresh);
    return fresh;
  }

  private openCriLogs(): void {
    const root = this.criDir;
    if (root === undefined || !existsSync(root)) return;
    for (const pod of readdirSync(root)) {
      if (!pod.startsWith(this.prefix)) continue;
      try {
        for (const container of readdirSync(join(root, pod)))
          for (const name of readdirSync(join(root, pod, container))) {
            const file = join(root, pod, container, name);
            if (!name.endsWith('.log')) continue;
            // By inode: the kubelet rotates a big log by renaming it and starting a new one.
            const key = `${file}@${statSync(file).ino}`;
            if (this.cri.has(key)) continue;
            const copy =
              this.copyDir === undefined ? undefined : join(this.copyDir, `${pod}_${container}_${name}`);
            if (this.copyDir !== undefined) mkdirSync(this.copyDir, { recursive: true });
            this.cri.set(key, { fd: openSync(file, 'r'), offset: 0, reader: new CriLogReader(), copy });
          }
      } catch {
        // Removed meanwhile with its pod: what was open stays readable.
      }
    }
  }

  close(): void {
    for (const log of this.cri.values()) closeSync(log.fd);
    this.cri.clear();
  }
}

async function waitForLog(
  file: string,
  pattern: RegExp,
  timeoutMs: number,
  what: string,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(file) && pattern.test(readFileSync(file, 'utf8'))) return;
    await sleep(100, signal);
  }
  throw new Error(`${what} not ready within ${timeoutMs / 1000} s:\n${logTail(file)}`);
}

/** The port the operator last logged for /healthz, /readyz and /metrics (a restart appends a new one). */
function operatorPort(file: string): number | undefined {
  for (const line of readFileSync(file, 'utf8').split('\n').reverse()) {
    if (!line.includes('/metrics')) continue;
    try {
      const record = JSON.parse(line) as { port?: unknown };
      if (typeof record.port === 'number') return record.port;
    } catch {
      // Not a JSON line.
    }
  }
  return undefined;
}

/** One sample of a Prometheus text scrape, or undefined when the series is missing. */
export function metricSample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The job's series during training and at the end, against its status: what a dashboard would show. */
function judgeMetrics(
  during: { text: string; status: TrainingJobStatus } | undefined,
  after: string | undefined,
  status: TrainingJobStatus,
  labels: string,
): { ok: boolean; detail: string } {
  if (during === undefined || after === undefined)
    return { ok: false, detail: `no scrape ${during === undefined ? 'during training' : 'at the end'}` };
  const d = (name: string) => metricSample(during.text, `tensile_trainingjob_${name}`, labels);
  const a = (name: string) => metricSample(after, `tensile_trainingjob_${name}`, labels);
  const problems: string[] = [];
  if (!((d('step') ?? 0) >= (during.status.step ?? 1))) problems.push(`step ${d('step')} during training`);
  if (!((d('world_size_workers') ?? 0) >= 1))
    problems.push(`world size ${d('world_size_workers')} during training`);
  if (!((d('throughput_samples_per_second') ?? 0) > 0)) problems.push('no throughput during training');
  if (a('step') !== status.step) problems.push(`final step ${a('step')} vs status ${status.step}`);
  if (a('accuracy_ratio') !== status.accuracy)
    problems.push(`accuracy ${a('accuracy_ratio')} vs ${status.accuracy}`);
  if (a('preemptions_total') !== (status.preemptions ?? 0))
    problems.push(`preemptions ${a('preemptions_total')} vs ${status.preemptions ?? 0}`);
  if (a('restarts_total') !== (status.restarts ?? 0)) problems.push(`restarts ${a('restarts_total')}`);
  if (a('world_size_workers') !== 0) problems.push(`world size ${a('world_size_workers')} after the end`);
  const goodput = a('goodput_ratio');
  if (goodput === undefined || !(goodput > 0 && goodput <= 1)) problems.push(`goodput ${goodput}`);
  const age = a('last_checkpoint_age_seconds');
  if (age === undefined || age < 0) problems.push(`checkpoint age ${age}`);
  return {
    ok: problems.length === 0,
    detail:
      problems.length > 0
        ? problems.join('; ')
        : `during: step ${d('step')}, ${d('world_size_workers')} workers, ${d('throughput_samples_per_second')} samples/s; at the end: step ${a('step')}, accuracy ${a('accuracy_ratio')}, preemptions ${a('preemptions_total')}, goodput ${goodput?.toFixed(3)}, checkpoint ${age?.toFixed(0)} s old`,
  };
}

interface WorldView {
  /** The newest world any worker formed (-1: none yet). */
  readonly generation: number;
  readonly worldSize: number | undefined;
  /** Some worker ended that world and no newer one has formed yet. */
  readonly ended: boolean;
  readonly step: number;
  readonly epoch: number | undefined;
  readonly loss: number | undefined;
}

function currentWorld(lines: readonly WorkerEvent[]): WorldView {
  let generation = -1;
  let worldSize: number | undefined;
  let endedGeneration = -1;
  let step = 0;
  let latest: WorkerEventOf<'progress'> | undefined;
  for (const line of lines) {
    const g = line.generation;
    if (line.event === 'generation' && g !== undefined && g >= generation) {
      generation = g;
      worldSize = line.worldSize;
    }
    if (line.event === 'generation-end' && g !== undefined) endedGeneration = Math.max(endedGeneration, g);
    if (line.event === 'progress' && line.step >= step) {
      step = line.step;
      latest = line;
    }
  }
  return {
    generation,
    worldSize,
    ended: endedGeneration >= generation && generation >= 0,
    step,
    epoch: latest?.epoch,
    loss: latest?.loss ?? undefined,
  };
}

/** Runs the scenario to the end and judges it; throws only for a broken setup or an interrupt. */
export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  const say = options.log ?? (() => {});
  const { signal } = options;
  const job = readJob(options.manifestFile);
  const name = job.metadata.name;
  const namespace = job.metadata.namespace ?? 'default';
  const replicas = job.spec.replicas;
  const withRealNode = options.realNode === true;
  const churn = options.churn ?? (withRealNode ? REAL_NODE_CHURN : DEFAULT_CHURN);
  const { minGoodput } = options;
  const noticeMs = (options.noticeSeconds ?? 20) * 1000;
  const timeline: TimelineEntry[] = [];
  const mark = (what: string) => {
    timeline.push({ seconds: elapsed(), what });
    say(what);
  };

  const cleanups: (() => Promise<void>)[] = [];
  const cleanUp = async () => {
    for (const step of cleanups.reverse()) {
      try {
        await step();
      } catch (error) {
        say(`clean-up: ${(error as Error).message}`);
      }
    }
  };

  try {
    // Before the cluster, so that the two never share the CPU.
    const reference =
      options.minAccuracy === undefined
        ? await referenceRun({
            manifestFile: options.manifestFile,
            workers: replicas,
            backendChoice: job.spec.worker.backend ?? 'auto',
            ...(options.refreshReference === undefined ? {} : { refresh: options.refreshReference }),
            ...(signal === undefined ? {} : { signal }),
            log: say,
          })
        : undefined;
    const referenceTail = reference === undefined ? undefined : tailAccuracy(reference.evaluations);
    // Against the reference: the mean of the last fifth's evaluations (tailAccuracy), on both sides.
    const minAccuracy =
      referenceTail === undefined
        ? options.minAccuracy
        : referenceTail.mean - (options.accuracyTolerance ?? 0.005);
    if (reference !== undefined)
      mark(
        `reference (undisturbed, ${reference.workers} workers, ${reference.backend}${reference.cached ? ', cached' : `, ${reference.seconds.toFixed(0)} s`}): accuracy ${reference.accuracy.toFixed(4)} at step ${reference.step}, ${referenceTail?.mean.toFixed(4)} over the last fifth (${referenceTail?.count} evaluations)`,
      );
    if (withRealNode && options.workerCpus !== undefined)
      throw new Error("--worker-cpus slows the fake nodes' processes only; it does not go with --real-node");
    // Built before the cluster too (a cold build takes minutes); cached by content.
    const workerImage = withRealNode ? await builtWorkerImage() : undefined;
    if (workerImage !== undefined) mark(`worker image ${workerImage} (hack/images.sh)`);
    const fakeNodes = options.nodes ?? (withRealNode ? Math.max(1, replicas - 1) : replicas);
    mark(
      `starting the local control plane with ${fakeNodes} fake GPU nodes${withRealNode ? ' and the real node' : ''}`,
    );
    const cluster = await launchCluster({
      nodes: fakeNodes,
      gpusPerNode: 1,
      // One worker per node (the example requests 1 CPU), so that a reclaimed node takes one worker.
      cpuPerNode: '1',
      memoryPerNode: '8Gi',
      detached: false,
      ...(withRealNode ? { realNode: true, realNodeCpus: 1 } : {}),
    });
    cleanups.push(() => cluster.stop());
    const realNode = cluster.realNode;
    if (withRealNode && realNode === undefined) throw new Error('the cluster started without its real node');
    const { artifactsDir } = options;
    if (artifactsDir !== undefined) {
      // Copied on every way out, a failed setup included: the logs are what explains it.
      cleanups.push(async () => {
        mkdirSync(artifactsDir, { recursive: true });
        cpSync(join(cluster.dir, 'logs'), join(artifactsDir, 'logs'), { recursive: true });
      });
    }
    const throttle =
      options.workerCpus === undefined ? undefined : throttleWorkers(cluster.dir, options.workerCpus, say);
    if (throttle !== undefined)
      cleanups.push(async () => {
        await throttle[Symbol.asyncDispose]();
      });
    const clusterSeconds = cluster.startSeconds;
    mark(`control plane up in ${clusterSeconds.toFixed(1)} s (state in ${cluster.dir})`);
    const kubectl = (args: readonly string[], input?: string) => runKubectl(cluster, args, input);
    const must = async (args: readonly string[], input?: string) => {
      const r = await kubectl(args, input);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr.trim()}`);
      return r.stdout;
    };
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    const core = kc.makeApiClient(CoreV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    if (realNode !== undefined) {
      await loadWorkerImage(realNode.containerdSocket);
      // A spot node like the others, so that the reclaimer may take it.
      await must(['label', 'node', realNode.name, 'karpenter.sh/capacity-type=spot']);
      mark(
        `real node ${realNode.name}: worker image loaded, labelled spot; fake nodes' pods on ${realNode.hostIp}`,
      );
    }
    // Beside the real node, on the host side of its veth: reached from its containers and from here.
    const natsHost = realNode?.hostIp ?? '127.0.0.1';

    // ---- nats-server, recorded with the cluster's processes so that nothing outlives the run.
    const [natsPort] = await freePorts(1);
    const startNats = async () => {
      const p = await startProcess(cluster.dir, 'nats-server', natsServerBinary(), [
        '-a',
        natsHost,
        '-p',
        String(natsPort),
        '-js',
        '-sd',
        join(cluster.dir, 'nats'),
      ]);
      await waitForLog(p.logFile, /Server is ready/, 15_000, 'nats-server', signal);
      return p;
    };
    let nats = await startNats();
    const natsUrl = `nats://${natsHost}:${natsPort}`;
    mark(`nats-server on ${natsUrl}`);

    // ---- the operator, under the Helm chart's ClusterRole rather than as admin.
    await must(['create', 'namespace', OPERATOR_NAMESPACE]);
    await must(['apply', '-f', clusterRoleFile]);
    await must(['-n', OPERATOR_NAMESPACE, 'create', 'serviceaccount', OPERATOR_ACCOUNT]);
    await must([
      'create',
      'clusterrolebinding',
      OPERATOR_ACCOUNT,
      `--clusterrole=${OPERATOR_ACCOUNT}`,
      `--serviceaccount=${OPERATOR_NAMESPACE}:${OPERATOR_ACCOUNT}`,
    ]);
    const token = await core.createNamespacedServiceAccountToken({
      namespace: OPERATOR_NAMESPACE,
      name: OPERATOR_ACCOUNT,
      body: { spec: { audiences: [], expirationSeconds: 7200 } },
    });
    const operatorKubeconfig = writeKubeconfig(join(cluster.dir, 'operator.kubeconfig'), {
      server: cluster.server,
      caFile: cluster.caFile,
      credentials: { token: token.status?.token ?? '' },
      name: 'tensile-operator',
      namespace: OPERATOR_NAMESPACE,
    });
    const operatorArgs = (identity: string) => [
      tensileBin,
      'operator',
      '--kubeconfig',
      operatorKubeconfig,
      '--nats',
      natsUrl,
      '--namespace',
      OPERATOR_NAMESPACE,
      '--http-port',
      '0',
      '--id',
      identity,
      '--lease-duration',
      '4',
      '--renew-deadline',
      '3',
      '--retry-period',
      '1',
      '--failure-backoff',
      '2',
      // The built image: the real node runs it, the node agent maps `tensile*` to this checkout.
      ...(workerImage === undefined ? [] : ['--worker-image', workerImage]),
    ];
    // The chart runs the operator as a Deployment, whose pods restart a replica that exits on its own
    // (a leader that cannot renew its lease exits so that a fresh process campaigns again); here the
    // driver does it. Without it, two kube-apiserver restarts left no replica at all and a failed
    // worker was never replaced (chaos seed 1, 20 minutes).
    const supervised = new Map<string, Supervised>();
    const operators = new Map<string, StartedProcess>();
    const startOperator = async (identity: string): Promise<Supervised> => {
      const name = identity === 'operator-0' ? 'tensile-operator' : `tensile-${identity}`;
      const s = await Supervised.start(
        async () => {
          const p = await startProcess(cluster.dir, name, process.execPath, operatorArgs(identity), {
            cwd: REPO_ROOT,
          });
          operators.set(identity, p);
          return p;
        },
        {
          delayMs: 1000,
          onExit: (how) => mark(`operator ${identity} exited on its own (${how}); starting it again`),
        },
      );
      supervised.set(identity, s);
      return s;
    };
    const first = (await startOperator('operator-0')).current;
    for (let i = 1; i < (options.operators ?? 1); i++) await startOperator(`operator-${i}`);
    // Stopped before the cluster, with SIGTERM, so that they hand the lease back like a real rollout.
    cleanups.push(async () => {
      for (const s of supervised.values()) {
        s.stop();
        const operator = s.current;
        if (operator.child.exitCode !== null || operator.child.signalCode !== null) continue;
        s.kill('SIGTERM');
        await Promise.race([operator.exited, sleep(5000)]);
      }
    });
    // Whichever replica wins the lease (the first one started, nearly always).
    await Promise.any(
      [...operators.values()].map((p) =>
        waitForLog(p.logFile, /"became leader"/, 30_000, 'the operator', signal),
      ),
    ).catch(() => {
      throw new Error(`no operator became leader within 30 s:\n${logTail(first.logFile)}`);
    });
    mark('operator leading');
    // The leader's: the replica that exports the job's series (a chaos run kills and restarts them).
    const scrape = async (): Promise<string | undefined> => {
      for (const p of operators.values()) {
        const port = operatorPort(p.logFile);
        if (port === undefined) continue;
        const text = await fetch(`http://127.0.0.1:${port}/metrics`).then(
          (r) => r.text(),
          () => undefined,
        );
        if (text?.includes('tensile_trainingjob_step{')) return text;
      }
      return undefined;
    };

    // ---- the simulated cloud.
    const simulatorLog = (line: string) => mark(line);
    const autoscaler = new SimulatedAutoscaler(kc, {
      agentName: cluster.agentName,
      config: {
        provisionDelayMs: (options.autoscalerDelaySeconds ?? 5) * 1000,
        scaleDownAfterMs: 30_000,
        maxNodes: Math.max(churn.length, replicas) + 2,
        gpusPerNode: 1,
        podsPerNode: 110,
      },
      cpuPerNode: '1',
      memoryPerNode: '8Gi',
      log: simulatorLog,
    });
    autoscaler.start();
    cleanups.push(() => autoscaler[Symbol.asyncDispose]());
    const reclaimer = new SpotReclaimer(kc, { noticeMs, log: simulatorLog });
    cleanups.push(() => reclaimer[Symbol.asyncDispose]());

    const logs = new WorkerLogs(
      join(cluster.dir, 'logs'),
      `${namespace}_${name}-worker-`,
      realNode?.podLogsDir,
      artifactsDir === undefined ? undefined : join(artifactsDir, 'real-node-containers'),
    );
    cleanups.push(async () => logs.close());
    let plannedSteps: number | undefined;
    const poll = () => {
      for (const line of logs.poll()) {
        if (line.event === 'progress' && line.plannedSteps !== undefined)
          plannedSteps = Math.max(plannedSteps ?? 0, line.plannedSteps);
      }
    };

    const claimDir = join(cluster.dir, 'volumes', namespace, checkpointClaimName(job));
    const disturbance = options.disturbance?.({
      cluster,
      kc,
      job,
      namespace,
      name,
      claimDir,
      reclaimer,
      lines: () => {
        poll();
        return logs.lines;
      },
      nats: () => nats,
      restartNats: async (how) => {
        nats.child.kill(how);
        await Promise.race([nats.exited, sleep(10_000, signal)]);
        nats = await startNats();
      },
      operators: () => operators,
      restartOperator: async (identity, how) => {
        const s = supervised.get(identity);
        if (s === undefined) throw new Error(`no operator ${identity}`);
        const p = s.current;
        s.kill(how);
        await Promise.race([p.exited, sleep(10_000, signal)]);
        await s.restart();
      },
      mark,
      say,
      signal,
    });
    if (disturbance !== undefined) {
      cleanups.push(() => disturbance[Symbol.asyncDispose]());
      await disturbance.beforeApply();
    }

    // ---- the job, exactly as written.
    mark(`kubectl apply -f ${options.manifestFile}`);
    say((await must(['apply', '-f', options.manifestFile])).trim());
    const applied = elapsed();

    const readStatus = async (): Promise<TrainingJobStatus> => {
      const obj = (await custom.getNamespacedCustomObject({
        group: 'tensile.dev',
        version: 'v1alpha1',
        namespace,
        plural: 'trainingjobs',
        name,
      })) as { status?: TrainingJobStatus };
      return obj.status ?? {};
    };
    const workerPods = async (): Promise<V1Pod[]> =>
      (await core.listNamespacedPod({ namespace, labelSelector: `${LABEL_JOB_NAME}=${name}` })).items;

    const timeoutMs = (options.timeoutSeconds ?? 3600) * 1000;
    const deadline = Date.now() + timeoutMs;
    let outcome: ScenarioResult['outcome'] = 'timeout';
    let status: TrainingJobStatus = {};
    let workersLost = 0;
    let churnDone = 0;
    let wasWhole = false;
    let trainingSeen = false;
    let lastReport = 0;
    let scrapedDuring: { text: string; status: TrainingJobStatus } | undefined;
    const ranOn = { real: new Set<string>(), fake: new Set<string>() };
    const reclaimed: { node: string; kind: NodeKind }[] = [];
    const kindOf = (node: string): NodeKind => (node === realNode?.name ? 'real' : 'fake');
    const notePlacement = (pods: readonly V1Pod[]) => {
      for (const p of pods)
        if (p.status?.phase === 'Running' && p.spec?.nodeName !== undefined)
          ranOn[kindOf(p.spec.nodeName)].add(p.spec.nodeName);
    };
    while (Date.now() < deadline) {
      await sleep(1000, signal);
      poll();
      try {
        status = await readStatus();
      } catch (error) {
        // A slow API server on a busy machine: look again on the next tick.
        say(`reading the job failed: ${(error as Error).message}`);
        continue;
      }
      if (status.phase === 'Succeeded' || status.phase === 'Failed') {
        outcome = status.phase;
        mark(`job ${status.phase}: ${status.message ?? ''}`);
        break;
      }
      // Worker logs tell of a new world at once; status follows every few seconds. Either will do.
      const world = currentWorld(logs.lines);
      const step = Math.max(status.step ?? 0, world.step);
      const worldSize = world.generation >= (status.generation ?? -1) ? world.worldSize : status.worldSize;
      if (realNode !== undefined) notePlacement(await workerPods().catch(() => []));
      if (!trainingSeen && step > 0) {
        trainingSeen = true;
        mark(`training under way: step ${step}, ${worldSize ?? '?'} workers`);
      }
      // Once the status shows progress, the operator's metrics must too.
      if (scrapedDuring === undefined && (status.step ?? 0) > 0 && (status.samplesPerSecond ?? 0) > 0) {
        const text = await scrape();
        if (text !== undefined) scrapedDuring = { text, status };
      }
      const rescaling =
        status.conditions?.some((c) => c.type === 'Rescaling' && c.status === 'True') ?? false;
      const whole =
        worldSize === replicas &&
        !world.ended &&
        status.readyReplicas === replicas &&
        status.replicas === replicas &&
        !rescaling;
      if (whole && !wasWhole && churnDone > 0)
        mark(`world whole again: ${replicas} workers (generation ${world.generation}), step ${step}`);
      wasWhole = whole;
      await disturbance?.tick({
        step,
        plannedSteps,
        whole,
        generation: world.generation,
        status,
        lines: logs.lines,
      });
      if (Date.now() - lastReport > 15_000 && trainingSeen) {
        lastReport = Date.now();
        say(
          `step ${step}/${plannedSteps ?? '?'} epoch ${status.epoch ?? world.epoch ?? '?'} loss ${(status.loss ?? world.loss)?.toFixed(4) ?? '?'} ` +
            `world ${worldSize ?? '?'} (generation ${world.generation}) ready ${status.readyReplicas ?? 0}/${replicas}`,
        );
      }
      const next = churn[churnDone];
      const total = plannedSteps;
      if (next === undefined || total === undefined || !whole || step < next.atFraction * total) continue;
      // The workers on the victim are the ones this reclaim takes away.
      let before: V1Pod[];
      let victim: string | undefined;
      try {
        before = await workerPods();
        victim = await reclaimer.reclaim(next.kind, undefined, nodeOfKind(next.on, realNode?.name));
      } catch (error) {
        say(`reclaim failed: ${(error as Error).message}; trying again`);
        continue;
      }
      if (victim === undefined) {
        say('no spot node runs a worker right now; trying again');
        continue;
      }
      const lost = before.filter(
        (p) =>
          p.spec?.nodeName === victim &&
          p.status?.phase === 'Running' &&
          p.metadata?.deletionTimestamp === undefined,
      );
      workersLost += lost.length;
      churnDone++;
      reclaimed.push({ node: victim, kind: kindOf(victim) });
      wasWhole = false;
      mark(
        `${next.kind === 'notice' ? 'reclaim with notice' : 'reclaim WITHOUT notice'} of ${victim}${realNode === undefined ? '' : ` (${kindOf(victim)} node)`} at step ${step}: ` +
          `loses ${lost.map((p) => p.metadata?.name).join(', ') || 'no worker'}`,
      );
    }
    const jobSeconds = elapsed() - applied;
    if (outcome === 'timeout') mark(`timed out after ${(timeoutMs / 1000).toFixed(0)} s`);
    // The last notice's node goes after its notice period; it holds no worker any more.
    await autoscaler[Symbol.asyncDispose]();
    await reclaimer[Symbol.asyncDispose]();
    poll();
    status = await readStatus().catch(() => status);
    const scrapedAfter = await scrape();

    // ---- evidence.
    const describe = (await kubectl(['-n', namespace, 'describe', 'trainingjob', name])).stdout;
    const eventsJson = await kubectl([
      '-n',
      namespace,
      'get',
      'events',
      '--field-selector',
      `involvedObject.kind=TrainingJob,involvedObject.name=${name}`,
      '-o',
      'json',
    ]);
    const events = eventsJson.code === 0 ? parseEvents(eventsJson.stdout) : [];

    const store = new CheckpointStore(claimDir, job.spec.checkpoint.keep);
    const latest = await store.latest(() => {}).catch(() => undefined);
    const finalState = latest?.snapshot.state;
    const logGenerations = generationsFromLogs(logs.lines);
    const generations: GenerationStart[] =
      finalState !== undefined && finalState.generations.length > 0
        ? finalState.generations.map((g) => ({ generation: g.generation, firstStep: g.firstStep }))
        : logGenerations;
    const auditDir = join(claimDir, 'audit');
    const records = existsSync(auditDir)
      ? readdirSync(auditDir)
          .filter((f) => f.endsWith('.bin'))
          .flatMap((f) => readAuditFile(join(auditDir, f)))
      : [];
    const trainSamples =
      finalState?.dataset.trainSamples ?? eventsOf(logs.lines, 'dataset')[0]?.trainSamples ?? 0;
    const epochs =
      trainSamples > 0
        ? judgeEpochs(
            auditEpochs(committedRecords(records, generations), trainSamples),
            finalState?.epoch ?? Number.POSITIVE_INFINITY,
          )
        : [];
    const startMs = status.startTime === undefined ? Number.NaN : Date.parse(status.startTime);
    const endMs = status.completionTime === undefined ? Number.NaN : Date.parse(status.completionTime);
    const wallSeconds = Number.isFinite(endMs - startMs) ? (endMs - startMs) / 1000 : jobSeconds;
    const goodput = computeGoodput(logs.lines, generations, wallSeconds);
    const stepSeconds = stepTime(goodput);
    const numbers = goodput.generations.map((g) => g.generation);
    const rendezvous = job.spec.rendezvous;
    const lost = judgeLostTime(lostTime(logs.lines, goodput, startMs, endMs), {
      stepSeconds,
      usefulSeconds: goodput.usefulSeconds,
      rounds: numbers.length > 0 ? Math.max(...numbers) - Math.min(...numbers) : 0,
      abrupt: churn.slice(0, churnDone).filter((c) => c.kind === 'abrupt').length,
      rendezvous: { timeoutMs: rendezvous.timeoutMillis, lastCallMs: rendezvous.lastCallMillis },
      checkpointIntervalSteps: job.spec.checkpoint.intervalSteps ?? 0,
    });
    const over = lost.filter((x) => !x.ok);
    const backends = [...new Set(eventsOf(logs.lines, 'backend').map((l) => l.backend))];
    const backendMismatch =
      reference !== undefined && backends.some((b) => b !== reference.backend)
        ? `; the reference ran on ${reference.backend}, the workers on ${backends.join(', ')}: not comparable`
        : '';

    const workerAccuracy = eventsOf(logs.lines, 'completed')[0]?.accuracy;
    const metrics = judgeMetrics(
      scrapedDuring,
      scrapedAfter,
      status,
      `namespace="${namespace}",trainingjob="${name}"`,
    );
    const modelFile = join(claimDir, 'model', 'tensile.json');
    const exported = existsSync(modelFile)
      ? (JSON.parse(readFileSync(modelFile, 'utf8')) as {
          step?: number;
          evaluation?: { accuracy?: number } | null;
        })
      : undefined;

    const placement: Placement | undefined =
      realNode === undefined
        ? undefined
        : {
            real: [...ranOn.real].sort(),
            fake: [...ranOn.fake].sort(),
            reclaims: reclaimed,
            containerLines: logs.fromContainers,
          };

    // ---- the verdict.
    const count = (reason: string) =>
      events.filter((e) => e.reason === reason).reduce((sum, e) => sum + e.count, 0);
    const notices = churn.slice(0, churnDone).filter((c) => c.kind === 'notice').length;
    const checks: Check[] = [
      check('phase', status.phase === 'Succeeded', `phase ${status.phase ?? 'none'} (${outcome})`),
      check(
        'churn',
        churnDone === churn.length,
        `${churnDone} of ${churn.length} reclaims carried out before the job ended`,
      ),
      accuracyCheck(
        status,
        workerAccuracy,
        reference,
        tailAccuracy(evaluations(logs.lines)),
        minAccuracy,
        job.spec.stopping.targetAccuracy,
        backendMismatch,
      ),
      check(
        'preemptions',
        status.preemptions === workersLost,
        `status.preemptions ${status.preemptions ?? 'none'}, workers lost to reclaims ${workersLost}`,
      ),
      check('restarts', (status.restarts ?? 0) === 0, `status.restarts ${status.restarts ?? 0}`),
      ...(placement === undefined ? [] : [judgeSpread(placement)]),
      check(
        'audit',
        epochs.length > 0 && epochs.every((e) => e.clean) && epochs.some((e) => e.complete),
        epochs.length === 0
          ? `no audit records in ${auditDir}`
          : `${epochs.filter((e) => e.complete).length} complete epochs, ${epochs.filter((e) => !e.clean).length} with duplicated or missing samples`,
      ),
      check(
        'goodput',
        over.length === 0 && (minGoodput === undefined || goodput.goodput >= minGoodput),
        `${(goodput.goodput * 100).toFixed(1)} % (${goodput.usefulSeconds.toFixed(1)} s of useful steps in ${goodput.wallSeconds.toFixed(1)} s, step ${(stepSeconds * 1000).toFixed(1)} ms); ` +
          (over.length === 0
            ? 'every lost time within its budget'
            : over
                .map((x) => `${x.kind} ${x.seconds.toFixed(1)} s over its ${x.budgetSeconds.toFixed(1)} s`)
                .join(', ')) +
          (minGoodput === undefined ? '' : `; target ${(minGoodput * 100).toFixed(0)} %`),
      ),
      check('metrics', metrics.ok, metrics.detail),
      check(
        'model',
        status.model?.uri === `pvc://${checkpointClaimName(job)}/model` &&
          exported?.step === status.step &&
          exported?.evaluation?.accuracy === status.accuracy,
        `status.model ${status.model === undefined ? 'none' : `${status.model.uri} at step ${status.model.step}`}; ${exported === undefined ? `no ${modelFile}` : `model/tensile.json at step ${exported.step}, accuracy ${exported.evaluation?.accuracy}`}`,
      ),
      check(
        'events',
        count('NodeDisruption') >= notices &&
          count('WorkerPreempted') >= churnDone &&
          count('Rescaled') >= 1 &&
          count('TrainingCompleted') >= 1,
        `NodeDisruption ${count('NodeDisruption')}, WorkerPreempted ${count('WorkerPreempted')}, Rescaled ${count('Rescaled')}, TrainingCompleted ${count('TrainingCompleted')}`,
      ),
    ];

    const verdict =
      disturbance === undefined ? checks : await disturbance.judge({ status, lines: logs.lines, checks });
    const result: ScenarioResult = {
      ok: verdict.every((c) => c.ok),
      checks: verdict,
      job: name,
      namespace,
      status,
      outcome,
      minAccuracy,
      reference,
      backends,
      minGoodput,
      stepSeconds,
      throttle: throttle?.how,
      workersLost,
      churnDone,
      churnPlanned: churn.length,
      timeline,
      simulatorActions: [...autoscaler.actions, ...reclaimer.actions].sort((a, b) => a.at - b.at),
      epochs,
      generations,
      goodput,
      unreadableLogLines: logs.invalid,
      standardErrorLines: logs.text,
      lost,
      events,
      describeEvents: describeEvents(describe),
      seconds: { cluster: clusterSeconds, job: jobSeconds, total: elapsed() },
      artifactsDir: options.artifactsDir,
      disturbance: disturbance?.report() ?? [],
      placement,
    };
    if (artifactsDir !== undefined) {
      mkdirSync(artifactsDir, { recursive: true });
      writeFileSync(join(artifactsDir, 'describe.txt'), describe);
      writeFileSync(join(artifactsDir, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
    }
    return result;
  } finally {
    await cleanUp();
  }
}

/**
 * Against an absolute target: the status's accuracy. Against the undisturbed reference: the mean of
 * the last fifth's evaluations of the run against the reference's (analysis.ts, `tailAccuracy`), the
 * last evaluations shown beside them.
 */
function accuracyCheck(
  status: TrainingJobStatus,
  workerAccuracy: number | null | undefined,
  reference: Reference | undefined,
  tail: TailAccuracy | undefined,
  minAccuracy: number | undefined,
  /** The manifest's target: a run that stopped on reaching it has no tail as long as the reference's. */
  target: number | undefined,
  backendMismatch: string,
): Check {
  const last = `status.accuracy ${status.accuracy?.toFixed(4) ?? 'none'} (the workers logged ${workerAccuracy?.toFixed(4) ?? 'none'})`;
  const pt = (a: number, b: number) => `${(100 * (a - b)).toFixed(2)} pt`;
  if (reference === undefined)
    return check(
      'accuracy',
      backendMismatch === '' && (minAccuracy === undefined || (status.accuracy ?? 0) >= minAccuracy),
      `${last}, target ${minAccuracy ?? 'none'}${backendMismatch}`,
    );
  const referenceTail = tailAccuracy(reference.evaluations);
  const reached = target !== undefined && (status.accuracy ?? 0) >= target;
  const ok =
    backendMismatch === '' &&
    (reached || (tail !== undefined && minAccuracy !== undefined && tail.mean >= minAccuracy));
  return check(
    'accuracy',
    ok,
    (tail === undefined || referenceTail === undefined
      ? 'no evaluation logged'
      : `last fifth (from step ${tail.fromStep}, ${tail.count} evaluations) ${tail.mean.toFixed(4)} against the undisturbed reference's ${referenceTail.mean.toFixed(4)} (${pt(tail.mean, referenceTail.mean)}), at least ${minAccuracy?.toFixed(4)}`) +
      `; last evaluation: ${last} against ${reference.accuracy.toFixed(4)} (${pt(status.accuracy ?? 0, reference.accuracy)})` +
      `${reached ? `; the manifest's target ${target} reached` : ''}${backendMismatch}`,
  );
}
