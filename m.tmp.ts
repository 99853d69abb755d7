import * as tf from '@tensorflow/tfjs';
import { selectBackend } from './worker/backend/select.ts';
import { LocalReducer } from './worker/train/reducer.ts';
import { CNN, fashion, MLP, median, oneWorker, trainer } from './test/bench/training-fixture.ts';
await selectBackend('tensorflow'); tf.enableProdMode();
const data = await fashion(8192);
for (const [name, spec, batch, steps] of [['mlp', MLP, 128, 60], ['cnn', CNN, 64, 20]] as const) {
  for (const fn of [true, false]) {
    const t = await trainer(spec, data);
    if (!fn) (t as any).native = undefined;
    const local = new LocalReducer();
    for (let i = 0; i < 5; i++) await t.step(oneWorker(batch), local);
    const times: number[] = [];
    for (let r = 0; r < 3; r++) { const s = performance.now(); for (let i = 0; i < steps; i++) await t.step(oneWorker(batch), local); times.push((performance.now() - s) / steps); }
    console.log(name, fn ? 'function' : 'per-op', median(times).toFixed(2), 'ms/step', t.stepPath.path);
    t.dispose();
  }
}
