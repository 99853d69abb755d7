/**
 * The native backend (tfjs-node on libtensorflow 2.21 from PyPI, hack/install-tensorflow.sh) against
 * wasm (with this project's kernels) in one process: the worker runtime's samples/s for the MLP
 * 784-256-128-10 (batch 128) and the small CNN (batch 64) on each; and the runtime against a plain
 * tfjs-node loop on tensorflow (target ≥ 0.95), alternating in rounds, medians compared.
 *
 * Needs @tensorflow/tfjs-node built (bash hack/install-tensorflow.sh); without it this bench fails
 * with that command rather than report figures of another backend.
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../worker/backend/select.ts';
import { LocalReducer } from '../../worker/train/reducer.ts';
import type { Trainer } from '../../worker/train/trainer.ts';
import { CNN, fashion, MLP, median, oneWorker, round, trainer } from './training-fixture.ts';
import { plainLoop, samplesPerSecond } from './worker-runtime.bench.ts';

type Data = Awaited<ReturnType<typeof fashion>>;
const ROUNDS = 5;

/** A trainer of `spec` on `backend`, warmed up by two steps. */
async function runtimeOn(backend: 'tensorflow' | 'wasm', spec: object, data: Data, batch: number) {
  if (!(await tf.setBackend(backend))) throw new Error(`tf.setBackend('${backend}') failed`);
  const t = await trainer(spec, data);
  const local = new LocalReducer();
  for (let i = 0; i < 2; i++) await t.step(oneWorker(batch), local);
  return { t, step: () => t.step(oneWorker(batch), local) };
}

/** samples/s of `steps` steps, scaled from the 128-sample batches samplesPerSecond assumes. */
async function rate(steps: number, batch: number, step: () => unknown): Promise<number> {
  return ((await samplesPerSecond(steps, step)) * batch) / 128;
}

/** The runtime's samples/s on tensorflow ÷ wasm, alternating rounds on the same data. */
async function nativeVsWasm(spec: object, data: Data, batch: number, steps: [number, number]) {
  const native = await runtimeOn('tensorflow', spec, data, batch);
  const wasm = await runtimeOn('wasm', spec, data, batch);
  const nativeRates: number[] = [];
  const wasmRates: number[] = [];
  const rounds = Math.max(1, Math.round(ROUNDS / 2));
  for (let r = 0; r < rounds; r++) {
    await tf.setBackend('tensorflow');
    nativeRates.push(await rate(steps[0], batch, native.step));
    await tf.setBackend('wasm');
    wasmRates.push(await rate(steps[1], batch, wasm.step));
  }
  for (const t of [native.t, wasm.t] as Trainer[]) t.dispose();
  return { native: median(nativeRates), wasm: median(wasmRates), nativeRates, wasmRates };
}

export default async function bench(): Promise<object> {
  // wasm first (its kernels registered), then the native backend the way the worker loads it.
  await selectBackend('wasm');
  const selected = await selectBackend('tensorflow');
  tf.enableProdMode();
  const data = await fashion(8192);
  // Runtime vs the plain loop, both on tensorflow, MLP batch 128.
  await tf.setBackend('tensorflow');
  const plain = await plainLoop(data);
  const runtime = await runtimeOn('tensorflow', MLP, data, 128);
  for (let i = 0; i < 3; i++) plain.step();
  const plainRates: number[] = [];
  const runtimeRates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    plainRates.push(await samplesPerSecond(80, plain.step));
    runtimeRates.push(await samplesPerSecond(80, runtime.step));
  }
  plain.dispose();
  runtime.t.dispose();

  const mlp = await nativeVsWasm(MLP, data, 128, [80, 30]);
  const cnn = await nativeVsWasm(CNN, data, 64, [40, 8]);
  return {
    figures: {
      tensorflowVsWasmMlp: round(mlp.native / mlp.wasm, 2),
      tensorflowVsWasmCnn: round(cnn.native / cnn.wasm, 2),
      runtimeVsPlainTfjsNodeLoop: round(median(runtimeRates) / median(plainRates)),
    },
    targets: { runtimeVsPlainTfjsNodeLoop: '>= 0.95' },
    measured: {
      backend: `${selected.backend} via ${selected.via}`,
      skipped: selected.skipped.map((s) => `${s.via}: ${s.reason}`),
      mlp: 'mlp 784-256-128-10, adam, batch 128, Fashion-MNIST',
      cnn: 'cnn conv32-pool-conv64-pool-dense128, adam, batch 64, Fashion-MNIST',
      plainLoopSamplesPerSecond: plainRates.map((v) => round(v, 0)),
      runtimeSamplesPerSecond: runtimeRates.map((v) => round(v, 0)),
      mlpSamplesPerSecond: {
        tensorflow: mlp.nativeRates.map(Math.round),
        wasm: mlp.wasmRates.map(Math.round),
      },
      cnnSamplesPerSecond: {
        tensorflow: cnn.nativeRates.map(Math.round),
        wasm: cnn.wasmRates.map(Math.round),
      },
    },
  };
}
