/**
 * The elastic sampler (design 4.2), pure: which samples each rank trains on at each step.
 *
 * Each epoch visits the training set in a permutation seeded by (seed, epoch). The committed state
 * is a position {epoch, cursor}: the number of samples of this epoch's permutation already consumed.
 * A step takes the next Σ b_i positions and gives each rank a contiguous share of b_i of them, in
 * rank order, so whatever the world looks like at each step — any number of ranks, any per-worker
 * batches, changing from one step to the next — every sample is trained on exactly once per epoch.
 * The last step of an epoch is short: its remaining samples are split in proportion to the b_i,
 * never carried into the next epoch (so the per-epoch audit is exact).
 */

/** Mixes integers into one 32-bit seed (murmur3 finaliser over each part). */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const part of parts) {
    let k = Math.imul(part >>> 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    // Parts above 2^32 (large seeds) contribute their high word too.
    const high = Math.floor(part / 0x100000000);
    if (high !== 0) h ^= Math.imul(high, 0x85ebca6b);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A deterministic stream of uint32 values (mulberry32). */
export function uint32Stream(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** A uniform integer in [0, bound) without modulo bias (rejection sampling). */
function below(next: () => number, bound: number): number {
  const limit = 0x100000000 - (0x100000000 % bound);
  for (;;) {
    const value = next();
    if (value < limit) return value % bound;
  }
}

/** The permutation of [0, size) that epoch `epoch` visits; Fisher–Yates seeded by (seed, epoch). */
export function epochPermutation(size: number, seed: number, epoch: number): Uint32Array {
  const order = new Uint32Array(size);
  for (let i = 0; i < size; i++) order[i] = i;
  const next = uint32Stream(mixSeed(seed, epoch, 0x5eed));
  for (let i = size - 1; i > 0; i--) {
    const j = below(next, i + 1);
    const tmp = order[i] as number;
    order[i] = order[j] as number;
    order[j] = tmp;
  }
  return order;
}

/**
 * The permutation an epoch visits when samples are read in blocks (a store with `locality`, e.g.
 * data larger than memory): a shard-then-sample shuffle. The blocks (runs of `blockSamples`
 * consecutive samples) are put in a random order, cut into groups of `groupBlocks`, and the samples
 * of each group are permuted among themselves. Still a permutation of [0, size) seeded by (seed,
 * epoch), so the exactly-once contract of planStep is unchanged; a batch mixes samples from up to
 * `groupBlocks` places of the data, a fresh mix each epoch, while the reader holds only a group (and
 * the next one, read ahead) in memory. Data sorted by label needs groups that span several labels'
 * runs; the budget sets how many.
 */
export function shardLocalPermutation(
  size: number,
  seed: number,
  epoch: number,
  blockSamples: number,
  groupBlocks: number,
): Uint32Array {
  const blocks = Math.ceil(size / blockSamples);
  const blockOrder = epochPermutation(blocks, mixSeed(seed, 0xb10c), epoch);
  const order = new Uint32Array(size);
  const next = uint32Stream(mixSeed(seed, epoch, 0x5a4d));
  let position = 0;
  for (let group = 0; group < blocks; group += groupBlocks) {
    const start = position;
    for (let g = group; g < Math.min(blocks, group + groupBlocks); g++) {
      const first = (blockOrder[g] as number) * blockSamples;
      const last = Math.min(size, first + blockSamples);
      for (let i = first; i < last; i++) order[position++] = i;
    }
    for (let i = position - 1; i > start; i--) {
      const j = start + below(next, i - start + 1);
      const tmp = order[i] as number;
      order[i] = order[j] as number;
      order[j] = tmp;
    }
  }
  return order;
}

/**
 * Splits `total` in proportion to `weights` into integers that sum to `total` (largest remainder;
 * ties go to the lower index, so every rank computes the same split).
 */
export function splitProportionally(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  if (weights.length === 0 || sum <= 0) throw new RangeError('need at least one positive weight');
  const exact = weights.map((w) => (total * w) / sum);
  const parts = exact.map(Math.floor);
  let left = total - parts.reduce((a, b) => a + b, 0);
  const order = exact
    .map((value, index) => ({ index, fraction: value - Math.floor(value) }))
    .sort((a, b) => b.fraction - a.fraction || a.index - b.index);
  for (const { index } of order) {
    if (left <= 0) break;
    parts[index] = (parts[index] as number) + 1;
    left--;
  }
  return parts;
}

export interface SamplerPosition {
  readonly epoch: number;
  /** Samples of this epoch's permutation already consumed, in [0, size). */
  readonly cursor: number;
}

export interface RankShare {
  /** First position in the epoch's permutation. */
  readonly start: number;
  readonly count: number;
}

export interface StepPlan {
  readonly epoch: number;
  readonly cursor: number;
  /** Samples trained this step, Σ of the shares (Σ b_i except on the last step of an epoch). */
  readonly samples: number;
  readonly shares: readonly RankShare[];
  readonly endsEpoch: boolean;
  readonly next: SamplerPosition;
}

/** The step that starts at `position`, for a world whose rank i asks for perWorker[i] samples. */
export function planStep(size: number, position: SamplerPosition, perWorker: readonly number[]): StepPlan {
  if (!Number.isInteger(size) || size <= 0)
    throw new RangeError(`dataset size must be positive, got ${size}`);
  if (perWorker.length === 0 || perWorker.some((b) => !Number.isInteger(b) || b < 1))
    throw new RangeError(`per-worker batches must be positive integers, got [${perWorker.join(', ')}]`);
  const { epoch, cursor } = position;
  if (!Number.isInteger(cursor) || cursor < 0 || cursor >= size)
    throw new RangeError(`cursor ${cursor} outside [0, ${size})`);
  const wanted = perWorker.reduce((a, b) => a + b, 0);
  const remaining = size - cursor;
  const counts = wanted <= remaining ? [...perWorker] : splitProportionally(remaining, perWorker);
  const samples = Math.min(wanted, remaining);
  const shares: RankShare[] = [];
  let start = cursor;
  for (const count of counts) {
    shares.push({ start, count });
    start += count;
  }
  const endsEpoch = cursor + samples === size;
  return {
    epoch,
    cursor,
    samples,
    shares,
    endsEpoch,
    next: endsEpoch ? { epoch: epoch + 1, cursor: 0 } : { epoch, cursor: cursor + samples },
  };
}

/** The sample indices of one rank's share: positions [start, start+count) of the permutation. */
export function shareIndices(permutation: Uint32Array, share: RankShare): Uint32Array {
  return permutation.subarray(share.start, share.start + share.count);
}

/** Steps in one epoch when every step takes `globalBatch` samples. */
export function stepsPerEpoch(size: number, globalBatch: number): number {
  return Math.ceil(size / globalBatch);
}
