/**
 * What a checkpoint costs training: the blocking part (snapshot to host memory, encoding, hand-over
 * to the writer thread) against the time of one step (design target ≤ 1 step), and the throughput
 * with frequent checkpoints against none (design target: overhead ≤ 3.5 %).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../worker/backend/select.ts';
import { BackgroundCheckpointer, CheckpointStore } from '../../worker/checkpoint/store.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import { CNN, fashion, MLP, median, oneWorker, round, trainer } from './training-fixture.ts';

const BATCH = 128;

async function measure(name: string, spec: object, steps: number, every: number) {
  const data = await fashion(4096);
  const t = await trainer(spec, data);
  const local = new LocalReducer();
  const directory = mkdtempSync(join(tmpdir(), `tensile-bench-${name}-`));
  const written: number[] = [];
  const checkpoints = new BackgroundCheckpointer(new CheckpointStore(directory, 3), {
    written: (_ref, ms) => written.push(ms),
    failed: (_step, error) => {
      throw error;
    },
  });
  for (let i = 0; i < 3; i++) await t.step(oneWorker(BATCH), local);
  // Warm the writer thread up, so its start-up is not counted as a checkpoint.
  await checkpoints.writeNow(t.snapshot());

  const stepTimes: number[] = [];
  const blocking: number[] = [];
  let skipped = 0;
  const run = async (withCheckpoints: boolean) => {
    const started = performance.now();
    for (let i = 1; i <= steps; i++) {
      const s = performance.now();
      await t.step(oneWorker(BATCH), local);
      stepTimes.push(performance.now() - s);
      if (withCheckpoints && i % every === 0) {
        if (checkpoints.busy) skipped++;
        else {
          const b = performance.now();
          checkpoints.start(t.snapshot());
          blocking.push(performance.now() - b);
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await checkpoints.idle();
    return (steps * BATCH) / ((performance.now() - started) / 1000);
  };
  const without: number[] = [];
  const withCk: number[] = [];
  for (let r = 0; r < 3; r++) {
    without.push(await run(false));
    withCk.push(await run(true));
  }
  await checkpoints.close();
  t.dispose();
  data.close();
  rmSync(directory, { recursive: true, force: true });
  return {
    blockingVsStep: round(median(blocking) / median(stepTimes)),
    throughputWithCheckpoints: round(median(withCk) / median(without)),
    measured: {
      stepMs: round(median(stepTimes), 2),
      blockingMs: round(median(blocking), 2),
      blockingMaxMs: round(Math.max(...blocking), 2),
      writeMs: round(median(written), 1),
      checkpointEverySteps: every,
      checkpointsSkippedBusy: skipped,
      samplesPerSecond: { without: without.map((v) => round(v, 0)), with: withCk.map((v) => round(v, 0)) },
    },
  };
}

export default async function bench(): Promise<object> {
  await selectBackend('wasm');
  tf.enableProdMode();
  const mlp = await measure('mlp', MLP, 40, 10);
  const cnn = await measure('cnn', CNN, 6, 2);
  return {
    figures: {
      mlpBlockingVsStep: mlp.blockingVsStep,
      cnnBlockingVsStep: cnn.blockingVsStep,
      mlpThroughputCheckpointEvery10Steps: mlp.throughputWithCheckpoints,
      cnnThroughputCheckpointEvery2Steps: cnn.throughputWithCheckpoints,
    },
    targets: { blockingVsStep: '<= 1', throughput: '>= 0.965' },
    measured: { mlp: mlp.measured, cnn: cnn.measured, backend: 'wasm', optimizer: 'adam', batch: BATCH },
  };
}
