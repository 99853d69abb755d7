/**
 * Preprocessing fitted on the training data and applied per batch: normalisation (`scale`,
 * `standardize`, from one streaming pass) and optional PCA. Fitting is deterministic (float64 sums in
 * sample order, seeded start vectors), so every worker and every restart computes the same transform.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { DatasetSpec } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { type PreprocessingRecord, PreprocessingSchema } from '../train/snapshot.ts';
import { uint32Stream } from './sampler.ts';
import { type SampleStore, scanStore } from './store.ts';

/** x' = (x − offset) · scale, per feature. */
export interface Normalization {
  readonly kind: DatasetSpec['normalize'];
  readonly offset: Float32Array;
  readonly scale: Float32Array;
}

const BLOCK = 1024;

export function fitNormalization(store: SampleStore, kind: DatasetSpec['normalize']): Normalization {
  const d = store.featureSize;
  const offset = new Float32Array(d);
  const scale = new Float32Array(d).fill(1);
  if (kind === 'none') return { kind, offset, scale };
  if (kind === 'scale' && store.dtype === 'uint8') {
    // Bytes have a known range; no pass over the data needed.
    scale.fill(1 / 255);
    return { kind, offset, scale };
  }
  if (kind === 'scale') {
    const min = new Float64Array(d).fill(Number.POSITIVE_INFINITY);
    const max = new Float64Array(d).fill(Number.NEGATIVE_INFINITY);
    scanStore(store, BLOCK, (features, _labels, count) => {
      for (let s = 0; s < count; s++) {
        const row = s * d;
        for (let j = 0; j < d; j++) {
          const v = features[row + j] as number;
          if (v < (min[j] as number)) min[j] = v;
          if (v > (max[j] as number)) max[j] = v;
        }
      }
    });
    for (let j = 0; j < d; j++) {
      const range = (max[j] as number) - (min[j] as number);
      offset[j] = min[j] as number;
      scale[j] = range > 0 ? 1 / range : 1;
    }
    return { kind, offset, scale };
  }
  const sum = new Float64Array(d);
  const sumSquares = new Float64Array(d);
  scanStore(store, BLOCK, (features, _labels, count) => {
    for (let s = 0; s < count; s++) {
      const row = s * d;
      for (let j = 0; j < d; j++) {
        const v = features[row + j] as number;
        sum[j] = (sum[j] as number) + v;
        sumSquares[j] = (sumSquares[j] as number) + v * v;
      }
    }
  });
  const n = store.size;
  for (let j = 0; j < d; j++) {
    const mean = (sum[j] as number) / n;
    const variance = Math.max(0, (sumSquares[j] as number) / n - mean * mean);
    const std = Math.sqrt(variance);
    offset[j] = mean;
    scale[j] = std > 1e-8 ? 1 / std : 1;
  }
  return { kind, offset, scale };
}

export function normalizeInPlace(n: Normalization, features: Float32Array, count: number): void {
  if (n.kind === 'none') return;
  const d = n.offset.length;
  const { offset, scale } = n;
  for (let s = 0; s < count; s++) {
    const row = s * d;
    for (let j = 0; j < d; j++)
      features[row + j] = ((features[row + j] as number) - (offset[j] as number)) * (scale[j] as number);
  }
}

/** x' = (x − mean) · components, components being D×k (row-major), orthonormal columns. */
export interface Pca {
  readonly mean: Float32Array;
  readonly components: Float32Array;
  readonly k: number;
  /** Variance along each component, largest first, and the share of the total they explain. */
  readonly variances: number[];
  readonly explained: number;
  readonly fittedOn: number;
}

/** PCA is fitted on at most this many samples (evenly spaced): enough for a stable covariance. */
export const PCA_FIT_SAMPLES = 20_000;

/**
 * The samples PCA is fitted on: at most `max`, evenly spaced; from a streaming store, evenly spaced
 * runs of whole blocks (one sequential read each instead of a block per sample).
 */
export function pcaFitIndices(store: SampleStore, max: number): Uint32Array {
  const run = store.locality?.blockSamples;
  if (run === undefined || store.size <= max) {
    const stride = Math.max(1, Math.ceil(store.size / max));
    return Uint32Array.from({ length: Math.ceil(store.size / stride) }, (_, i) => i * stride);
  }
  const runs = Math.max(1, Math.floor(max / run));
  const out: number[] = [];
  for (let r = 0; r < runs; r++) {
    const first = Math.floor((r * store.size) / runs);
    for (let i = first; i < Math.min(store.size, first + run) && out.length < max; i++) out.push(i);
  }
  return Uint32Array.from(out);
}

function orthonormalize(q: Float64Array, d: number, p: number): void {
  // Modified Gram–Schmidt over the p columns of the d×p row-major matrix q.
  for (let c = 0; c < p; c++) {
    for (let prev = 0; prev < c; prev++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += (q[i * p + c] as number) * (q[i * p + prev] as number);
      for (let i = 0; i < d; i++) q[i * p + c] = (q[i * p + c] as number) - dot * (q[i * p + prev] as number);
    }
    let norm = 0;
    for (let i = 0; i < d; i++) norm += (q[i * p + c] as number) ** 2;
    norm = Math.sqrt(norm) || 1;
    for (let i = 0; i < d; i++) q[i * p + c] = (q[i * p + c] as number) / norm;
  }
}

/**
 * Orthogonal (subspace) iteration on the d×d covariance for its top k eigenvectors, with p - k extra
 * vectors for faster convergence of the k-th: the d×p row-major basis.
 */
function subspaceIteration(
  covariance: Float64Array,
  d: number,
  k: number,
  p: number,
  seed: number,
): Float64Array {
  const q = new Float64Array(d * p);
  const next = uint32Stream(seed >>> 0);
  for (let i = 0; i < q.length; i++) q[i] = next() / 0x100000000 - 0.5;
  orthonormalize(q, d, p);
  const c = tf.tensor2d(Float32Array.from(covariance), [d, d]);
  try {
    for (let iteration = 0; iteration < 300; iteration++) {
      const product = tf.tidy(() => tf.matMul(c, tf.tensor2d(Float32Array.from(q), [d, p])));
      const z = Float64Array.from(product.dataSync());
      product.dispose();
      orthonormalize(z, d, p);
      let change = 0;
      for (let col = 0; col < k; col++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += (z[i * p + col] as number) * (q[i * p + col] as number);
        change = Math.max(change, 1 - Math.abs(dot));
      }
      q.set(z);
      if (change < 1e-10) break;
    }
  } finally {
    c.dispose();
  }
  return q;
}

/**
 * The k vectors of the basis with the most variance (Rayleigh quotients), as a d×k matrix; signs are
 * fixed so that the largest entry of each is positive.
 */
function rankedComponents(
  covariance: Float64Array,
  q: Float64Array,
  d: number,
  k: number,
  p: number,
): { ranked: { col: number; variance: number }[]; out: Float32Array } {
  const ranked = Array.from({ length: p }, (_, col) => {
    let variance = 0;
    for (let i = 0; i < d; i++) {
      let row = 0;
      for (let j = 0; j < d; j++) row += (covariance[i * d + j] as number) * (q[j * p + col] as number);
      variance += row * (q[i * p + col] as number);
    }
    return { col, variance };
  })
    .sort((a, b) => b.variance - a.variance || a.col - b.col)
    .slice(0, k);
  const out = new Float32Array(d * k);
  ranked.forEach(({ col }, target) => {
    let largest = 0;
    for (let i = 0; i < d; i++)
      if (Math.abs(q[i * p + col] as number) > Math.abs(largest)) largest = q[i * p + col] as number;
    const sign = largest < 0 ? -1 : 1;
    for (let i = 0; i < d; i++) out[i * k + target] = sign * (q[i * p + col] as number);
  });
  return { ranked, out };
}

export function fitPca(
  store: SampleStore,
  normalization: Normalization,
  components: number,
  seed: number,
): Pca {
  const d = store.featureSize;
  const k = Math.min(components, d);
  const chosen = pcaFitIndices(store, PCA_FIT_SAMPLES);
  const picked = chosen.length;
  const mean = new Float64Array(d);
  const block = new Float32Array(BLOCK * d);
  const labels = new Int32Array(BLOCK);
  const indices = new Uint32Array(BLOCK);
  const visit = (each: (rows: Float32Array, count: number) => void) => {
    for (let first = 0; first < picked; first += BLOCK) {
      const count = Math.min(BLOCK, picked - first);
      for (let i = 0; i < count; i++) indices[i] = chosen[first + i] as number;
      store.read(indices.subarray(0, count), block, labels);
      normalizeInPlace(normalization, block, count);
      each(block.subarray(0, count * d), count);
    }
  };
  visit((rows, count) => {
    for (let s = 0; s < count; s++)
      for (let j = 0; j < d; j++) mean[j] = (mean[j] as number) + (rows[s * d + j] as number);
  });
  for (let j = 0; j < d; j++) mean[j] = (mean[j] as number) / picked;
  const mean32 = Float32Array.from(mean);
  const covariance = new Float64Array(d * d);
  visit((rows, count) => {
    const product = tf.tidy(() => {
      const x = tf.sub(tf.tensor2d(rows, [count, d]), tf.tensor1d(mean32));
      return tf.matMul(x, x, true, false);
    });
    const values = product.dataSync();
    product.dispose();
    for (let i = 0; i < values.length; i++) covariance[i] = (covariance[i] as number) + (values[i] as number);
  });
  for (let i = 0; i < covariance.length; i++) covariance[i] = (covariance[i] as number) / picked;
  let total = 0;
  for (let j = 0; j < d; j++) total += covariance[j * d + j] as number;

  const p = Math.min(d, k + 8);
  const q = subspaceIteration(covariance, d, k, p, seed);
  const { ranked, out } = rankedComponents(covariance, q, d, k, p);
  const variances = ranked.map((r) => r.variance);
  return {
    mean: mean32,
    components: out,
    k,
    variances,
    explained: total > 0 ? variances.reduce((a, b) => a + b, 0) / total : 0,
    fittedOn: picked,
  };
}

const toBase64 = (values: Float32Array): string =>
  Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');

function fromBase64(text: string): Float32Array {
  const bytes = Buffer.from(text, 'base64');
  const out = new Float32Array(bytes.length / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** The fitted preprocessing as it is kept in the training state (and so in every checkpoint). */
export function encodePreprocessing(normalization: Normalization, pca: Pca | undefined): PreprocessingRecord {
  const hash = createHash('sha256').update(normalization.kind);
  for (const values of [normalization.offset, normalization.scale, pca?.mean, pca?.components])
    if (values !== undefined)
      hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  return {
    digest: hash.digest('hex'),
    normalize: normalization.kind,
    offset: toBase64(normalization.offset),
    scale: toBase64(normalization.scale),
    ...(pca === undefined
      ? {}
      : {
          pca: {
            k: pca.k,
            mean: toBase64(pca.mean),
            components: toBase64(pca.components),
            variances: pca.variances,
            explained: pca.explained,
            fittedOn: pca.fittedOn,
          },
        }),
  };
}

export function decodePreprocessing(record: PreprocessingRecord): {
  normalization: Normalization;
  pca: Pca | undefined;
} {
  const normalization = {
    kind: record.normalize,
    offset: fromBase64(record.offset),
    scale: fromBase64(record.scale),
  };
  const p = record.pca;
  const pca =
    p === undefined
      ? undefined
      : {
          k: p.k,
          mean: fromBase64(p.mean),
          components: fromBase64(p.components),
          variances: p.variances,
          explained: p.explained,
          fittedOn: p.fittedOn,
        };
  return { normalization, pca };
}

/**
 * The preprocessing fitted where the data was prepared (`preprocessing.json` beside the shards, as
 * hack/spark/preprocess.py writes it), checked against the spec; undefined when there is none.
 */
export function shippedPreprocessing(
  folder: string,
  spec: Pick<DatasetSpec, 'normalize' | 'pca'>,
  featureSize: number,
): { normalization: Normalization; pca: Pca | undefined } | undefined {
  const file = join(folder, 'preprocessing.json');
  if (!existsSync(file)) return undefined;
  const parsed = PreprocessingSchema.extend({
    digest: PreprocessingSchema.shape.digest.optional(),
  }).safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success)
    throw new DatasetError(file, `not a preprocessing record: ${parsed.error.issues[0]?.message}`);
  const { normalization, pca } = decodePreprocessing({ digest: '', ...parsed.data });
  if (normalization.kind !== spec.normalize)
    throw new DatasetError(
      file,
      `fitted for normalize: ${normalization.kind}, the spec says ${spec.normalize}; set dataset.normalize to match`,
    );
  if ((pca?.k ?? 0) !== (spec.pca?.components ?? 0))
    throw new DatasetError(
      file,
      `holds ${pca?.k ?? 0} PCA components, dataset.pca.components is ${spec.pca?.components ?? 'unset'}`,
    );
  if (
    normalization.offset.length !== featureSize ||
    (pca !== undefined && pca.components.length !== featureSize * pca.k)
  )
    throw new DatasetError(file, `fitted on samples of another size than these (${featureSize} values)`);
  return { normalization, pca };
}
