/**
 * Goodput autoscaling with real workers (`tensile run`: worker processes, a real nats-server,
 * Fashion-MNIST), not simulated: a job with `autoscaling.policy: goodput` in [1, 3] (batch chosen in
 * [64, 512]) starts on one worker and grows and shrinks on its own; the same manifest with
 * `policy: none` on 2 workers is the fixed run.
 *
 * Figures:
 *  - each decision's predicted goodput (the event's "goodput X → Y") against the goodput the world it
 *    asked for then measured (global batch ÷ step time × (φ + M₀)/(φ + M), its own φ): the ratio, and
 *    whether it is within ±20 %;
 *  - final accuracy against the fixed run's (target: within 0.5 pt);
 *  - the worker counts and batches it went through.
 * Local workers share this machine's cores: what the model learns is this machine's, and the sizes
 * it picks say nothing of a cluster's.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { statisticalEfficiency } from '../../operator/api/goodput-model.ts';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const BASE_BATCH = 128;
const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

function manifest(policy: 'none' | 'goodput'): Record<string, unknown> {
  return {
    replicas: policy === 'goodput' ? 1 : 2,
    minReplicas: 1,
    maxReplicas: 3,
    model: { mlp: { hiddenUnits: [128] } },
    dataset: { format: 'idx', path: fashionMnistDir(), maxTrainSamples: 12_000, eval: { maxSamples: 2000 } },
    optimizer: { type: 'adam', learningRate: 0.002 },
    batch: { global: BASE_BATCH, policy: 'adascale' },
    autoscaling:
      policy === 'goodput'
        ? {
            policy,
            minSteps: 20,
            minIntervalSeconds: 15,
            threshold: 0.05,
            minGlobalBatch: 64,
            maxGlobalBatch: 512,
          }
        : { policy },
    // Long enough on the native backend (0.25 s an epoch on one worker here, 2026-12-01) for a grow,
    // a measured world of two and, 15 s on, the decision that follows it.
    stopping: { epochs: 200 },
    evaluation: { intervalSteps: 100_000 },
    checkpoint: { intervalSteps: 100_000 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 5000, lastCallMillis: 1000 },
  };
}

interface Decision {
  readonly step: number;
  readonly replicas: number;
  readonly globalBatch: number | undefined;
  readonly predicted: number;
  readonly detail: string;
}

function decisions(out: string): Decision[] {
  return readFileSync(join(out, 'events.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map(
      (l) =>
        JSON.parse(l) as {
          type: string;
          step: number;
          replicas: number;
          globalBatch?: number;
          detail: string;
        },
    )
    .filter((e) => e.type === 'autoscale' && /goodput [\d.]+ → [\d.]+/.test(e.detail))
    .map((e) => ({
      step: e.step,
      replicas: e.replicas,
      globalBatch: e.globalBatch,
      predicted: Number(/goodput [\d.]+ → ([\d.]+)/.exec(e.detail)?.[1]),
      detail: e.detail.slice(0, 160),
    }));
}

/** The goodput the world a decision asked for measured: its last report before the next decision. */
function measuredAfter(out: string, decision: Decision, next: Decision | undefined): number | undefined {
  const reports = eventsOf(workerEvents(out), 'progress').filter(
    (e) =>
      e.step > decision.step &&
      (next === undefined || e.step <= next.step) &&
      e.worldSize === decision.replicas &&
      e.goodput !== undefined &&
      e.goodput.steps >= 20,
  );
  const last = reports.at(-1)?.goodput;
  if (last === undefined) return undefined;
  const batch = last.perWorkerBatch * decision.replicas;
  return (batch / last.stepSeconds) * statisticalEfficiency(last.noiseScale, batch, BASE_BATCH);
}

export default async function realAutoscalingBench(): Promise<object> {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-real-autoscaling-'));
  const fixedOut = join(dir, 'fixed');
  const fixed = await finished(
    tensileRun(writeJobManifest(join(dir, 'fixed.yaml'), 'fixed', manifest('none')), fixedOut, [
      '--workers',
      '2',
    ]),
  );
  const goodputOut = join(dir, 'goodput');
  const run = await finished(
    tensileRun(writeJobManifest(join(dir, 'goodput.yaml'), 'goodput', manifest('goodput')), goodputOut, [
      '--workers',
      '1',
    ]),
  );
  const made = decisions(goodputOut);
  const checked = made.map((d, i) => {
    const measured = measuredAfter(goodputOut, d, made[i + 1]);
    const ratio = measured === undefined ? undefined : round(measured / d.predicted);
    return {
      ...d,
      measured: measured === undefined ? undefined : round(measured, 1),
      ratio,
      within20: ratio !== undefined && Math.abs(ratio - 1) <= 0.2,
    };
  });
  const sizes = run.generations.map((g) => `${g.worldSize}×${g.globalBatch}`);
  const grew = run.generations.some(
    (g, i) => i > 0 && g.worldSize > (run.generations[i - 1]?.worldSize ?? 0),
  );
  const shrank = run.generations.some(
    (g, i) => i > 0 && g.worldSize < (run.generations[i - 1]?.worldSize ?? 0),
  );
  const accuracy = run.eval?.accuracy;
  const fixedAccuracy = fixed.eval?.accuracy;
  return {
    grew,
    shrank,
    worlds: sizes.join(' → '),
    decisions: checked,
    decisionsWithin20: `${checked.filter((c) => c.within20).length} / ${checked.filter((c) => c.ratio !== undefined).length}`,
    accuracy,
    fixedAccuracy,
    accuracyGapPoints:
      accuracy === undefined || fixedAccuracy === undefined
        ? undefined
        : round((accuracy - fixedAccuracy) * 100, 2),
    wallSeconds: run.wallSeconds,
    fixedWallSeconds: fixed.wallSeconds,
    out: dir,
  };
}
