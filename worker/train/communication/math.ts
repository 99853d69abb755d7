/**
 * The arithmetic of gradient compression, as pure functions on Float32Arrays: top-k selection, the matrix products and orthogonalisation of PowerSGD (Vogels et al. 2019), a
 * seeded normal generator for its initial Q, and the bytes a collective puts on the wire.
 * Nothing here talks to the network or to TensorFlow: the strategies in hooks.ts do.
 */

/**
 * The indices of the k entries of largest magnitude, ascending. Ties at the threshold are broken by
 * position (lower index first), so every caller with the same values gets the same indices.
 * O(n) on average (quickselect on a scratch copy of the magnitudes).
 */
export function topkIndices(values: Float32Array, k: number, scratch?: Float32Array): Uint32Array {
  const n = values.length;
  const count = Math.max(0, Math.min(n, Math.floor(k)));
  if (count === 0) return new Uint32Array(0);
  if (count === n) return Uint32Array.from({ length: n }, (_, i) => i);
  const magnitudes =
    scratch !== undefined && scratch.length >= n ? scratch.subarray(0, n) : new Float32Array(n);
  for (let i = 0; i < n; i++) magnitudes[i] = Math.abs(values[i] as number);
  const threshold = kthLargest(magnitudes, count);
  const out = new Uint32Array(count);
  let taken = 0;
  let above = 0;
  for (let i = 0; i < n; i++) if (Math.abs(values[i] as number) > threshold) above++;
  let ties = count - above;
  for (let i = 0; i < n && taken < count; i++) {
    const m = Math.abs(values[i] as number);
    if (m > threshold) out[taken++] = i;
    else if (m === threshold && ties > 0) {
      out[taken++] = i;
      ties--;
    }
  }
  return out;
}

/** The k-th largest value of `a` (1-based); reorders `a`. */
function kthLargest(a: Float32Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const target = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1] as number;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while ((a[i] as number) > pivot) i++;
      while ((a[j] as number) < pivot) j--;
      if (i <= j) {
        const t = a[i] as number;
        a[i] = a[j] as number;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target] as number;
  }
  return a[target] as number;
}

/**
 * Error feedback for a sparsifier: `accumulated` (gradient + residual) minus what was sent. Writes
 * the new residual into `residual` (the sent entries become 0, the rest are kept).
 */
export function sparseResidual(accumulated: Float32Array, sent: Uint32Array, residual: Float32Array): void {
  residual.set(accumulated);
  for (let i = 0; i < sent.length; i++) residual[sent[i] as number] = 0;
}

/** target[idx[i]] += values[i]. */
export function scatterAdd(target: Float32Array, indices: Uint32Array, values: Float32Array): void {
  for (let i = 0; i < indices.length; i++) {
    const j = indices[i] as number;
    target[j] = (target[j] as number) + (values[i] as number);
  }
}

/** P[rows×r] = M[rows×cols] · Q[cols×r], all row-major. */
export function multiply(
  m: Float32Array,
  rows: number,
  cols: number,
  q: Float32Array,
  r: number,
  p: Float32Array,
): void {
  p.fill(0, 0, rows * r);
  for (let i = 0; i < rows; i++) {
    const mRow = i * cols;
    const pRow = i * r;
    for (let j = 0; j < cols; j++) {
      const v = m[mRow + j] as number;
      if (v === 0) continue;
      const qRow = j * r;
      for (let c = 0; c < r; c++) p[pRow + c] = (p[pRow + c] as number) + v * (q[qRow + c] as number);
    }
  }
}

/** Q[cols×r] = Mᵀ · P, M [rows×cols], P [rows×r]. */
export function multiplyTransposed(
  m: Float32Array,
  rows: number,
  cols: number,
  p: Float32Array,
  r: number,
  q: Float32Array,
): void {
  q.fill(0, 0, cols * r);
  for (let i = 0; i < rows; i++) {
    const mRow = i * cols;
    const pRow = i * r;
    for (let j = 0; j < cols; j++) {
      const v = m[mRow + j] as number;
      if (v === 0) continue;
      const qRow = j * r;
      for (let c = 0; c < r; c++) q[qRow + c] = (q[qRow + c] as number) + v * (p[pRow + c] as number);
    }
  }
}

/** out[rows×cols] = P[rows×r] · Qᵀ (Q [cols×r]): the low-rank approximation. */
export function lowRank(
  p: Float32Array,
  rows: number,
  q: Float32Array,
  cols: number,
  r: number,
  out: Float32Array,
): void {
  for (let i = 0; i < rows; i++) {
    const pRow = i * r;
    for (let j = 0; j < cols; j++) {
      const qRow = j * r;
      let sum = 0;
      for (let c = 0; c < r; c++) sum += (p[pRow + c] as number) * (q[qRow + c] as number);
      out[i * cols + j] = sum;
    }
  }
}

/**
 * Gram–Schmidt on the r columns of P [rows×r] in place: orthonormal columns spanning the same space.
 * A column (numerically) in the span of the earlier ones becomes 0, as does a zero column,
 * instead of dividing by zero (torch's hook adds an epsilon for the same reason).
 */
export function orthonormalizeColumns(p: Float32Array, rows: number, r: number): void {
  for (let c = 0; c < r; c++) {
    let before = 0;
    for (let i = 0; i < rows; i++) before += (p[i * r + c] as number) ** 2;
    for (let prev = 0; prev < c; prev++) {
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += (p[i * r + c] as number) * (p[i * r + prev] as number);
      for (let i = 0; i < rows; i++)
        p[i * r + c] = (p[i * r + c] as number) - dot * (p[i * r + prev] as number);
    }
    let norm = 0;
    for (let i = 0; i < rows; i++) norm += (p[i * r + c] as number) ** 2;
    norm = Math.sqrt(norm);
    // What is left after projecting out the others is float32 rounding when below 1e-4 of the original.
    const scale = norm > 1e-4 * Math.sqrt(before) && norm > 1e-30 ? 1 / norm : 0;
    for (let i = 0; i < rows; i++) p[i * r + c] = (p[i * r + c] as number) * scale;
  }
}

/** Standard normal values from a 32-bit seed (mulberry32 + Box–Muller): the same on every rank. */
export function seededNormal(seed: number, out: Float32Array): Float32Array {
  let state = seed >>> 0;
  const uniform = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  for (let i = 0; i < out.length; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(uniform()));
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < out.length) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

/** A tensor's shape as the matrix PowerSGD compresses: the first axes are the rows, the last the columns. */
export function matrixShape(shape: readonly number[]): { rows: number; cols: number } | undefined {
  if (shape.length < 2) return undefined;
  const cols = shape[shape.length - 1] as number;
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return { rows, cols };
}

/** How many times fewer elements rank-r factors carry than the matrix itself. */
export function compressionRate(rows: number, cols: number, rank: number): number {
  return (rows * cols) / (rank * (rows + cols));
}

/** Bytes one rank sends in a ring all-reduce (reduce-scatter + all-gather) of `elements`. */
export function ringAllReduceBytes(elements: number, bytesPerElement: number, size: number): number {
  if (size <= 1) return 0;
  return Math.round((2 * (size - 1) * elements * bytesPerElement) / size);
}

/**
 * Bytes `rank` sends in an all-gather made of one ring broadcast per root: it sends its own payload
 * and forwards every other one except the payload of its right neighbour (whose ring ends here).
 */
export function allGatherBytes(payloads: readonly number[], rank: number): number {
  const size = payloads.length;
  if (size <= 1) return 0;
  let sent = 0;
  payloads.forEach((bytes, root) => {
    if (root === rank || (rank + 1) % size !== root) sent += bytes;
  });
  return sent;
}
