/**
 * Training speed side by side with PyTorch on the CPU, both measured in this run: a plain torch loop
 * (test/bench/peers/torch_train.py: same models, Adam, batch and thread count) against the worker
 * runtime on the native tensorflow backend, samples/s for the MLP 784-256-128-10 (batch 128) and the
 * small CNN (batch 64). Target: ours within 1.5× of torch (ratio ≥ 0.67).
 *
 * torch is a benchmark peer, never a dependency (see torch-peer.bench.ts for its venv); without it the
 * figures are null with the reason and the install command. The runtime needs tfjs-node
 * (bash hack/install-tensorflow.sh).
 */
import { loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../worker/backend/select.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import { install, runPeer, unavailable } from './torch-peer.bench.ts';
import { CNN, FASHION, fashion, MLP, median, oneWorker, round, trainer } from './training-fixture.ts';

/** TensorFlow's intra-op pool uses every core; torch gets as many threads. */
const THREADS = 2;

async function oursMsPerStep(spec: object, batch: number, steps: number, rounds: number): Promise<number> {
  const data = await fashion(8192);
  const t = await trainer(spec, data);
  const local = new LocalReducer();
  for (let i = 0; i < 5; i++) await t.step(oneWorker(batch), local);
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const started = performance.now();
    for (let i = 0; i < steps; i++) await t.step(oneWorker(batch), local);
    times.push((performance.now() - started) / steps);
  }
  t.dispose();
  return median(times);
}

export default async function bench(): Promise<object> {
  const skipped = unavailable();
  if (skipped !== undefined) {
    process.stderr.write(
      `torch-training: skipped: ${skipped}\n  to install torch for this benchmark: ${install}\n`,
    );
    return { figures: { mlpVsTorch: null, cnnVsTorch: null }, skipped, install };
  }
  const selected = await selectBackend('tensorflow');
  tf.enableProdMode();
  // Other work on a shared machine starves torch's spinning threads far more than ours: the load
  // average next to the figures says whether a run means anything.
  const loadBefore = round(loadavg()[0] ?? 0, 1);
  const torch = await runPeer(
    'torch_train.py',
    ['--data', FASHION, '--threads', String(THREADS), '--steps', '60,20', '--rounds', '3'],
    600_000,
  );
  const ours = { mlp: await oursMsPerStep(MLP, 128, 60, 3), cnn: await oursMsPerStep(CNN, 64, 20, 3) };
  const torchMs = (model: 'mlp' | 'cnn') => Number((torch[model] as { msPerStep: number }).msPerStep);
  return {
    figures: {
      mlpVsTorch: round(torchMs('mlp') / ours.mlp, 2),
      cnnVsTorch: round(torchMs('cnn') / ours.cnn, 2),
    },
    targets: { mlpVsTorch: '>= 0.67 (within 1.5x of torch)', cnnVsTorch: '>= 0.67 (within 1.5x of torch)' },
    measured: {
      torch: String(torch['torch']),
      threads: THREADS,
      loadAverage1m: { before: loadBefore, after: round(loadavg()[0] ?? 0, 1) },
      backend: `${selected.backend} via ${selected.via}`,
      msPerStep: {
        mlpBatch128: { tensile: round(ours.mlp, 2), torch: torchMs('mlp') },
        cnnBatch64: { tensile: round(ours.cnn, 2), torch: torchMs('cnn') },
      },
    },
  };
}
