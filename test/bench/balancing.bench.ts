/**
 * Uneven workers: three `tensile run` workers (and two pinned one per CPU with `--pin-cpus`, whose
 * capacities are then their own on a 2-core machine), the last slowed to half speed (`--chaos slow:N:0.5`, a
 * SIGSTOP/SIGCONT duty cycle), trained once with `spec.balancing.mode: even` and once with
 * `proportional`, same manifest otherwise, same machine, one after the other in this run.
 *
 * The figure is the job's samples/s ÷ the sum of the three workers' capacities, where a worker's
 * capacity is its measured compute throughput (samples per second of forward, backward and batch
 * preparation, waiting excluded: the `workers` figures of the progress events, which every rank reads
 * from the step's all-reduce). The job's samples/s is the global batch over the median step time of
 * the second half of the run (after the split settled; evaluations excluded). Ideal even split with
 * one worker at half speed: 3 × 0.5 / 2.5 = 0.6; ideal proportional: 1. Accuracy is the final
 * evaluation of each run on the whole test set.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const at = (e: { timestamp?: string | undefined }) => Date.parse(String(e.timestamp));

const GLOBAL_BATCH = 2048;

/** Three workers as the issue has them, or two pinned one per CPU (capacities of their own). */
interface Setup {
  readonly workers: number;
  readonly pinned: boolean;
}
const THREE: Setup = { workers: 3, pinned: false };
const TWO_PINNED: Setup = { workers: 2, pinned: true };
const slowedIndex = (setup: Setup) => setup.workers - 1;
const runArgs = (setup: Setup, speed: number) => [
  '--workers',
  String(setup.workers),
  '--chaos',
  `slow:${slowedIndex(setup)}:${speed}`,
  ...(setup.pinned ? ['--pin-cpus'] : []),
];

function writeJob(dir: string, mode: 'even' | 'proportional', setup: Setup, evict = false): string {
  const name = `${evict ? 'evict' : mode}-${setup.workers}${setup.pinned ? '-pinned' : ''}`;
  return writeJobManifest(join(dir, `${name}.yaml`), `balancing-${name}`, {
    replicas: setup.workers,
    minReplicas: 1,
    maxReplicas: setup.workers,
    model: { mlp: { hiddenUnits: [256, 128] } },
    dataset: {
      format: 'idx',
      path: fashionMnistDir(),
      normalize: 'scale',
      maxTrainSamples: 61_440,
    },
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: GLOBAL_BATCH, policy: 'fixedGlobalBatch' },
    balancing: {
      mode,
      warmupSteps: 5,
      minIntervalSteps: 10,
      ...(evict ? { evictStragglers: true, stragglerSteps: 20 } : {}),
    },
    stopping: { epochs: 4 },
    evaluation: { intervalSteps: 100_000 },
    checkpoint: { intervalSteps: 100_000 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 5000, lastCallMillis: 3000 },
  });
}

interface ModeResult {
  readonly jobSamplesPerSecond: number;
  readonly capacities: readonly number[];
  readonly ofCapacity: number;
  readonly finalSplit: readonly number[];
  readonly rebalances: number;
  readonly slowedWorkerWaitSeconds: number;
  readonly fastWorkersWaitSeconds: readonly number[];
  readonly accuracy: number | null;
}

/**
 * The job's samples/s in one generation, seen by one worker: the global batch over the median step
 * time of the generation's second half (the split settled), evaluations excluded; and the last
 * per-worker figures of that generation.
 */
function settledThroughput(events: ReturnType<typeof workerEvents>, worker?: string, generation?: number) {
  const progress = eventsOf(events, 'progress')
    .filter((e) => e.worker === worker && e.generation === generation)
    .sort((a, b) => a.step - b.step);
  const evaluated = new Set(eventsOf(events, 'eval').map((e) => e.step));
  const stepTimes: number[] = [];
  for (let i = Math.max(1, Math.floor(progress.length / 2)); i < progress.length; i++) {
    const a = progress[i - 1];
    const b = progress[i];
    if (a === undefined || b === undefined || b.step !== a.step + 1) continue;
    if (evaluated.has(a.step) || evaluated.has(b.step)) continue;
    stepTimes.push((at(b) - at(a)) / 1000);
  }
  return { loads: progress.at(-1)?.workers ?? [], jobSamplesPerSecond: GLOBAL_BATCH / median(stepTimes) };
}

async function measure(dir: string, mode: 'even' | 'proportional', setup: Setup): Promise<ModeResult> {
  const out = join(dir, `out-${mode}-${setup.workers}${setup.pinned ? '-pinned' : ''}`);
  const summary = await finished(tensileRun(writeJob(dir, mode, setup), out, runArgs(setup, 0.5)));
  const events = workerEvents(out);
  // The last world of all of them (a late starter can make the first one smaller).
  const world = eventsOf(events, 'generation')
    .filter((e) => e.rank === 0 && e.worldSize === setup.workers)
    .sort((a, b) => (a.generation ?? 0) - (b.generation ?? 0))
    .at(-1);
  const writer = world?.worker;
  const { loads, jobSamplesPerSecond } = settledThroughput(events, writer, world?.generation);
  const capacities = loads.map((l) => l.samplesPerSecond);
  const slowed = loads.find((l) => l.worker.endsWith(`-worker-${slowedIndex(setup)}`));
  return {
    jobSamplesPerSecond: round(jobSamplesPerSecond, 1),
    capacities,
    ofCapacity: round(jobSamplesPerSecond / capacities.reduce((a, b) => a + b, 0)),
    finalSplit: loads.map((l) => l.batch),
    rebalances: eventsOf(events, 'balance').filter((e) => e.worker === writer).length,
    slowedWorkerWaitSeconds: slowed?.waitSeconds ?? 0,
    fastWorkersWaitSeconds: loads.filter((l) => l !== slowed).map((l) => l.waitSeconds),
    accuracy: summary.eval?.accuracy ?? null,
  };
}

/**
 * `evictStragglers`: worker-2 slowed to 0.2 is reported, asked to leave and replaced by a new worker
 * at full speed. The figure is the job's samples/s in the world with the replacement over the one with
 * the straggler (proportional in both, so the straggler already holds a small share).
 */
async function measureEviction(dir: string) {
  const out = join(dir, 'out-evict');
  const summary = await finished(
    tensileRun(writeJob(dir, 'proportional', THREE, true), out, runArgs(THREE, 0.2)),
  );
  const events = workerEvents(out);
  const worlds = eventsOf(events, 'generation')
    .filter((e) => e.rank === 0 && e.worldSize === 3)
    .sort((a, b) => (a.generation ?? 0) - (b.generation ?? 0));
  const slowed = worlds.filter((w) => w.members?.some((m) => m.endsWith('-worker-2'))).at(-1);
  const replaced = worlds.filter((w) => !w.members?.some((m) => m.endsWith('-worker-2'))).at(-1);
  const before = settledThroughput(events, slowed?.worker, slowed?.generation);
  const after = settledThroughput(events, replaced?.worker, replaced?.generation);
  const straggler = eventsOf(events, 'straggler').find((e) => e.evict);
  return {
    stragglerReportedAtStep: straggler?.step ?? null,
    replacedInGeneration: replaced?.generation ?? null,
    withStragglerSamplesPerSecond: round(before.jobSamplesPerSecond, 1),
    withReplacementSamplesPerSecond: round(after.jobSamplesPerSecond, 1),
    afterOverBefore: round(after.jobSamplesPerSecond / before.jobSamplesPerSecond),
    accuracy: summary.eval?.accuracy ?? null,
  };
}

export default async function bench() {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-bench-balancing-'));
  const even = await measure(dir, 'even', THREE);
  const proportional = await measure(dir, 'proportional', THREE);
  const evenPinned = await measure(dir, 'even', TWO_PINNED);
  const proportionalPinned = await measure(dir, 'proportional', TWO_PINNED);
  const eviction = await measureEviction(dir);
  return {
    figures: {
      pinnedEvenOfCapacity: evenPinned.ofCapacity,
      pinnedProportionalOfCapacity: proportionalPinned.ofCapacity,
      pinnedProportionalOverEven: round(
        proportionalPinned.jobSamplesPerSecond / evenPinned.jobSamplesPerSecond,
      ),
      evictionRecoveryAfterOverBefore: eviction.afterOverBefore,
      evenOfCapacity: even.ofCapacity,
      proportionalOfCapacity: proportional.ofCapacity,
      proportionalOverEvenSamplesPerSecond: round(
        proportional.jobSamplesPerSecond / even.jobSamplesPerSecond,
      ),
      accuracyDifferencePoints:
        even.accuracy === null || proportional.accuracy === null
          ? null
          : round((proportional.accuracy - even.accuracy) * 100, 2),
    },
    even,
    proportional,
    evenPinned,
    proportionalPinned,
    eviction,
    setup: {
      workers: '3, and 2 pinned one per CPU (--pin-cpus)',
      slowed: 'the last worker at 0.5 (SIGSTOP/SIGCONT duty cycle, 10 ms period); 0.2 for the eviction',
      globalBatch: GLOBAL_BATCH,
      model: 'mlp 784-256-128-10',
      trainSamples: 61_440,
      epochs: 4,
    },
  };
}
