/**
 * Cutting one labelled dataset into per-site parts for tests and demos of non-IID federated training.
 * Dirichlet label skew (Hsu et al. 2019, as in Flower's DirichletPartitioner): for each class, the
 * shares of its samples going to the K sites are drawn from Dirichlet(α·1_K); small α gives each site
 * few classes, large α approaches an IID split. Deterministic in (labels, sites, α, seed), so every
 * worker of every site computes the same cut without talking to the others.
 */
import { epochPermutation, mixSeed, splitProportionally, uint32Stream } from '../data/sampler.ts';

type Uniform = () => number;

const uniformOf = (seed: number): Uniform => {
  const next = uint32Stream(seed);
  // (0, 1): never 0, so logarithms stay finite.
  return () => (next() + 0.5) / 0x100000000;
};

function normal(u: Uniform): number {
  return Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** Gamma(shape, 1) by Marsaglia–Tsang; shape < 1 through Gamma(shape + 1) · U^(1/shape). */
export function gammaSample(shape: number, u: Uniform): number {
  if (shape < 1) return gammaSample(shape + 1, u) * u() ** (1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = normal(u);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const w = u();
    if (Math.log(w) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** One draw of Dirichlet(α·1_k). */
export function dirichletSample(k: number, alpha: number, u: Uniform): number[] {
  const g = Array.from({ length: k }, () => gammaSample(alpha, u));
  const total = g.reduce((a, b) => a + b, 0);
  return total > 0 ? g.map((x) => x / total) : g.map(() => 1 / k);
}

export interface PartitionOptions {
  readonly sites: number;
  readonly type: 'dirichlet' | 'iid';
  readonly alpha: number;
  readonly seed: number;
}

/** The sample indices of each site, each list in increasing order; every sample goes to one site. */
export function partitionByLabel(labels: ArrayLike<number>, options: PartitionOptions): Uint32Array[] {
  const { sites } = options;
  const parts: number[][] = Array.from({ length: sites }, () => []);
  if (options.type === 'iid') {
    const order = epochPermutation(labels.length, options.seed, 0);
    order.forEach((index, i) => {
      parts[i % sites]?.push(index);
    });
  } else {
    const byClass = new Map<number, number[]>();
    for (let i = 0; i < labels.length; i++) {
      const label = labels[i] as number;
      const list = byClass.get(label) ?? [];
      list.push(i);
      byClass.set(label, list);
    }
    for (const [label, members] of [...byClass].sort((a, b) => a[0] - b[0])) {
      const u = uniformOf(mixSeed(options.seed, label));
      const shares = dirichletSample(sites, options.alpha, u);
      const order = epochPermutation(members.length, mixSeed(options.seed, label, 1), 0);
      const counts = splitProportionally(members.length, shares);
      let at = 0;
      counts.forEach((count, site) => {
        for (let j = 0; j < count; j++) parts[site]?.push(members[order[at + j] as number] as number);
        at += count;
      });
    }
  }
  return parts.map((p) => Uint32Array.from(p.sort((a, b) => a - b)));
}
