/**
 * Training speed side by side with PyTorch on the CPU, both measured in this run: a plain torch loop
 * (test/bench/peers/torch_train.py: same models, Adam, batch and thread count) against the worker
 * runtime on the native tensorflow backend, samples/s for the MLP 784-256-128-10 (batch 128) and the
 * small CNN (batch 64). Target: ours within 1.5× of torch (ratio ≥ 0.67).
 *
 * On a shared machine other work starves both sides, torch's spinning OpenMP threads far more than
 * TensorFlow's pool, so a median says more about the load than about either loop. Each side runs many
 * short rounds and the figure compares the best round of each (timeit's rule: the fastest round is the
 * one least disturbed); torch runs before and after ours and keeps its better run, so neither side
 * gets the quieter minute. The medians, the CPU time per step of each process and the load average
 * are reported next to it.
 *
 * torch is a benchmark peer, never a dependency (see torch-peer.bench.ts for its venv); without it the
 * figures are null with the reason and the install command. The runtime needs tfjs-node
 * (bash hack/install-tensorflow.sh).
 */
import { availableParallelism, loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../worker/backend/select.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import { install, runPeer, unavailable } from './torch-peer.bench.ts';
import { CNN, FASHION, fashion, MLP, median, oneWorker, round, trainer } from './training-fixture.ts';

/**
 * Threads per side: TensorFlow's intra-op and inter-op pools default to one thread per core (2 here),
 * and torch gets as many (set_num_threads, set_num_interop_threads). TENSILE_TORCH_THREADS=1 pins both
 * sides to one thread of each (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, read by libtensorflow
 * when it loads): on a loaded machine a single thread is slowed in proportion to the load on either
 * side, where two threads that meet at every op's barrier wait for each other's time slices.
 */
const THREADS = Number(process.env['TENSILE_TORCH_THREADS'] ?? availableParallelism());
const ROUNDS = 9;
const STEPS = { mlp: 30, cnn: 8 } as const;

interface Timing {
  readonly median: number;
  readonly best: number;
  /** CPU time of the whole process (every thread) per step, median over rounds. */
  readonly cpu: number;
}

async function oursMsPerStep(spec: object, batch: number, steps: number): Promise<Timing> {
  const data = await fashion(8192);
  const t = await trainer(spec, data);
  const local = new LocalReducer();
  for (let i = 0; i < 5; i++) await t.step(oneWorker(batch), local);
  const times: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const started = performance.now();
    const usage = process.cpuUsage();
    for (let i = 0; i < steps; i++) await t.step(oneWorker(batch), local);
    times.push((performance.now() - started) / steps);
    const used = process.cpuUsage(usage);
    cpu.push((used.user + used.system) / 1000 / steps);
  }
  t.dispose();
  return { median: median(times), best: Math.min(...times), cpu: median(cpu) };
}

type Model = 'mlp' | 'cnn';

async function torchMsPerStep(): Promise<Record<Model, Timing> & { version: string }> {
  const out = await runPeer(
    'torch_train.py',
    [
      '--data',
      FASHION,
      '--threads',
      String(THREADS),
      '--steps',
      `${STEPS.mlp},${STEPS.cnn}`,
      '--rounds',
      String(ROUNDS),
    ],
    600_000,
  );
  const timing = (model: Model): Timing => {
    const m = out[model] as { msPerStep: number; bestMsPerStep: number; cpuMsPerStep: number };
    return { median: Number(m.msPerStep), best: Number(m.bestMsPerStep), cpu: Number(m.cpuMsPerStep) };
  };
  return { mlp: timing('mlp'), cnn: timing('cnn'), version: String(out['torch']) };
}

const load = () => round(loadavg()[0] ?? 0, 1);

export default async function bench(): Promise<object> {
  const skipped = unavailable();
  if (skipped !== undefined) {
    process.stderr.write(
      `torch-training: skipped: ${skipped}\n  to install torch for this benchmark: ${install}\n`,
    );
    return { figures: { mlpVsTorch: null, cnnVsTorch: null }, skipped, install };
  }
  if (!Number.isInteger(THREADS) || THREADS < 1)
    throw new Error(`TENSILE_TORCH_THREADS=${process.env['TENSILE_TORCH_THREADS']} is not a thread count`);
  process.env['TF_NUM_INTRAOP_THREADS'] = String(THREADS);
  process.env['TF_NUM_INTEROP_THREADS'] = String(THREADS);
  const selected = await selectBackend('tensorflow');
  tf.enableProdMode();
  const loads = [load()];
  const before = await torchMsPerStep();
  loads.push(load());
  const ours = {
    mlp: await oursMsPerStep(MLP, 128, STEPS.mlp),
    cnn: await oursMsPerStep(CNN, 64, STEPS.cnn),
  };
  loads.push(load());
  const after = await torchMsPerStep();
  loads.push(load());
  const torch = (model: Model): Timing => ({
    median: Math.min(before[model].median, after[model].median),
    best: Math.min(before[model].best, after[model].best),
    cpu: Math.min(before[model].cpu, after[model].cpu),
  });
  const ratio = (model: Model, of: keyof Timing) => round(torch(model)[of] / ours[model][of], 2);
  const ms = (t: Timing) => ({ best: round(t.best, 2), median: round(t.median, 2), cpu: round(t.cpu, 2) });
  return {
    figures: { mlpVsTorch: ratio('mlp', 'best'), cnnVsTorch: ratio('cnn', 'best') },
    targets: { mlpVsTorch: '>= 0.67 (within 1.5x of torch)', cnnVsTorch: '>= 0.67 (within 1.5x of torch)' },
    measured: {
      torch: before.version,
      threads: THREADS,
      rounds: ROUNDS,
      stepsPerRound: STEPS,
      /** The 1-minute load average before torch, between torch and ours, after ours, after torch. */
      loadAverage1m: loads,
      backend: `${selected.backend} via ${selected.via}`,
      medianRatios: { mlpVsTorch: ratio('mlp', 'median'), cnnVsTorch: ratio('cnn', 'median') },
      /**
       * CPU time per step, torch ÷ ours: with one thread a side (no thread waits for another) what the
       * load does not change, and the quiet machine's wall-time ratio; with more, spinning counts too.
       */
      cpuRatios: { mlpVsTorch: ratio('mlp', 'cpu'), cnnVsTorch: ratio('cnn', 'cpu') },
      msPerStep: {
        mlpBatch128: { tensile: ms(ours.mlp), torch: ms(torch('mlp')), torchRuns: [before.mlp, after.mlp] },
        cnnBatch64: { tensile: ms(ours.cnn), torch: ms(torch('cnn')), torchRuns: [before.cnn, after.cnn] },
      },
    },
  };
}
