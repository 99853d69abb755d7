/**
 * Goodput autoscaling in a simulated cluster (pure functions, no processes): a seeded trace of 20 jobs
 * on 16 GPUs with spot churn (a few GPUs reclaimed now and then, back after a while). Each job has a
 * true Pollux-style step time t(N, b) = fixed + perSample·b + perReplica·(N − 1) and a gradient noise
 * scale that grows as it trains (φ₀ → 10·φ₀); it needs W base-batch-equivalent samples of progress
 * (progress per second = throughput × (φ + M₀)/(φ + M)). Every change of a job's workers or batch
 * costs it RESTART_SECONDS of no progress.
 *
 * - fixed-k: every job asks for k GPUs at its base batch M₀, first come first served; when spot
 *   capacity goes, the newest running job goes back to the queue (its progress kept, a checkpoint).
 * - even: every job that arrived gets an equal share of what is there (queued past one GPU each).
 * - goodput: every SCHEDULE_SECONDS each job's model is fitted to the step times it measured (with
 *   ±5 % noise) by `fitThroughput`, its noise scale is what its workers measured (only with ≥ 2), its
 *   options come from `goodputOptions` with a batch range [M₀, 16·M₀] and the exploration bound,
 *   `clusterShares` divides the GPUs there are, and each job's `decideGoodput` (the operator's:
 *   threshold, minimum interval, batch choice) moves within its share; above it, it shrinks at once.
 *
 * - goodput-fixed-batch: the same with the batch held at M₀ (workers chosen, batch not: what the
 *   operator does today).
 *
 * Figures: average job completion time (arrival to finish) and makespan, and goodput's average JCT
 * over the best fixed-k's and over even's (lower is better; the target is ≤ 0.7 of the best
 * fixed). The raw numbers per policy come with them.
 */

import { clusterShares } from '../../operator/api/goodput-cluster.ts';
import { fitThroughput, type ThroughputSample } from '../../operator/api/goodput-model.ts';
import {
  decideGoodput,
  type GoodputInput,
  goodputOptions,
  replicaCap,
} from '../../operator/api/goodput-policy.ts';

const GPUS = 16;
const JOBS = 20;
const DT = 10;
const SCHEDULE_SECONDS = 60;
const RESTART_SECONDS = 20;
const THRESHOLD = 0.05;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface TrueJob {
  readonly id: string;
  readonly arrival: number;
  readonly fixed: number;
  readonly perSample: number;
  readonly perReplica: number;
  readonly baseBatch: number;
  readonly phi0: number;
  readonly work: number;
}

function trace(seed: number): { jobs: TrueJob[]; capacityAt: (t: number) => number } {
  const random = mulberry32(seed);
  const between = (a: number, b: number) => a + (b - a) * random();
  let arrival = 0;
  const jobs: TrueJob[] = [];
  for (let i = 0; i < JOBS; i++) {
    const baseBatch = [64, 128, 256][Math.floor(random() * 3)] as number;
    const fixed = between(0.005, 0.03);
    const perSample = between(1e-4, 4e-4);
    // One GPU at M₀ trains for 20–90 minutes.
    const seconds = between(20, 90) * 60;
    jobs.push({
      id: `job-${i}`,
      arrival,
      fixed,
      perSample,
      perReplica: between(0.002, 0.02),
      baseBatch,
      phi0: between(50, 1000),
      work: (seconds * baseBatch) / (fixed + perSample * baseBatch),
    });
    arrival += -Math.log(1 - random()) * 240;
  }
  // Spot churn: every ~25 minutes 2–6 GPUs go for 5–20 minutes.
  const outages: { from: number; to: number; gpus: number }[] = [];
  for (let t = between(600, 1800); t < 6 * 3600; t += between(900, 2100))
    outages.push({ from: t, to: t + between(300, 1200), gpus: 2 + Math.floor(random() * 5) });
  const capacityAt = (t: number) =>
    Math.max(1, GPUS - outages.filter((o) => t >= o.from && t < o.to).reduce((a, o) => a + o.gpus, 0));
  return { jobs, capacityAt };
}

interface JobState {
  readonly job: TrueJob;
  progress: number;
  replicas: number;
  batch: number;
  /** Seconds of no progress left (a re-form after a change). */
  restart: number;
  finished?: number;
  readonly samples: Map<string, ThroughputSample>;
  noiseScale?: number;
  /** When its allocation last changed (seconds), for the minimum interval. */
  lastChange?: number;
}

const phiOf = (s: JobState) => s.job.phi0 * (1 + 9 * Math.min(1, s.progress / s.job.work));
const stepSeconds = (j: TrueJob, n: number, b: number) => j.fixed + j.perSample * b + j.perReplica * (n - 1);

function setAllocation(s: JobState, replicas: number, batch: number): void {
  if (replicas === s.replicas && batch === s.batch) return;
  if (replicas > 0) s.restart = RESTART_SECONDS;
  s.replicas = replicas;
  s.batch = batch;
}

/** One DT of training: progress, and what the job's workers measure (noisy step time, noise scale). */
function advance(s: JobState, t: number, random: () => number): void {
  if (s.replicas === 0 || s.finished !== undefined) return;
  const train = Math.max(0, DT - s.restart);
  s.restart = Math.max(0, s.restart - DT);
  if (train === 0) return;
  const seconds = stepSeconds(s.job, s.replicas, s.batch / s.replicas);
  const phi = phiOf(s);
  const efficiency = (phi + s.job.baseBatch) / (phi + s.batch);
  s.progress += (s.batch / seconds) * efficiency * train;
  const key = `${s.replicas}/${s.batch}`;
  const held = s.samples.get(key);
  const measured = seconds * (1 + (random() - 0.5) * 0.1);
  const steps = Math.round(train / seconds);
  s.samples.set(key, {
    replicas: s.replicas,
    perWorkerBatch: s.batch / s.replicas,
    stepSeconds:
      held === undefined
        ? measured
        : (held.stepSeconds * held.steps + measured * steps) / (held.steps + steps),
    steps: (held?.steps ?? 0) + steps,
  });
  if (s.replicas >= 2) s.noiseScale = phi * (1 + (random() - 0.5) * 0.2);
  if (s.progress >= s.job.work) {
    s.finished = t + DT;
    s.replicas = 0;
  }
}

type Scheduler = (active: JobState[], capacity: number, t: number) => void;

function fixedScheduler(k: number): Scheduler {
  return (active, capacity) => {
    let used = active.reduce((a, s) => a + s.replicas, 0);
    // Capacity gone: the newest running jobs go back to the queue.
    for (const s of [...active].reverse()) {
      if (used <= capacity) break;
      if (s.replicas === 0) continue;
      used -= s.replicas;
      setAllocation(s, 0, s.job.baseBatch);
    }
    for (const s of active) {
      if (s.replicas > 0) continue;
      const want = Math.min(k, capacity);
      if (used + want > capacity) break;
      setAllocation(s, want, Math.max(s.job.baseBatch, want));
      used += want;
    }
  };
}

const evenScheduler: Scheduler = (active, capacity) => {
  const running = active.slice(0, capacity);
  const share = Math.floor(capacity / Math.max(1, running.length));
  let extra = capacity - share * running.length;
  for (const s of active) {
    if (!running.includes(s)) {
      setAllocation(s, 0, s.job.baseBatch);
      continue;
    }
    const n = share + (extra-- > 0 ? 1 : 0);
    setAllocation(s, n, Math.max(s.job.baseBatch, n));
  }
};

function goodputInput(s: JobState, capacity: number, adaptBatch: boolean, t: number): GoodputInput {
  const samples = [...s.samples.values()].filter((x) => x.steps >= 20);
  return {
    current: Math.max(1, s.replicas),
    min: 1,
    max: capacity,
    baseBatch: s.job.baseBatch,
    batch: adaptBatch
      ? { kind: 'range', min: s.job.baseBatch, max: 16 * s.job.baseBatch }
      : { kind: 'fixed', global: s.job.baseBatch },
    model: fitThroughput(samples),
    samples,
    noiseScale: s.noiseScale,
    settings: { minIntervalSeconds: SCHEDULE_SECONDS, threshold: THRESHOLD, explorationFactor: 2 },
    lastChangeMs: s.lastChange === undefined ? undefined : s.lastChange * 1000,
    nowMs: t * 1000,
    pending: 0,
    ...(adaptBatch ? { currentBatch: s.batch } : {}),
  };
}

/**
 * The product's two functions, as the operator's leader runs them: `clusterShares` divides the GPUs
 * there are by each job's predicted options, then each job's own `decideGoodput` (threshold,
 * minimum interval, batch choice) moves within its share.
 */
const goodputScheduler =
  (adaptBatch: boolean): Scheduler =>
  (active, capacity, t) => {
    const everyRound = t % SCHEDULE_SECONDS === 0;
    const used = active.reduce((a, s) => a + s.replicas, 0);
    const newcomer = active.some((s) => s.replicas === 0);
    if (!everyRound && used <= capacity && !newcomer) return;
    const shares = clusterShares(
      active.map((s) => {
        const input = goodputInput(s, capacity, adaptBatch, t);
        return {
          id: s.job.id,
          min: 1,
          max: capacity,
          // A newcomer starts on one GPU, to measure.
          current: Math.max(1, s.replicas),
          options: goodputOptions(input, replicaCap(input)),
        };
      }),
      capacity,
      { fairnessFloor: 0.5 },
    );
    for (const s of active) {
      const share = shares.get(s.job.id) ?? 0;
      if (share === 0) {
        setAllocation(s, 0, s.job.baseBatch);
        continue;
      }
      const decision = decideGoodput({ ...goodputInput(s, capacity, adaptBatch, t), capacity: share });
      const replicas = Math.min(share, decision.replicas);
      const batch = decision.globalBatch ?? (s.replicas === 0 ? s.job.baseBatch : s.batch);
      if (replicas !== s.replicas || batch !== s.batch) s.lastChange = t;
      setAllocation(s, replicas, Math.max(batch, replicas));
    }
  };

interface PolicyResult {
  readonly averageJctMinutes: number;
  readonly makespanMinutes: number;
  readonly unfinished: number;
}

function simulate(seed: number, scheduler: Scheduler): PolicyResult {
  const { jobs, capacityAt } = trace(seed);
  const random = mulberry32(seed + 1);
  const states: JobState[] = jobs.map((job) => ({
    job,
    progress: 0,
    replicas: 0,
    batch: job.baseBatch,
    restart: 0,
    samples: new Map(),
  }));
  const horizon = 48 * 3600;
  for (let t = 0; t < horizon; t += DT) {
    const active = states.filter((s) => s.job.arrival <= t && s.finished === undefined);
    if (active.length === 0 && states.every((s) => s.finished !== undefined)) break;
    scheduler(active, capacityAt(t), t);
    for (const s of active) advance(s, t, random);
  }
  const done = states.filter((s) => s.finished !== undefined);
  const jct = done.map((s) => (s.finished as number) - s.job.arrival);
  return {
    averageJctMinutes: Math.round(jct.reduce((a, b) => a + b, 0) / Math.max(1, jct.length) / 6) / 10,
    makespanMinutes: Math.round(Math.max(...done.map((s) => s.finished as number)) / 6) / 10,
    unfinished: states.length - done.length,
  };
}

const round = (x: number) => Math.round(x * 1000) / 1000;

export default async function goodputBench(): Promise<object> {
  const seeds = [1, 2, 3];
  const policies: Record<string, Scheduler> = {
    'fixed-1': fixedScheduler(1),
    'fixed-2': fixedScheduler(2),
    'fixed-4': fixedScheduler(4),
    'fixed-8': fixedScheduler(8),
    even: evenScheduler,
    goodput: goodputScheduler(true),
    'goodput-fixed-batch': goodputScheduler(false),
  };
  const perSeed = seeds.map((seed) => {
    const results = Object.fromEntries(
      Object.entries(policies).map(([name, p]) => [name, simulate(seed, p)]),
    );
    const fixed = ['fixed-1', 'fixed-2', 'fixed-4', 'fixed-8'].map((k) => results[k] as PolicyResult);
    const bestFixed = Math.min(...fixed.map((r) => r.averageJctMinutes));
    const goodput = results.goodput as PolicyResult;
    return {
      seed,
      results,
      goodputJctOverBestFixed: round(goodput.averageJctMinutes / bestFixed),
      goodputJctOverEven: round(goodput.averageJctMinutes / (results.even as PolicyResult).averageJctMinutes),
      replicasOnlyJctOverBestFixed: round(
        (results['goodput-fixed-batch'] as PolicyResult).averageJctMinutes / bestFixed,
      ),
    };
  });
  const mean = (f: (x: (typeof perSeed)[number]) => number) =>
    round(perSeed.reduce((a, x) => a + f(x), 0) / perSeed.length);
  return {
    cluster: { gpus: GPUS, jobs: JOBS, restartSeconds: RESTART_SECONDS, scheduleSeconds: SCHEDULE_SECONDS },
    goodputJctOverBestFixed: mean((x) => x.goodputJctOverBestFixed),
    goodputJctOverEven: mean((x) => x.goodputJctOverEven),
    replicasOnlyJctOverBestFixed: mean((x) => x.replicasOnlyJctOverBestFixed),
    perSeed,
  };
}
