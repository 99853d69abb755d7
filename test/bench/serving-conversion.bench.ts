/**
 * The exported model converted for TensorFlow Serving, for real: a short `tensile run` (standardisation,
 * PCA and batch norm, so the conversion has more than dense layers to carry), then
 * `tensorflowjs_converter --input_format=tfjs_layers_model --output_format=keras_saved_model` on its
 * model/, then the SavedModel's serving_default signature (what TF Serving's :predict calls) on the
 * first 500 Fashion-MNIST test images, preprocessed in numpy from preprocessing.json
 * (test/bench/peers/serve_saved_model.py), against the tfjs model on the same images
 * (test/helpers/serve-exported-model.mjs) and the accuracy the run reported.
 * The converter is not a dependency: `bash hack/install-tfjs-converter.sh` puts it in a venv in the
 * cache (~1.5 GB). Without it the figures are null, with the reason.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, writeJobManifest } from '../helpers/tensile-run.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const SAMPLES = 500;

function venvBin(): string {
  const r = spawnSync('bash', [join(root, 'hack/install-tfjs-converter.sh'), '--print'], {
    encoding: 'utf8',
  });
  return r.stdout.trim();
}

/** Runs a command; returns the JSON of its last stdout line. */
function json(command: string, args: string[]): Record<string, unknown> {
  const r = spawnSync(command, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 600_000 });
  if (r.status !== 0)
    throw new Error(`${command} ${args.join(' ')}: exit ${r.status}: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
}

export default async function servingConversion(): Promise<object> {
  const bin = venvBin();
  const converter = join(bin, 'tensorflowjs_converter');
  if (!existsSync(converter)) {
    const reason = `no tensorflowjs_converter in ${bin}: run bash hack/install-tfjs-converter.sh`;
    console.error(reason);
    return { figures: { savedModelOverTfjsAccuracy: null, predictionAgreement: null }, reason };
  }
  const fashion = fashionMnistDir();
  const dir = mkdtempSync(join(tmpdir(), 'tensile-serving-'));
  const file = writeJobManifest(join(dir, 'job.yaml'), 'serving', {
    model: { mlp: { hiddenUnits: [64], batchNorm: true, dropout: 0.1 }, seed: 3 },
    dataset: {
      format: 'idx',
      path: fashion,
      maxTrainSamples: 6000,
      eval: { maxSamples: SAMPLES },
      normalize: 'standardize',
      pca: { components: 40 },
    },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 100 },
    stopping: { epochs: 2 },
    checkpoint: { intervalSteps: 1000 },
  });
  const out = join(dir, 'out');
  const summary = await finished(tensileRun(file, out));
  const model = join(out, 'model');
  const reported = (
    JSON.parse(readFileSync(join(model, 'tensile.json'), 'utf8')) as {
      evaluation: { accuracy: number; samples: number };
    }
  ).evaluation;
  const saved = join(dir, 'serving', 'fashion', '1');
  const started = performance.now();
  const conv = spawnSync(
    converter,
    [
      '--input_format=tfjs_layers_model',
      '--output_format=keras_saved_model',
      join(model, 'model.json'),
      saved,
    ],
    { encoding: 'utf8', timeout: 600_000 },
  );
  if (conv.status !== 0)
    throw new Error(`tensorflowjs_converter: exit ${conv.status}: ${conv.stderr.slice(-2000)}`);
  const convertSeconds = (performance.now() - started) / 1000;
  const images = join(fashion, 't10k-images-idx3-ubyte.gz');
  const labels = join(fashion, 't10k-labels-idx1-ubyte.gz');
  const tfjs = json(process.execPath, [
    join(root, 'test/helpers/serve-exported-model.mjs'),
    model,
    images,
    labels,
    String(SAMPLES),
  ]) as { accuracy: number; predicted: number[]; via: string };
  const served = json(join(bin, 'python'), [
    join(root, 'test/bench/peers/serve_saved_model.py'),
    model,
    saved,
    images,
    labels,
    String(SAMPLES),
  ]) as { accuracy: number; predicted: number[]; tensorflow: string; signature: unknown };
  const agree = served.predicted.filter((p, i) => p === tfjs.predicted[i]).length / SAMPLES;
  const figures = {
    savedModelOverTfjsAccuracy: Math.round((served.accuracy / tfjs.accuracy) * 1e4) / 1e4,
    predictionAgreement: agree,
  };
  console.error(
    `serving-conversion: reported ${reported.accuracy.toFixed(4)}, tfjs ${tfjs.accuracy.toFixed(4)} (${tfjs.via}), SavedModel ${served.accuracy.toFixed(4)} (TF ${served.tensorflow}), agreement ${agree.toFixed(4)}`,
  );
  return {
    figures,
    reportedAccuracy: reported.accuracy,
    reportedSamples: reported.samples,
    tfjsAccuracy: tfjs.accuracy,
    savedModelAccuracy: served.accuracy,
    tensorflow: served.tensorflow,
    signature: served.signature,
    convertSeconds: Math.round(convertSeconds * 10) / 10,
    backend: summary.backend,
    savedModel: saved,
  };
}
