/**
 * The ε a site has spent under spec.federation.differentialPrivacy: Rényi differential privacy of the
 * Gaussian mechanism (Mironov 2017), composed over rounds and converted to (ε, δ). Every round a site
 * releases its delta clipped to L2 norm C plus N(0, (z·C)²) per coordinate: sensitivity C, so the RDP
 * of one round at order α is α / (2z²), and T rounds compose to T·α / (2z²). No subsampling: every
 * site takes part in every round. The conversion to (ε, δ) is Balle et al. 2020 (Theorem 21), over
 * the orders Opacus's RDPAccountant uses, so the figures match that accountant's for sampling rate 1.
 * Pure; shared by the worker (which reports it each round) and whatever reads the reports.
 */

/** Opacus's default orders: 1.1 … 10.9 in steps of 0.1, then 12 … 63. */
export const RDP_ORDERS: readonly number[] = [
  ...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10),
  ...Array.from({ length: 52 }, (_, i) => 12 + i),
];

/** The RDP at `order` of `rounds` compositions of the Gaussian mechanism with noise multiplier z. */
export function gaussianRdp(noiseMultiplier: number, rounds: number, order: number): number {
  return (rounds * order) / (2 * noiseMultiplier * noiseMultiplier);
}

export interface PrivacySpent {
  readonly epsilon: number;
  readonly delta: number;
  /** The order that gave the smallest ε. */
  readonly order: number;
}

/** (ε, δ) from RDP values at the given orders: the smallest ε over the orders. */
export function epsilonFromRdp(
  orders: readonly number[],
  rdp: (order: number) => number,
  delta: number,
): PrivacySpent {
  if (!(delta > 0 && delta < 1)) throw new RangeError(`δ must be in (0, 1), got ${delta}`);
  let best: PrivacySpent = { epsilon: Number.POSITIVE_INFINITY, delta, order: Number.NaN };
  for (const a of orders) {
    const epsilon = rdp(a) - (Math.log(delta) + Math.log(a)) / (a - 1) + Math.log((a - 1) / a);
    if (epsilon < best.epsilon) best = { epsilon: Math.max(0, epsilon), delta, order: a };
  }
  return best;
}

/** What `rounds` rounds of the Gaussian mechanism with noise multiplier z have spent, at δ. */
export function gaussianEpsilon(noiseMultiplier: number, rounds: number, delta: number): PrivacySpent {
  if (rounds === 0) return { epsilon: 0, delta, order: Number.NaN };
  return epsilonFromRdp(RDP_ORDERS, (a) => gaussianRdp(noiseMultiplier, rounds, a), delta);
}
