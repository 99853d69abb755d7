/**
 * Large batch (issue 18): the Fashion-MNIST MLP (or CNN) at global batches 128 … 8192 under one epoch
 * budget, with adam + the linear scaling rule, lamb, lars (both with the square-root rule) and
 * adascale (momentum SGD, 4 in-process ranks so the gain has per-worker gradients to measure; one rank
 * at 128, S = 1). adam, lamb and lars follow the large-batch papers' recipe (warm-up over the first
 * tenth of the run's steps, then cosine decay to 0); every run goes through the worker's own per-step
 * decisions (stepWorld: warm-ups, ramp-up, policy, schedule) and is seeded (model and shuffle seed 1).
 * Reports final accuracy on the whole test set, the drop against the smallest batch of the same method
 * and of adam, and the training seconds and steps to 0.88 (MLP) / 0.91 (CNN).
 *
 * Knobs: TENSILE_LB_EPOCHS (default 30), TENSILE_LB_MODEL (mlp or cnn), TENSILE_LB_BATCHES (default
 * 128,1024,4096,8192), TENSILE_LB_METHODS (default adam-linear,lamb,lamb-ramp,lars,adascale; empty for none),
 * TENSILE_LB_GRID (see gridMethods), TENSILE_LB_SEEDS (model and shuffle seeds, default 1), TENSILE_LB_EVAL (test samples, default 10,000),
 * TENSILE_LB_STRETCH=1 to add AdaScale at S = 4 against S = 1 on the same scale-invariant budget
 * (TENSILE_LB_STRETCH_ITERATIONS, default 1,000).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BatchSpecSchema, OptimizerSpecSchema, StoppingSpecSchema } from '../../operator/api/training-job.ts';
import { lineChart } from '../../operator/report/svg.ts';
import { selectBackend } from '../../worker/backend/select.ts';
import { plannedSteps, stepWorld, worldFor } from '../../worker/train/policy.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import { initialTrainingState } from '../../worker/train/snapshot.ts';
import { Trainer } from '../../worker/train/trainer.ts';
import { InProcessReducer } from '../helpers/in-process-reducer.ts';
import { CNN, fashion, MLP, model, round } from './training-fixture.ts';

const BASE = 128;
const EVALS_PER_EPOCH = 4;
/** Time-to-accuracy thresholds of the issue, per model. */
const TARGETS = { mlp: 0.88, cnn: 0.91 } as const;
const MODELS = { mlp: MLP, cnn: CNN } as const;

interface Method {
  readonly optimizer: Record<string, unknown>;
  readonly policy: 'linear' | 'sqrt' | 'adascale';
  /** The initial warm-up as a fraction of the run's steps (the large-batch papers' warm-up ratio). */
  readonly warmup: number;
  /** The decay after the warm-up: cosine to 0 over the run, or none. */
  readonly schedule: 'cosine' | 'constant';
  /**
   * Batch-size warm-up: the run's batch starts at this fraction of its full one and grows to it in
   * equal stages over `rampEpochs` epochs (`spec.batch.rampUp`, relative to batch.global); 1 for none.
   */
  readonly rampStart: number;
  readonly rampEpochs: number;
}

/**
 * The recipe of the large-batch papers (You et al. 2017/2020, Goyal et al. 2017): a base rate for
 * batch 128, scaled by the policy (square root for LAMB and LARS, linear for Adam and SGD), a linear
 * warm-up over the first part of the run, then a cosine decay to 0 over the rest. Rates were picked
 * by the grid below (TENSILE_LB_GRID) on the MLP at 8192 and kept for every batch and both models.
 */
const METHODS: Record<string, Method> = {
  'adam-linear': {
    optimizer: { type: 'adam', learningRate: 0.001 },
    policy: 'linear',
    warmup: 0.1,
    schedule: 'cosine',
    rampStart: 1,
    rampEpochs: 1,
  },
  lamb: {
    optimizer: { type: 'lamb', learningRate: 0.002, weightDecay: 0.01, epsilon: 1e-6 },
    policy: 'sqrt',
    warmup: 0.1,
    schedule: 'cosine',
    rampStart: 1,
    rampEpochs: 1,
  },
  // The same with a batch-size warm-up: from 1/8 of the batch, growing by 1/8 at 7 even points of the first 3 epochs.
  'lamb-ramp': {
    optimizer: { type: 'lamb', learningRate: 0.002, weightDecay: 0.01, epsilon: 1e-6 },
    policy: 'sqrt',
    warmup: 0.1,
    schedule: 'cosine',
    rampStart: 0.125,
    rampEpochs: 3,
  },
  lars: {
    optimizer: { type: 'lars', learningRate: 0.2, trustCoefficient: 0.01, weightDecay: 0.0005 },
    policy: 'sqrt',
    warmup: 0.1,
    schedule: 'cosine',
    rampStart: 1,
    rampEpochs: 1,
  },
  // AdaScale's schedule runs over scale-invariant iterations, which an epoch budget does not fix in
  // advance: a warm-up of one epoch (in samples) and no decay, as the policy applies the gain itself.
  adascale: {
    optimizer: { type: 'momentum', learningRate: 0.05 },
    policy: 'adascale',
    warmup: 0,
    schedule: 'constant',
    rampStart: 1,
    rampEpochs: 1,
  },
};
const DEFAULT_METHODS = 'adam-linear,lamb,lamb-ramp,lars,adascale';

/**
 * `TENSILE_LB_GRID=lamb:learningRate=0.004|0.008,warmup=0.05|0.1` runs every combination of the
 * listed values on top of a method (keys: the optimizer's fields, warmup, schedule, policy).
 */
export function gridMethods(grid: string): Record<string, Method> {
  const out: Record<string, Method> = {};
  for (const entry of grid.split(';').filter((e) => e !== '')) {
    const [baseName = '', axesText = ''] = entry.split(':');
    const base = METHODS[baseName];
    if (base === undefined) throw new Error(`TENSILE_LB_GRID: unknown method ${baseName}`);
    let combos: [string, Method][] = [[baseName, base]];
    for (const axis of axesText.split(',').filter((a) => a !== '')) {
      const [key = '', values = ''] = axis.split('=');
      combos = combos.flatMap(([name, m]) =>
        values.split('|').map((v): [string, Method] => [`${name} ${key}=${v}`, withSetting(m, key, v)]),
      );
    }
    for (const [name, m] of combos) out[name] = m;
  }
  return out;
}

function withSetting(m: Method, key: string, value: string): Method {
  if (key === 'warmup') return { ...m, warmup: Number(value) };
  if (key === 'schedule') return { ...m, schedule: value === 'cosine' ? 'cosine' : 'constant' };
  if (key === 'rampStart' || key === 'rampEpochs') return { ...m, [key]: Number(value) };
  if (key === 'policy') return { ...m, policy: value as Method['policy'] };
  return { ...m, optimizer: { ...m.optimizer, [key]: Number(value) } };
}

interface CurvePoint {
  readonly step: number;
  readonly progress: number;
  readonly loss: number;
  readonly accuracy: number;
}

type Data = Awaited<ReturnType<typeof fashion>>;

interface Budget {
  readonly epochs: number;
  /** AdaScale's scale-invariant budget: stop once the progress reaches it. */
  readonly progress?: number;
  readonly model: keyof typeof MODELS;
  /** Model and shuffle seed. */
  readonly seed: number;
}

function batchFor(method: Method, global: number, ranks: number) {
  const stage = Math.max(1, Math.round(BASE * method.rampStart));
  return BatchSpecSchema.parse({
    global: BASE,
    policy: method.policy,
    perWorker: global / ranks,
    ...(method.rampStart < 1 && global > BASE
      ? { rampUp: { start: stage, increment: stage, epochs: method.rampEpochs } }
      : {}),
  });
}

function optimizerFor(method: Method, plannedSteps: number) {
  const warmup =
    method.policy === 'adascale'
      ? { epochs: 1 }
      : method.warmup > 0
        ? { steps: Math.max(1, Math.round(method.warmup * plannedSteps)) }
        : undefined;
  return OptimizerSpecSchema.parse({
    ...method.optimizer,
    ...(warmup === undefined ? {} : { warmup }),
    schedule: { type: method.schedule },
  });
}

async function run(name: string, method: Method, global: number, budget: Budget, data: Data) {
  const { epochs } = budget;
  const target = TARGETS[budget.model];
  const ranks = method.policy === 'adascale' && global > BASE ? 4 : 1;
  const batch = batchFor(method, global, ranks);
  const perWorker = Array.from({ length: ranks }, () => global / ranks);
  const planned =
    budget.progress ??
    plannedSteps(StoppingSpecSchema.parse({ epochs }), data.train.size, global, { batch, perWorker });
  const optimizer = optimizerFor(method, planned);
  const { world, policy } = worldFor({ batch, optimizer, replicas: ranks }, 0, 0, ranks, 0, undefined);
  const trainers: Trainer[] = [];
  for (let rank = 0; rank < ranks; rank++)
    trainers.push(
      new Trainer({
        model: await model({ ...MODELS[budget.model], seed: budget.seed }, data),
        optimizer,
        dataset: data,
        maxPerWorker: undefined,
        state: {
          ...initialTrainingState({
            shuffleSeed: budget.seed,
            modelSeed: budget.seed,
            dataset: data.fingerprint,
          }),
          policy,
          worldSize: ranks,
        },
      }),
    );
  const reducer = ranks === 1 ? new LocalReducer() : new InProcessReducer(ranks);
  const lead = trainers[0] as Trainer;
  const evalEvery = Math.max(1, Math.round(data.train.size / global / EVALS_PER_EPOCH));
  let seconds = 0;
  let reached: { seconds: number; step: number } | undefined;
  let accuracy = 0;
  let gain = 0;
  // AdaScale runs keep their curve: mean training loss since the previous evaluation, by step and
  // by scale-invariant iterations, and the test accuracy there.
  const curve: CurvePoint[] = [];
  let lossSum = 0;
  let lossSteps = 0;
  const within = () =>
    lead.state.epoch < epochs &&
    (budget.progress === undefined || (lead.state.progress ?? 0) < budget.progress);
  while (within()) {
    const state = lead.state;
    const at = stepWorld(optimizer, batch, world, state, planned);
    const started = performance.now();
    const results = await Promise.all(trainers.map((t, rank) => t.step({ ...at, rank }, reducer)));
    seconds += (performance.now() - started) / 1000;
    gain += results[0]?.gain ?? 1;
    lossSum += results[0]?.loss ?? 0;
    lossSteps++;
    const step = lead.state.step;
    if (step % evalEvery === 0 || !within()) {
      accuracy = lead.evaluate(data.eval as NonNullable<Data['eval']>)?.accuracy ?? 0;
      if (reached === undefined && accuracy >= target) reached = { seconds, step };
      if (method.policy === 'adascale') {
        const progress = round(lead.state.progress ?? step, 1);
        curve.push({ step, progress, loss: round(lossSum / lossSteps, 4), accuracy: round(accuracy, 4) });
      }
      lossSum = 0;
      lossSteps = 0;
    }
  }
  for (const t of trainers) t.dispose();
  const steps = lead.state.step;
  const row = {
    method: name,
    global,
    seed: budget.seed,
    ranks,
    steps,
    accuracy: round(accuracy, 4),
    secondsToTarget: reached === undefined ? null : round(reached.seconds, 1),
    stepsToTarget: reached?.step ?? null,
    trainSeconds: round(seconds, 1),
    ...(method.policy === 'adascale' ? { meanGain: round(gain / steps, 2) } : {}),
  };
  process.stderr.write(`${JSON.stringify(row)}\n`);
  return { row, curve };
}

export default async function largeBatch() {
  await selectBackend('tensorflow');
  const epochs = Number(process.env['TENSILE_LB_EPOCHS'] ?? 30);
  const modelName = process.env['TENSILE_LB_MODEL'] ?? 'mlp';
  if (modelName !== 'mlp' && modelName !== 'cnn')
    throw new Error(`TENSILE_LB_MODEL: mlp or cnn, not ${modelName}`);
  const seeds = (process.env['TENSILE_LB_SEEDS'] ?? '1').split(',').map(Number);
  const batches = (process.env['TENSILE_LB_BATCHES'] ?? '128,1024,4096,8192').split(',').map(Number);
  const grid = gridMethods(process.env['TENSILE_LB_GRID'] ?? '');
  const named = (process.env['TENSILE_LB_METHODS'] ?? (Object.keys(grid).length > 0 ? '' : DEFAULT_METHODS))
    .split(',')
    .filter((m) => m !== '');
  const methods: [string, Method][] = [
    ...named.map((name): [string, Method] => {
      const method = METHODS[name];
      if (method === undefined) throw new Error(`unknown method ${name}`);
      return [name, method];
    }),
    ...Object.entries(grid),
  ];
  // The whole test set: on 1,000 samples one standard error is already 1 pt, the target's width.
  const data = await fashion(60_000, Number(process.env['TENSILE_LB_EVAL'] ?? 10_000));
  const rows: Awaited<ReturnType<typeof run>>['row'][] = [];
  for (const [name, method] of methods)
    for (const global of batches)
      for (const seed of seeds)
        rows.push((await run(name, method, global, { epochs, model: modelName, seed }, data)).row);
  const smallest = Math.min(...batches);
  const atSmallest = rows.filter((s) => s.global === smallest);
  const drop = rows.map((r) => {
    const seeded = atSmallest.filter((s) => s.seed === r.seed);
    const small = seeded.find((s) => s.method === r.method);
    const adam = seeded.find((s) => s.method === 'adam-linear');
    // The reference: the best run of any method at the smallest batch.
    const best = seeded.reduce<number | undefined>((b, s) => Math.max(b ?? 0, s.accuracy), undefined);
    return {
      method: r.method,
      global: r.global,
      seed: r.seed,
      drop: small === undefined ? null : round(small.accuracy - r.accuracy, 4),
      dropAgainstAdam: adam === undefined ? null : round(adam.accuracy - r.accuracy, 4),
      dropAgainstBest: best === undefined ? null : round(best - r.accuracy, 4),
    };
  });
  return {
    model: modelName,
    epochs,
    target: TARGETS[modelName],
    evalSamples: data.eval?.size ?? 0,
    rows,
    dropAgainstSmallestBatch: drop,
    ...(process.env['TENSILE_LB_STRETCH'] === '1' ? { adascaleStretch: await stretch(data, modelName) } : {}),
  };
}

/**
 * AdaScale's claim (Johnson et al. 2020): at scale S it reaches the accuracy of S = 1 in about 1/S of
 * the steps. Both runs get the same scale-invariant budget (the steps of the S = 1 run).
 */
async function stretch(data: Data, model: Budget['model']) {
  const method = METHODS['adascale'] as Method;
  const iterations = Number(process.env['TENSILE_LB_STRETCH_ITERATIONS'] ?? 1000);
  const budget = { epochs: 100, progress: iterations, model, seed: 1 };
  const one = await run('adascale S=1', method, BASE, budget, data);
  const four = await run('adascale S=4', method, 4 * BASE, budget, data);
  // Steps each run takes to first reach an accuracy (at its evaluation points), up to S=1's final one.
  const first = (curve: readonly CurvePoint[], accuracy: number) =>
    curve.find((p) => p.accuracy >= accuracy)?.step ?? null;
  const levels = [0.84, 0.85, 0.86, one.row.accuracy].filter((a) => a <= one.row.accuracy);
  const toAccuracy = levels.map((accuracy) => {
    const s1 = first(one.curve, accuracy);
    const s4 = first(four.curve, accuracy);
    return {
      accuracy,
      stepsS1: s1,
      stepsS4: s4,
      fraction: s1 === null || s4 === null ? null : round(s4 / s1, 3),
    };
  });
  const plots = writePlots(
    one.curve,
    four.curve,
    process.env['TENSILE_BENCH_OUT'] ?? join(tmpdir(), 'tensile-bench'),
  );
  return {
    iterations,
    one: one.row,
    four: four.row,
    stepRatio: round(four.row.steps / one.row.steps, 3),
    toAccuracy,
    plots,
    curves: { one: one.curve, four: four.curve },
  };
}

/**
 * Loss against scale-invariant iterations (where AdaScale's curves should lie on each other) and
 * against steps (where S = 4 should get there in about 1/S of them), as SVGs beside the bench's JSON.
 */
export function writePlots(one: readonly CurvePoint[], four: readonly CurvePoint[], dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const axes = [
    ['progress', 'scale-invariant iterations', 'large-batch-adascale.svg'],
    ['step', 'steps', 'large-batch-adascale-steps.svg'],
  ] as const;
  return axes.map(([x, label, name]) => {
    const series = (title: string, color: string, curve: readonly CurvePoint[]) => ({
      name: title,
      color,
      style: 'line' as const,
      dots: true,
      points: curve.map((p) => ({ x: p[x], y: p.loss, title: `step ${p.step}, accuracy ${p.accuracy}` })),
    });
    const file = join(dir, name);
    writeFileSync(
      file,
      lineChart({
        ariaLabel: `AdaScale: training loss against ${label}, S = 1 and S = 4`,
        width: 720,
        xLabel: `${label} (y: training loss)`,
        yZero: true,
        series: [series('S = 1 (batch 128)', '#1f77b4', one), series('S = 4 (batch 512)', '#d62728', four)],
      }),
    );
    return file;
  });
}
