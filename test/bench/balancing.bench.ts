/**
 * Uneven workers: three `tensile run` workers, each in a cgroup of its own with a CPU quota of 0.6 of
 * a core (`--cpu-quota 0.6`: 1.8 cores of 2 at most, so that they do not take cores from each other),
 * the last one slowed to half speed by the product's own chaos action (`--chaos slow:2:0.5`, which
 * under `--cpu-quota` sets its quota to 0.3). Trained once with `spec.balancing.mode: even` and once
 * with `proportional`, same manifest otherwise, same machine, one after the other in this run.
 *
 * The figure is the job's samples/s ÷ the sum of the three workers' capacities. A worker's capacity is
 * its samples/s training alone, at its CPU quota and at the batch it had in the job (its share), in a
 * run of its own in this bench: whatever a step costs besides the gradient (batch preparation, the
 * optimizer's update) counts in the capacity as it does in the job, and the all-reduce, which only
 * the job has, does not. The job's and each alone run's samples/s are the batch over the median step
 * time of the run's second half (after the split settled; steps with an evaluation excluded). Ideal
 * even split with one worker at half speed: 3 × 0.5 / 2.5 = 0.6; ideal proportional: 1, less the
 * all-reduce. Two global batches show that part: the all-reduce's cost is the same, the compute grows.
 * Accuracy is the final evaluation of each run on the whole test set. Every run's data audit must be
 * clean (each epoch saw every sample once, none twice): a run whose split skipped or repeated data
 * fails the bench instead of giving a figure. The ratios are printed to stderr as each pair is done.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import type { RunSummary } from '../../operator/api/run-summary.ts';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const at = (e: { timestamp?: string | undefined }) => Date.parse(String(e.timestamp));

const WORKERS = 3;
const SLOWED = WORKERS - 1;
const CORES = 0.6;
/** Steps per run, about (the epochs follow from the batch). */
const STEPS = 48;
const ALONE_STEPS = 24;
/** 3 and 12 steps of an epoch at the two global batches. */
const TRAIN_SAMPLES = 49_152;
// Every step's progress event (the step times come from their timestamps).
const EVERY_STEP = { TENSILE_PROGRESS_MS: '0' };

type Mode = 'even' | 'proportional';

function epochsFor(batch: number, steps: number): number {
  return Math.max(1, Math.round((steps * batch) / TRAIN_SAMPLES));
}

function writeJob(
  dir: string,
  name: string,
  options: { replicas: number; batch: number; mode: Mode; epochs: number; evict?: boolean },
): string {
  return writeJobManifest(join(dir, `${name}.yaml`), `balancing-${name}`, {
    replicas: options.replicas,
    minReplicas: 1,
    maxReplicas: options.replicas,
    model: { mlp: { hiddenUnits: [256, 128] } },
    dataset: { format: 'idx', path: fashionMnistDir(), normalize: 'scale', maxTrainSamples: TRAIN_SAMPLES },
    optimizer: { type: 'adam', learningRate: 0.004 },
    batch: { global: options.batch, policy: 'fixedGlobalBatch' },
    balancing: {
      mode: options.mode,
      warmupSteps: 5,
      minIntervalSteps: 10,
      ...(options.evict === true ? { evictStragglers: true, stragglerSteps: 20 } : {}),
    },
    stopping: { epochs: options.epochs },
    evaluation: { intervalSteps: 100_000 },
    checkpoint: { intervalSteps: 100_000 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 5000, lastCallMillis: 3000 },
  });
}

/** The run's data audit: `epochs` epochs, each of which saw every sample once and nothing twice. */
function assertAuditClean(summary: RunSummary, epochs: number, what: string) {
  assert.is(summary.status, 'completed', `${what}: ${summary.reason}`);
  assert.is(summary.epochs.length, epochs, `${what}: epochs audited`);
  for (const e of summary.epochs)
    assert.equal(
      [e.seen, e.duplicated, e.missing, e.complete],
      [TRAIN_SAMPLES, 0, 0, true],
      `${what}: the audit of epoch ${e.epoch}`,
    );
  return { epochs: summary.epochs.length, clean: true };
}

const say = (text: string) => process.stderr.write(`[balancing] ${text}\n`);

/**
 * Samples/s of one generation, seen by one worker: the global batch over the median step time of the
 * generation's second half (the split settled), evaluations excluded; and the last per-worker figures
 * of that generation.
 */
function settledThroughput(
  events: ReturnType<typeof workerEvents>,
  batch: number,
  worker?: string,
  generation?: number,
) {
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
  return { loads: progress.at(-1)?.workers ?? [], samplesPerSecond: batch / median(stepTimes) };
}

/** A worker alone at `batch` samples a step, at the job's quota, slowed as in the job or not. */
async function alone(dir: string, batch: number, slowed: boolean): Promise<number> {
  const name = `alone-${batch}${slowed ? '-slowed' : ''}`;
  const out = join(dir, `out-${name}`);
  const epochs = epochsFor(batch, ALONE_STEPS);
  const file = writeJob(dir, name, { replicas: 1, batch, mode: 'even', epochs });
  const args = ['--cpu-quota', String(CORES), ...(slowed ? ['--chaos', 'slow:0:0.5'] : [])];
  assertAuditClean(await finished(tensileRun(file, out, args, EVERY_STEP)), epochs, name);
  const events = workerEvents(out);
  // Alone without chaos is not elastic: its generation is the one its progress names.
  const last = eventsOf(events, 'progress').at(-1);
  return settledThroughput(events, batch, last?.worker, last?.generation).samplesPerSecond;
}

async function measure(dir: string, mode: Mode, batch: number) {
  const name = `${mode}-${batch}`;
  const out = join(dir, `out-${name}`);
  const epochs = epochsFor(batch, STEPS);
  const file = writeJob(dir, name, { replicas: WORKERS, batch, mode, epochs });
  const args = ['--workers', String(WORKERS), '--cpu-quota', String(CORES), '--chaos', `slow:${SLOWED}:0.5`];
  const summary = await finished(tensileRun(file, out, args, EVERY_STEP));
  const audit = assertAuditClean(summary, epochs, name);
  const events = workerEvents(out);
  // The last world of all of them (a late starter can make the first one smaller).
  const world = eventsOf(events, 'generation')
    .filter((e) => e.rank === 0 && e.worldSize === WORKERS)
    .sort((a, b) => (a.generation ?? 0) - (b.generation ?? 0))
    .at(-1);
  const writer = world?.worker;
  const { loads, samplesPerSecond } = settledThroughput(events, batch, writer, world?.generation);
  const isSlowed = (worker: string) => worker.endsWith(`-worker-${SLOWED}`);
  const slowed = loads.find((l) => isSlowed(l.worker));
  const fast = loads.filter((l) => !isSlowed(l.worker));
  // The two fast workers are alike (same quota): one run alone at their mean share stands for both.
  const fastShare = Math.round(fast.reduce((a, l) => a + l.batch, 0) / Math.max(1, fast.length));
  const fastAlone = await alone(dir, fastShare, false);
  const slowedAlone = await alone(dir, slowed?.batch ?? Math.round(batch / WORKERS), true);
  const capacity = fast.length * fastAlone + slowedAlone;
  return {
    jobSamplesPerSecond: round(samplesPerSecond, 1),
    capacities: {
      fastAlone: round(fastAlone, 1),
      slowedAlone: round(slowedAlone, 1),
      sum: round(capacity, 1),
    },
    ofCapacity: round(samplesPerSecond / capacity),
    // Against the compute throughputs the job itself measured, at the same time: immune to the load
    // moving between the job and the runs alone, but the update and bookkeeping are in neither
    // throughput, so this is lower than the ratio to capacities on a quiet machine.
    ofComputeInJob: round(samplesPerSecond / loads.reduce((a, l) => a + l.samplesPerSecond, 0)),
    // As the job measured them: compute throughput (waiting excluded) at each worker's share.
    measuredInJob: loads.map((l) => ({
      worker: l.worker,
      batch: l.batch,
      samplesPerSecond: l.samplesPerSecond,
    })),
    finalSplit: loads.map((l) => l.batch),
    // Every change of the split, as rank 0 recorded it.
    plans: eventsOf(events, 'balance')
      .filter((e) => e.worker === writer)
      .map((e) => ({ step: e.step, reason: e.reason, perWorker: e.perWorker })),
    audit,
    // The last rank to arrive waits only for the ring itself: the smallest wait is the all-reduce's
    // own time, which the capacities (each worker alone) do not pay. Its share of the step bounds
    // what any split can reach: 1 − share of the capacity at best.
    allReduceShareOfStep: round(Math.min(...loads.map((l) => l.waitSeconds)) / (batch / samplesPerSecond)),
    slowedWorkerWaitSeconds: slowed?.waitSeconds ?? 0,
    fastWorkersWaitSeconds: fast.map((l) => l.waitSeconds),
    accuracy: summary.eval?.accuracy ?? null,
  };
}

/**
 * `evictStragglers`: worker-2 slowed to 0.2 is reported, asked to leave and replaced by a new worker
 * at full speed. The figure is the job's samples/s in the world with the replacement over the one with
 * the straggler (proportional in both, so the straggler already holds a small share).
 */
async function measureEviction(dir: string, batch: number) {
  const out = join(dir, 'out-evict');
  // Long enough for a replacement to start and join on a loaded machine (seconds) after the report.
  const epochs = epochsFor(batch, 6 * STEPS);
  const file = writeJob(dir, 'evict', {
    replicas: WORKERS,
    batch,
    mode: 'proportional',
    epochs,
    evict: true,
  });
  const args = ['--workers', String(WORKERS), '--cpu-quota', String(CORES), '--chaos', `slow:${SLOWED}:0.2`];
  const summary = await finished(tensileRun(file, out, args, EVERY_STEP));
  const audit = assertAuditClean(summary, epochs, 'evict');
  const events = workerEvents(out);
  const worlds = eventsOf(events, 'generation')
    .filter((e) => e.rank === 0 && e.worldSize === WORKERS)
    .sort((a, b) => (a.generation ?? 0) - (b.generation ?? 0));
  const slowed = worlds.filter((w) => w.members?.some((m) => m.endsWith(`-worker-${SLOWED}`))).at(-1);
  const replaced = worlds.filter((w) => !w.members?.some((m) => m.endsWith(`-worker-${SLOWED}`))).at(-1);
  const before = settledThroughput(events, batch, slowed?.worker, slowed?.generation);
  const after = settledThroughput(events, batch, replaced?.worker, replaced?.generation);
  const straggler = eventsOf(events, 'straggler').find((e) => e.evict);
  assert.ok(straggler !== undefined, 'the straggler was reported for eviction');
  assert.ok(replaced !== undefined, 'a world of three without the straggler formed before the end');
  return {
    stragglerReportedAtStep: straggler?.step ?? null,
    replacedInGeneration: replaced?.generation ?? null,
    withStragglerSamplesPerSecond: round(before.samplesPerSecond, 1),
    withReplacementSamplesPerSecond: round(after.samplesPerSecond, 1),
    afterOverBefore: round(after.samplesPerSecond / before.samplesPerSecond),
    audit,
    accuracy: summary.eval?.accuracy ?? null,
  };
}

async function bothModes(dir: string, batch: number) {
  const even = await measure(dir, 'even', batch);
  say(`B=${batch} even: ${even.ofCapacity} of capacity (${even.jobSamplesPerSecond} samples/s), audit clean`);
  const proportional = await measure(dir, 'proportional', batch);
  say(
    `B=${batch} proportional: ${proportional.ofCapacity} of capacity (${proportional.jobSamplesPerSecond} samples/s, ` +
      `${proportional.plans.length} plans), audit clean; proportional ÷ even ` +
      `${round(proportional.jobSamplesPerSecond / even.jobSamplesPerSecond)}`,
  );
  return {
    evenOfCapacity: even.ofCapacity,
    proportionalOfCapacity: proportional.ofCapacity,
    proportionalOverEven: round(proportional.jobSamplesPerSecond / even.jobSamplesPerSecond),
    accuracyDifferencePoints:
      even.accuracy === null || proportional.accuracy === null
        ? null
        : round((proportional.accuracy - even.accuracy) * 100, 2),
    even,
    proportional,
  };
}

export default async function bench() {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-bench-balancing-'));
  const large = await bothModes(dir, 16_384);
  const small = await bothModes(dir, 4096);
  const eviction = await measureEviction(dir, 4096);
  say(`eviction: after ÷ before ${eviction.afterOverBefore}, audit clean`);
  say(
    `ratios of this run — even / proportional of capacity: B=16384 ${large.evenOfCapacity} / ${large.proportionalOfCapacity}, ` +
      `B=4096 ${small.evenOfCapacity} / ${small.proportionalOfCapacity} (targets ≈ 0.67 / ≥ 0.9)`,
  );
  const figures = (b: typeof large) => ({
    evenOfCapacity: b.evenOfCapacity,
    proportionalOfCapacity: b.proportionalOfCapacity,
    proportionalOverEven: b.proportionalOverEven,
    accuracyDifferencePoints: b.accuracyDifferencePoints,
  });
  return {
    figures: {
      batch16384: figures(large),
      batch4096: figures(small),
      evictionRecoveryAfterOverBefore: eviction.afterOverBefore,
    },
    batch16384: large,
    batch4096: small,
    eviction,
    setup: {
      workers: `${WORKERS}, each in its own cgroup at ${CORES} of a core (--cpu-quota ${CORES})`,
      slowed: `worker-${SLOWED} at 0.5 (--chaos slow:${SLOWED}:0.5: its quota ${CORES * 0.5}); 0.2 for the eviction`,
      capacity: 'each worker alone at its quota and its share of the batch, in this run',
      model: 'mlp 784-256-128-10',
      trainSamples: TRAIN_SAMPLES,
      steps: `about ${STEPS} per job, ${ALONE_STEPS} alone`,
    },
  };
}
