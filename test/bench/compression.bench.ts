/**
 * `npm run bench -- compression`: spec.communication on Fashion-MNIST (MLP 784-256-128-10, Adam 0.001,
 * global batch 128 over 2 ranks), every mode against uncompressed fp32 in the same run:
 * - bytes one rank sends per step (the collective's payloads; TCP framing not counted), and the
 *   ratio uncompressed ÷ mode (targets: ≥ 8× for topk and powersgd, ≥ 20× for local SGD);
 * - evaluation accuracy after the same epochs (target: within 0.5 pt of uncompressed), and steps and
 *   training seconds to a target accuracy.
 * The two ranks are two Trainers in this process joined by a real RingGroup over loopback TCP (the
 * worker's collective): their compute shares the process's cores, so seconds compare the modes'
 * overhead here, not a cluster's wall time. Side by side, torch DDP (gloo, 2 processes) on the same
 * model, batch and epochs, with and without its PowerSGD communication hook (peers/torch_ddp_powersgd.py).
 *
 * TENSILE_BENCH_EPOCHS (3), TENSILE_BENCH_TRAIN (60000), TENSILE_BENCH_MODES (all), TENSILE_BENCH_TARGET (0.85),
 * TENSILE_BENCH_MODEL (mlp, or cnn: the worker's default CNN; the torch peer runs the MLP only),
 * TENSILE_BENCH_TORCH=0 (no torch peer), TENSILE_BENCH_SEEDS (1; e.g. 1,2,3: every mode once per seed,
 * the seed of the model's initialisers and of the shuffle; gaps are taken against uncompressed of the
 * same seed, then averaged: one 3-epoch run of the MLP differs from the next seed's by a few tenths).
 * Evaluations every 96 steps (a multiple of local SGD's H = 32, so they force no extra averaging).
 */
import * as tf from '@tensorflow/tfjs';
import {
  CommunicationSpecSchema,
  DatasetSpecSchema,
  OptimizerSpecSchema,
} from '../../operator/api/training-job.ts';
import { selectBackend } from '../../worker/backend/select.ts';
import { RingGroup } from '../../worker/collective/group.ts';
import { CollectiveServer } from '../../worker/collective/transport.ts';
import { type Dataset, loadDataset } from '../../worker/data/dataset.ts';
import { ringReducer } from '../../worker/elastic/ring-reducer.ts';
import type { World } from '../../worker/train/policy.ts';
import { initialTrainingState } from '../../worker/train/snapshot.ts';
import { Trainer } from '../../worker/train/trainer.ts';
import { install, runPeer, unavailable } from './torch-peer.bench.ts';
import { CNN, FASHION, MLP, model, round } from './training-fixture.ts';

const EPOCHS = Number(process.env['TENSILE_BENCH_EPOCHS'] ?? 3);
const TRAIN = Number(process.env['TENSILE_BENCH_TRAIN'] ?? 60_000);
const TARGET = Number(process.env['TENSILE_BENCH_TARGET'] ?? 0.85);
const MODEL = process.env['TENSILE_BENCH_MODEL'] ?? 'mlp';
const GLOBAL = 128;
const EVAL_EVERY = 96;
const SEEDS = (process.env['TENSILE_BENCH_SEEDS'] ?? '1').split(',').map(Number);

const MODES: Record<string, object> = {
  none: {},
  fp16: { compression: 'fp16' },
  bf16: { compression: 'bf16' },
  topk: { compression: 'topk', topk: { ratio: 0.01 } },
  powersgd: { compression: 'powersgd', powersgd: { rank: 4, startAfterSteps: 10 } },
  local: { localSteps: 32 },
  diloco: { localSteps: 32, outerOptimizer: { learningRate: 0.7, momentum: 0.9 } },
};
/** Variations, not in the default set (TENSILE_BENCH_MODES=none,topk-5pct,...). */
const VARIATIONS: Record<string, object> = {
  'topk-5pct': { compression: 'topk', topk: { ratio: 0.05 } },
  'powersgd-r8': { compression: 'powersgd', powersgd: { rank: 8, startAfterSteps: 10 } },
  'local-16': { localSteps: 16 },
  'topk-gradient': { compression: 'topk', topk: { ratio: 0.01, sparsify: 'gradient' } },
  'topk-gradient-warmup': {
    compression: 'topk',
    topk: { ratio: 0.01, sparsify: 'gradient', warmupSteps: 300 },
  },
  'topk-warmup': { compression: 'topk', topk: { ratio: 0.01, warmupSteps: 300 } },
  'local-post': { localSteps: 32, localStartAfterSteps: 20 },
  'local-64-post': { localSteps: 64, localStartAfterSteps: 40 },
};

interface ModeResult {
  bytesPerStep: number;
  accuracy: number;
  steps: number;
  trainSeconds: number;
  stepsToTarget: number | null;
  secondsToTarget: number | null;
  curve: [number, number][];
}

async function data(): Promise<Dataset> {
  return loadDataset(
    DatasetSpecSchema.parse({
      format: 'idx',
      path: FASHION,
      maxTrainSamples: TRAIN,
      eval: { maxSamples: 10_000 },
    }),
    () => undefined,
  );
}

async function runMode(
  name: string,
  communication: object,
  dataset: Dataset,
  seed: number,
): Promise<ModeResult> {
  const spec = CommunicationSpecSchema.parse(communication);
  const servers = await Promise.all([0, 1].map(() => CollectiveServer.listen(`bench-${name}`, '127.0.0.1')));
  const members = servers.map((s) => ({ address: s.address }));
  const groups = await Promise.all(
    servers.map((server, rank) =>
      RingGroup.connect({
        job: `bench-${name}`,
        generation: 1,
        rank,
        members,
        server,
        token: 'bench-link-token-0123',
      }),
    ),
  );
  const reducers = groups.map(ringReducer);
  const trainers: Trainer[] = [];
  for (let rank = 0; rank < 2; rank++) {
    const t = new Trainer({
      model: await model({ ...(MODEL === 'cnn' ? CNN : MLP), seed }, dataset),
      optimizer: OptimizerSpecSchema.parse({ type: 'adam', learningRate: 0.001 }),
      dataset,
      maxPerWorker: undefined,
      state: initialTrainingState({ shuffleSeed: seed, modelSeed: seed, dataset: dataset.fingerprint }),
    });
    t.beginWorld(spec, 2);
    trainers.push(t);
  }
  const world = (rank: number): World => ({
    generation: 1,
    rank,
    size: 2,
    perWorker: [GLOBAL / 2, GLOBAL / 2],
    learningRate: 0.001,
  });
  const first = trainers[0] as Trainer;
  const curve: [number, number][] = [];
  let bytes = 0;
  let seconds = 0;
  let hit: { steps: number; seconds: number } | undefined;
  while (first.state.epoch < EPOCHS) {
    const next = first.state.step + 1;
    const started = performance.now();
    const results = await Promise.all(
      trainers.map((t, r) =>
        t.step(world(r), reducers[r] as ReturnType<typeof ringReducer>, undefined, {
          averageNow: next % EVAL_EVERY === 0,
        }),
      ),
    );
    seconds += (performance.now() - started) / 1000;
    bytes += results[0]?.wireBytes ?? 0;
    if (next % EVAL_EVERY === 0 || first.state.epoch >= EPOCHS) {
      if (dataset.eval === undefined) throw new Error('the bench needs the evaluation split');
      const accuracy = first.evaluate(dataset.eval)?.accuracy ?? 0;
      curve.push([next, round(accuracy, 4)]);
      if (hit === undefined && accuracy >= TARGET) hit = { steps: next, seconds };
    }
  }
  const accuracy = curve.at(-1)?.[1] ?? 0;
  const steps = first.state.step;
  for (const g of groups) await g[Symbol.asyncDispose]();
  for (const s of servers) await s[Symbol.asyncDispose]();
  for (const t of trainers) t.dispose();
  process.stderr.write(
    `compression: ${name} (seed ${seed}): accuracy ${accuracy}, ${Math.round(bytes / steps)} B/step, ${round(seconds, 1)} s, to ${TARGET}: ${hit?.steps ?? '-'} steps\n`,
  );
  return {
    bytesPerStep: Math.round(bytes / steps),
    accuracy,
    steps,
    trainSeconds: round(seconds, 2),
    stepsToTarget: hit?.steps ?? null,
    secondsToTarget: hit === undefined ? null : round(hit.seconds, 2),
    curve,
  };
}

async function torchSide(): Promise<object> {
  const skipped = unavailable();
  if (skipped !== undefined) return { skipped, install };
  return runPeer(
    'torch_ddp_powersgd.py',
    ['--data', FASHION, '--epochs', String(EPOCHS), '--train', String(TRAIN), '--target', String(TARGET)],
    1_800_000,
  );
}

/** Mean and spread over seeds of each mode's figures against uncompressed of the same seed. */
function summarise(runs: Record<string, ModeResult>[]): Record<string, object> {
  const figures: Record<string, object> = {};
  const mean = (xs: number[]) => round(xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length), 2);
  for (const name of Object.keys(runs[0] ?? {})) {
    if (name === 'none') continue;
    const per = runs.map((r) => {
      const base = r['none'] as ModeResult;
      const m = r[name] as ModeResult;
      return {
        fewerBytes: base.bytesPerStep / Math.max(1, m.bytesPerStep),
        gap: (m.accuracy - base.accuracy) * 100,
        seconds: m.trainSeconds / base.trainSeconds,
        steps:
          m.stepsToTarget === null || base.stepsToTarget === null
            ? null
            : m.stepsToTarget / base.stepsToTarget,
      };
    });
    const steps = per.map((p) => p.steps).filter((x): x is number => x !== null);
    figures[name] = {
      fewerBytes: round(Math.min(...per.map((p) => p.fewerBytes)), 1),
      accuracyGapPt: mean(per.map((p) => p.gap)),
      accuracyGapPtPerSeed: per.map((p) => round(p.gap, 2)),
      secondsVsNone: mean(per.map((p) => p.seconds)),
      stepsToTargetVsNone: steps.length === per.length ? mean(steps) : null,
    };
  }
  return figures;
}

export default async function bench(): Promise<object> {
  await selectBackend('tensorflow');
  tf.enableProdMode();
  const dataset = await data();
  const wanted = (process.env['TENSILE_BENCH_MODES'] ?? Object.keys(MODES).join(',')).split(',');
  const runs: Record<string, ModeResult>[] = [];
  for (const seed of SEEDS) {
    const results: Record<string, ModeResult> = {};
    for (const name of ['none', ...wanted.filter((m) => m !== 'none')]) {
      const communication = MODES[name] ?? VARIATIONS[name];
      if (communication === undefined)
        throw new Error(
          `unknown mode ${name}; known: ${[...Object.keys(MODES), ...Object.keys(VARIATIONS)].join(', ')}`,
        );
      results[name] = await runMode(name, communication, dataset, seed);
    }
    runs.push(results);
  }
  const figures = summarise(runs);
  const torch =
    process.env['TENSILE_BENCH_TORCH'] === '0'
      ? { skipped: 'TENSILE_BENCH_TORCH=0' }
      : MODEL === 'mlp'
        ? await torchSide()
        : { skipped: 'the torch peer runs the MLP only' };
  dataset.close();
  return {
    figures,
    targets: {
      accuracyGapPt: '>= -0.5 for every mode',
      fewerBytes: '>= 8 for topk and powersgd, >= 20 for local SGD (local, diloco)',
    },
    measured: {
      model: MODEL,
      epochs: EPOCHS,
      train: TRAIN,
      globalBatch: GLOBAL,
      ranks: 2,
      target: TARGET,
      seeds: SEEDS,
      modes: runs,
      torch,
    },
  };
}
