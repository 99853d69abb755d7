/**
 * The backend the training tests run on: tensorflow (tfjs-node, installed by npm test through
 * hack/install-tensorflow.sh) unless TENSILE_BACKEND names another, so that a file runs on wasm or
 * cpu too: TENSILE_BACKEND=wasm node --import tsx test/unit/trainer.test.ts
 */
import { BACKENDS, type BackendChoice } from '../../operator/api/training-job.ts';

export function testBackend(fallback: BackendChoice = 'tensorflow'): BackendChoice {
  const value = process.env['TENSILE_BACKEND'];
  if (value === undefined || value === '') return fallback;
  if (!(BACKENDS as readonly string[]).includes(value))
    throw new Error(`TENSILE_BACKEND=${value} is not one of ${BACKENDS.join(', ')}`);
  return value as BackendChoice;
}
