/**
 * Top-k sparsification with error feedback, shared by both places it applies: the gradients (TopkHook)
 * and the weight updates of local optimizers (LocalSgd with `sparsify: 'update'`). Pure apart from
 * the residual it owns; the wire is the caller's.
 *
 * Density warm-up as in Deep Gradient Compression (Lin et al. 2018): the fraction sent falls
 * exponentially from WARMUP_START to the configured ratio over the first `warmupSteps` steps, so the
 * early steps, where the gradients change fastest and a stale residual costs most, stay nearly dense.
 */
import { scatterAdd, sparseResidual, topkIndices } from './math.ts';

const WARMUP_START = 0.25;

/** The fraction of entries sent at `step` (steps completed before it). */
export function topkDensity(ratio: number, warmupSteps: number, step: number): number {
  if (warmupSteps <= 0 || step >= warmupSteps || ratio >= WARMUP_START) return ratio;
  const t = step / warmupSteps;
  return Math.exp(Math.log(WARMUP_START) * (1 - t) + Math.log(ratio) * t);
}

export interface SparseSettings {
  readonly ratio: number;
  readonly errorFeedback: boolean;
  readonly warmupSteps?: number;
}

/** One rank's payload: the chosen indices and their values (residual included). */
export interface SparsePart {
  readonly indices: Uint32Array;
  readonly values: Float32Array;
  /** Gradient or update plus residual; becomes the next residual once the step completes. */
  readonly accumulated: Float32Array;
}

export class Sparsifier {
  private residual: Float32Array | undefined;
  /** The run's step the residual belongs after (it carries over only to that step). */
  private residualStep: number | undefined;
  private scratch = new Float32Array(0);

  constructor(readonly settings: SparseSettings) {}

  /** The top-k of `values` + residual at `step`; `values` is not changed. */
  select(values: Float32Array, step: number): SparsePart {
    const n = values.length;
    const accumulated = values.slice();
    const residual = this.settings.errorFeedback && this.residualStep === step ? this.residual : undefined;
    if (residual?.length === n)
      for (let i = 0; i < n; i++) accumulated[i] = (accumulated[i] as number) + (residual[i] as number);
    if (this.scratch.length < n) this.scratch = new Float32Array(n);
    const density = topkDensity(this.settings.ratio, this.settings.warmupSteps ?? 0, step);
    const k = Math.max(1, Math.round(density * n));
    const indices = topkIndices(accumulated, k, this.scratch);
    const chosen = new Float32Array(indices.length);
    for (let i = 0; i < indices.length; i++) chosen[i] = accumulated[indices[i] as number] as number;
    return { indices, values: chosen, accumulated };
  }

  /** The step completed on every rank: what was not sent waits for the next step. */
  commit(part: SparsePart, step: number): void {
    if (!this.settings.errorFeedback) return;
    const n = part.accumulated.length;
    if (this.residual?.length !== n) this.residual = new Float32Array(n);
    sparseResidual(part.accumulated, part.indices, this.residual);
    this.residualStep = step + 1;
  }

  /**
   * A new world or a restored state at `step`: the residual is kept when it belongs right there (a
   * survivor of a rescale goes on owing what it held back), else dropped (the steps it came from are
   * redone, or were never this state's).
   */
  keepAt(step: number): void {
    if (this.residualStep === step) return;
    this.residual = undefined;
    this.residualStep = undefined;
  }

  /** Takes over `other`'s residual (a new world's sparsifier continuing the last one's). */
  takeFrom(other: Sparsifier): void {
    this.residual = other.residual;
    this.residualStep = other.residualStep;
  }

  /** The residual (for tests and the bench); undefined before the first complete step. */
  get pending(): Float32Array | undefined {
    return this.residual;
  }
}

/** Sums gathered payloads [k indices | k values | extra] in rank order into `sum` (extra at `extraAt`). */
export function sumSparsePayloads(
  all: readonly Uint8Array[],
  extraLength: number,
  sum: Float32Array,
  extraAt: number,
): void {
  for (const bytes of all) {
    const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
    const count = (aligned.byteLength / 4 - extraLength) / 2;
    if (!Number.isInteger(count) || count < 0)
      throw new RangeError(
        `a top-k payload of ${bytes.byteLength} bytes does not fit ${extraLength} dense values`,
      );
    const at = aligned.byteOffset;
    const indices = new Uint32Array(aligned.buffer, at, count);
    const values = new Float32Array(aligned.buffer, at + 4 * count, count + extraLength);
    scatterAdd(sum, indices, values.subarray(0, count));
    for (let j = 0; j < extraLength; j++)
      sum[extraAt + j] = (sum[extraAt + j] as number) + (values[count + j] as number);
  }
}

/** The payload of `part` followed by `extra` (values always sent dense). */
export function sparsePayload(part: SparsePart, extra: Float32Array): Uint8Array {
  const k = part.indices.length;
  const payload = new Uint8Array(4 * (2 * k + extra.length));
  new Uint32Array(payload.buffer, 0, k).set(part.indices);
  const values = new Float32Array(payload.buffer, 4 * k, k + extra.length);
  values.set(part.values);
  values.set(extra, k);
  return payload;
}
