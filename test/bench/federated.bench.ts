/**
 * Federated Fashion-MNIST, Tensile against Flower in one run: 4 sites with Dirichlet(α = 0.5) label
 * skew (Tensile's partitioner; the same indices are handed to the Flower side), the same MLP, plain
 * SGD, batch, local steps and rounds, evaluated on the same test samples after every round.
 * Tensile runs `tensile run` (a real nats-server, one worker process per site, secure aggregation on);
 * Flower runs its FedAvg strategy over in-process clients (test/bench/peers/flower_fedavg.py, torch).
 * Figures: accuracy per round side by side and the gap, time per round and its ratio, bytes per round.
 * Flower lives in the benchmark venv (`pip install flwr` there); without it its side is null, with why.
 * TENSILE_FED_ROUNDS (default 10) and TENSILE_FED_STEPS (default 50) size the run.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { FederatedSummary } from '../../operator/local-run/federated-run.ts';
import { partitionByLabel } from '../../worker/federation/partition.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { tensileRun, writeJobManifest } from '../helpers/tensile-run.ts';
import { runPeer } from './torch-peer.bench.ts';

const ROUNDS = Number(process.env['TENSILE_FED_ROUNDS'] ?? 10);
const STEPS = Number(process.env['TENSILE_FED_STEPS'] ?? 50);
const SITES = 4;
const ALPHA = 0.5;
const TRAIN = 60_000;
const EVAL = 2000;
const BATCH = 32;
const LR = 0.05;
const HIDDEN = 128;
interface FlowerRound {
  readonly round: number;
  readonly accuracy: number;
  readonly seconds: number;
  readonly bytes: number;
}

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

function flowerUnavailable(python: string): string | undefined {
  const probe = spawnSync(python, ['-c', 'import flwr, torch'], { encoding: 'utf8', timeout: 120_000 });
  return probe.status === 0 ? undefined : (probe.stderr.trim().split('\n').at(-1) ?? `exit ${probe.status}`);
}

export default async function bench() {
  const data = fashionMnistDir();
  const dir = mkdtempSync(join(tmpdir(), 'tensile-federated-bench-'));
  const labels = gunzipSync(readFileSync(join(data, 'train-labels-idx1-ubyte.gz'))).subarray(8, 8 + TRAIN);
  const parts = partitionByLabel(labels, { sites: SITES, type: 'dirichlet', alpha: ALPHA, seed: 1 });
  const partition = join(dir, 'partition.json');
  writeFileSync(partition, JSON.stringify(parts.map((p) => [...p])));

  const file = writeJobManifest(join(dir, 'fed.yaml'), 'fed-bench', {
    model: { mlp: { hiddenUnits: [HIDDEN], dropout: 0 }, seed: 1 },
    dataset: { format: 'idx', path: data, normalize: 'scale', eval: { source: 'test', maxSamples: EVAL } },
    optimizer: { type: 'sgd', learningRate: LR },
    batch: { global: BATCH },
    checkpoint: { intervalSteps: 100_000 },
    federation: {
      rounds: ROUNDS,
      localSteps: STEPS,
      partition: { type: 'dirichlet', alpha: ALPHA, seed: 1 },
      secureAggregation: { enabled: true },
      sites: Array.from({ length: SITES }, (_, i) => ({ name: `s${i}` })),
    },
  });
  const out = join(dir, 'tensile');
  const run = tensileRun(file, out);
  const { code } = await run.done;
  if (code !== 0) throw new Error(`tensile run failed:\n${run.lines.slice(-20).join('\n')}`);
  const tensile = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as FederatedSummary;

  const venv = join(
    process.env['TENSILE_CACHE'] ?? join(process.env['HOME'] ?? '', '.cache', 'tensile'),
    'torch-venv',
  );
  const why = flowerUnavailable(join(venv, 'bin', 'python'));
  let flower: FlowerRound[] | null = null;
  if (why === undefined) {
    const result = await runPeer(
      'flower_fedavg.py',
      [
        '--data',
        data,
        '--partition',
        partition,
        '--rounds',
        String(ROUNDS),
        '--local-steps',
        String(STEPS),
      ].concat([
        '--batch',
        String(BATCH),
        '--lr',
        String(LR),
        '--hidden',
        String(HIDDEN),
        '--eval',
        String(EVAL),
      ]),
      1_800_000,
    );
    flower = result['rounds'] as FlowerRound[];
  } else
    process.stderr.write(
      `federated bench: Flower unavailable (${why}); install with ${venv}/bin/pip install flwr\n`,
    );

  const perRound = tensile.rounds.map((r) => {
    const f = flower?.find((x) => x.round === r.round);
    return {
      round: r.round,
      tensileAccuracy: r.accuracy,
      flowerAccuracy: f === undefined ? null : round(f.accuracy, 4),
      gapPoints: f === undefined || r.accuracy === null ? null : round((r.accuracy - f.accuracy) * 100, 2),
      tensileSeconds: r.seconds,
      flowerSeconds: f === undefined ? null : round(f.seconds),
      tensileBytes: r.bytes,
      flowerBytes: f?.bytes ?? null,
    };
  });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
  const tensileSeconds = median(tensile.rounds.slice(1).map((r) => r.seconds));
  const flowerSeconds = flower === null ? null : median(flower.slice(1).map((r) => r.seconds));
  const every10 = perRound.filter((r) => r.round % 10 === 0);
  return {
    setup: {
      sites: SITES,
      alpha: ALPHA,
      trainSamples: TRAIN,
      evalSamples: EVAL,
      rounds: ROUNDS,
      localSteps: STEPS,
      batch: BATCH,
      learningRate: LR,
      mlp: [784, HIDDEN, 10],
      secure: true,
    },
    sites: tensile.sites,
    flowerUnavailable: why ?? null,
    figures: {
      finalGapPoints: perRound.at(-1)?.gapPoints ?? null,
      worstGapEvery10thRound:
        every10.length === 0 || flower === null
          ? null
          : Math.min(...every10.map((r) => r.gapPoints ?? Number.NaN)),
      medianRoundSecondsRatio: flowerSeconds === null ? null : round(tensileSeconds / flowerSeconds, 2),
      bytesPerRoundRatio:
        perRound[0]?.flowerBytes == null
          ? null
          : round((perRound[0]?.tensileBytes ?? 0) / perRound[0].flowerBytes, 3),
    },
    perRound,
  };
}
