/**
 * The network of `spec.model`: a built-in mlp or cnn, or a custom tfjs Layers topology (inline, or a
 * JSON file — the operator mounts a ConfigMap as one). Always a softmax over the classes at the end.
 *
 * Reproducible by construction: every initialiser is seeded from `spec.model.seed` (custom topologies
 * get seeds injected where they have none), and layers carry explicit, stable names, because
 * checkpoints and optimizer slots are matched to weights by those names.
 */
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { ModelSpec } from '../../operator/api/training-job.ts';
import { mixSeed, uint32Stream } from '../data/sampler.ts';
import { ModelError } from '../errors.ts';

export interface BuiltModel {
  readonly model: tf.LayersModel;
  /** Shape of one sample the model takes; batches are reshaped to [B, ...inputShape]. */
  readonly inputShape: readonly number[];
  readonly kind: 'mlp' | 'cnn' | 'layers';
  readonly parameters: number;
}

const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

function kernelInit(seed: number, index: number) {
  return tf.initializers.glorotUniform({ seed: mixSeed(seed, index, 1) });
}

function buildMlp(
  spec: NonNullable<ModelSpec['mlp']>,
  seed: number,
  sampleShape: readonly number[],
  classes: number,
) {
  const layers: tf.layers.Layer[] = [];
  if (sampleShape.length > 1)
    layers.push(tf.layers.flatten({ name: 'flatten', inputShape: [...sampleShape] }));
  const first = sampleShape.length > 1 ? {} : { inputShape: [...sampleShape] };
  spec.hiddenUnits.forEach((units, i) => {
    const n = i + 1;
    layers.push(
      tf.layers.dense({
        ...(i === 0 ? first : {}),
        units,
        name: `dense_${n}`,
        activation: spec.batchNorm ? 'linear' : spec.activation,
        useBias: !spec.batchNorm,
        kernelInitializer: kernelInit(seed, n),
      }),
    );
    if (spec.batchNorm) {
      layers.push(tf.layers.batchNormalization({ name: `batchnorm_${n}` }));
      layers.push(tf.layers.activation({ activation: spec.activation, name: `activation_${n}` }));
    }
    if (spec.dropout > 0) layers.push(tf.layers.dropout({ rate: spec.dropout, name: `dropout_${n}` }));
  });
  layers.push(
    tf.layers.dense({
      units: classes,
      activation: 'softmax',
      name: 'output',
      kernelInitializer: kernelInit(seed, 0),
    }),
  );
  return tf.sequential({ layers, name: 'mlp' });
}

function imageShape(sampleShape: readonly number[]): number[] {
  if (sampleShape.length === 3) return [...sampleShape];
  if (sampleShape.length === 2) return [...sampleShape, 1];
  throw new ModelError(
    `model.cnn needs image samples [height, width] or [height, width, channels], but the samples are [${sampleShape.join(', ')}]; set dataset.featureShape (e.g. [28, 28, 1]), and note that dataset.pca flattens samples`,
  );
}

function buildCnn(
  spec: NonNullable<ModelSpec['cnn']>,
  seed: number,
  sampleShape: readonly number[],
  classes: number,
) {
  const shape = imageShape(sampleShape);
  const layers: tf.layers.Layer[] = [];
  if (sampleShape.length === 2)
    layers.push(tf.layers.reshape({ targetShape: shape, inputShape: [...sampleShape], name: 'reshape' }));
  let [height, width] = shape as [number, number, number];
  spec.blocks.forEach((block, i) => {
    const n = i + 1;
    layers.push(
      tf.layers.conv2d({
        ...(layers.length === 0 ? { inputShape: shape } : {}),
        filters: block.filters,
        kernelSize: block.kernelSize,
        padding: 'same',
        activation: spec.batchNorm ? 'linear' : spec.activation,
        useBias: !spec.batchNorm,
        kernelInitializer: kernelInit(seed, 100 + n),
        name: `conv_${n}`,
      }),
    );
    if (spec.batchNorm) {
      layers.push(tf.layers.batchNormalization({ name: `conv_batchnorm_${n}` }));
      layers.push(tf.layers.activation({ activation: spec.activation, name: `conv_activation_${n}` }));
    }
    if (block.pool > 1) {
      height = Math.floor(height / block.pool);
      width = Math.floor(width / block.pool);
      if (height < 1 || width < 1) {
        throw new ModelError(
          `model.cnn.blocks[${i}]: pooling by ${block.pool} leaves no feature map (${height}×${width}); use fewer blocks or smaller pool`,
        );
      }
      layers.push(tf.layers.maxPooling2d({ poolSize: block.pool, strides: block.pool, name: `pool_${n}` }));
    }
  });
  layers.push(tf.layers.flatten({ name: 'flatten' }));
  const dense = [...spec.dense, classes];
  dense.forEach((units, i) => {
    const n = i + 1;
    const last = i === dense.length - 1;
    if (spec.dropout > 0) layers.push(tf.layers.dropout({ rate: spec.dropout, name: `dropout_${n}` }));
    layers.push(
      tf.layers.dense({
        units,
        activation: last ? 'softmax' : spec.batchNorm ? 'linear' : spec.activation,
        useBias: last || !spec.batchNorm,
        kernelInitializer: kernelInit(seed, last ? 0 : n),
        name: last ? 'output' : `dense_${n}`,
      }),
    );
    if (!last && spec.batchNorm) {
      layers.push(tf.layers.batchNormalization({ name: `batchnorm_${n}` }));
      layers.push(tf.layers.activation({ activation: spec.activation, name: `activation_${n}` }));
    }
  });
  return tf.sequential({ layers, name: 'cnn' });
}

type Json = Record<string, unknown>;

/** Seeds every initialiser of a topology that has no seed, from the model seed and its position. */
export function seedTopology(topology: unknown, seed: number): unknown {
  let counter = 0;
  const visit = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(visit);
    if (typeof node !== 'object' || node === null) return node;
    const out: Json = {};
    for (const [key, value] of Object.entries(node as Json)) {
      const isInitializer = /initializer$/i.test(key) && typeof value === 'object' && value !== null;
      if (
        isInitializer &&
        typeof (value as Json)['config'] === 'object' &&
        (value as Json)['config'] !== null
      ) {
        const config = (value as Json)['config'] as Json;
        counter++;
        out[key] = {
          ...(value as Json),
          config: {
            ...config,
            seed: typeof config['seed'] === 'number' ? config['seed'] : mixSeed(seed, counter, 7),
          },
        };
      } else out[key] = visit(value);
    }
    return out;
  };
  return visit(topology);
}

function readTopology(layers: NonNullable<ModelSpec['layers']>): unknown {
  if (layers.topology !== undefined) return layers.topology;
  if (layers.path !== undefined) {
    let text: string;
    try {
      text = readFileSync(layers.path, 'utf8');
    } catch (error) {
      const code = (error as { code?: string }).code;
      throw new ModelError(
        `model.layers.path ${layers.path}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`,
        { cause: error },
      );
    }
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new ModelError(`model.layers.path ${layers.path}: not JSON (${(error as Error).message})`, {
        cause: error,
      });
    }
  }
  throw new ModelError(
    'model.layers.configMap is read from a file the operator mounts; outside a cluster, use model.layers.path',
  );
}

function lastActivation(model: tf.LayersModel): string | undefined {
  const last = model.layers[model.layers.length - 1];
  const config = last?.getConfig() as Json | undefined;
  const activation = config?.['activation'];
  if (typeof activation === 'string') return activation;
  if (last?.getClassName() === 'Softmax') return 'softmax';
  return undefined;
}

async function buildFromTopology(
  layers: NonNullable<ModelSpec['layers']>,
  seed: number,
  sampleShape: readonly number[],
  classes: number,
) {
  const raw = readTopology(layers);
  const where = layers.path ?? 'model.layers.topology';
  if (typeof raw !== 'object' || raw === null)
    throw new ModelError(`${where}: expected a JSON object (a tfjs Layers topology)`);
  // Accept a whole model.json ({modelTopology, weightsManifest}) as well as a bare topology.
  const topology = 'modelTopology' in raw ? (raw as Json)['modelTopology'] : raw;
  let model: tf.LayersModel;
  try {
    model = await tf.models.modelFromJSON({
      modelTopology: seedTopology(topology, seed) as tf.io.ModelJSON['modelTopology'],
    });
  } catch (error) {
    throw new ModelError(
      `${where}: not a tfjs Layers topology (${(error as Error).message.split('\n')[0]})`,
      {
        cause: error,
      },
    );
  }
  const input = model.inputs[0]?.shape.slice(1) ?? [];
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new ModelError(`${where}: the model must have one input and one output`);
  }
  if (input.some((d) => d === null) || product(input as number[]) !== product(sampleShape)) {
    throw new ModelError(
      `${where}: the model takes samples of shape [${input.join(', ')}], the data has [${sampleShape.join(', ')}]`,
    );
  }
  const output = model.outputs[0]?.shape ?? [];
  if (output.length !== 2 || output[1] !== classes) {
    const shown = output.map((d) => (d === null ? 'null' : String(d))).join(', ');
    throw new ModelError(
      `${where}: the output has shape [${shown}], expected [null, ${classes}] (one per class)`,
    );
  }
  if (lastActivation(model) !== 'softmax') {
    throw new ModelError(`${where}: the last layer must be a softmax over the ${classes} classes`);
  }
  return { model, inputShape: input as number[] };
}

export async function buildModel(
  spec: ModelSpec,
  sampleShape: readonly number[],
  classes: number,
): Promise<BuiltModel> {
  let model: tf.LayersModel;
  let inputShape: readonly number[] = sampleShape;
  let kind: BuiltModel['kind'];
  if (spec.mlp !== undefined) {
    model = buildMlp(spec.mlp, spec.seed, sampleShape, classes);
    kind = 'mlp';
  } else if (spec.cnn !== undefined) {
    model = buildCnn(spec.cnn, spec.seed, sampleShape, classes);
    kind = 'cnn';
  } else if (spec.layers !== undefined) {
    const built = await buildFromTopology(spec.layers, spec.seed, sampleShape, classes);
    model = built.model;
    inputShape = built.inputShape;
    kind = 'layers';
  } else {
    throw new ModelError('set one of model.mlp, model.cnn or model.layers');
  }
  const parameters = model.trainableWeights.reduce((sum, w) => sum + product(w.shape as number[]), 0);
  return { model, inputShape, kind, parameters };
}

interface DropoutInternals {
  rate: number;
  getNoiseShape(input: tf.Tensor): (number | null)[] | undefined;
  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[];
  tensileMaskSeed?: number;
}

/** A dropout mask (1/(1−rate) where kept, 0 where dropped) from a seeded mulberry32 stream. */
export function dropoutMask(shape: readonly number[], rate: number, seed: number): tf.Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(size);
  const next = uint32Stream(seed);
  const keep = 1 / (1 - rate);
  const threshold = rate * 0x100000000;
  for (let i = 0; i < size; i++) values[i] = next() >= threshold ? keep : 0;
  return tf.tensor(values, [...shape]);
}

/**
 * The dropout layers of a model, made deterministic: their masks come from a seed the trainer sets
 * before each forward pass (seedDropout), drawn with mulberry32. tfjs's own seeded dropout draws
 * through seedrandom at about 500 ns a value, 100 ms a step for the cnn's dense input; this is
 * about 1 ns. Outside training they pass their input through, as before.
 */
export function dropoutLayers(model: tf.LayersModel): tf.layers.Layer[] {
  const layers = model.layers.filter((layer) =>
    ['Dropout', 'SpatialDropout1D'].includes(layer.getClassName()),
  );
  for (const layer of layers) {
    const internals = layer as unknown as DropoutInternals;
    if (internals.tensileMaskSeed !== undefined) continue;
    internals.tensileMaskSeed = 0;
    internals.call = (inputs, kwargs) =>
      tf.tidy(() => {
        const input = Array.isArray(inputs) ? (inputs[0] as tf.Tensor) : inputs;
        const rate = internals.rate;
        if (kwargs['training'] !== true || !(rate > 0 && rate < 1)) return input;
        const noise = internals.getNoiseShape(input);
        const shape =
          noise === undefined || noise === null
            ? input.shape
            : noise.map((d, i) => d ?? (input.shape[i] as number));
        return tf.mul(input, dropoutMask(shape, rate, internals.tensileMaskSeed ?? 0));
      });
  }
  return layers;
}

/**
 * Sets the mask seed of each dropout layer for the next forward pass: a function of the model seed,
 * the step, the rank and the micro-batch, so a resumed run draws the masks the original would have.
 */
export function seedDropout(
  layers: readonly tf.layers.Layer[],
  seed: number,
  step: number,
  rank: number,
  micro: number,
): void {
  layers.forEach((layer, i) => {
    (layer as unknown as DropoutInternals).tensileMaskSeed = mixSeed(seed, step, rank, micro, i);
  });
}

/** The mask seed each dropout layer's next forward pass uses (seedDropout's), in layer order. */
export function dropoutSeeds(layers: readonly tf.layers.Layer[]): number[] {
  return layers.map((layer) => (layer as unknown as DropoutInternals).tensileMaskSeed ?? 0);
}
