/**
 * Two behaviour changes of libtensorflow since 2.9.1 (the version tfjs-node 4.22 was written for)
 * that the native backend would otherwise pass on, corrected when the backend loads:
 *
 * - `Round` on int32 returns zeros from TF 2.17 on (tensorflow/tensorflow#74789). Rounding an integer
 *   is the identity, so int32 inputs get an `Identity` op; floats keep the package's own kernel.
 * - Histogram summaries of constant data: tfjs-node builds the single bucket with `concat` of three
 *   scalars, which TF ≥ 2.16 refuses ("ConcatOp : Can't concatenate scalars"). That one bucket is
 *   built with `stack` instead; everything else keeps the package's own bucketing.
 *
 * Runtime overrides rather than edits of node_modules: an npm install replaces the package, and these
 * are registered again by every process that loads the backend.
 */
import * as tf from '@tensorflow/tfjs';

/** The part of tfjs-node's NodeJSKernelBackend these fixes use. */
interface NativeBackend {
  executeSingleInput(name: string, input: tf.TensorInfo): tf.Tensor;
  buckets(data: tf.Tensor, bucketCount?: number): tf.Tensor;
}

const BACKEND = 'tensorflow';
const fixed = new WeakSet<object>();

function nativeBackend(): NativeBackend {
  const backend = tf.findBackend(BACKEND) as unknown as Partial<NativeBackend> | null;
  if (typeof backend?.executeSingleInput !== 'function' || typeof backend.buckets !== 'function')
    throw new Error(
      `backend "${BACKEND}" is not tfjs-node's NodeJSKernelBackend; load @tensorflow/tfjs-node first`,
    );
  return backend as NativeBackend;
}

function fixRound(): void {
  const original = tf.getKernel(tf.Round, BACKEND);
  if (original === undefined) throw new Error(`tfjs-node registered no ${tf.Round} kernel`);
  tf.unregisterKernel(tf.Round, BACKEND);
  tf.registerKernel({
    kernelName: tf.Round,
    backendName: BACKEND,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      if (x.dtype !== 'int32') return original.kernelFunc(args);
      return (args.backend as unknown as NativeBackend).executeSingleInput('Identity', x);
    },
  });
}

/**
 * On the class, not the instance: the engine may create a new backend instance (tf.engine().reset(),
 * removeBackend and registerBackend again), and each must have the fix.
 */
function fixHistogramBuckets(backendClass: NativeBackend): void {
  const original = backendClass.buckets;
  backendClass.buckets = function buckets(this: NativeBackend, data, bucketCount) {
    if (data.size === 0) return original.call(this, data, bucketCount);
    // The caller (writeHistogramSummary) runs this inside tf.tidy: the temporaries are freed there.
    const flat = data.flatten().cast('float32');
    const min = flat.min();
    const max = flat.max();
    if (max.sub(min).dataSync()[0] !== 0) return original.call(this, data, bucketCount);
    return tf.stack([min.sub(0.5), min.add(0.5), tf.scalar(flat.size, 'float32')]).reshape([1, 3]);
  };
}

/**
 * Registers both fixes for the loaded tensorflow backend; a second call is a no-op. Throws when the
 * tensorflow backend is not tfjs-node's.
 */
export function applyTensorflowFixes(): void {
  const backendClass = Object.getPrototypeOf(nativeBackend()) as NativeBackend;
  if (fixed.has(backendClass)) return;
  fixRound();
  fixHistogramBuckets(backendClass);
  fixed.add(backendClass);
}
