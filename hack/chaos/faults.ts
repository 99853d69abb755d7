/**
 * How each fault of the chaos schedule is carried out on the local cluster (hack/cluster.sh): the
 * worker pods are process groups of the node agent (`<state>/pids/pod-<uid>.pid`), the control plane
 * and nats-server are processes of the cluster, and every network fault stays on loopback (iptables
 * rules in a chain of this run's own, on the victim's ports only).
 */
import { execFile } from 'node:child_process';
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  watch,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { CoordinationV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { LABEL_JOB_NAME } from '../../operator/api/contract.ts';
import type { ScenarioContext } from '../e2e/scenario.ts';
import { readPidFiles, signalGroup, startProcess } from '../lib/processes.ts';
import { type Fault, pickTarget } from './schedule.ts';

const run = promisify(execFile);

/** What carrying a fault out did, for the log and the verdict. */
export interface FaultOutcome {
  /** One line: what was hit and how. */
  readonly what: string;
  /** Worker pods (uids) this fault killed: each must count as one restart. */
  readonly killed: readonly string[];
  /**
   * Worker pods (uids) that were running on a node this fault deleted: each counts as one preemption
   * if it ends while the job still runs.
   */
  readonly lost: readonly string[];
  /** False when there was nothing to hit (no running worker, no leader): the fault is retried later. */
  readonly done: boolean;
}

const none = (what: string): FaultOutcome => ({ what, killed: [], lost: [], done: false });

export interface WorkerProcess {
  readonly pod: string;
  readonly uid: string;
  readonly node: string;
  /** Leader of the pod's process group. */
  readonly pgid: number;
}

/** The job's running worker pods with their process groups. */
export async function runningWorkers(ctx: ScenarioContext): Promise<WorkerProcess[]> {
  const core = ctx.kc.makeApiClient(CoreV1Api);
  const pods = await core.listNamespacedPod({
    namespace: ctx.namespace,
    labelSelector: `${LABEL_JOB_NAME}=${ctx.name}`,
  });
  const groups = new Map<string, number>();
  for (const r of readPidFiles(ctx.cluster.dir)) {
    const m = /pod-(.+)\.pid$/.exec(r.file);
    if (m?.[1] !== undefined) groups.set(m[1], r.pid);
  }
  const out: WorkerProcess[] = [];
  for (const p of pods.items) {
    const uid = p.metadata?.uid ?? '';
    const pgid = groups.get(uid);
    if (!isRunning(p) || pgid === undefined) continue;
    out.push({ pod: p.metadata?.name ?? '', uid, node: p.spec?.nodeName ?? '', pgid });
  }
  return out;
}

function isRunning(p: V1Pod): boolean {
  return p.status?.phase === 'Running' && p.metadata?.deletionTimestamp === undefined;
}

const pick = (workers: readonly WorkerProcess[], target: number) => {
  const name = pickTarget(
    workers.map((w) => w.pod),
    target,
  );
  return workers.find((w) => w.pod === name);
};

export async function killWorker(ctx: ScenarioContext, fault: Fault): Promise<FaultOutcome> {
  const victim = pick(await runningWorkers(ctx), fault.target);
  if (victim === undefined) return none('no running worker');
  signalGroup(victim.pgid, 'SIGKILL');
  return { what: `kill -9 ${victim.pod}`, killed: [victim.uid], lost: [], done: true };
}

export async function reclaim(ctx: ScenarioContext, fault: Fault): Promise<FaultOutcome> {
  const kind = fault.kind === 'reclaim-notice' ? 'notice' : 'abrupt';
  const before = await runningWorkers(ctx);
  const victim = await ctx.reclaimer.reclaim(kind, undefined, (nodes) => pickTarget(nodes, fault.target));
  if (victim === undefined) return none('no spot node runs a worker');
  const lost = before.filter((w) => w.node === victim);
  return {
    what: `${kind === 'notice' ? 'reclaim with notice' : 'delete WITHOUT notice'} of ${victim} (loses ${lost.map((w) => w.pod).join(', ') || 'no worker'})`,
    killed: [],
    lost: lost.map((w) => w.uid),
    done: true,
  };
}

export async function killOperatorLeader(ctx: ScenarioContext): Promise<FaultOutcome> {
  const coordination = ctx.kc.makeApiClient(CoordinationV1Api);
  const lease = await coordination.readNamespacedLease({
    namespace: 'tensile-system',
    name: 'tensile-operator',
  });
  const holder = lease.spec?.holderIdentity;
  if (holder === undefined || !ctx.operators().has(holder))
    return none(`no leader (holder ${holder ?? 'none'})`);
  await ctx.restartOperator(holder, 'SIGKILL');
  return {
    what: `kill -9 the operator leader ${holder} (started again as a standby)`,
    killed: [],
    lost: [],
    done: true,
  };
}

export async function restartNats(ctx: ScenarioContext, fault: Fault): Promise<FaultOutcome> {
  const how = fault.kind === 'kill-nats' ? 'SIGKILL' : 'SIGTERM';
  await ctx.restartNats(how);
  return {
    what: `nats-server ${how === 'SIGKILL' ? 'kill -9' : 'stopped'} and started again (same JetStream store)`,
    killed: [],
    lost: [],
    done: true,
  };
}

/** kube-apiserver stopped (SIGTERM) and started again with the flags it ran with. */
export async function restartApiserver(ctx: ScenarioContext): Promise<FaultOutcome> {
  const record = readPidFiles(ctx.cluster.dir).find((r) => r.file.endsWith('/kube-apiserver.pid'));
  if (record === undefined) return none('no kube-apiserver pid file');
  const argv = readFileSync(`/proc/${record.pid}/cmdline`, 'utf8')
    .split('\0')
    .filter((a) => a !== '');
  const [command, ...args] = argv;
  if (command === undefined) return none('kube-apiserver has no command line');
  const stopping = performance.now();
  signalGroup(record.pid, 'SIGTERM');
  for (let i = 0; i < 300 && existsSync(`/proc/${record.pid}`); i++) await delay(100);
  signalGroup(record.pid, 'SIGKILL');
  const started = performance.now();
  await startProcess(ctx.cluster.dir, 'kube-apiserver', command, args);
  const kubectl = ctx.cluster.kubectl;
  for (;;) {
    const ready = await run(
      kubectl,
      ['--kubeconfig', ctx.cluster.kubeconfigPath, 'get', '--raw', '/readyz'],
      {
        timeout: 5000,
      },
    ).then(
      () => true,
      () => false,
    );
    if (ready) break;
    if (performance.now() - started > 90_000) throw new Error('kube-apiserver did not come back within 90 s');
    await delay(200);
  }
  return {
    what: `kube-apiserver restarted (${((started - stopping) / 1000).toFixed(1)} s to stop, ready again ${((performance.now() - started) / 1000).toFixed(1)} s after its start)`,
    killed: [],
    lost: [],
    done: true,
  };
}

/** Every process id in a process group. */
function groupPids(pgid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const pgrp = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2];
      if (Number(pgrp) === pgid) out.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return out;
}

interface Socket {
  readonly state: string;
  readonly local: number;
  readonly peer: number;
  readonly pid: number | undefined;
}

async function tcpSockets(): Promise<Socket[]> {
  const { stdout } = await run('ss', ['-Htanp'], { maxBuffer: 16 << 20 });
  const port = (address: string | undefined) => Number(address?.slice(address.lastIndexOf(':') + 1));
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const f = l.trim().split(/\s+/);
      const pid = /pid=(\d+)/.exec(l)?.[1];
      return {
        state: f[0] ?? '',
        local: port(f[3]),
        peer: port(f[4]),
        pid: pid === undefined ? undefined : Number(pid),
      };
    });
}

/**
 * Everything a chaos run leaves in the machine's shared state is named by this prefix and the pid of
 * the process that made it: the iptables chain (`TENSILE-CHAOS-<pid>`) and the tmpfs under the
 * checkpoint claim (`tensile-chaos-<pid>`), so that a later run removes what a killed one left.
 */
export const CHAOS_CHAIN_PREFIX = 'TENSILE-CHAOS-';
export const CHAOS_TMPFS_PREFIX = 'tensile-chaos';

/** Loopback rules of this run: one chain, jumped to from OUTPUT, removed when the run ends. */
export class Firewall implements AsyncDisposable {
  readonly chain = `${CHAOS_CHAIN_PREFIX}${process.pid}`;
  private created = false;

  async drop(ports: readonly number[]): Promise<void> {
    if (!this.created) {
      await run('iptables', ['-N', this.chain]);
      await run('iptables', ['-I', 'OUTPUT', '-o', 'lo', '-j', this.chain]);
      this.created = true;
    }
    for (const p of ports) {
      await run('iptables', ['-A', this.chain, '-p', 'tcp', '--sport', String(p), '-j', 'DROP']);
      await run('iptables', ['-A', this.chain, '-p', 'tcp', '--dport', String(p), '-j', 'DROP']);
    }
  }

  async heal(): Promise<void> {
    if (this.created) await run('iptables', ['-F', this.chain]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.created) return;
    this.created = false;
    await run('iptables', ['-D', 'OUTPUT', '-o', 'lo', '-j', this.chain]).catch(() => {});
    await run('iptables', ['-F', this.chain]).catch(() => {});
    await run('iptables', ['-X', this.chain]).catch(() => {});
  }
}

/**
 * Cuts one worker off from the other workers (not from NATS or the API server): every TCP connection
 * between its processes and another worker's, and its listening ports, dropped for `fault.seconds`.
 */
export async function partitionWorker(
  ctx: ScenarioContext,
  fault: Fault,
  firewall: Firewall,
): Promise<FaultOutcome> {
  const workers = await runningWorkers(ctx);
  const victim = pick(workers, fault.target);
  if (victim === undefined || workers.length < 2) return none('fewer than two running workers');
  const mine = new Set(groupPids(victim.pgid));
  const theirs = new Set(workers.filter((w) => w !== victim).flatMap((w) => groupPids(w.pgid)));
  const sockets = await tcpSockets();
  const listening = (pids: Set<number>) =>
    new Set(
      sockets
        .filter((s) => s.state === 'LISTEN' && s.pid !== undefined && pids.has(s.pid))
        .map((s) => s.local),
    );
  const myPorts = listening(mine);
  const theirPorts = listening(theirs);
  const ports = new Set(myPorts);
  for (const s of sockets)
    if (s.pid !== undefined && mine.has(s.pid) && theirPorts.has(s.peer) && s.state !== 'LISTEN')
      ports.add(s.local);
  if (ports.size === 0) return none(`${victim.pod} has no connection to its peers`);
  await firewall.drop([...ports]);
  await delay(fault.seconds * 1000, undefined, ctx.signal === undefined ? {} : { signal: ctx.signal });
  await firewall.heal();
  return {
    what: `${victim.pod} cut off from its peers for ${fault.seconds} s (ports ${[...ports].sort((a, b) => a - b).join(', ')})`,
    killed: [],
    lost: [],
    done: true,
  };
}

/** Stops and continues one worker (half of every 400 ms stopped) for `fault.seconds`. */
export async function slowWorker(ctx: ScenarioContext, fault: Fault): Promise<FaultOutcome> {
  const victim = pick(await runningWorkers(ctx), fault.target);
  if (victim === undefined) return none('no running worker');
  const until = performance.now() + fault.seconds * 1000;
  try {
    while (performance.now() < until) {
      signalGroup(victim.pgid, 'SIGSTOP');
      await delay(200);
      signalGroup(victim.pgid, 'SIGCONT');
      await delay(200);
    }
  } finally {
    signalGroup(victim.pgid, 'SIGCONT');
  }
  return {
    what: `${victim.pod} slowed (SIGSTOP/SIGCONT, 50 %) for ${fault.seconds} s`,
    killed: [],
    lost: [],
    done: true,
  };
}

export const FILL_FILE = '.chaos-fill';

/** Appends to `file` until the file system says ENOSPC (big chunks, then small ones for the rest). */
export function fillUp(file: string): number {
  const fd = openSync(file, 'a');
  let written = 0;
  try {
    for (const size of [4 << 20, 64 << 10, 4 << 10, 512]) {
      const chunk = Buffer.alloc(size);
      for (;;) {
        try {
          written += writeSync(fd, chunk);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

/**
 * Fills the checkpoint volume (a tmpfs of its own, see `mountCheckpointVolume`) until a checkpoint
 * write fails, and frees it again: held for `fault.seconds`, and longer, up to `maxSeconds`, until a
 * worker logged a failed write.
 */
export async function fillCheckpointVolume(
  ctx: ScenarioContext,
  fault: Fault,
  failedWrites: () => number,
  maxSeconds = 60,
): Promise<FaultOutcome> {
  const file = join(ctx.claimDir, FILL_FILE);
  const before = failedWrites();
  const started = performance.now();
  let seen = false;
  try {
    fillUp(file);
    for (;;) {
      const held = (performance.now() - started) / 1000;
      seen = failedWrites() > before;
      if ((seen && held >= fault.seconds) || held >= maxSeconds) break;
      await delay(200);
    }
  } finally {
    rmSync(file, { force: true });
  }
  return {
    what: `checkpoint volume full for ${((performance.now() - started) / 1000).toFixed(1)} s (${seen ? 'a write failed' : 'NO write failed meanwhile'})`,
    killed: [],
    lost: [],
    done: true,
  };
}

/** A small tmpfs under the checkpoint claim's folder, so that filling it is quick and harmless. */
export async function mountCheckpointVolume(dir: string, size: string): Promise<() => Promise<void>> {
  await run('mkdir', ['-p', dir]);
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, `${CHAOS_TMPFS_PREFIX}-${process.pid}`, dir]);
  return async () => {
    await run('umount', ['-l', dir]).catch(() => {});
  };
}

/**
 * SIGKILL to the checkpoint writer (the newest world's rank 0, `writer()`) in the middle of a write: as
 * soon as a checkpoint appears in its temporary directory (inotify on the claim's folder) the writer is
 * stopped (SIGSTOP); if the temporary directory is still there, the write is half done and the writer is
 * killed; if it was renamed already, the writer continues and the next checkpoint is tried, up to
 * `timeoutMs`, after which the writer is killed at the last chance seen.
 */
export async function killCheckpointWriter(
  ctx: ScenarioContext,
  writer: () => string | undefined,
  timeoutMs = 60_000,
): Promise<FaultOutcome> {
  const workers = await runningWorkers(ctx);
  const worker = workers.find((w) => w.pod === writer());
  if (worker === undefined) return none(`the writer ${writer() ?? '(none yet)'} is not running`);
  const started = performance.now();
  let tries = 0;
  const hit = await new Promise<{ entry: string; torn: boolean } | undefined>((resolve) => {
    const finish = (value: { entry: string; torn: boolean } | undefined) => {
      watcher.close();
      clearTimeout(timer);
      resolve(value);
    };
    const watcher = watch(ctx.claimDir, (_event, name) => {
      if (name === null || !name.startsWith('.tmp-')) return;
      signalGroup(worker.pgid, 'SIGSTOP');
      tries++;
      const torn = existsSync(join(ctx.claimDir, name));
      if (torn || performance.now() - started > timeoutMs) {
        signalGroup(worker.pgid, 'SIGKILL');
        signalGroup(worker.pgid, 'SIGCONT');
        finish({ entry: name, torn });
      } else signalGroup(worker.pgid, 'SIGCONT');
    });
    const timer = setTimeout(() => finish(undefined), timeoutMs * 2);
  });
  if (hit === undefined) {
    signalGroup(worker.pgid, 'SIGCONT');
    return none('no checkpoint write seen');
  }
  return {
    what: `kill -9 ${worker.pod} while it wrote ${hit.entry} (${hit.torn ? 'left half-written' : 'it had just been renamed'}; ${tries} writes watched)`,
    killed: [worker.uid],
    lost: [],
    done: true,
  };
}
