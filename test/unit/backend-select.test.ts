/**
 * The backend chain (design 4.1): tensorflow on GPU, tensorflow on CPU, wasm, cpu, each refusal with
 * its reason; on this machine (no GPU, hack/install-tensorflow.sh run by npm test) auto picks tfjs-node.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  backendCandidates,
  describeLoadFailure,
  NVIDIA_DRIVER_FILES,
  precheck,
  selectBackend,
} from '../../worker/backend/select.ts';

const gpu = { backend: 'tensorflow', via: '@tensorflow/tfjs-node-gpu' } as const;
const cpuNative = { backend: 'tensorflow', via: '@tensorflow/tfjs-node' } as const;

test('auto tries tfjs-node-gpu, tfjs-node, wasm, cpu in that order; a forced choice only its own', () => {
  assert.equal(
    backendCandidates('auto').map((c) => c.via),
    [
      '@tensorflow/tfjs-node-gpu',
      '@tensorflow/tfjs-node',
      '@tensorflow/tfjs-backend-wasm',
      '@tensorflow/tfjs (cpu)',
    ],
  );
  assert.equal(
    backendCandidates('tensorflow').map((c) => c.via),
    ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'],
  );
  assert.equal(
    backendCandidates('wasm').map((c) => c.backend),
    ['wasm'],
  );
});

test('tfjs-node-gpu is refused without an NVIDIA driver, tried with one; others are never prechecked', () => {
  assert.match(precheck(gpu, () => false) ?? '', /no NVIDIA GPU driver .*\/dev\/nvidiactl/);
  assert.is(
    precheck(gpu, (path) => path === NVIDIA_DRIVER_FILES[0]),
    undefined,
  );
  assert.is(
    precheck(cpuNative, () => false),
    undefined,
  );
});

test('load failures name the fix: absent package, unbuilt addon (the GPU one with --gpu), other errors', () => {
  const absent = Object.assign(new Error("Cannot find package '@tensorflow/tfjs-node'"), {
    code: 'ERR_MODULE_NOT_FOUND',
  });
  assert.match(describeLoadFailure(cpuNative.via, absent), /not installed .*hack\/install-tensorflow\.sh\)$/);
  const unbuilt = new Error(
    'The Node.js native addon module (tfjs_binding.node) can not be found at path: x',
  );
  assert.match(
    describeLoadFailure(gpu.via, unbuilt),
    /without its native addon.*install-tensorflow\.sh --gpu$/,
  );
  assert.is(describeLoadFailure(cpuNative.via, new Error('boom\nstack')), 'failed to load: boom');
});

test('auto on this machine: tensorflow through tfjs-node, the GPU package skipped with its reason', async () => {
  const selected = await selectBackend('auto');
  assert.is(selected.backend, 'tensorflow');
  assert.is(selected.via, '@tensorflow/tfjs-node');
  assert.equal(
    selected.skipped.map((s) => s.via),
    ['@tensorflow/tfjs-node-gpu'],
  );
  assert.ok(selected.addedKernels.includes('Round (int32)'));
});

test.run();
