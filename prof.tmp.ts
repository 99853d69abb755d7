import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './worker/backend/select.ts';
import { LocalReducer } from './worker/train/reducer.ts';
import { CNN, fashion, MLP, median, oneWorker, trainer } from './test/bench/training-fixture.ts';
await selectBackend('tensorflow'); tf.enableProdMode();
const data = await fashion(8192);
const which = process.argv[2] ?? 'mlp';
const [spec, batch, steps] = which === 'mlp' ? [MLP, 128, 100] : [CNN, 64, 20];
const t: any = await trainer(spec, data);
const local = new LocalReducer();
for (let i = 0; i < 5; i++) await t.step(oneWorker(batch), local);
const time = (label: string, n: number, f: () => void) => {
  const times: number[] = [];
  for (let r = 0; r < 3; r++) { const s = performance.now(); for (let i = 0; i < n; i++) f(); times.push((performance.now() - s) / n); }
  console.log(label.padEnd(20), median(times).toFixed(3), 'ms');
};
const idx = Uint32Array.from({ length: batch }, (_, i) => i);
time('batch make', steps, () => { const { x, y } = t.batches.make(data.train, idx); x.dispose(); y.dispose(); });
const { x, y } = t.batches.make(data.train, idx);
time('grad fn + sync', steps, () => { const o = t.native.run(x, y, 1 / batch, [1, 2]); o.loss.dataSync(); o.correct.dataSync(); tf.dispose([...o.gradients, o.loss, o.correct]); });
const o = t.native.run(x, y, 1 / batch, [1, 2]);
time('adam fn', steps, () => t.optimizer.apply(o.gradients, 0.001));
{ const times: number[] = [];
  for (let r = 0; r < 3; r++) { const s = performance.now(); for (let i = 0; i < steps; i++) await t.step(oneWorker(batch), local); times.push((performance.now() - s) / steps); }
  console.log('full step'.padEnd(20), median(times).toFixed(3), 'ms'); }
console.log('tensors', tf.memory().numTensors);
