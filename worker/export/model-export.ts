/**
 * The trained model out of a job, in a folder a serving stack can use without Tensile:
 *
 * - model.json, weights.bin  tfjs Layers format (`tf.loadLayersModel('file://…/model.json')`)
 * - preprocessing.json       what to do to a raw sample before `predict`: normalisation, then PCA
 * - labels.json              class names, index = label
 * - tensile.json             the job, its spec, the step and the evaluation the weights reached, and
 *                            the SHA-256 of every file above
 *
 * Written into a temporary folder and renamed into place, so a reader never sees half a model.
 */
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { TrainingJobSpec } from '../../operator/api/training-job.ts';
import { sha256, syncDirectory, writeDurably } from '../checkpoint/store.ts';
import type { Dataset } from '../data/dataset.ts';
import { encodeSnapshot, type Snapshot } from '../train/snapshot.ts';

export const MODEL_EXPORT_FORMAT = 'tensile-model/1';

export interface ModelExportInput {
  readonly snapshot: Snapshot;
  readonly dataset: Pick<Dataset, 'featureShape' | 'sampleShape' | 'classes' | 'normalization' | 'pca'>;
  readonly job: { readonly name: string; readonly namespace: string; readonly uid?: string | undefined };
  readonly spec: TrainingJobSpec;
  /** How the operator names the folder (status.model.uri), when it is on a claim. */
  readonly uri?: string | undefined;
  readonly now?: Date;
}

export interface ModelExportSummary {
  readonly dir: string;
  readonly step: number;
  readonly accuracy: number | undefined;
  readonly time: string;
}

/** The steps a raw sample (flattened, row-major) goes through before it reaches the model. */
export function preprocessingOf(dataset: ModelExportInput['dataset']): unknown {
  const n = dataset.normalization;
  const steps: unknown[] = [];
  if (n.kind !== 'none')
    steps.push({
      type: 'normalize',
      kind: n.kind,
      formula: 'x = (x - offset) * scale, per feature',
      offset: Array.from(n.offset),
      scale: Array.from(n.scale),
    });
  const pca = dataset.pca;
  if (pca !== undefined)
    steps.push({
      type: 'pca',
      formula: 'x = (x - mean) · components, components being featureSize × k, row-major',
      k: pca.k,
      mean: Array.from(pca.mean),
      components: Array.from(pca.components),
      explainedVariance: pca.explained,
    });
  return {
    rawShape: dataset.featureShape,
    modelInputShape: dataset.sampleShape,
    steps,
    output: `softmax probabilities over ${dataset.classes} classes (labels.json)`,
  };
}

const json = (value: unknown) => new TextEncoder().encode(`${JSON.stringify(value, null, 1)}\n`);

function labelsOf(spec: TrainingJobSpec, classes: number): string[] {
  const names = spec.output?.labels;
  if (names !== undefined && names.length !== classes)
    throw new Error(`output.labels names ${names.length} classes, the dataset has ${classes}`);
  return names ?? Array.from({ length: classes }, (_, i) => String(i));
}

export function writeModelExport(dir: string, input: ModelExportInput): ModelExportSummary {
  const { snapshot, dataset, job, spec } = input;
  const time = (input.now ?? new Date()).toISOString();
  const encoded = encodeSnapshot(snapshot);
  const files = new Map<string, Uint8Array>([
    ['model.json', encoded.get('model.json') as Uint8Array],
    ['weights.bin', encoded.get('weights.bin') as Uint8Array],
    ['preprocessing.json', json(preprocessingOf(dataset))],
    ['labels.json', json(labelsOf(spec, dataset.classes))],
  ]);
  const { state } = snapshot;
  const evaluation = state.lastEval;
  const manifest = {
    format: MODEL_EXPORT_FORMAT,
    time,
    job: { name: job.name, namespace: job.namespace, ...(job.uid === undefined ? {} : { uid: job.uid }) },
    ...(input.uri === undefined ? {} : { uri: input.uri }),
    step: state.step,
    epoch: state.epoch,
    samples: state.samples,
    trainSeconds: state.trainSeconds,
    completed: state.completed,
    // The evaluation of these very weights when it was taken at this step; else the newest one before.
    evaluation:
      evaluation === null ? null : { ...evaluation, ofTheseWeights: evaluation.step === state.step },
    generations: state.generations,
    spec,
    files: Object.fromEntries(
      [...files].map(([name, b]) => [name, { bytes: b.byteLength, sha256: sha256(b) }]),
    ),
  };
  files.set('tensile.json', json(manifest));
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const temporary = join(parent, `.${job.name}-model-${process.pid}-${Date.now()}`);
  try {
    mkdirSync(temporary);
    for (const [name, bytes] of files) writeDurably(join(temporary, name), bytes);
    syncDirectory(temporary);
    rmSync(dir, { recursive: true, force: true });
    renameSync(temporary, dir);
    syncDirectory(parent);
  } catch (error) {
    rmSync(temporary, { recursive: true, force: true });
    throw error;
  }
  return { dir, step: state.step, accuracy: evaluation?.accuracy, time };
}
