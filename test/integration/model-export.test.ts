/**
 * The trained model out of a run: `tensile run` exports it at the end, `tensile export` writes the
 * same from the checkpoint, and a fresh process that knows nothing of Tensile loads it with
 * tf.loadLayersModel, applies preprocessing.json to raw test images and gets the reported accuracy.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { finished, tensileRun, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const root = fileURLToPath(new URL('../..', import.meta.url));
const server = fileURLToPath(new URL('../helpers/serve-exported-model.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tensile-export-'));
const LABELS = [
  'T-shirt',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Boot',
];
const EVAL_SAMPLES = 500;

test.after(() => rmSync(dir, { recursive: true, force: true }));

interface ModelManifest {
  format: string;
  step: number;
  evaluation: { step: number; accuracy: number; samples: number; ofTheseWeights: boolean } | null;
  spec: { output?: { labels?: string[] } };
  files: Record<string, { sha256: string }>;
}

const manifestOf = (model: string) =>
  JSON.parse(readFileSync(join(model, 'tensile.json'), 'utf8')) as ModelManifest;

function serve(model: string): { via: string; samples: number; accuracy: number; firstLabel: string } {
  const r = spawnSync(
    process.execPath,
    [
      server,
      model,
      join(FASHION, 't10k-images-idx3-ubyte.gz'),
      join(FASHION, 't10k-labels-idx1-ubyte.gz'),
      String(EVAL_SAMPLES),
    ],
    { cwd: root, encoding: 'utf8' },
  );
  assert.is(r.status, 0, r.stderr);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last);
}

test('the model of a finished run loads in a fresh process and reproduces the reported accuracy', async () => {
  const file = writeJobManifest(join(dir, 'job.yaml'), 'exported', {
    model: { mlp: { hiddenUnits: [64] }, seed: 3 },
    // Standardisation and PCA both: the serving side must apply what the workers fitted.
    dataset: {
      format: 'idx',
      path: FASHION,
      maxTrainSamples: 4000,
      eval: { maxSamples: EVAL_SAMPLES },
      normalize: 'standardize',
      pca: { components: 40 },
    },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 100 },
    stopping: { epochs: 2 },
    checkpoint: { intervalSteps: 1000 },
    output: { labels: LABELS },
  });
  const out = join(dir, 'out');
  // Two workers for a job of one: the second stands by, and learns of the completion with its older
  // state, which must not replace the model the trained worker wrote.
  const summary = await finished(tensileRun(file, out, ['--workers', '2']));
  assert.is(summary.status, 'completed');
  const model = join(out, 'model');
  const manifest = manifestOf(model);
  assert.is(manifest.format, 'tensile-model/1');
  assert.is(manifest.step, summary.step);
  assert.ok(manifest.evaluation !== null, 'an evaluation of the final weights');
  assert.ok(manifest.evaluation.ofTheseWeights, `evaluated at step ${manifest.evaluation.step}`);
  assert.is(manifest.evaluation.accuracy, summary.eval?.accuracy);
  assert.equal(manifest.spec.output?.labels, LABELS);
  assert.equal(JSON.parse(readFileSync(join(model, 'labels.json'), 'utf8')), LABELS);

  const served = serve(model);
  console.log(
    `  reported accuracy ${manifest.evaluation.accuracy.toFixed(4)}, served ${served.accuracy.toFixed(4)} (${served.via}, ${served.samples} samples)`,
  );
  assert.is(served.samples, manifest.evaluation.samples);
  // Same weights, same preprocessing, same images: at most one prediction may flip on a near tie.
  assert.ok(
    Math.abs(served.accuracy - manifest.evaluation.accuracy) <= 1 / EVAL_SAMPLES + 1e-9,
    `served ${served.accuracy}, reported ${manifest.evaluation.accuracy}`,
  );
  assert.ok(manifest.evaluation.accuracy > 0.5, 'trained, not chance');
  assert.ok(LABELS.includes(served.firstLabel));

  // `tensile export` from the checkpoint writes the same model, preprocessing fitted again.
  const again = join(dir, 'again');
  const r = spawnSync(
    process.execPath,
    [join(root, 'operator/bin/tensile.mjs'), 'export', out, '--out', again],
    {
      cwd: root,
      encoding: 'utf8',
    },
  );
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`step ${summary.step}, .*preprocessing on ${summary.backend}`));
  const exported = manifestOf(again);
  for (const name of ['model.json', 'weights.bin', 'preprocessing.json', 'labels.json'])
    assert.is(exported.files[name]?.sha256, manifest.files[name]?.sha256, name);
  assert.is(exported.evaluation?.accuracy, manifest.evaluation.accuracy);
});

test('tensile export names what is missing: no checkpoint, no job record', async () => {
  const empty = join(dir, 'empty');
  const r = spawnSync(process.execPath, [join(root, 'operator/bin/tensile.mjs'), 'export', dir], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.is(r.status, 1);
  assert.match(r.stderr, /job\.json is missing .*pass --file MANIFEST/);
  const none = spawnSync(process.execPath, [join(root, 'operator/bin/tensile.mjs'), 'export', empty], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.is(none.status, 1);
  assert.match(none.stderr, /no such directory/);
});

test.run();
