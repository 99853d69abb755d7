/**
 * The two corrections of worker/backend/tensorflow-fixes.ts on the real native backend: each test
 * first shows the libtensorflow 2.21 behaviour the fix exists for (so a TF upgrade that fixes it
 * upstream turns this red and the override can go), then the corrected result.
 *
 * Needs @tensorflow/tfjs-node built by hack/install-tensorflow.sh (npm test runs it).
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { applyTensorflowFixes } from '../../worker/backend/tensorflow-fixes.ts';

interface SummaryWriter {
  histogram(name: string, data: tf.Tensor, step: number, buckets?: number): void;
  flush(): void;
}
interface TfjsNode {
  node: { summaryFileWriter(logdir: string): SummaryWriter };
}

async function loadTfjsNode(): Promise<TfjsNode> {
  const specifier: string = '@tensorflow/tfjs-node';
  try {
    return (await import(specifier)) as TfjsNode;
  } catch (error) {
    throw new Error('@tensorflow/tfjs-node does not load; install it with: bash hack/install-tensorflow.sh', {
      cause: error,
    });
  }
}

const tfnode = await loadTfjsNode();
assert.ok(await tf.setBackend('tensorflow'));

function histogramEvents(writer: SummaryWriter, logdir: string, data: tf.Tensor): Buffer {
  writer.histogram('weights', data, 1, 5);
  writer.flush();
  const files = readdirSync(logdir).filter((f) => f.startsWith('events.'));
  assert.is(files.length, 1, `one event file in ${logdir}`);
  return readFileSync(join(logdir, files[0] as string));
}

test('libtensorflow 2.21 rounds int32 to zeros (the reason for the override)', () => {
  const rounded = tf.round(tf.tensor1d([1, -2, 7], 'int32'));
  assert.equal(Array.from(rounded.dataSync()), [0, 0, 0]);
});

test('libtensorflow 2.21 refuses the histogram of constant data (the reason for the override)', () => {
  const logdir = mkdtempSync(join(tmpdir(), 'tensile-tb-raw-'));
  const writer = tfnode.node.summaryFileWriter(logdir);
  assert.throws(() => writer.histogram('constant', tf.fill([4], 3), 0), /scalar|concat/i);
});

test('with the fixes: Round on int32 is the identity, floats still round half to even', () => {
  applyTensorflowFixes();
  applyTensorflowFixes(); // idempotent
  const ints = tf.round(tf.tensor1d([1, -2, 7], 'int32'));
  assert.is(ints.dtype, 'int32');
  assert.equal(Array.from(ints.dataSync()), [1, -2, 7]);
  assert.equal(Array.from(tf.round(tf.tensor1d([0.5, 1.5, -2.7, 2.2])).dataSync()), [0, 2, -3, 2]);
});

test('with the fixes: the histogram of constant data is one bucket around the value', () => {
  const logdir = mkdtempSync(join(tmpdir(), 'tensile-tb-'));
  const events = histogramEvents(tfnode.node.summaryFileWriter(logdir), logdir, tf.fill([4], 3));
  assert.ok(events.includes(Buffer.from('histograms')), 'the histograms plugin data is written');
  // The bucket [2.5, 3.5] holding 4 values: three float32 values, in this order, in the tensor proto.
  const bucket = Buffer.from(new Float32Array([2.5, 3.5, 4]).buffer);
  assert.ok(events.includes(bucket), 'the bucket [2.5, 3.5, 4] is in the event file');
});

test('with the fixes: histograms of varying data keep the package bucketing', () => {
  const backend = tf.backend() as unknown as { buckets(data: tf.Tensor, count: number): tf.Tensor };
  const buckets = backend.buckets(tf.tensor1d([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), 5).arraySync() as number[][];
  // Five buckets of width 1.8 from 0 to 9, two values each.
  assert.is(buckets.length, 5);
  buckets.forEach(([left, right, count], i) => {
    assert.ok(Math.abs((left ?? Number.NaN) - 1.8 * i) < 1e-5, `left edge ${left} of bucket ${i}`);
    assert.ok(Math.abs((right ?? Number.NaN) - 1.8 * (i + 1)) < 1e-5, `right edge ${right} of bucket ${i}`);
    assert.is(count, 2);
  });
  const logdir = mkdtempSync(join(tmpdir(), 'tensile-tb-vary-'));
  const events = histogramEvents(tfnode.node.summaryFileWriter(logdir), logdir, tf.tensor1d([0, 9]));
  assert.ok(events.includes(Buffer.from('histograms')));
});

test.run();
