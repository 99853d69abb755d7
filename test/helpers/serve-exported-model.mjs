// A serving process that knows nothing of Tensile: loads an exported model with tf.loadLayersModel,
// applies preprocessing.json to raw IDX samples, and prints the accuracy on the first N of them.
// usage: node serve-exported-model.mjs MODEL_DIR IMAGES.gz LABELS.gz N
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

const [dir, imagesFile, labelsFile, count] = process.argv.slice(2);
let tf;
let via;
try {
  tf = await import('@tensorflow/tfjs-node');
  via = 'tfjs-node file://';
} catch {
  tf = await import('@tensorflow/tfjs');
  via = 'tfjs fromMemory';
}
const model =
  via === 'tfjs-node file://'
    ? await tf.loadLayersModel(`file://${join(dir, 'model.json')}`)
    : await (async () => {
        const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
        const weights = readFileSync(join(dir, 'weights.bin'));
        return tf.loadLayersModel(
          tf.io.fromMemory({
            modelTopology: json.modelTopology,
            weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
            weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
          }),
        );
      })();
const pre = JSON.parse(readFileSync(join(dir, 'preprocessing.json'), 'utf8'));
const labelNames = JSON.parse(readFileSync(join(dir, 'labels.json'), 'utf8'));

const images = gunzipSync(readFileSync(imagesFile));
const labels = gunzipSync(readFileSync(labelsFile));
const n = Number(count);
const d = images.readUInt32BE(8) * images.readUInt32BE(12);
let x = new Float32Array(n * d);
for (let i = 0; i < n * d; i++) x[i] = images[16 + i];
let width = d;
for (const step of pre.steps) {
  if (step.type === 'normalize') {
    for (let s = 0; s < n; s++)
      for (let j = 0; j < d; j++) x[s * d + j] = (x[s * d + j] - step.offset[j]) * step.scale[j];
  } else if (step.type === 'pca') {
    const projected = tf.tidy(() =>
      tf.matMul(
        tf.sub(tf.tensor2d(x, [n, d]), tf.tensor1d(step.mean)),
        tf.tensor2d(step.components, [d, step.k]),
      ),
    );
    x = projected.dataSync();
    projected.dispose();
    width = step.k;
  } else throw new Error(`unknown preprocessing step ${step.type}`);
}
const input = tf.tensor(x, [n, ...pre.modelInputShape]);
if (pre.modelInputShape.reduce((a, b) => a * b, 1) !== width) throw new Error('shape mismatch');
const predicted = model.predict(input).argMax(-1).dataSync();
let correct = 0;
for (let i = 0; i < n; i++) if (predicted[i] === labels[8 + i]) correct++;
console.log(
  JSON.stringify({
    via,
    samples: n,
    accuracy: correct / n,
    firstLabel: labelNames[predicted[0]],
    predicted: Array.from(predicted),
  }),
);
