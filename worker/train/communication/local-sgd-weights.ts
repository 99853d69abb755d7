/**
 * Local SGD on a tfjs model: the anchor (the snapshot of the last averaging, the state every rank of
 * the world holds), the outer momentum, and the averaging itself (local-sgd.ts does the arithmetic).
 */
import * as tf from '@tensorflow/tfjs';
import type { GradientReducer } from '../reducer.ts';
import type { FusedValues, Snapshot } from '../snapshot.ts';
import { averagingDue, type OuterOptimizer, outerStep, weightedDelta } from './local-sgd.ts';
import { ringAllReduceBytes } from './math.ts';

const MOMENTUM = 'outer/momentum';

export class LocalSgd {
  /** The state at the last averaging; a new world rolls back to it. */
  anchor: Snapshot | undefined;
  private momentum: Float32Array | undefined;
  private readonly trainable: Uint8Array;
  private readonly length: number;

  constructor(
    private readonly steps: number,
    private readonly outer: OuterOptimizer | undefined,
    weights: readonly tf.LayerVariable[],
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
  }

  due(stepsAfter: number, forced: boolean): boolean {
    return averagingDue(stepsAfter, this.steps, forced);
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
  ): Promise<number> {
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
    const sum = await reducer.allReduce(delta, signal);
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
    return ringAllReduceBytes(this.length, 4, size);
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
