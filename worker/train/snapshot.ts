/**
 * A snapshot of everything a worker needs to continue training: model weights, optimizer slots and
 * the training state, copied to host memory. The same snapshot becomes a checkpoint on disk (its
 * files, below) and, in the elastic runtime, the state broadcast to a joining worker.
 *
 * Files (all in one checkpoint directory):
 * - model.json      tfjs `layers-model` format (topology + weightsManifest → weights.bin), so a
 *                   checkpoint loads with tf.loadLayersModel as well as being resumed
 * - weights.bin     every model weight (trainable and not, e.g. batch-norm statistics), float32 LE
 * - optimizer.json  optimizer type, iteration count and slot specs → optimizer.bin
 * - optimizer.bin   the slots, float32 LE
 * - state.json      TrainingState: step, epoch, cursor, seeds, world size, policy, generations, …
 * - communication.json, communication.bin   (only with compression or local SGD state) the state
 *                   every rank holds alike: PowerSGD's Q matrices, local SGD's outer momentum
 */
import type * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BalanceStateSchema } from '../balance/planner.ts';
import { AgreementSchema } from '../rendezvous/agreement.ts';
import { type PolicyState, PolicyStateSchema } from '../rescale/policy.ts';

export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /** Offset in elements in the fused buffer. */
  readonly offset: number;
  readonly size: number;
}

/** Several named float32 tensors in one buffer. */
export interface FusedValues {
  readonly specs: readonly TensorSpec[];
  readonly buffer: Float32Array;
}

export function fusedLayout(named: readonly { name: string; shape: readonly number[] }[]): {
  specs: TensorSpec[];
  length: number;
} {
  let offset = 0;
  const specs = named.map(({ name, shape }) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const spec = { name, shape: [...shape], offset, size };
    offset += size;
    return spec;
  });
  return { specs, length: offset };
}

/** Copies tensors to host memory, into one new buffer. */
export function fuseTensors(named: readonly { name: string; tensor: tf.Tensor }[]): FusedValues {
  const { specs, length } = fusedLayout(named.map((n) => ({ name: n.name, shape: n.tensor.shape })));
  const buffer = new Float32Array(length);
  named.forEach(({ tensor }, i) => {
    if (tensor.dtype !== 'float32')
      throw new Error(`tensor ${named[i]?.name} is ${tensor.dtype}, expected float32`);
    buffer.set(tensor.dataSync() as Float32Array, (specs[i] as TensorSpec).offset);
  });
  return { specs, buffer };
}

export function valuesOf(fused: FusedValues, spec: TensorSpec): Float32Array {
  return fused.buffer.subarray(spec.offset, spec.offset + spec.size);
}

const GenerationSchema = z.object({
  generation: z.int().min(0),
  worldSize: z.int().min(1),
  globalBatch: z.int().min(1),
  learningRate: z.number().positive(),
  firstStep: z.int().min(0),
  /** Scale-invariant iterations when it began (AdaScale); absent in earlier versions. */
  firstProgress: z.number().min(0).optional(),
  /** The spec revision the generation ran (absent for 0, and in checkpoints of earlier versions). */
  specRevision: z.int().min(0).optional(),
  /** The split of the global batch when it began, where balancing made it uneven. */
  perWorker: z.array(z.int().min(1)).optional(),
});

const EvalSchema = z.object({
  step: z.int().min(0),
  epoch: z.int().min(0),
  loss: z.number(),
  accuracy: z.number().min(0).max(1),
  samples: z.int().min(0),
});

/**
 * The preprocessing fitted on the training data (data/preprocess.ts), float32 arrays as base64 of
 * their little-endian bytes: it travels with every checkpoint, so a resumed run and whoever loads
 * the model transform inputs exactly as training did. `digest` (sha256 of the values) compares fits.
 */
export const PreprocessingSchema = z.object({
  digest: z.string(),
  normalize: z.enum(['none', 'scale', 'standardize']),
  offset: z.string(),
  scale: z.string(),
  pca: z
    .object({
      k: z.int().min(1),
      mean: z.string(),
      components: z.string(),
      variances: z.array(z.number()),
      explained: z.number(),
      fittedOn: z.int().min(0),
    })
    .optional(),
});
export type PreprocessingRecord = z.output<typeof PreprocessingSchema>;

export const TrainingStateSchema = z.object({
  step: z.int().min(0),
  /**
   * Scale-invariant iterations (Johnson et al. 2020): the sum of the AdaScale gains, the clock of the
   * schedules and of `stopping.steps`; equal to `step` for the other policies. Absent in checkpoints
   * of earlier versions (read as `step`).
   */
  progress: z.number().min(0).optional(),
  /** AdaScale: the moving averages of the σ² and μ² estimates the gain is computed from. */
  adascale: z.object({ sigma2: z.number().min(0), mu2: z.number().min(0) }).optional(),
  epoch: z.int().min(0),
  cursor: z.int().min(0),
  samples: z.int().min(0),
  shuffleSeed: z.int().min(0),
  modelSeed: z.int().min(0),
  worldSize: z.int().min(1),
  generation: z.int().min(0),
  generations: z.array(GenerationSchema),
  policy: PolicyStateSchema,
  /** The spec settings of the generation this state was trained in (rendezvous/agreement.ts). */
  agreement: AgreementSchema.optional(),
  /** spec.balancing: per-worker throughput estimates and the split in effect (absent: never measured). */
  balancing: BalanceStateSchema.optional(),
  lastEval: EvalSchema.nullable(),
  trainSeconds: z.number().min(0),
  dataset: z.object({ trainSamples: z.int().min(1), featureSize: z.int().min(1), classes: z.int().min(2) }),
  /** Absent in checkpoints of earlier versions (the fit on the data is used then). */
  preprocessing: PreprocessingSchema.optional(),
  completed: z.string().nullable(),
});

export type TrainingState = z.output<typeof TrainingStateSchema>;

/** The policy state of a world that never rescaled: the global batch as the spec says, scale 1. */
export const UNSCALED_POLICY: PolicyState = {
  policy: 'fixedGlobalBatch',
  targetScale: 1,
  fromScale: 1,
  warmupStart: 0,
  warmupSteps: 0,
  scale: 1,
};

/** The state of a run before its first step: where every field of TrainingState starts. */
export function initialTrainingState(
  start: Pick<TrainingState, 'shuffleSeed' | 'modelSeed' | 'dataset'> & { readonly policy?: PolicyState },
): TrainingState {
  return {
    step: 0,
    epoch: 0,
    cursor: 0,
    samples: 0,
    shuffleSeed: start.shuffleSeed,
    modelSeed: start.modelSeed,
    worldSize: 1,
    generation: 0,
    generations: [],
    policy: { ...(start.policy ?? UNSCALED_POLICY) },
    lastEval: null,
    trainSeconds: 0,
    dataset: { ...start.dataset },
    completed: null,
  };
}

export interface OptimizerSnapshot {
  readonly type: string;
  readonly iterations: number;
  readonly slots: FusedValues;
}

export interface Snapshot {
  /** The library that produced the topology, for model.json (e.g. "TensorFlow.js tfjs-layers v4.22.0"). */
  readonly producer: string;
  readonly topology: unknown;
  readonly weights: FusedValues;
  readonly optimizer: OptimizerSnapshot;
  readonly state: TrainingState;
  /** Shared communication state (communication/hooks.ts); absent when there is none. */
  readonly communication?: FusedValues | undefined;
}

/** Files a snapshot has only when it holds that part. */
export const OPTIONAL_SNAPSHOT_FILES = ['communication.json', 'communication.bin'] as const;

export const SNAPSHOT_FILES = [
  'model.json',
  'weights.bin',
  'optimizer.json',
  'optimizer.bin',
  'state.json',
] as const;
export type SnapshotFile = (typeof SNAPSHOT_FILES)[number] | (typeof OPTIONAL_SNAPSHOT_FILES)[number];

function bytesOf(values: Float32Array): Uint8Array {
  // Float32Array is little-endian on every platform Node runs on.
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function json(value: unknown): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(value, null, 1)}\n`);
}

export function encodeSnapshot(snapshot: Snapshot): Map<SnapshotFile, Uint8Array> {
  const weightSpecs = snapshot.weights.specs.map((s) => ({ name: s.name, shape: s.shape, dtype: 'float32' }));
  return new Map<SnapshotFile, Uint8Array>([
    [
      'model.json',
      json({
        format: 'layers-model',
        generatedBy: snapshot.producer,
        convertedBy: 'tensile',
        modelTopology: snapshot.topology,
        weightsManifest: [{ paths: ['weights.bin'], weights: weightSpecs }],
      }),
    ],
    ['weights.bin', bytesOf(snapshot.weights.buffer)],
    [
      'optimizer.json',
      json({
        type: snapshot.optimizer.type,
        iterations: snapshot.optimizer.iterations,
        slots: snapshot.optimizer.slots.specs.map((s) => ({ name: s.name, shape: s.shape })),
      }),
    ],
    ['optimizer.bin', bytesOf(snapshot.optimizer.slots.buffer)],
    ['state.json', json(snapshot.state)],
    ...(snapshot.communication === undefined
      ? []
      : ([
          [
            'communication.json',
            json({ tensors: snapshot.communication.specs.map((s) => ({ name: s.name, shape: s.shape })) }),
          ],
          ['communication.bin', bytesOf(snapshot.communication.buffer)],
        ] as const)),
  ]) as Map<SnapshotFile, Uint8Array>;
}

const CommunicationJsonSchema = z.object({
  tensors: z.array(z.object({ name: z.string(), shape: z.array(z.int().min(0)) })),
});

const ModelJsonSchema = z.object({
  generatedBy: z.string().optional(),
  modelTopology: z.unknown(),
  weightsManifest: z
    .array(
      z.object({
        paths: z.array(z.string()),
        weights: z.array(
          z.object({ name: z.string(), shape: z.array(z.int().min(0)), dtype: z.literal('float32') }),
        ),
      }),
    )
    .length(1),
});

const OptimizerJsonSchema = z.object({
  type: z.string(),
  iterations: z.int().min(0),
  slots: z.array(z.object({ name: z.string(), shape: z.array(z.int().min(0)) })),
});

function parseJson<T>(schema: z.ZodType<T>, bytes: Uint8Array | undefined, file: string): T {
  if (bytes === undefined) throw new Error(`${file} is missing`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new Error(`${file} is not JSON (${(error as Error).message})`);
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new Error(`${file}: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data;
}

function fusedFrom(
  named: readonly { name: string; shape: readonly number[] }[],
  bytes: Uint8Array | undefined,
  file: string,
): FusedValues {
  if (bytes === undefined) throw new Error(`${file} is missing`);
  const { specs, length } = fusedLayout(named);
  if (bytes.byteLength !== length * 4)
    throw new Error(`${file} holds ${bytes.byteLength} bytes, expected ${length * 4}`);
  const buffer = new Float32Array(length);
  new Uint8Array(buffer.buffer).set(bytes);
  return { specs, buffer };
}

/** The snapshot in a set of files; throws an Error saying which file is wrong. */
export function decodeSnapshot(files: ReadonlyMap<string, Uint8Array>): Snapshot {
  const model = parseJson(ModelJsonSchema, files.get('model.json'), 'model.json');
  const optimizer = parseJson(OptimizerJsonSchema, files.get('optimizer.json'), 'optimizer.json');
  const state = parseJson(TrainingStateSchema, files.get('state.json'), 'state.json');
  const manifest = model.weightsManifest[0];
  if (manifest === undefined) throw new Error('model.json has no weightsManifest');
  const communication = files.has('communication.json')
    ? parseJson(CommunicationJsonSchema, files.get('communication.json'), 'communication.json')
    : undefined;
  return {
    producer: model.generatedBy ?? 'unknown',
    topology: model.modelTopology,
    weights: fusedFrom(manifest.weights, files.get('weights.bin'), 'weights.bin'),
    optimizer: {
      type: optimizer.type,
      iterations: optimizer.iterations,
      slots: fusedFrom(optimizer.slots, files.get('optimizer.bin'), 'optimizer.bin'),
    },
    state,
    ...(communication === undefined
      ? {}
      : {
          communication: fusedFrom(
            communication.tensors,
            files.get('communication.bin'),
            'communication.bin',
          ),
        }),
  };
}
