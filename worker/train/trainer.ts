/**
 * One worker's part of data-parallel training, one step at a time.
 *
 * A step, given the world it runs in (rank, size, per-worker batches b_i, learning rate):
 *  1. the elastic sampler plans the global step; this rank takes its share of the epoch permutation;
 *  2. the share is split into micro-batches of at most `batch.maxPerWorker`; each one's gradient is
 *     of Σ loss / B (B = the step's global batch), so accumulating them gives this rank's gradient
 *     already weighted by b_i / B;
 *  3. the gradients (plus the loss and the correct count) go into ONE fused Float32Array, handed to
 *     the GradientReducer; the sum over ranks is the gradient of the global mean loss;
 *  4. the optimizer applies the reduced gradient at the world's learning rate;
 *  5. each rank's compute seconds of this step (forward, backward, batch preparation, waiting
 *     excluded) and the seconds it waited in the previous step's all-reduce travel in the same
 *     buffer, one slot per rank, so every rank reads every rank's times (worker/balance/planner.ts);
 *  6. non-trainable weights (batch-norm moving statistics), which each rank's forward pass moved by
 *     its own data, travel in the same buffer as changes weighted by b_i / B: every rank then sets
 *     them to the same weighted mean of the ranks' updates.
 * The state advances only after a complete reduce, so every rank holds the same state after a step.
 * How the gradients cross the wire is the world's `spec.communication` (communication/hooks.ts:
 * fp16, bf16, top-k, PowerSGD); with local SGD (communication/local-sgd.ts) a step applies this
 * rank's own gradient and every H-th step averages the weights — then the world's state is the one
 * at the last averaging (`committedStep`), which a new world rolls back to.
 * Tensors are disposed every step (tf.memory().numTensors stays flat); dropout masks are seeded by
 * (model seed, step, rank, micro-batch) so a resumed run draws the same masks.
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { gradientNoiseScale } from '../../operator/api/goodput-model.ts';
import type { CommunicationSpec, OptimizerSpec } from '../../operator/api/training-job.ts';
import type { AuditLog } from '../data/audit.ts';
import type { Dataset } from '../data/dataset.ts';
import { decodePreprocessing, normalizeInPlace } from '../data/preprocess.ts';
import {
  epochPermutation,
  planStep,
  type StepPlan,
  shardLocalPermutation,
  shareIndices,
} from '../data/sampler.ts';
import type { SampleStore } from '../data/store.ts';
import { type BuiltModel, dropoutLayers, dropoutSeeds, seedDropout } from '../model/build.ts';
import {
  type GradientStatistics,
  gainOf,
  gradientStatistics,
  microBatches,
  smoothStatistics,
} from '../rescale/policy.ts';
import { type CommunicationHook, hookFor, TopkHook } from './communication/hooks.ts';
import { LocalSgd } from './communication/local-sgd-weights.ts';
import { NativeStep } from './native-step.ts';
import { TrainingOptimizer } from './optimizer.ts';
import type { EvalResult, World } from './policy.ts';
import { type GradientReducer, LocalReducer } from './reducer.ts';
import {
  type FusedValues,
  fusedLayout,
  fuseTensors,
  type Snapshot,
  type TensorSpec,
  type TrainingState,
  valuesOf,
} from './snapshot.ts';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Probabilities are clipped before the log, as Keras does, so a confident mistake costs a finite loss. */
const EPSILON = 1e-7;

export interface StepResult {
  /** Completed steps after this one. */
  readonly step: number;
  readonly epoch: number;
  /** Mean loss and accuracy over the step's global batch. */
  readonly loss: number;
  readonly accuracy: number;
  readonly samples: number;
  /** Samples this rank trained on. */
  readonly localSamples: number;
  readonly endedEpoch: boolean;
  /** The rate applied: the world's, times the AdaScale gain. */
  readonly learningRate: number;
  /** AdaScale gain r ∈ [1, S] (1 for the other policies). */
  readonly gain: number;
  /** Per rank, in rank order: compute seconds of this step, and seconds waited in the previous all-reduce. */
  readonly computeSeconds: readonly number[];
  readonly waitSeconds: readonly number[];
  /**
   * Each rank's seconds from the end of the previous all-reduce to this step's compute (the update
   * and the step's bookkeeping; 0: not measured, the first step of a world).
   */
  readonly updateSeconds: readonly number[];
  /** Bytes this rank sent for the step (payloads of the collective; 0 for a local step). */
  readonly wireBytes: number;
  /** The gradient noise scale in samples, smoothed over steps (measured with AdaScale or `measureNoise`). */
  readonly noiseScale?: number;
}

/** Weight of the past in the noise scale's moving averages when AdaScale does not keep them. */
const NOISE_SMOOTHING = 0.95;

export interface StepOptions {
  /** Local SGD: average at the end of this step even if H steps have not passed (evaluation, end). */
  readonly averageNow?: boolean;
}

/** Turns stored samples into model inputs: normalisation and the layout in JS, PCA as a matMul. */
export class BatchMaker {
  private features: Float32Array;
  private labels: Int32Array;
  private readonly pcaMean: tf.Tensor | undefined;
  private readonly pcaComponents: tf.Tensor | undefined;

  constructor(
    private readonly dataset: Pick<Dataset, 'normalization' | 'pca'>,
    private readonly featureSize: number,
    private readonly inputShape: readonly number[],
  ) {
    this.features = new Float32Array(0);
    this.labels = new Int32Array(0);
    const pca = dataset.pca;
    this.pcaMean = pca === undefined ? undefined : tf.tensor1d(pca.mean);
    this.pcaComponents = pca === undefined ? undefined : tf.tensor2d(pca.components, [featureSize, pca.k]);
  }

  /** x [n, ...inputShape] and y [n] (int32) for the samples at `indices`; the caller disposes them. */
  make(store: SampleStore, indices: ArrayLike<number>): { x: tf.Tensor; y: tf.Tensor1D } {
    const n = indices.length;
    const d = this.featureSize;
    if (this.features.length < n * d) {
      this.features = new Float32Array(n * d);
      this.labels = new Int32Array(n);
    }
    store.read(indices, this.features, this.labels);
    normalizeInPlace(this.dataset.normalization, this.features, n);
    // The cpu backend keeps the array it is given (the scratch arrays are reused: copy); the others
    // copy it into their own memory anyway.
    const aliasing = tf.getBackend() === 'cpu';
    const values = aliasing ? this.features.slice(0, n * d) : this.features.subarray(0, n * d);
    const y = tf.tensor1d(aliasing ? this.labels.slice(0, n) : this.labels.subarray(0, n), 'int32');
    const mean = this.pcaMean;
    const components = this.pcaComponents;
    if (mean === undefined || components === undefined)
      return { x: tf.tensor(values, [n, ...this.inputShape]), y };
    const x = tf.tidy(() =>
      tf.reshape(tf.matMul(tf.sub(tf.tensor2d(values, [n, d]), mean), components), [n, ...this.inputShape]),
    );
    return { x, y };
  }

  get preprocessing(): Pick<Dataset, 'normalization' | 'pca'> {
    return this.dataset;
  }

  dispose(): void {
    this.pcaMean?.dispose();
    this.pcaComponents?.dispose();
  }
}

export interface TrainerOptions {
  readonly model: BuiltModel;
  readonly optimizer: OptimizerSpec;
  readonly dataset: Dataset;
  readonly maxPerWorker: number | undefined;
  readonly state: TrainingState;
  readonly audit?: AuditLog;
  /**
   * On the native backend, run a micro-batch's forward and backward pass as one TensorFlow function
   * where the model allows (native-step.ts); default true. False: always tfjs's per-op tape.
   */
  readonly stepFunction?: boolean;
  /** Told when the step function fails on its first run and the per-op tape takes over. */
  readonly onStepFallback?: (reason: string) => void;
}

/**
 * The line of a tfjs-node error that says what TensorFlow refused: its errors read
 * "Invalid TF_Status: <code>\nMessage: <what>"; other errors by their first line.
 */
export function tensorflowMessage(error: unknown): string {
  const lines = (error instanceof Error ? error.message : String(error)).split('\n');
  const message = lines.find((l) => l.startsWith('Message: '));
  return message === undefined ? (lines[0] ?? '') : message.slice('Message: '.length);
}

interface MicroBatchResult {
  readonly value: tf.Scalar;
  readonly grads: tf.NamedTensorMap;
  readonly correct: tf.Scalar | undefined;
}

export class Trainer {
  readonly state: Mutable<TrainingState>;
  /** The largest share computed at once (batch.maxPerWorker); the world's setting may change it. */
  maxPerWorker: number | undefined;
  private readonly model: tf.LayersModel;
  private readonly variables: tf.Variable[];
  private readonly gradientSpecs: TensorSpec[];
  private readonly statistics: NonTrainableWeights;
  private fused: Float32Array;
  private readonly gradientLength: number;
  private readonly optimizer: TrainingOptimizer;
  private batches: BatchMaker;
  private readonly dropout: tf.layers.Layer[];
  private readonly topology: unknown;
  private permutation: { epoch: number; order: Uint32Array } | undefined;
  private lastReadAhead: { epoch: number; from: number } | undefined;
  /** Seconds this rank waited in the last all-reduce (its peers' compute and the transfer). */
  private lastWait = 0;
  /**
   * When the last all-reduce here ended (undefined: none in this world). From then to the next step's
   * compute this rank applies the update and does the step's bookkeeping (progress, balancing,
   * snapshots): the work of a step that does not shrink with its batch, timed for the planner.
   */
  private reduceEnded: number | undefined;
  /** Per-sample σ² and μ² for the noise scale when AdaScale does not keep them (not elastic state). */
  private noise: GradientStatistics | undefined;
  private communication: CommunicationSpec | undefined;
  private hook: CommunicationHook = hookFor(undefined);
  private localSgd: LocalSgd | undefined;
  /** Shared communication state restored before the world's settings were known. */
  private restoredCommunication: FusedValues | undefined;
  /** The forward and backward pass as one TensorFlow function (native backend, supported layers). */
  private native: NativeStep | undefined;
  private perOpReason: string | undefined;
  private functionSteps = 0;

  constructor(private readonly options: TrainerOptions) {
    this.model = options.model.model;
    this.maxPerWorker = options.maxPerWorker;
    this.state = structuredClone(options.state) as Mutable<TrainingState>;
    const trainable = this.model.trainableWeights;
    this.variables = trainable.map((w) => w.read() as tf.Variable);
    const layout = fusedLayout(trainable.map((w) => ({ name: w.originalName, shape: w.shape as number[] })));
    this.gradientSpecs = layout.specs;
    // Gradients, then the loss and the number of correct predictions, summed by the same all-reduce.
    this.gradientLength = layout.length;
    this.fused = new Float32Array(layout.length + 2);
    this.statistics = new NonTrainableWeights(this.model.nonTrainableWeights);
    this.optimizer = new TrainingOptimizer(
      options.optimizer,
      trainable.map((w, i) => ({ name: w.originalName, variable: this.variables[i] as tf.Variable })),
      options.stepFunction !== false,
    );
    this.batches = new BatchMaker(
      options.dataset,
      options.dataset.train.featureSize,
      options.model.inputShape,
    );
    this.dropout = dropoutLayers(this.model);
    this.topology = this.model.toJSON(null, false);
    const native =
      options.stepFunction === false
        ? 'turned off (stepFunction: false)'
        : NativeStep.for(this.model, this.variables);
    if (typeof native === 'string') this.perOpReason = native;
    else this.native = native;
  }

  /**
   * AdaScale: this step's σ² and μ² from the all-reduced per-worker norms, folded into the moving
   * averages of the state (so they are checkpointed and broadcast with it), and the gain of those.
   * Every rank reads the same reduced buffer, hence computes the same gain.
   */
  private adascaleGain(world: World, reduced: Float32Array, samples: number): number {
    const settings = world.adascale;
    if (settings === undefined) return 1;
    const lossIndex = this.gradientLength;
    let mean = 0;
    for (let j = 0; j < this.gradientLength; j++) mean += (reduced[j] as number) ** 2;
    const norms = Array.from(reduced.subarray(lossIndex + 2, lossIndex + 2 + world.size));
    const current = gradientStatistics(norms, mean, samples / world.size, settings.baseBatch);
    const smoothed = smoothStatistics(this.state.adascale, current, settings.smoothing);
    if (smoothed !== undefined) this.state.adascale = { sigma2: smoothed.sigma2, mu2: smoothed.mu2 };
    return gainOf(smoothed, settings.scale);
  }

  /**
   * The gradient noise scale φ = tr(Σ)/‖G‖² (samples): from AdaScale's averages when it runs, else
   * from this step's per-worker norms folded into averages of per-sample statistics of its own.
   */
  private noiseScaleOf(world: World, reduced: Float32Array, samples: number): number | undefined {
    if (world.adascale !== undefined)
      return gradientNoiseScale(this.state.adascale, world.adascale.baseBatch);
    const lossIndex = this.gradientLength;
    let mean = 0;
    for (let j = 0; j < this.gradientLength; j++) mean += (reduced[j] as number) ** 2;
    const norms = Array.from(reduced.subarray(lossIndex + 2, lossIndex + 2 + world.size));
    const current = gradientStatistics(norms, mean, samples / world.size, 1);
    this.noise = smoothStatistics(this.noise, current, NOISE_SMOOTHING);
    return gradientNoiseScale(this.noise, 1);
  }

  /** Elements of the fused buffer each step all-reduces. */
  get fusedLength(): number {
    return this.fused.length;
  }

  /** How many of the fused buffer's first values are gradients (then loss, correct count, times…). */
  get gradientSize(): number {
    return this.gradientLength;
  }

  private epochOrder(epoch: number): Uint32Array {
    if (this.permutation?.epoch !== epoch) {
      const train = this.options.dataset.train;
      const local = train.locality;
      this.permutation = {
        epoch,
        order:
          local === undefined
            ? epochPermutation(train.size, this.state.shuffleSeed, epoch)
            : shardLocalPermutation(
                train.size,
                this.state.shuffleSeed,
                epoch,
                local.blockSamples,
                local.groupBlocks,
              ),
      };
    }
    return this.permutation.order;
  }

  /** Asks a streaming store to read ahead the samples of the steps after this one (a group's worth). */
  private readAhead(plan: StepPlan): void {
    const train = this.options.dataset.train;
    const local = train.locality;
    if (local === undefined || train.prefetch === undefined || plan.endsEpoch) return;
    const ahead = local.blockSamples * local.groupBlocks;
    const from = plan.next.cursor;
    // A look at the window costs a pass over a group's indices: every eighth of a group is enough.
    const last = this.lastReadAhead;
    if (last !== undefined && last.epoch === plan.epoch && from >= last.from && from - last.from < ahead / 8)
      return;
    this.lastReadAhead = { epoch: plan.epoch, from };
    train.prefetch(this.epochOrder(plan.epoch).subarray(from, Math.min(train.size, from + ahead)));
  }

  /**
   * The forward and backward pass of one micro-batch: its gradients, loss and correct count are added
   * into `fused` (or, `direct`, the gradient tensors are returned to be applied as they are).
   */
  private microBatch(
    slice: Uint32Array,
    micro: number,
    rank: number,
    samples: number,
    direct: boolean,
  ): tf.NamedTensorMap | undefined {
    const fused = this.fused;
    const lossIndex = this.gradientLength;
    const { x, y } = this.batches.make(this.options.dataset.train, slice);
    seedDropout(this.dropout, this.state.modelSeed, this.state.step, rank, micro);
    const { value, grads, correct } =
      this.native === undefined ? this.perOpGradients(x, y, samples) : this.functionGradients(x, y, samples);
    this.variables.forEach((variable, i) => {
      const spec = this.gradientSpecs[i] as TensorSpec;
      const gradient = grads[variable.name];
      if (gradient === undefined || direct) return;
      const values = gradient.dataSync() as Float32Array;
      if (micro === 0) fused.set(values, spec.offset);
      else
        for (let j = 0; j < spec.size; j++)
          fused[spec.offset + j] = (fused[spec.offset + j] as number) + (values[j] as number);
    });
    fused[lossIndex] = (fused[lossIndex] as number) + (value.dataSync()[0] as number);
    fused[lossIndex + 1] =
      (fused[lossIndex + 1] as number) + ((correct as tf.Scalar | undefined)?.dataSync()[0] ?? 0);
    tf.dispose(
      [x, y, value, correct as tf.Scalar | undefined, ...(direct ? [] : Object.values(grads))].filter(
        (t) => t !== undefined,
      ),
    );
    return direct ? grads : undefined;
  }

  /** The micro-batch's gradients by tfjs's tape: one eager op per forward and backward op. */
  private perOpGradients(x: tf.Tensor, y: tf.Tensor1D, samples: number): MicroBatchResult {
    let correct: tf.Scalar | undefined;
    const { value, grads } = tf.variableGrads(() => {
      const probabilities = this.model.apply(x, { training: true }) as tf.Tensor2D;
      const oneHot = tf.oneHot(y, probabilities.shape[1]);
      const logLikelihood = tf.sum(
        tf.mul(oneHot, tf.log(tf.clipByValue(probabilities, EPSILON, 1 - EPSILON))),
      );
      correct = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(probabilities, 1), y), 'float32'))) as tf.Scalar;
      return tf.mul(logLikelihood, -1 / samples) as tf.Scalar;
    }, this.variables);
    return { value, grads, correct };
  }

  /** The same as one TensorFlow function call (native-step.ts). */
  private functionGradients(x: tf.Tensor, y: tf.Tensor1D, samples: number): MicroBatchResult {
    let out: ReturnType<NativeStep['run']>;
    try {
      out = (this.native as NativeStep).run(x, y, 1 / samples, dropoutSeeds(this.dropout));
    } catch (error) {
      // A graph TensorFlow accepted but cannot run (a layer config the checks missed, a device
      // without a kernel): before any step took this path, the per-op tape takes over for good.
      if (this.functionSteps > 0) throw error;
      this.native = undefined;
      this.perOpReason = `the step function failed: ${tensorflowMessage(error)}`;
      this.options.onStepFallback?.(this.perOpReason);
      return this.perOpGradients(x, y, samples);
    }
    this.functionSteps++;
    const grads: tf.NamedTensorMap = {};
    this.variables.forEach((variable, i) => {
      grads[variable.name] = out.gradients[i] as tf.Tensor;
    });
    return { value: out.loss, grads, correct: out.correct };
  }

  /** How this trainer computes gradients: one function call a micro-batch, or op by op (and why). */
  get stepPath(): { readonly path: 'function' | 'per-op'; readonly reason?: string } {
    return this.native === undefined ? { path: 'per-op', reason: this.perOpReason } : { path: 'function' };
  }

  /**
   * FedProx (Li et al. 2020): from now on every step's gradient gets μ·(w − w₀), the gradient of the
   * proximal term μ/2·‖w − w₀‖², with w₀ the weights now (the round's start). Undefined: off.
   */
  anchorProximal(mu: number | undefined): void {
    if (this.proximal !== undefined) tf.dispose(this.proximal.anchor);
    this.proximal =
      mu === undefined ? undefined : { mu, anchor: this.variables.map((v) => tf.keep(v.clone())) };
  }

  private proximal: { mu: number; anchor: tf.Tensor[] } | undefined;

  /** Applies the world's gradient: the kept tensors of a direct step, else the reduced buffer's. */
  private applyGradients(
    reduced: Float32Array,
    kept: tf.NamedTensorMap | undefined,
    learningRate: number,
  ): void {
    const proximal = this.proximal;
    const gradients = this.gradientSpecs.map((spec, i) => {
      const own = kept?.[(this.variables[i] as tf.Variable).name];
      const g =
        kept !== undefined
          ? (own ?? tf.zeros(spec.shape as number[]))
          : tf.tensor(reduced.subarray(spec.offset, spec.offset + spec.size), spec.shape as number[]);
      const anchor = proximal?.anchor[i];
      if (proximal === undefined || anchor === undefined) return g;
      const pulled = tf.tidy(() =>
        tf.add(g, tf.mul(tf.sub(this.variables[i] as tf.Variable, anchor), proximal.mu)),
      );
      g.dispose();
      return pulled;
    });
    try {
      this.optimizer.apply(gradients, learningRate);
    } finally {
      tf.dispose(gradients);
    }
  }

  /** One training step in `world`; the gradients are summed across ranks by `reducer`. */
  async step(
    world: World,
    reducer: GradientReducer,
    signal?: AbortSignal,
    options: StepOptions = {},
  ): Promise<StepResult> {
    const started = performance.now();
    const train = this.options.dataset.train;
    const plan = planStep(
      train.size,
      { epoch: this.state.epoch, cursor: this.state.cursor },
      world.perWorker,
    );
    const share = plan.shares[world.rank];
    if (share === undefined)
      throw new RangeError(`rank ${world.rank} outside a world of ${world.perWorker.length}`);
    const indices = shareIndices(this.epochOrder(plan.epoch), share);
    this.readAhead(plan);
    // AdaScale (and the noise scale of goodput autoscaling): one more slot per rank for the squared
    // norm of its own gradient, in the same all-reduce.
    const adascale = (world.adascale !== undefined || world.measureNoise === true) && world.size > 1;
    // Alone, a rank's statistics are the world's already: nothing to average.
    const statistics = world.size > 1 ? this.statistics : undefined;
    const timesOffset = this.gradientLength + 2 + (adascale ? world.size : 0);
    const statisticsOffset = timesOffset + 3 * world.size;
    const length = statisticsOffset + (statistics?.length ?? 0);
    if (this.fused.length !== length) this.fused = new Float32Array(length);
    const fused = this.fused;
    fused.fill(0);
    const sizes = microBatches(indices.length, this.maxPerWorker);
    const lossIndex = this.gradientLength;
    // A world of one with one micro-batch: the sum over ranks is this rank's own gradient, so the
    // gradient tensors are applied as they are instead of being copied out into `fused` and back
    // (bit-identical: both are the same float32 values). On the native backend the two copies cost
    // ~8 % of an MLP step.
    const direct = sizes.length === 1 && !adascale && reducer instanceof LocalReducer;
    let kept: tf.NamedTensorMap | undefined;
    statistics?.remember();
    let first = 0;
    sizes.forEach((size, micro) => {
      const slice = indices.subarray(first, first + size);
      first += size;
      const grads = this.microBatch(slice, micro, world.rank, plan.samples, direct);
      if (direct) kept = grads;
    });
    // Recorded before the all-reduce: once sent, this share may be in the sum that some rank applies.
    // Whether the step counts is decided by the history (committedRecords), not by this rank.
    this.options.audit?.record(world.generation, plan.epoch, this.state.step, indices);
    if (adascale) {
      // This rank's gradient is weighted by b_i/B; its own mean gradient is that times B/b_i.
      const weight = plan.samples / Math.max(1, indices.length);
      let norm = 0;
      for (let j = 0; j < this.gradientLength; j++) norm += ((fused[j] as number) * weight) ** 2;
      fused[lossIndex + 2 + world.rank] = norm;
    }
    statistics?.writeChanges(fused, statisticsOffset, indices.length / plan.samples);
    fused[timesOffset + world.rank] = (performance.now() - started) / 1000;
    fused[timesOffset + world.size + world.rank] = this.lastWait;
    fused[timesOffset + 2 * world.size + world.rank] =
      this.reduceEnded === undefined ? 0 : (started - this.reduceEnded) / 1000;
    const weight = indices.length / plan.samples;
    const local =
      this.localSgd !== undefined &&
      world.size > 1 &&
      !adascale &&
      !this.localSgd.synchronousAt(this.state.step);
    if (local) return this.localStep(world, reducer, signal, plan, indices.length, options);
    let reduced: Float32Array;
    const reduceStarted = performance.now();
    try {
      reduced =
        world.size > 1
          ? await this.hook.reduce({
              fused,
              gradientLength: this.gradientLength,
              specs: this.gradientSpecs,
              weight,
              step: this.state.step,
              seed: this.state.modelSeed,
              rank: world.rank,
              size: world.size,
              reducer,
              signal,
            })
          : await reducer.allReduce(fused, signal);
      this.reduceEnded = performance.now();
      this.lastWait = (this.reduceEnded - reduceStarted) / 1000;
    } catch (error) {
      this.lastWait = 0;
      this.reduceEnded = undefined;
      if (kept !== undefined) tf.dispose(Object.values(kept));
      // The step is not applied anywhere: neither are the statistics its forward pass moved.
      statistics?.revert();
      throw error;
    }
    statistics?.applyChanges(reduced, statisticsOffset);
    const gain = adascale ? this.adascaleGain(world, reduced, plan.samples) : 1;
    const noiseScale = adascale ? this.noiseScaleOf(world, reduced, plan.samples) : undefined;
    const learningRate = world.learningRate * gain;
    this.applyGradients(reduced, kept, learningRate);
    this.state.progress = (this.state.progress ?? this.state.step) + gain;
    this.state.step += 1;
    this.state.epoch = plan.next.epoch;
    this.state.cursor = plan.next.cursor;
    this.state.samples += plan.samples;
    // Post-local SGD's synchronous steps: every one is an averaging point.
    if (this.localSgd !== undefined && world.size > 1) this.localSgd.anchorAt(this.baseSnapshot());
    return {
      step: this.state.step,
      epoch: this.state.epoch,
      loss: reduced[lossIndex] as number,
      accuracy: (reduced[lossIndex + 1] as number) / plan.samples,
      samples: plan.samples,
      localSamples: indices.length,
      endedEpoch: plan.endsEpoch,
      learningRate,
      gain,
      computeSeconds: Array.from(reduced.subarray(timesOffset, timesOffset + world.size)),
      waitSeconds: Array.from(reduced.subarray(timesOffset + world.size, timesOffset + 2 * world.size)),
      updateSeconds: Array.from(reduced.subarray(timesOffset + 2 * world.size, statisticsOffset)),
      wireBytes: world.size > 1 ? this.hook.lastWireBytes : 0,
      ...(noiseScale === undefined ? {} : { noiseScale }),
    };
  }

  /**
   * A local SGD step: this rank's own mean gradient (its share's, not weighted by b_i / B) applied
   * here; at the H-th step the weights are averaged. The loss and accuracy are this rank's.
   */
  private async localStep(
    world: World,
    reducer: GradientReducer,
    signal: AbortSignal | undefined,
    plan: ReturnType<typeof planStep>,
    localSamples: number,
    options: StepOptions,
  ): Promise<StepResult> {
    const local = this.localSgd as LocalSgd;
    const fused = this.fused;
    // No all-reduce of this step: nothing to time the next step's fixed work from.
    this.reduceEnded = undefined;
    const lossIndex = this.gradientLength;
    const scale = plan.samples / Math.max(1, localSamples);
    for (let j = 0; j < this.gradientLength; j++) fused[j] = (fused[j] as number) * scale;
    this.applyGradients(fused, undefined, world.learningRate);
    const after = this.state.step + 1;
    let wireBytes = 0;
    if (local.due(after, options.averageNow === true || plan.endsEpoch))
      wireBytes = await local.average(this.model.weights, reducer, signal, world.size, 1 / scale, {
        step: this.state.step,
        rank: world.rank,
      });
    this.state.progress = (this.state.progress ?? this.state.step) + 1;
    this.state.step = after;
    this.state.epoch = plan.next.epoch;
    this.state.cursor = plan.next.cursor;
    this.state.samples += plan.samples;
    if (wireBytes > 0) local.anchorAt(this.baseSnapshot());
    return {
      step: this.state.step,
      epoch: this.state.epoch,
      loss: (fused[lossIndex] as number) * scale,
      accuracy: (fused[lossIndex + 1] as number) / Math.max(1, localSamples),
      samples: plan.samples,
      localSamples,
      endedEpoch: plan.endsEpoch,
      learningRate: world.learningRate,
      gain: 1,
      wireBytes,
      // Ranks step on their own between averagings: no all-reduce carries their times, so the
      // balancing planner keeps its estimates (local SGD and proportional balancing do not mix).
      computeSeconds: [],
      waitSeconds: [],
      updateSeconds: [],
    };
  }

  /** The time until the next step is not this step's fixed work (an evaluation, a snapshot). */
  untimedGap(): void {
    this.reduceEnded = undefined;
  }

  /**
   * The communication settings of a new world. Local SGD first rolls back to its last averaging
   * (what this rank did since then, its peers never saw), so the world starts from the state every
   * rank agrees on; per-rank compression state (residuals) starts over, shared state is kept.
   */
  beginWorld(communication: CommunicationSpec | undefined, size: number): void {
    // The time until this world's first step is the rendezvous', not a step's.
    this.reduceEnded = undefined;
    const before = this.localSgd;
    const rollback = before?.anchor;
    if (rollback !== undefined && rollback.state.step !== this.state.step) this.restoreBase(rollback);
    const shared = before?.sharedState() ?? this.hook.sharedState() ?? this.restoredCommunication;
    this.restoredCommunication = undefined;
    if (JSON.stringify(communication ?? {}) !== JSON.stringify(this.communication ?? {})) {
      this.hook = hookFor(communication);
      if (shared !== undefined) this.hook.restoreShared(shared);
    } else this.hook.keepLocalAt(this.state.step);
    this.communication = communication;
    this.localSgd = size > 1 ? localSgdFor(communication, this.model.weights) : undefined;
    if (shared !== undefined) this.localSgd?.restoreShared(shared);
    this.localSgd?.adoptResidual(before, this.state.step);
    // Kept (and checkpointed) for a later world when neither strategy holds it now.
    if (this.localSgd === undefined && this.hook.sharedState() === undefined)
      this.restoredCommunication = shared;
    this.localSgd?.anchorAt(this.baseSnapshot());
  }

  /** This rank's top-k error-feedback residual (tests and diagnostics); undefined when none is owed. */
  get communicationResidual(): Float32Array | undefined {
    const hook = this.hook instanceof TopkHook ? this.hook.sparsifier : undefined;
    return (this.localSgd?.sparsifier ?? hook)?.pending;
  }

  /** The last step every rank of the world holds (local SGD: the last averaging). */
  get committedStep(): number {
    return this.localSgd?.anchor?.state.step ?? this.state.step;
  }

  /** Whether this rank's weights are the world's (always, but between local SGD averagings). */
  get synced(): boolean {
    return this.committedStep === this.state.step;
  }

  /**
   * Mean loss and accuracy over `store` (inference mode: no dropout, batch-norm moving statistics);
   * undefined when `signal` aborts it.
   */
  evaluate(
    store: SampleStore,
    batchSize = 1000,
    signal?: AbortSignal,
  ): Omit<EvalResult, 'step' | 'epoch'> | undefined {
    const sums = this.evaluateSums(store, 0, store.size, batchSize, signal);
    if (sums === undefined) return undefined;
    const samples = store.size;
    return {
      loss: samples === 0 ? 0 : sums.loss / samples,
      accuracy: samples === 0 ? 0 : sums.correct / samples,
      samples,
    };
  }

  /**
   * Summed loss and correct predictions over samples [from, to) of `store`: a rank's shard of a
   * distributed evaluation, whose sums the world adds up.
   */
  evaluateSums(
    store: SampleStore,
    from: number,
    to: number,
    batchSize = 1000,
    signal?: AbortSignal,
  ): { loss: number; correct: number } | undefined {
    let lossSum = 0;
    let correct = 0;
    const indices = new Uint32Array(Math.max(0, Math.min(batchSize, to - from)));
    for (let start = from; start < to; start += batchSize) {
      // An evaluation of a large set takes seconds: a stop request must not wait for it.
      if (signal?.aborted) return undefined;
      const count = Math.min(batchSize, to - start);
      for (let i = 0; i < count; i++) indices[i] = start + i;
      const { x, y } = this.batches.make(store, indices.subarray(0, count));
      const sums = tf.tidy(() => {
        // predict() cuts its input into batches of 32 unless told otherwise: three times slower here.
        const probabilities = this.model.predict(x, { batchSize: count }) as tf.Tensor2D;
        const oneHot = tf.oneHot(y, probabilities.shape[1]);
        const loss = tf.neg(
          tf.sum(tf.mul(oneHot, tf.log(tf.clipByValue(probabilities, EPSILON, 1 - EPSILON)))),
        );
        const hits = tf.sum(tf.cast(tf.equal(tf.argMax(probabilities, 1), y), 'float32'));
        return tf.stack([loss, hits]);
      });
      const [loss, hits] = sums.dataSync();
      tf.dispose([x, y, sums]);
      lossSum += loss as number;
      correct += hits as number;
    }
    return { loss: lossSum, correct };
  }

  /**
   * Weights, optimizer slots, state and shared communication state in host memory: the only part of
   * a checkpoint that blocks training. Between local SGD averagings, the state of the last one.
   */
  snapshot(): Snapshot {
    this.options.audit?.flush();
    const anchor = this.localSgd?.anchor;
    // A copy: the checkpoint writer takes the buffers it is given (they move to its thread).
    const base = anchor !== undefined && !this.synced ? copySnapshot(anchor) : this.baseSnapshot();
    const kept = this.restoredCommunication;
    const communication =
      this.localSgd?.sharedState() ??
      this.hook.sharedState() ??
      (kept === undefined ? undefined : { specs: kept.specs, buffer: kept.buffer.slice() });
    return communication === undefined ? base : { ...base, communication };
  }

  private baseSnapshot(): Snapshot {
    const weights = fuseTensors(this.model.weights.map((w) => ({ name: w.originalName, tensor: w.read() })));
    return {
      producer: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
      topology: this.topology,
      weights,
      optimizer: this.optimizer.snapshot(),
      state: structuredClone(this.state),
    };
  }

  /** Continues from a snapshot of the same model (weights matched by name). */
  restore(snapshot: Snapshot): void {
    this.restoreBase(snapshot);
    this.restoredCommunication = snapshot.communication;
    this.hook.keepLocalAt(snapshot.state.step);
    this.localSgd?.sparsifier?.keepAt(snapshot.state.step);
    if (snapshot.communication !== undefined) {
      this.hook.restoreShared(snapshot.communication);
      this.localSgd?.restoreShared(snapshot.communication);
    }
    this.localSgd?.anchorAt(this.baseSnapshot());
  }

  private restoreBase(snapshot: Snapshot): void {
    const byName = new Map(snapshot.weights.specs.map((s) => [s.name, s]));
    for (const weight of this.model.weights) {
      const saved = byName.get(weight.originalName);
      if (saved === undefined) throw new Error(`the snapshot has no weight ${weight.originalName}`);
      if (saved.shape.join(',') !== weight.shape.join(','))
        throw new Error(
          `weight ${weight.originalName} has shape [${saved.shape}] in the snapshot, [${weight.shape}] in the model`,
        );
    }
    for (const weight of this.model.weights) {
      const saved = byName.get(weight.originalName) as TensorSpec;
      tf.tidy(() => {
        weight.write(tf.tensor(valuesOf(snapshot.weights, saved).slice(), saved.shape as number[]));
      });
    }
    this.optimizer.restore(snapshot.optimizer);
    const saved = snapshot.state.preprocessing;
    const changed = saved !== undefined && saved.digest !== this.state.preprocessing?.digest;
    Object.assign(this.state, structuredClone(snapshot.state));
    // The model was trained on inputs transformed by the snapshot's fit: it goes on with that one.
    if (changed) this.usePreprocessing(decodePreprocessing(saved));
  }

  /** Transforms inputs with `preprocessing` (a snapshot's) instead of the fit on this data. */
  private usePreprocessing(preprocessing: Pick<Dataset, 'normalization' | 'pca'>): void {
    this.batches.dispose();
    this.batches = new BatchMaker(
      preprocessing,
      this.options.dataset.train.featureSize,
      this.options.model.inputShape,
    );
  }

  /** The preprocessing inputs are transformed with (the data's fit, or a resumed snapshot's). */
  get preprocessing(): Pick<Dataset, 'normalization' | 'pca'> {
    return this.batches.preprocessing;
  }

  /**
   * A digest of the bits of every weight, trainable or not (batch-norm statistics): equal on every
   * rank of a world after every step.
   */
  weightsChecksum(): string {
    const hash = createHash('sha256');
    for (const weight of this.model.weights) {
      const values = weight.read().dataSync() as Float32Array;
      hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    }
    return hash.digest('hex').slice(0, 16);
  }

  /** How many weights the checksum covers (trainable and not). */
  get checksummedWeights(): number {
    return this.model.weights.length;
  }

  dispose(): void {
    this.optimizer.dispose();
    this.batches.dispose();
    this.anchorProximal(undefined);
  }
}

function copySnapshot(snapshot: Snapshot): Snapshot {
  return {
    ...snapshot,
    weights: { specs: snapshot.weights.specs, buffer: snapshot.weights.buffer.slice() },
    optimizer: {
      ...snapshot.optimizer,
      slots: { specs: snapshot.optimizer.slots.specs, buffer: snapshot.optimizer.slots.buffer.slice() },
    },
    state: structuredClone(snapshot.state),
  };
}

/**
 * The non-trainable weights of a model and their values before a step. A rank's forward pass moves
 * them by its own batch; the world agrees on old + Σ_i (b_i / B)·(new_i − old), where `old` is the
 * same on every rank. Changes rather than values are summed so that a weight no step moves (a frozen
 * layer) stays bit for bit what it was, instead of picking up rounding from Σ_i (b_i / B)·old.
 */
class NonTrainableWeights {
  private readonly specs: TensorSpec[];
  readonly length: number;
  private readonly before: Float32Array;

  constructor(private readonly weights: readonly tf.LayerVariable[]) {
    const layout = fusedLayout(weights.map((w) => ({ name: w.originalName, shape: w.shape as number[] })));
    this.specs = layout.specs;
    this.length = layout.length;
    this.before = new Float32Array(layout.length);
  }

  remember(): void {
    this.weights.forEach((weight, i) => {
      const spec = this.specs[i] as TensorSpec;
      this.before.set(weight.read().dataSync() as Float32Array, spec.offset);
    });
  }

  /** This rank's changes since `remember`, times `weight` (b_i / B), into `fused` at `offset`. */
  writeChanges(fused: Float32Array, offset: number, weight: number): void {
    this.weights.forEach((variable, i) => {
      const spec = this.specs[i] as TensorSpec;
      const now = variable.read().dataSync() as Float32Array;
      for (let j = 0; j < spec.size; j++) {
        const k = spec.offset + j;
        fused[offset + k] = ((now[j] as number) - (this.before[k] as number)) * weight;
      }
    });
  }

  /** Sets every weight to its value before the step plus the world's summed change. */
  applyChanges(reduced: Float32Array, offset: number): void {
    this.weights.forEach((variable, i) => {
      const spec = this.specs[i] as TensorSpec;
      const values = new Float32Array(spec.size);
      for (let j = 0; j < spec.size; j++) {
        const k = spec.offset + j;
        values[j] = (this.before[k] as number) + (reduced[offset + k] as number);
      }
      tf.tidy(() => {
        variable.write(tf.tensor(values, spec.shape as number[]));
      });
    });
  }

  revert(): void {
    this.weights.forEach((variable, i) => {
      const spec = this.specs[i] as TensorSpec;
      const values = this.before.slice(spec.offset, spec.offset + spec.size);
      tf.tidy(() => {
        variable.write(tf.tensor(values, spec.shape as number[]));
      });
    });
  }
}

/**
 * The local-optimizer strategy of a world of more than one rank: local SGD (H > 1, optionally after
 * synchronous steps) or top-k of the updates (H = 1); undefined when the gradients are all-reduced.
 */
function localSgdFor(
  communication: CommunicationSpec | undefined,
  weights: readonly tf.LayerVariable[],
): LocalSgd | undefined {
  const steps = communication?.localSteps ?? 1;
  const topk = communication?.compression === 'topk' ? communication.topk : undefined;
  if (communication?.compression === 'topk' && (topk?.sparsify ?? 'update') === 'update')
    return new LocalSgd(1, undefined, weights, {
      sparsify: {
        ratio: topk?.ratio ?? 0.01,
        errorFeedback: topk?.errorFeedback ?? true,
        warmupSteps: topk?.warmupSteps ?? 0,
      },
    });
  if (steps <= 1) return undefined;
  return new LocalSgd(steps, communication?.outerOptimizer, weights, {
    startAfterSteps: communication?.localStartAfterSteps ?? 0,
  });
}
