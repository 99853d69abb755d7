/**
 * Communication strategies: what a rank sends of its gradient and how the world's sum is rebuilt,
 * each a small object with state that outlives a step (torch DDP communication hooks are the model).
 * They wrap the one collective (reducer.ts: a ring all-reduce and an all-gather) and never change it.
 *
 * Every strategy gets the fused buffer [gradients | tail] of trainer.ts: gradients weighted by
 * b_i / B (so their sum over ranks is the global gradient), and a tail (loss, correct count, AdaScale
 * norms, batch-norm changes) that is always summed exactly in fp32. Every rank ends with the same bits:
 * sums are either the ring's (identical on all ranks) or taken in rank order from gathered payloads.
 *
 * State, two kinds:
 * - shared: identical on every rank after each step (PowerSGD's Q). It travels in snapshots, so a
 *   newcomer receives it and a checkpoint keeps it.
 * - per rank: error-feedback residuals, in units of the global gradient (each rank's share already
 *   weighted by b_i / B), so they stay valid when the weights b_i / B change. A survivor of a rescale
 *   keeps its residual and still delivers what it held back; a departed rank's residual is gone with
 *   it, and a rank that adopts a state of another step (a redone step, a newcomer) starts from zero.
 */
import type { CommunicationSpec, Compression } from '../../../operator/api/training-job.ts';
import type { GradientReducer } from '../reducer.ts';
import type { FusedValues, TensorSpec } from '../snapshot.ts';
import {
  allGatherBytes,
  compressionRate,
  lowRank,
  matrixShape,
  multiply,
  multiplyTransposed,
  orthonormalizeColumns,
  ringAllReduceBytes,
  seededNormal,
} from './math.ts';
import { type SparseSettings, Sparsifier, sparsePayload, sumSparsePayloads } from './sparse.ts';

export interface ReduceContext {
  /** [gradients | tail]; the strategy may overwrite it. */
  readonly fused: Float32Array;
  readonly gradientLength: number;
  /** The layout of the gradient region, tensor by tensor. */
  readonly specs: readonly TensorSpec[];
  /** This rank's b_i / B. */
  readonly weight: number;
  /** Steps completed before this one (the run's, not the generation's). */
  readonly step: number;
  readonly seed: number;
  readonly rank: number;
  readonly size: number;
  readonly reducer: GradientReducer;
  readonly signal?: AbortSignal | undefined;
}

export interface CommunicationHook {
  readonly kind: Compression;
  /** The world's sum of `fused` (gradients as the strategy rebuilds them, the tail exact). */
  reduce(context: ReduceContext): Promise<Float32Array>;
  /** Bytes this rank put on the wire in its last reduce (payloads; framing not counted). */
  readonly lastWireBytes: number;
  sharedState(): FusedValues | undefined;
  restoreShared(values: FusedValues): void;
  /** A new world or a restored state at `step`: per-rank state is kept only if it belongs there. */
  keepLocalAt(step: number): void;
}

/** Reduces `view` and leaves the sum in it (a reducer may answer with another array). */
async function reduceInPlace(
  view: Float32Array,
  context: ReduceContext,
  wire: 'fp32' | 'fp16' | 'bf16',
): Promise<void> {
  const sum = await context.reducer.allReduce(view, context.signal, { wire });
  if (sum !== view) view.set(sum);
}

/** fp32, fp16 or bf16 ring all-reduce of the gradients; the tail always in fp32. */
export class DenseHook implements CommunicationHook {
  lastWireBytes = 0;
  constructor(readonly kind: 'none' | 'fp16' | 'bf16') {}

  async reduce(context: ReduceContext): Promise<Float32Array> {
    const { fused, gradientLength, size } = context;
    if (this.kind === 'none') {
      this.lastWireBytes = ringAllReduceBytes(fused.length, 4, size);
      const sum = await context.reducer.allReduce(fused, context.signal);
      return sum;
    }
    const tail = fused.subarray(gradientLength);
    await reduceInPlace(fused.subarray(0, gradientLength), context, this.kind);
    await reduceInPlace(tail, context, 'fp32');
    this.lastWireBytes =
      ringAllReduceBytes(gradientLength, 2, size) + ringAllReduceBytes(tail.length, 4, size);
    return fused;
  }

  sharedState(): undefined {
    return undefined;
  }
  restoreShared(): void {}
  keepLocalAt(): void {}
}

/** The ranks' top-k entries (index, value) gathered by everyone; what was not sent is fed back. */
export class TopkHook implements CommunicationHook {
  readonly kind = 'topk';
  lastWireBytes = 0;
  readonly sparsifier: Sparsifier;

  constructor(settings: SparseSettings) {
    this.sparsifier = new Sparsifier(settings);
  }

  async reduce(context: ReduceContext): Promise<Float32Array> {
    const { fused, gradientLength: n } = context;
    const tailLength = fused.length - n;
    const part = this.sparsifier.select(fused.subarray(0, n), context.step);
    const all = await context.reducer.allGather(sparsePayload(part, fused.subarray(n)), context.signal);
    const sum = new Float32Array(fused.length);
    sumSparsePayloads(all, tailLength, sum, n);
    // Only a complete step moves the residual.
    this.sparsifier.commit(part, context.step);
    this.lastWireBytes = allGatherBytes(
      all.map((b) => b.byteLength),
      context.rank,
    );
    return sum;
  }

  sharedState(): undefined {
    return undefined;
  }
  restoreShared(): void {}
  keepLocalAt(step: number): void {
    this.sparsifier.keepAt(step);
  }
}

export interface PowerSgdSettings {
  readonly rank: number;
  readonly warmStart: boolean;
  readonly errorFeedback: boolean;
  readonly startAfterSteps: number;
  readonly minCompressionRate: number;
}

interface Factor {
  readonly spec: TensorSpec;
  readonly rows: number;
  readonly cols: number;
  readonly rank: number;
}

/**
 * PowerSGD (Vogels et al. 2019) as torch's powerSGD_hook does it: for each matrix M (gradient plus
 * residual), P = M·Q is summed, orthonormalised, Q = Mᵀ·P is summed, and P·Qᵀ stands for the sum of M.
 * Vectors and matrices too small to gain go uncompressed in the first all-reduce, with the tail.
 */
export class PowerSgdHook implements CommunicationHook {
  readonly kind = 'powersgd';
  lastWireBytes = 0;
  private q = new Map<string, Float32Array>();
  private residual = new Map<string, Float32Array>();
  /** The run's step the residuals belong after. */
  private residualStep: number | undefined;
  private dense = new DenseHook('none');

  constructor(private readonly settings: PowerSgdSettings) {}

  private factors(specs: readonly TensorSpec[]): { factors: Factor[]; plain: TensorSpec[] } {
    const factors: Factor[] = [];
    const plain: TensorSpec[] = [];
    for (const spec of specs) {
      const m = matrixShape(spec.shape);
      const rank = m === undefined ? 0 : Math.min(this.settings.rank, m.rows, m.cols);
      if (m === undefined || compressionRate(m.rows, m.cols, rank) < this.settings.minCompressionRate)
        plain.push(spec);
      else factors.push({ spec, rows: m.rows, cols: m.cols, rank });
    }
    return { factors, plain };
  }

  private initialQ(f: Factor, index: number, context: ReduceContext): Float32Array {
    const kept = this.q.get(f.spec.name);
    if (this.settings.warmStart && kept?.length === f.cols * f.rank) return kept;
    // The same seed on every rank: the same Q without communicating it.
    const step = this.settings.warmStart ? 0 : context.step;
    return seededNormal(
      (context.seed * 7919 + index * 104_729 + step) >>> 0,
      new Float32Array(f.cols * f.rank),
    );
  }

  async reduce(context: ReduceContext): Promise<Float32Array> {
    if (context.step < this.settings.startAfterSteps) {
      const sum = await this.dense.reduce(context);
      this.lastWireBytes = this.dense.lastWireBytes;
      return sum;
    }
    const { fused, gradientLength: n, size } = context;
    const { factors, plain } = this.factors(context.specs);
    const matrices = factors.map((f) => {
      const m = fused.slice(f.spec.offset, f.spec.offset + f.spec.size);
      const e = this.residualStep === context.step ? this.residual.get(f.spec.name) : undefined;
      if (this.settings.errorFeedback && e?.length === m.length)
        for (let i = 0; i < m.length; i++) m[i] = (m[i] as number) + (e[i] as number);
      return m;
    });
    const pLength = factors.reduce((s, f) => s + f.rows * f.rank, 0);
    const plainLength = plain.reduce((s, p) => s + p.size, 0);
    const first = new Float32Array(pLength + plainLength + (fused.length - n));
    const qs = factors.map((f, i) => this.initialQ(f, i, context));
    let at = 0;
    const ps = factors.map((f, i) => {
      const p = first.subarray(at, at + f.rows * f.rank);
      multiply(matrices[i] as Float32Array, f.rows, f.cols, qs[i] as Float32Array, f.rank, p);
      at += f.rows * f.rank;
      return p;
    });
    for (const spec of plain) {
      first.set(fused.subarray(spec.offset, spec.offset + spec.size), at);
      at += spec.size;
    }
    first.set(fused.subarray(n), at);
    await reduceInPlace(first, context, 'fp32');
    const qLength = factors.reduce((s, f) => s + f.cols * f.rank, 0);
    const second = new Float32Array(qLength);
    at = 0;
    const newQs = factors.map((f, i) => {
      const p = ps[i] as Float32Array;
      orthonormalizeColumns(p, f.rows, f.rank);
      const q = second.subarray(at, at + f.cols * f.rank);
      multiplyTransposed(matrices[i] as Float32Array, f.rows, f.cols, p, f.rank, q);
      at += f.cols * f.rank;
      return q;
    });
    await reduceInPlace(second, context, 'fp32');
    this.lastWireBytes =
      ringAllReduceBytes(first.length, 4, size) + ringAllReduceBytes(second.length, 4, size);
    return this.rebuild(context, factors, plain, matrices, ps, newQs, first);
  }

  /** The approximated sum in `fused`; residuals and Q move only now, the step being complete. */
  private rebuild(
    context: ReduceContext,
    factors: readonly Factor[],
    plain: readonly TensorSpec[],
    matrices: readonly Float32Array[],
    ps: readonly Float32Array[],
    qs: readonly Float32Array[],
    first: Float32Array,
  ): Float32Array {
    const { fused, gradientLength: n, weight } = context;
    factors.forEach((f, i) => {
      const approx = fused.subarray(f.spec.offset, f.spec.offset + f.spec.size);
      lowRank(ps[i] as Float32Array, f.rows, qs[i] as Float32Array, f.cols, f.rank, approx);
      if (this.settings.errorFeedback) {
        const m = matrices[i] as Float32Array;
        // This rank's share of the approximation is weight · P·Qᵀ (the sum stands for every rank's M).
        for (let j = 0; j < m.length; j++) m[j] = (m[j] as number) - weight * (approx[j] as number);
        this.residual.set(f.spec.name, m);
      }
      this.q.set(f.spec.name, (qs[i] as Float32Array).slice());
    });
    this.residualStep = context.step + 1;
    let at = factors.reduce((s, f) => s + f.rows * f.rank, 0);
    for (const spec of plain) {
      fused.set(first.subarray(at, at + spec.size), spec.offset);
      at += spec.size;
    }
    fused.set(first.subarray(at), n);
    return fused;
  }

  sharedState(): FusedValues | undefined {
    if (this.q.size === 0) return undefined;
    const names = [...this.q.keys()].sort();
    let offset = 0;
    const specs = names.map((name) => {
      const size = (this.q.get(name) as Float32Array).length;
      const spec = { name: `powersgd/${name}/Q`, shape: [size], offset, size };
      offset += size;
      return spec;
    });
    const buffer = new Float32Array(offset);
    names.forEach((name, i) => {
      buffer.set(this.q.get(name) as Float32Array, (specs[i] as TensorSpec).offset);
    });
    return { specs, buffer };
  }

  restoreShared(values: FusedValues): void {
    this.q.clear();
    for (const spec of values.specs) {
      const match = /^powersgd\/(.*)\/Q$/.exec(spec.name);
      if (match?.[1] === undefined) continue;
      this.q.set(match[1], values.buffer.slice(spec.offset, spec.offset + spec.size));
    }
  }

  keepLocalAt(step: number): void {
    if (this.residualStep !== step) this.residual.clear();
  }
}

/** The strategy of a spec; a world without communication settings uses plain fp32. */
export function hookFor(spec: CommunicationSpec | undefined): CommunicationHook {
  switch (spec?.compression ?? 'none') {
    case 'topk':
      return new TopkHook({
        ratio: spec?.topk?.ratio ?? 0.01,
        errorFeedback: spec?.topk?.errorFeedback ?? true,
        warmupSteps: spec?.topk?.warmupSteps ?? 0,
      });
    case 'powersgd':
      return new PowerSgdHook({
        rank: spec?.powersgd?.rank ?? 4,
        warmStart: spec?.powersgd?.warmStart ?? true,
        errorFeedback: spec?.powersgd?.errorFeedback ?? true,
        startAfterSteps: spec?.powersgd?.startAfterSteps ?? 10,
        minCompressionRate: spec?.powersgd?.minCompressionRate ?? 2,
      });
    case 'fp16':
      return new DenseHook('fp16');
    case 'bf16':
      return new DenseHook('bf16');
    default:
      return new DenseHook('none');
  }
}
