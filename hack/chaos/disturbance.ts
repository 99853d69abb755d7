/**
 * The chaos run as a disturbance of the e2e scenario (hack/e2e/scenario.ts): once training is under
 * way it carries out the seeded schedule (schedule.ts) one fault at a time — each at its offset or at
 * the same share of the job's steps, whichever comes first (`faultDue`), and only once the job converged from the previous one (the whole world training again) —
 * watches the job's pods for a second pod of one replica index, samples the memory of every long-lived
 * process, and adds its checks to the e2e's verdict.
 */
import { readFileSync } from 'node:fs';
import { CoreV1Api, type V1Pod, Watch } from '@kubernetes/client-node';
import { LABEL_JOB_NAME } from '../../operator/api/contract.ts';
import type { WorkerEvent } from '../../operator/api/worker-events.ts';
import { replicaIndex } from '../../operator/controller/pods.ts';
import { type Check, check } from '../e2e/analysis.ts';
import type { Disturbance, Evidence, ScenarioContext, Tick } from '../e2e/scenario.ts';
import { readPidFiles } from '../lib/processes.ts';
import {
  type FaultOutcome,
  Firewall,
  fillCheckpointVolume,
  killCheckpointWriter,
  killOperatorLeader,
  killWorker,
  mountCheckpointVolume,
  partitionWorker,
  reclaim,
  restartApiserver,
  restartNats,
  slowWorker,
} from './faults.ts';
import { removeLeftovers } from './leftovers.ts';
import { type Fault, faultDue } from './schedule.ts';
import {
  duplicateIndices,
  formatExpected,
  judgeAccounting,
  judgeMemory,
  judgeResumes,
  type MemorySample,
  podLive,
  type SeenPod,
} from './verdict.ts';

export interface ChaosOptions {
  readonly seed: number;
  readonly schedule: readonly Fault[];
  /** The length the schedule was drawn for (its `seconds`): a fault's offset is also this share of the job. */
  readonly windowSeconds: number;
  /** A fault that has not converged after this long fails the run's `converged` check. Default 180. */
  readonly convergeTimeoutSeconds?: number;
  /** Size of the tmpfs under the checkpoint claim. Default 256m. */
  readonly volumeSize?: string;
}

interface Done {
  readonly fault: Fault;
  /** Seconds after training started. */
  readonly at: number;
  readonly outcome: FaultOutcome;
  /** Seconds after training started when carrying it out was over (a lasting fault healed). */
  readonly endedAt: number;
  /** The step when it was over. */
  readonly stepAtEnd: number;
  /** Consecutive ticks with the whole world training since. */
  wholeTicks: number;
  convergedAfter?: number;
  error?: string;
}

const fmt = (s: number) => `${s.toFixed(1)} s`;

export function chaosDisturbance(options: ChaosOptions): (ctx: ScenarioContext) => Disturbance {
  return (ctx) => new Chaos(ctx, options);
}

class Chaos implements Disturbance {
  private readonly done: Done[] = [];
  private readonly pods = new Map<string, SeenPod>();
  /** Pods seen Failed (not disrupted), and pods seen ended in any way: uid → wall-clock ms. */
  private readonly failed = new Map<string, number>();
  private readonly ended = new Map<string, number>();
  private readonly duplicates: string[] = [];
  private readonly processDuplicates: string[] = [];
  private readonly memory: MemorySample[] = [];
  private readonly firewall = new Firewall();
  private readonly stop = new AbortController();
  private readonly started = performance.now();
  private trainingAt: number | undefined;
  private pending: Done | undefined;
  private lastSample = 0;
  private sampler: NodeJS.Timeout | undefined;
  private unmount: (() => Promise<void>) | undefined;
  private readonly convergeTimeout: number;

  constructor(
    private readonly ctx: ScenarioContext,
    private readonly options: ChaosOptions,
  ) {
    this.convergeTimeout = options.convergeTimeoutSeconds ?? 180;
  }

  private seconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  async beforeApply(): Promise<void> {
    // A run killed with SIGKILL cannot clean up after itself: its rules would go on dropping packets.
    for (const line of await removeLeftovers()) this.ctx.mark(`chaos: left by an earlier run: ${line}`);
    if (this.options.schedule.some((f) => f.kind === 'fill-checkpoint-volume'))
      this.unmount = await mountCheckpointVolume(this.ctx.claimDir, this.options.volumeSize ?? '256m');
    void this.watchPods();
    // On a timer, not on the scenario's ticks: a fault being carried out (an API server restart) holds
    // the ticks back for many seconds.
    this.sampler = setInterval(() => this.sampleMemory(), 2000);
    this.sampleMemory();
    this.ctx.mark(
      `chaos: seed ${this.options.seed}, ${this.options.schedule.length} faults planned: ` +
        this.options.schedule.map((f) => `${f.atSeconds}s ${f.kind}`).join(', '),
    );
  }

  async tick(tick: Tick): Promise<void> {
    this.checkProcesses();
    if (this.trainingAt === undefined) {
      if (tick.step > 0) this.trainingAt = this.seconds();
      return;
    }
    const since = this.seconds() - this.trainingAt;
    const pending = this.pending;
    if (pending !== undefined) {
      pending.wholeTicks = tick.whole ? pending.wholeTicks + 1 : 0;
      // Whole for a few ticks in a row, past the settling time of the fault (a notice runs out, a
      // world notices a loss), and training on: a world that has not noticed the fault yet is not it.
      const settled = since - pending.endedAt >= settleSeconds(pending.fault);
      if (settled && pending.wholeTicks >= 3 && tick.step >= pending.stepAtEnd + 20) {
        pending.convergedAfter = since - pending.at;
        this.ctx.mark(`chaos: converged ${fmt(pending.convergedAfter)} after fault ${pending.fault.index}`);
        this.pending = undefined;
      } else if (since - pending.at > this.convergeTimeout) {
        this.ctx.mark(
          `chaos: fault ${pending.fault.index} did NOT converge within ${this.convergeTimeout} s`,
        );
        this.pending = undefined;
      }
      return;
    }
    const next = this.options.schedule[this.done.length];
    if (next === undefined || !tick.whole) return;
    if (
      !faultDue(next, this.options.windowSeconds, { since, step: tick.step, plannedSteps: tick.plannedSteps })
    )
      return;
    await this.inject(next, since, tick);
  }

  private async inject(fault: Fault, since: number, tick: Tick): Promise<void> {
    let outcome: FaultOutcome;
    try {
      outcome = await this.carryOut(fault, tick);
    } catch (error) {
      outcome = { what: `failed: ${(error as Error).message}`, killed: [], lost: [], done: true };
    }
    if (!outcome.done) {
      this.ctx.say(
        `chaos: fault ${fault.index} ${fault.kind} not possible now (${outcome.what}); again later`,
      );
      return;
    }
    const endedAt = this.trainingAt === undefined ? since : this.seconds() - this.trainingAt;
    const entry: Done = { fault, at: since, outcome, endedAt, stepAtEnd: tick.step, wholeTicks: 0 };
    this.done.push(entry);
    this.pending = entry;
    this.ctx.mark(
      `chaos: fault ${fault.index} (due ${fault.atSeconds} s, at ${fmt(since)} of training, step ${tick.step}) ${fault.kind}: ${outcome.what}`,
    );
  }

  private carryOut(fault: Fault, tick: Tick): Promise<FaultOutcome> {
    const ctx = this.ctx;
    switch (fault.kind) {
      case 'kill-worker':
        return killWorker(ctx, fault);
      case 'reclaim-notice':
      case 'reclaim-abrupt':
        return reclaim(ctx, fault);
      case 'kill-operator-leader':
        return killOperatorLeader(ctx);
      case 'restart-nats':
      case 'kill-nats':
        return restartNats(ctx, fault);
      case 'restart-apiserver':
        return restartApiserver(ctx);
      case 'partition-worker':
        return partitionWorker(ctx, fault, this.firewall);
      case 'fill-checkpoint-volume':
        return fillCheckpointVolume(ctx, fault, () => this.failedWrites());
      case 'kill-checkpoint-writer':
        return killCheckpointWriter(ctx, () => writerOf(tick.lines));
      case 'slow-worker':
        return slowWorker(ctx, fault);
    }
  }

  private failedWrites(): number {
    return this.ctx.lines().filter((l) => l.event === 'checkpoint-failed').length;
  }

  /** Pods of the job as the API server tells them, relisted after every broken watch. */
  private async watchPods(): Promise<void> {
    const core = this.ctx.kc.makeApiClient(CoreV1Api);
    const selector = `${LABEL_JOB_NAME}=${this.ctx.name}`;
    const path = `/api/v1/namespaces/${this.ctx.namespace}/pods`;
    while (!this.stop.signal.aborted) {
      try {
        const list = await core.listNamespacedPod({ namespace: this.ctx.namespace, labelSelector: selector });
        const present = new Set(list.items.map((p) => p.metadata?.uid ?? ''));
        for (const [uid, p] of this.pods)
          if (!present.has(uid)) {
            this.pods.set(uid, { ...p, gone: true });
            this.endedOnce(uid);
          }
        for (const p of list.items) this.see(p, false);
        const ended = new Promise<void>((resolve) => {
          void new Watch(this.ctx.kc)
            .watch(
              path,
              {
                labelSelector: selector,
                resourceVersion: list.metadata?.resourceVersion,
                allowWatchBookmarks: true,
              },
              (type: string, obj: V1Pod) => {
                if (type === 'ADDED' || type === 'MODIFIED') this.see(obj, false);
                if (type === 'DELETED') this.see(obj, true);
              },
              () => resolve(),
            )
            .then((req) => this.stop.signal.addEventListener('abort', () => req.abort(), { once: true }))
            .catch(() => resolve());
        });
        await ended;
      } catch {
        // The API server is away (a fault): list again shortly.
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  private see(pod: V1Pod, deleted: boolean): void {
    const uid = pod.metadata?.uid ?? '';
    const seen: SeenPod = {
      uid,
      name: pod.metadata?.name ?? '',
      index: replicaIndex(pod),
      phase: pod.status?.phase,
      deleting: pod.metadata?.deletionTimestamp !== undefined,
      gone: deleted,
    };
    this.pods.set(uid, seen);
    if (
      seen.phase === 'Failed' &&
      !this.failed.has(uid) &&
      !pod.status?.conditions?.some((c) => c.type === 'DisruptionTarget')
    )
      this.failed.set(uid, Date.now());
    if (!podLive(seen) || seen.deleting) this.endedOnce(uid);
    for (const [index, uids] of duplicateIndices(this.pods.values()))
      this.duplicates.push(`${fmt(this.seconds())}: index ${index}: ${uids.join(', ')}`);
  }

  private endedOnce(uid: string): void {
    if (!this.ended.has(uid)) this.ended.set(uid, Date.now());
  }

  /** Two worker processes of one replica index running at once, whatever the API server believes. */
  private checkProcesses(): void {
    const byIndex = new Map<string, number[]>();
    for (const r of readPidFiles(this.ctx.cluster.dir)) {
      if (!/\/pod-[^/]+\.pid$/.test(r.file)) continue;
      const env = environ(r.pid);
      if (env.get('TENSILE_JOB_NAME') !== this.ctx.name) continue;
      const index = env.get('TENSILE_REPLICA_INDEX') ?? '?';
      byIndex.set(index, [...(byIndex.get(index) ?? []), r.pid]);
    }
    for (const [index, pids] of byIndex)
      if (pids.length > 1)
        this.processDuplicates.push(`${fmt(this.seconds())}: index ${index}: processes ${pids.join(', ')}`);
  }

  private sampleMemory(): void {
    this.lastSample = this.seconds();
    for (const r of readPidFiles(this.ctx.cluster.dir)) {
      const name = /\/([^/]+)\.pid$/.exec(r.file)?.[1] ?? '';
      let component = name;
      if (name.startsWith('pod-')) {
        const env = environ(r.pid);
        if (env.get('TENSILE_JOB_NAME') !== this.ctx.name) continue;
        component = `worker-${env.get('TENSILE_REPLICA_INDEX') ?? '?'}`;
      }
      const rss = rssBytes(r.pid);
      if (rss !== undefined) this.memory.push({ at: this.lastSample, component, pid: r.pid, rssBytes: rss });
    }
  }

  async judge(evidence: Evidence): Promise<Check[]> {
    const { status, lines } = evidence;
    const lost = new Map(this.done.flatMap((d) => d.outcome.lost).map((uid) => [uid, this.ended.get(uid)]));
    const completedAt = status.completionTime === undefined ? undefined : Date.parse(status.completionTime);
    const accounting = judgeAccounting(
      {
        killed: new Set(this.done.flatMap((d) => d.outcome.killed)),
        failed: this.failed,
        lost,
        completedAt: Number.isNaN(completedAt) ? undefined : completedAt,
      },
      status,
    );
    const resumes = judgeResumes(lines);
    clearInterval(this.sampler);
    const memory = judgeMemory(this.memory);
    // The last fault may still be settling when the job completes: the job's success is its outcome.
    const last = this.done.at(-1);
    const unconverged = this.done.filter(
      (d) => d.convergedAfter === undefined && !(d === last && status.phase === 'Succeeded'),
    );
    const kept = evidence.checks.filter(
      (c) =>
        !(
          // The e2e's goodput budgets and events assume its scripted reclaims.
          ['preemptions', 'restarts', 'goodput', 'churn', 'events'].includes(c.name)
        ),
    );
    const mib = (b: number) => (b / 2 ** 20).toFixed(0);
    return [
      ...kept,
      check(
        'faults',
        this.done.length > 0 && this.done.every((d) => !d.outcome.what.startsWith('failed:')),
        `${this.done.length} of ${this.options.schedule.length} planned faults carried out before the job ended` +
          this.done
            .filter((d) => d.outcome.what.startsWith('failed:'))
            .map((d) => `; fault ${d.fault.index} ${d.fault.kind} ${d.outcome.what}`)
            .join(''),
      ),
      check(
        'converged',
        unconverged.length === 0,
        unconverged.length === 0
          ? `the whole world trained again after every fault (slowest ${fmt(Math.max(0, ...this.done.map((d) => d.convergedAfter ?? 0)))})`
          : `not after ${unconverged.map((d) => `fault ${d.fault.index} ${d.fault.kind}`).join(', ')}`,
      ),
      check(
        'restarts',
        accounting.restartsOk,
        `status.restarts ${status.restarts ?? 0}, pods watched failing while the job ran ${formatExpected(accounting.restarts)} (${this.failed.size} in all), killed by faults ${new Set(this.done.flatMap((d) => d.outcome.killed)).size}`,
      ),
      check(
        'no-crash',
        accounting.unexpected.length === 0,
        accounting.unexpected.length === 0
          ? 'every failed worker was one a fault killed'
          : `failed without being killed: ${accounting.unexpected.map((uid) => this.pods.get(uid)?.name ?? uid).join(', ')}`,
      ),
      check(
        'preemptions',
        accounting.preemptionsOk,
        `status.preemptions ${status.preemptions ?? 0}, workers on deleted nodes lost while the job ran ${formatExpected(accounting.preemptions)} (${lost.size} on them in all)`,
      ),
      check(
        'checkpoints',
        resumes.bad.length === 0,
        `${resumes.resumed} resumes, each from a checkpoint written completely${resumes.bad.length > 0 ? `; NOT: ${resumes.bad.join(', ')}` : ''}; ${resumes.skipped} corrupt or torn ones skipped`,
      ),
      check(
        'duplicates',
        this.duplicates.length === 0 && this.processDuplicates.length === 0,
        this.duplicates.length + this.processDuplicates.length === 0
          ? `never two pods (watched) nor two processes of one replica index (${this.pods.size} pods seen)`
          : [...this.duplicates, ...this.processDuplicates].slice(0, 5).join('; '),
      ),
      check(
        'memory',
        memory.length > 0 && memory.every((m) => m.ok),
        memory
          .map((m) => `${m.ok ? '' : 'GREW '}${m.component} ${mib(m.middlePeak)}→${mib(m.lastPeak)} MiB`)
          .join(', ') || 'no samples',
      ),
    ];
  }

  report(): string[] {
    return [
      `chaos seed ${this.options.seed}: ${this.done.length}/${this.options.schedule.length} faults`,
      ...this.done.map(
        (d) =>
          `  ${String(d.fault.index).padStart(3)} due ${String(d.fault.atSeconds).padStart(6)} s, at ${fmt(d.at).padStart(8)}  ${d.fault.kind.padEnd(22)} ${d.outcome.what}; ${d.convergedAfter === undefined ? 'NOT converged' : `converged in ${fmt(d.convergedAfter)}`}`,
      ),
    ];
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.stop.abort();
    clearInterval(this.sampler);
    await this.firewall[Symbol.asyncDispose]();
    await this.unmount?.();
  }
}

/** How long after a fault the job may still be on its way into it (a notice, a loss timeout). */
function settleSeconds(fault: Fault): number {
  // The node goes 10 s after the notice (hack/chaos/main.ts, test/e2e/chaos.test.ts).
  if (fault.kind === 'reclaim-notice') return 12;
  return 3;
}

/** The newest world's rank 0: the worker that writes checkpoints. */
function writerOf(lines: readonly WorkerEvent[]): string | undefined {
  let best: { generation: number; worker: string } | undefined;
  for (const l of lines) {
    if (l.event !== 'generation' || l.generation === undefined || l.worker === undefined) continue;
    if ((l.rank ?? 0) !== 0 && l.worldSize !== 1) continue;
    if (best === undefined || l.generation >= best.generation)
      best = { generation: l.generation, worker: l.worker };
  }
  return best?.worker;
}

function environ(pid: number): Map<string, string> {
  try {
    const text = readFileSync(`/proc/${pid}/environ`, 'utf8');
    return new Map(
      text
        .split('\0')
        .filter((kv) => kv.includes('='))
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]),
    );
  } catch {
    return new Map();
  }
}

function rssBytes(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}
