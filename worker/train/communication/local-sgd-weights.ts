/**
 * Local SGD on a tfjs model: the anchor (the snapshot of the last averaging, the state every rank of
 * the world holds), the outer momentum, and the averaging itself (local-sgd.ts does the arithmetic).
 *
 * The same machinery carries top-k of the updates (`sparsify`, H = 1): every rank applies its own
 * optimizer step, and what the world averages is the top-k of each rank's change of the weights plus
 * its residual; every rank applies the same sum, so the weights stay identical while the optimizer
 * slots are each rank's own (Deep Gradient Compression's momentum correction, with Adam's moments
 * in place of the momentum). Non-trainable weights (batch-norm statistics) always go dense.
 */
import * as tf from '@tensorflow/tfjs';
import type { GradientReducer } from '../reducer.ts';
import type { FusedValues, Snapshot } from '../snapshot.ts';
import { averagingDue, type OuterOptimizer, outerStep, weightedDelta } from './local-sgd.ts';
import { allGatherBytes, ringAllReduceBytes } from './math.ts';
import { type SparseSettings, Sparsifier, sparsePayload, sumSparsePayloads } from './sparse.ts';

const MOMENTUM = 'outer/momentum';

export class LocalSgd {
  /** The state at the last averaging; a new world rolls back to it. */
  anchor: Snapshot | undefined;
  private momentum: Float32Array | undefined;
  private readonly trainable: Uint8Array;
  private readonly length: number;
  readonly sparsifier: Sparsifier | undefined;
  /** Positions of the trainable and the other weights in the flat layout (sparsify only). */
  private split: { trainable: Uint32Array; other: Uint32Array } | undefined;

  constructor(
    private readonly steps: number,
    private readonly outer: OuterOptimizer | undefined,
    weights: readonly tf.LayerVariable[],
    private readonly options: { startAfterSteps?: number; sparsify?: SparseSettings } = {},
  ) {
    this.length = weights.reduce((n, w) => n + w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0);
    this.trainable = new Uint8Array(this.length);
    let at = 0;
    for (const w of weights) {
      const size = w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
      if (w.trainable) this.trainable.fill(1, at, at + size);
      at += size;
    }
    if (outer !== undefined) this.momentum = new Float32Array(this.length);
    if (options.sparsify !== undefined) {
      this.sparsifier = new Sparsifier(options.sparsify);
      const trainable: number[] = [];
      const other: number[] = [];
      for (let i = 0; i < this.length; i++) (this.trainable[i] === 1 ? trainable : other).push(i);
      this.split = { trainable: Uint32Array.from(trainable), other: Uint32Array.from(other) };
    }
  }

  due(stepsAfter: number, forced: boolean): boolean {
    return averagingDue(stepsAfter, this.steps, forced);
  }

  /** Post-local SGD: the step after `step` completed steps is a synchronous one. */
  synchronousAt(step: number): boolean {
    return step < (this.options.startAfterSteps ?? 0);
  }

  /** Carries the residual of the world before over, when it belongs at `step` (see Sparsifier.keepAt). */
  adoptResidual(before: LocalSgd | undefined, step: number): void {
    const from = before?.sparsifier;
    if (from === undefined || this.sparsifier === undefined) return;
    from.keepAt(step);
    this.sparsifier.takeFrom(from);
  }

  anchorAt(snapshot: Snapshot): void {
    this.anchor = snapshot;
  }

  /**
   * Averages the ranks' weights (every weight of the model, in model.weights order: the layout of a
   * snapshot's weights) and writes the result; returns the bytes this rank sent.
   */
  async average(
    weights: readonly tf.LayerVariable[],
    reducer: GradientReducer,
    signal: AbortSignal | undefined,
    size: number,
    weight: number,
    position: { step: number; rank: number } = { step: 0, rank: 0 },
  ): Promise<number> {
    const { step, rank } = position;
    const anchor = this.anchor?.weights.buffer;
    if (anchor?.length !== this.length) throw new Error('local SGD has no anchor to average from');
    const live = new Float32Array(this.length);
    let at = 0;
    for (const w of weights) {
      const values = w.read().dataSync() as Float32Array;
      live.set(values, at);
      at += values.length;
    }
    const delta = new Float32Array(this.length);
    weightedDelta(anchor, live, weight, delta);
    let bytes = ringAllReduceBytes(this.length, 4, size);
    let sum: Float32Array;
    if (this.sparsifier === undefined) sum = await reducer.allReduce(delta, signal);
    else ({ sum, bytes } = await this.sparseSum(delta, reducer, signal, step, rank));
    const next = anchor.slice();
    outerStep(next, sum, (i) => this.trainable[i] === 1, this.outer, this.momentum);
    at = 0;
    for (const w of weights) {
      const size = w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
      const values = next.subarray(at, at + size);
      tf.tidy(() => {
        w.write(tf.tensor(values, w.shape as number[]));
      });
      at += size;
    }
    return bytes;
  }

  /** The world's sum of the ranks' sparsified deltas (trainable part) and dense other weights. */
  private async sparseSum(
    delta: Float32Array,
    reducer: GradientReducer,
    signal: AbortSignal | undefined,
    step: number,
    rank: number,
  ): Promise<{ sum: Float32Array; bytes: number }> {
    const split = this.split as { trainable: Uint32Array; other: Uint32Array };
    const sparsifier = this.sparsifier as Sparsifier;
    const trainable = new Float32Array(split.trainable.length);
    for (let i = 0; i < trainable.length; i++) trainable[i] = delta[split.trainable[i] as number] as number;
    const other = new Float32Array(split.other.length);
    for (let i = 0; i < other.length; i++) other[i] = delta[split.other[i] as number] as number;
    const part = sparsifier.select(trainable, step);
    const all = await reducer.allGather(sparsePayload(part, other), signal);
    const packed = new Float32Array(trainable.length + other.length);
    sumSparsePayloads(all, other.length, packed, trainable.length);
    sparsifier.commit(part, step);
    const sum = new Float32Array(this.length);
    for (let i = 0; i < split.trainable.length; i++) sum[split.trainable[i] as number] = packed[i] as number;
    for (let i = 0; i < split.other.length; i++)
      sum[split.other[i] as number] = packed[trainable.length + i] as number;
    return {
      sum,
      bytes: allGatherBytes(
        all.map((b) => b.byteLength),
        rank,
      ),
    };
  }

  sharedState(): FusedValues | undefined {
    if (this.momentum === undefined) return undefined;
    return {
      specs: [{ name: MOMENTUM, shape: [this.length], offset: 0, size: this.length }],
      buffer: this.momentum.slice(),
    };
  }

  /** The outer momentum of a snapshot; ignored when it does not fit this model (another setting). */
  restoreShared(values: FusedValues): void {
    const spec = values.specs.find((s) => s.name === MOMENTUM);
    if (spec === undefined || spec.size !== this.length || this.momentum === undefined) return;
    this.momentum = values.buffer.slice(spec.offset, spec.offset + spec.size);
  }
}
