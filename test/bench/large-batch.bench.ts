/**
 * Large batch (issue 18): the Fashion-MNIST MLP at global batches 128 … 8192 under one epoch budget,
 * with adam + the linear scaling rule, lamb, lars (both with the square-root rule) and adascale
 * (momentum SGD, 4 in-process ranks so the gain has per-worker gradients to measure; one rank at 128,
 * S = 1). Every run has the same initial warm-up (Goyal et al.: one epoch) and goes through the
 * worker's own per-step decisions (stepWorld: warm-ups, policy, schedule). Reports final accuracy,
 * the drop against batch 128 of the same method, and the training seconds and steps to 0.88.
 *
 * Knobs: TENSILE_LB_EPOCHS (default 4), TENSILE_LB_BATCHES (default 128,1024,4096,8192),
 * TENSILE_LB_METHODS (default adam-linear,lamb,lars,adascale; empty for none), TENSILE_LB_STRETCH=1
 * to add AdaScale at S = 4 against S = 1 on the same scale-invariant budget.
 */
import { BatchSpecSchema, OptimizerSpecSchema } from '../../operator/api/training-job.ts';
import { selectBackend } from '../../worker/backend/select.ts';
import { stepWorld, worldFor } from '../../worker/train/policy.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import { Trainer } from '../../worker/train/trainer.ts';
import { InProcessReducer } from '../helpers/in-process-reducer.ts';
import { fashion, initialState, MLP, model, round } from './training-fixture.ts';

const BASE = 128;
const TARGET = 0.88;
const EVALS_PER_EPOCH = 4;

interface Method {
  readonly optimizer: object;
  readonly policy: 'linear' | 'sqrt' | 'adascale';
}

const METHODS: Record<string, Method> = {
  'adam-linear': { optimizer: { type: 'adam', learningRate: 0.001 }, policy: 'linear' },
  lamb: { optimizer: { type: 'lamb', learningRate: 0.002, weightDecay: 0.01 }, policy: 'sqrt' },
  lars: {
    optimizer: { type: 'lars', learningRate: 0.2, trustCoefficient: 0.01, weightDecay: 0.0005 },
    policy: 'sqrt',
  },
  adascale: { optimizer: { type: 'momentum', learningRate: 0.05 }, policy: 'adascale' },
  // Not in the default set: LAMB at twice the base rate, the one variation tried so far.
  'lamb-lr0.004': { optimizer: { type: 'lamb', learningRate: 0.004, weightDecay: 0.01 }, policy: 'sqrt' },
};
const DEFAULT_METHODS = 'adam-linear,lamb,lars,adascale';

type Data = Awaited<ReturnType<typeof fashion>>;

interface Budget {
  readonly epochs: number;
  /** AdaScale's scale-invariant budget: stop once the progress reaches it. */
  readonly progress?: number;
}

async function run(name: string, method: Method, global: number, budget: Budget, data: Data) {
  const { epochs } = budget;
  const ranks = method.policy === 'adascale' && global > BASE ? 4 : 1;
  const optimizer = OptimizerSpecSchema.parse({ ...method.optimizer, warmup: { epochs: 1 } });
  const batch = BatchSpecSchema.parse({ global: BASE, policy: method.policy, perWorker: global / ranks });
  const { world, policy } = worldFor({ batch, optimizer, replicas: ranks }, 0, 0, ranks, 0, undefined);
  const trainers: Trainer[] = [];
  for (let rank = 0; rank < ranks; rank++)
    trainers.push(
      new Trainer({
        model: await model(MLP, data),
        optimizer,
        dataset: data,
        maxPerWorker: undefined,
        state: { ...initialState(data), policy, worldSize: ranks },
      }),
    );
  const reducer = ranks === 1 ? new LocalReducer() : new InProcessReducer(ranks);
  const lead = trainers[0] as Trainer;
  const planned = Math.ceil((epochs * data.train.size) / global);
  const evalEvery = Math.max(1, Math.round(data.train.size / global / EVALS_PER_EPOCH));
  let seconds = 0;
  let reached: { seconds: number; step: number } | undefined;
  let accuracy = 0;
  let gain = 0;
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
    const step = lead.state.step;
    if (step % evalEvery === 0 || !within()) {
      accuracy = lead.evaluate(data.eval as NonNullable<Data['eval']>)?.accuracy ?? 0;
      if (reached === undefined && accuracy >= TARGET) reached = { seconds, step };
    }
  }
  for (const t of trainers) t.dispose();
  const steps = lead.state.step;
  const row = {
    method: name,
    global,
    ranks,
    steps,
    accuracy: round(accuracy, 4),
    secondsTo088: reached === undefined ? null : round(reached.seconds, 1),
    stepsTo088: reached?.step ?? null,
    trainSeconds: round(seconds, 1),
    ...(method.policy === 'adascale' ? { meanGain: round(gain / steps, 2) } : {}),
  };
  process.stderr.write(`${JSON.stringify(row)}\n`);
  return row;
}

export default async function largeBatch() {
  await selectBackend('tensorflow');
  const epochs = Number(process.env['TENSILE_LB_EPOCHS'] ?? 4);
  const batches = (process.env['TENSILE_LB_BATCHES'] ?? '128,1024,4096,8192').split(',').map(Number);
  const methods = (process.env['TENSILE_LB_METHODS'] ?? DEFAULT_METHODS).split(',').filter((m) => m !== '');
  const data = await fashion(60_000);
  const rows: Awaited<ReturnType<typeof run>>[] = [];
  for (const name of methods) {
    const method = METHODS[name];
    if (method === undefined) throw new Error(`unknown method ${name}`);
    for (const global of batches) rows.push(await run(name, method, global, { epochs }, data));
  }
  const drop = rows.map((r) => {
    const small = rows.find((s) => s.method === r.method && s.global === Math.min(...batches));
    return {
      method: r.method,
      global: r.global,
      drop: small === undefined ? null : round(small.accuracy - r.accuracy, 4),
    };
  });
  return {
    epochs,
    target: TARGET,
    evalSamples: data.eval?.size ?? 0,
    rows,
    dropAgainstSmallestBatch: drop,
    ...(process.env['TENSILE_LB_STRETCH'] === '1' ? { adascaleStretch: await stretch(data) } : {}),
  };
}

/**
 * AdaScale's claim (Johnson et al. 2020): at scale S it reaches the accuracy of S = 1 in about 1/S of
 * the steps. Both runs get the same scale-invariant budget (the steps of the S = 1 run).
 */
async function stretch(data: Data) {
  const method = METHODS['adascale'] as Method;
  const iterations = 1000;
  const one = await run('adascale S=1', method, BASE, { epochs: 100, progress: iterations }, data);
  const four = await run('adascale S=4', method, 4 * BASE, { epochs: 100, progress: iterations }, data);
  return { iterations, one, four, stepRatio: round(four.steps / one.steps, 3) };
}
