/**
 * Runs the pods bound to the agent's nodes as local processes, one process group per pod, and reports
 * their status as a kubelet would. Only the first container runs; init containers and sidecars are
 * ignored. Readiness is "the process runs" (probes are not executed). Every pod shares the host's
 * network: podIP and hostIP are the agent's `podIp` (127.0.0.1 unless a real node is beside it), and
 * two pods cannot listen on the same port.
 *
 * Deletion: SIGTERM to the process group, up to the pod's grace period, SIGKILL, the final status,
 * then DELETE with gracePeriodSeconds 0 and a UID precondition (finalizers of other controllers stay).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type winston from 'winston';
import { signalGroup, writePidFile } from '../lib/processes.ts';
import type { AgentConfig, ImageEntry } from './config.ts';
import {
  ContainerConfigError,
  containerEnvironment,
  finalArgv,
  type MountMapping,
  rewritePath,
} from './container.ts';
import { containerArgv, findImage } from './images.ts';
import { call, isoTime, mergePatch, type ResourceWatch, watchResource } from './kube.ts';
import {
  type ContainerState,
  exitCodeOf,
  type LocalContainer,
  podStatus,
  restartDelayMs,
  restartPolicyOf,
  shouldRestart,
  type Termination,
  terminationReason,
} from './pod-status.ts';
import { podFolder, VolumePreparer } from './volumes.ts';

export interface NodeView {
  isRunnable(name: string | undefined): boolean;
  allocatable(name: string): Record<string, string>;
}

interface PodRecord {
  readonly uid: string;
  readonly key: string;
  readonly nodeName: string;
  pod: V1Pod;
  local: { state: ContainerState; lastTermination?: Termination; restartCount: number; finished: boolean };
  startTime: string;
  child?: ChildProcess;
  pid?: number;
  exited?: Promise<void>;
  starting?: Promise<void>;
  timer?: NodeJS.Timeout;
  terminating?: Promise<void>;
  killDeadline?: number;
  /** The pod or its node is gone: no more reports, no more starts. */
  gone: boolean;
  reports: Promise<void>;
  lastReport?: string;
}

const INHERITED_ENV = ['PATH', 'HOME', 'USER', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

/** How soon a pod status the API server refused or never got is sent again. */
const STATUS_RETRY_MS = 1000;

function podKey(pod: V1Pod): string {
  return `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
}

function isTerminalPhase(pod: V1Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

function signalNumber(signal: NodeJS.Signals | null): number | undefined {
  return signal === null ? undefined : constants.signals[signal];
}

/**
 * Whether the API server's copy says something else than the agent would (phase, readiness, one of
 * the conditions it owns): then the status goes again even if it is what was sent last, since someone
 * else (node-lifecycle's NotReady) changed it since.
 */
function apiCopyDiffers(pod: V1Pod, status: ReturnType<typeof podStatus>): boolean {
  if (pod.status?.phase !== status.phase) return true;
  if (pod.status?.containerStatuses?.[0]?.ready !== status.containerStatuses[0]?.ready) return true;
  return status.conditions.some(
    (c) => pod.status?.conditions?.find((p) => p.type === c.type)?.status !== c.status,
  );
}

export class PodRunner implements AsyncDisposable {
  private readonly core: CoreV1Api;
  private readonly records = new Map<string, PodRecord>();
  private readonly volumes: VolumePreparer;
  private watch?: ResourceWatch<V1Pod>;
  private disposed = false;

  constructor(
    private readonly kc: KubeConfig,
    private readonly config: AgentConfig,
    private readonly log: winston.Logger,
    private readonly nodes: NodeView,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.volumes = new VolumePreparer(kc, config);
  }

  async start(): Promise<void> {
    const fieldSelector = 'spec.nodeName!=';
    this.watch = await watchResource<V1Pod>(
      this.kc,
      '/api/v1/pods',
      () => this.core.listPodForAllNamespaces({ fieldSelector }),
      { add: (p) => this.sync(p), update: (p) => this.sync(p), remove: (p) => this.removed(p) },
      { fieldSelector, log: this.log },
    );
  }

  // ------------------------------------------------------------------------------------ node events

  nodeAlive(name: string): void {
    for (const pod of this.watch?.list() ?? []) if (pod.spec?.nodeName === name) this.sync(pod);
  }

  /** A crashed kubelet: the processes die with it and nothing is reported until it recovers. */
  nodeCrashed(name: string): void {
    for (const rec of this.records.values()) {
      if (rec.nodeName !== name) continue;
      if (rec.timer) clearTimeout(rec.timer);
      rec.timer = undefined;
      if (rec.pid !== undefined) signalGroup(rec.pid, 'SIGKILL');
    }
  }

  nodeDeleted(name: string): void {
    for (const rec of [...this.records.values()]) if (rec.nodeName === name) this.forget(rec);
  }

  // ------------------------------------------------------------------------------------- pod events

  private sync(pod: V1Pod): void {
    if (this.disposed) return;
    const uid = pod.metadata?.uid;
    const nodeName = pod.spec?.nodeName;
    if (uid === undefined || nodeName === undefined || !this.nodes.isRunnable(nodeName)) return;
    let rec = this.records.get(uid);
    if (rec === undefined) {
      if (isTerminalPhase(pod)) {
        // Finished before this agent started: only its deletion is left to complete.
        if (pod.metadata?.deletionTimestamp) void this.completeDeletion(pod);
        return;
      }
      rec = {
        uid,
        key: podKey(pod),
        nodeName,
        pod,
        local: {
          state: { kind: 'waiting', reason: 'ContainerCreating' },
          restartCount: pod.status?.containerStatuses?.[0]?.restartCount ?? 0,
          finished: false,
        },
        startTime: isoTime(pod.status?.startTime) ?? (isoTime(new Date()) as string),
        gone: false,
        reports: Promise.resolve(),
      };
      this.records.set(uid, rec);
    }
    rec.pod = pod;
    if (pod.metadata?.deletionTimestamp) {
      this.terminate(rec);
      return;
    }
    // As a kubelet's status manager, against the API server's copy rather than what was last sent:
    // node-lifecycle marks the pods of a node it thinks is gone NotReady (a kube-apiserver restart
    // long enough for the heartbeats to lapse), and nothing else sets them Ready again (chaos seed 2,
    // 20 minutes: the operator saw 0 of 3 workers ready for good). report() sends only a difference.
    if (rec.local.finished || rec.child) this.report(rec, true);
    if (rec.local.finished || rec.child || rec.starting || rec.timer) return;
    if (rec.local.state.kind === 'terminated') {
      // Exited while its node was crashed: decide now that the node is back.
      this.afterExit(rec);
      return;
    }
    rec.starting = this.startContainer(rec).finally(() => {
      if (rec) rec.starting = undefined;
    });
  }

  private removed(pod: V1Pod): void {
    const rec = pod.metadata?.uid === undefined ? undefined : this.records.get(pod.metadata.uid);
    if (rec !== undefined) this.forget(rec);
  }

  /** The pod object or its node is gone: kill at once, drop everything local. */
  private forget(rec: PodRecord): void {
    rec.gone = true;
    if (rec.timer) clearTimeout(rec.timer);
    if (rec.pid !== undefined) signalGroup(rec.pid, 'SIGKILL');
    this.records.delete(rec.uid);
    void (rec.exited ?? Promise.resolve()).then(() => this.volumes.removePodFolder(rec.uid));
  }

  // ------------------------------------------------------------------------------------- containers

  private logFile(pod: V1Pod): string {
    return join(this.config.stateDir, 'logs', `${pod.metadata?.namespace}_${pod.metadata?.name}.log`);
  }

  private baseEnvironment(pod: V1Pod, entry: ImageEntry | undefined, kubeconfig: string | undefined) {
    const env: Record<string, string> = {};
    for (const name of [...INHERITED_ENV, ...this.config.inheritEnv]) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    Object.assign(env, entry?.env ?? {});
    const { host, port } = this.config.apiServer;
    Object.assign(env, {
      HOSTNAME: pod.metadata?.name ?? '',
      KUBERNETES_SERVICE_HOST: host,
      KUBERNETES_SERVICE_PORT: String(port),
      KUBERNETES_SERVICE_PORT_HTTPS: String(port),
      KUBERNETES_PORT: `tcp://${host}:${port}`,
    });
    if (kubeconfig !== undefined) env['KUBECONFIG'] = kubeconfig;
    return env;
  }

  private async prepare(pod: V1Pod) {
    const container = pod.spec?.containers[0];
    if (container === undefined) throw new ContainerConfigError('the pod has no container');
    const { mounts, kubeconfig } = await this.volumes.prepare(pod);
    const image = container.image ?? '';
    const match = findImage(this.config.imageMap, image);
    const argv = containerArgv(match?.entry, container);
    if (argv.argv.length === 0)
      throw new ContainerConfigError(
        `image ${image} is not in the node agent's image map and the container has no command; add an image map entry`,
        'ErrImagePull',
      );
    const namespace = pod.metadata?.namespace ?? 'default';
    const text = (data: Record<string, string | Buffer> | undefined) =>
      data === undefined
        ? undefined
        : Object.fromEntries(Object.entries(data).map(([k, v]) => [k, v.toString()]));
    const env = await containerEnvironment(
      {
        pod,
        container,
        podIP: this.config.podIp,
        nodeAllocatable: this.nodes.allocatable(pod.spec?.nodeName ?? ''),
        mounts,
        sources: {
          configMap: async (name) => text(await this.volumes.configMapData(namespace, name)),
          secret: async (name) => text(await this.volumes.secretData(namespace, name)),
        },
      },
      this.baseEnvironment(pod, match?.entry, kubeconfig),
    );
    const cwd = this.workingDirectory(pod, container.workingDir, match?.entry, mounts);
    return { argv: finalArgv(argv, env, mounts), env, cwd };
  }

  private workingDirectory(
    pod: V1Pod,
    workingDir: string | undefined,
    entry: ImageEntry | undefined,
    mounts: readonly MountMapping[],
  ): string {
    const scratch = podFolder(this.config.stateDir, pod.metadata?.uid ?? '');
    const dir = workingDir ? rewritePath(workingDir, mounts) : (entry?.workingDir ?? scratch);
    if (existsSync(dir)) return dir;
    if (dir.startsWith(this.config.stateDir)) {
      mkdirSync(dir, { recursive: true });
      return dir;
    }
    throw new ContainerConfigError(
      `working directory ${dir} does not exist on this machine`,
      'CreateContainerError',
    );
  }

  private async startContainer(rec: PodRecord): Promise<void> {
    if (rec.local.restartCount === 0 && rec.local.state.kind === 'waiting') this.report(rec);
    let prepared: Awaited<ReturnType<PodRunner['prepare']>>;
    try {
      prepared = await this.prepare(rec.pod);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const reason = error instanceof ContainerConfigError ? error.reason : 'ContainerCreating';
      this.log.warn('container cannot start yet', { pod: rec.key, reason, error: message });
      rec.local.state = { kind: 'waiting', reason, message };
      this.report(rec);
      rec.timer = setTimeout(() => {
        rec.timer = undefined;
        this.sync(rec.pod);
      }, 2000);
      return;
    }
    if (
      rec.gone ||
      rec.pod.metadata?.deletionTimestamp ||
      !this.nodes.isRunnable(rec.nodeName) ||
      this.disposed
    )
      return;
    const [command, ...args] = prepared.argv as [string, ...string[]];
    const logFile = this.logFile(rec.pod);
    mkdirSync(join(this.config.stateDir, 'logs'), { recursive: true });
    const fd = openSync(logFile, 'a');
    const startedAt = isoTime(new Date()) as string;
    const containerID = `tensile-node-agent://${rec.uid}/${rec.local.restartCount}`;
    let child: ChildProcess;
    try {
      child = spawn(command, args, {
        cwd: prepared.cwd,
        env: Object.fromEntries(prepared.env),
        stdio: ['ignore', fd, fd],
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    rec.child = child;
    let spawned = false;
    let resolveExit: () => void = () => {};
    rec.exited = new Promise((resolve) => {
      resolveExit = resolve;
    });
    child.once('spawn', () => {
      spawned = true;
      rec.pid = child.pid;
      if (child.pid !== undefined) writePidFile(this.config.stateDir, `pod-${rec.uid}`, child.pid);
      rec.local.state = { kind: 'running', startedAt, containerID };
      this.log.info('container started', {
        pod: rec.key,
        node: rec.nodeName,
        pid: child.pid,
        argv: prepared.argv,
      });
      this.report(rec);
    });
    child.once('error', (error) => {
      if (spawned) return;
      rec.child = undefined;
      rec.local.state = {
        kind: 'terminated',
        exitCode: 128,
        reason: 'StartError',
        message: `cannot run ${command}: ${error.message}`,
        finishedAt: isoTime(new Date()) as string,
      };
      this.log.warn('container failed to start', { pod: rec.key, error: error.message });
      resolveExit();
      this.afterExit(rec);
    });
    child.once('exit', (code, signal) => {
      // A process that never started is handled by the 'error' listener.
      if (!spawned) return;
      // The container's other processes die with it, as in a PID namespace.
      if (child.pid !== undefined) signalGroup(child.pid, 'SIGKILL');
      rmSync(join(this.config.stateDir, 'pids', `pod-${rec.uid}.pid`), { force: true });
      const exitCode = exitCodeOf(code, signalNumber(signal));
      rec.child = undefined;
      rec.pid = undefined;
      const sig = signalNumber(signal);
      rec.local.state = {
        kind: 'terminated',
        exitCode,
        ...(sig === undefined ? {} : { signal: sig }),
        reason: terminationReason(exitCode),
        startedAt,
        finishedAt: isoTime(new Date()) as string,
        containerID,
      };
      this.log.info('container exited', { pod: rec.key, exitCode, signal });
      resolveExit();
      this.afterExit(rec);
    });
  }

  /** After an exit that nobody asked for: restart per restartPolicy, or report the final phase. */
  private afterExit(rec: PodRecord): void {
    if (rec.gone || rec.terminating || this.disposed || !this.nodes.isRunnable(rec.nodeName)) return;
    const state = rec.local.state;
    if (state.kind !== 'terminated') return;
    if (shouldRestart(restartPolicyOf(rec.pod), state.exitCode)) {
      const { kind: _, ...termination } = state;
      rec.local.lastTermination = termination;
      rec.local.restartCount++;
      const delay = restartDelayMs(rec.local.restartCount);
      rec.local.state = {
        kind: 'waiting',
        reason: 'CrashLoopBackOff',
        message: `back-off ${delay / 1000}s restarting failed container=${rec.pod.spec?.containers[0]?.name} pod=${rec.pod.metadata?.name}`,
      };
      this.report(rec);
      rec.timer = setTimeout(() => {
        rec.timer = undefined;
        this.sync(rec.pod);
      }, delay);
      return;
    }
    rec.local.finished = true;
    this.report(rec);
  }

  private terminate(rec: PodRecord): void {
    const grace =
      rec.pod.metadata?.deletionGracePeriodSeconds ?? rec.pod.spec?.terminationGracePeriodSeconds ?? 30;
    const deadline = Date.now() + grace * 1000;
    // A second DELETE with a shorter grace period shortens the wait, as with a kubelet.
    rec.killDeadline = Math.min(rec.killDeadline ?? deadline, deadline);
    if (rec.terminating) return;
    rec.terminating = (async () => {
      if (rec.timer) clearTimeout(rec.timer);
      rec.timer = undefined;
      await rec.starting;
      if (rec.pid !== undefined && rec.child !== undefined) {
        this.log.info('stopping container', { pod: rec.key, gracePeriodSeconds: grace });
        signalGroup(rec.pid, 'SIGTERM');
        let exited = false;
        void rec.exited?.then(() => {
          exited = true;
        });
        while (!exited && Date.now() < (rec.killDeadline ?? 0)) await sleep(50);
        if (!exited && rec.pid !== undefined) {
          this.log.info('grace period over; killing', { pod: rec.key });
          signalGroup(rec.pid, 'SIGKILL');
        }
        await rec.exited;
      }
      if (rec.gone || !this.nodes.isRunnable(rec.nodeName) || this.disposed) return;
      if (!rec.local.finished && rec.local.state.kind === 'terminated') {
        rec.local.finished = true;
        this.report(rec);
      }
      await rec.reports;
      await this.completeDeletion(rec.pod);
    })().catch((error: unknown) => {
      this.log.warn('pod deletion failed; retrying', { pod: rec.key, error: String(error) });
      rec.terminating = undefined;
      setTimeout(() => this.sync(rec.pod), 1000);
    });
  }

  private async completeDeletion(pod: V1Pod): Promise<void> {
    const name = pod.metadata?.name ?? '';
    const namespace = pod.metadata?.namespace ?? '';
    await call(
      `delete pod ${namespace}/${name}`,
      () =>
        this.core.deleteNamespacedPod({
          name,
          namespace,
          gracePeriodSeconds: 0,
          body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata?.uid ?? '' } },
        }),
      { notFound: true, conflict: true },
    );
    this.log.info('pod deletion completed', { pod: `${namespace}/${name}` });
  }

  /**
   * Patches pods/status, one patch at a time per pod, when what the agent would say differs from what
   * it said last, computed over the API server's copy (so a condition someone else changed counts).
   * `fromWatch`: a watch event, ignored until a first report got through (its retry is pending).
   */
  private report(rec: PodRecord, fromWatch = false): void {
    if (fromWatch && rec.lastReport === undefined) return;
    rec.reports = rec.reports.then(async () => {
      if (rec.gone || this.disposed || !this.nodes.isRunnable(rec.nodeName)) return;
      const local: LocalContainer = { ...rec.local };
      const status = podStatus(rec.pod, local, rec.startTime, new Date(), this.config.podIp);
      const text = JSON.stringify(status);
      if (text === rec.lastReport && !apiCopyDiffers(rec.pod, status)) return;
      try {
        const patched = await call(
          `status of pod ${rec.key}`,
          () =>
            this.core.patchNamespacedPodStatus(
              {
                name: rec.pod.metadata?.name ?? '',
                namespace: rec.pod.metadata?.namespace ?? '',
                // The UID makes the patch fail on a new pod that reuses the name.
                body: { metadata: { uid: rec.uid }, status },
              },
              mergePatch,
            ),
          { notFound: true, conflict: true },
        );
        rec.lastReport = text;
        if (patched !== undefined && !rec.gone) rec.pod = patched;
      } catch (error) {
        // As a kubelet's status manager: try again until the API server takes it. Dropped, a container
        // that exited while the API server was away (a restart) stayed Running for good (chaos seed 3).
        this.log.warn('status update failed; retrying', { pod: rec.key, error: String(error) });
        setTimeout(() => this.report(rec), STATUS_RETRY_MS).unref();
      }
    });
  }

  /** SIGKILL for every pod process group, synchronously (for process exit). */
  killAll(): void {
    for (const rec of this.records.values()) if (rec.pid !== undefined) signalGroup(rec.pid, 'SIGKILL');
  }

  /** Stops every pod process: SIGTERM, then SIGKILL after two seconds. Statuses are left as they are. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.disposed = true;
    await this.watch?.stop();
    const running = [...this.records.values()].filter((r) => r.pid !== undefined);
    for (const rec of this.records.values()) if (rec.timer) clearTimeout(rec.timer);
    for (const rec of running) signalGroup(rec.pid as number, 'SIGTERM');
    const all = Promise.all(running.map((r) => r.exited));
    const timeout = sleep(2000).then(() => 'timeout');
    if ((await Promise.race([all, timeout])) === 'timeout') this.killAll();
    await Promise.race([all, sleep(2000)]);
  }
}
