/**
 * Local SGD (Stich 2019; Lin et al. 2020): every rank takes H steps on its own share of each global
 * batch, then the world averages. What is averaged is the change since the last averaging (the
 * anchor), weighted by b_i / B, so the sum over ranks is the weighted mean of the ranks' models.
 * DiLoCo (Douillard et al. 2023) applies that mean change Δ with an outer Nesterov optimizer instead:
 *   m ← μ·m + Δ;  w ← anchor − η·(Δ + μ·m)
 * (torch.optim.SGD with nesterov=True, reading Δ as the outer gradient). With no outer optimizer the
 * result is plain averaging (η = 1, μ = 0). Non-trainable weights (batch-norm statistics) are
 * always plainly averaged: momentum on a moving variance could drive it below zero.
 */

export interface OuterOptimizer {
  readonly learningRate: number;
  readonly momentum: number;
}

/** This rank's contribution to the averaging: (anchor − local) · weight, into `out`. */
export function weightedDelta(
  anchor: Float32Array,
  local: Float32Array,
  weight: number,
  out: Float32Array,
): void {
  for (let i = 0; i < anchor.length; i++) out[i] = ((anchor[i] as number) - (local[i] as number)) * weight;
}

/**
 * The averaged weights from the anchor and the world's summed Δ, written into `anchor` (the new
 * anchor); `trainable[i]` says whether element i follows the outer optimizer. `momentum` is updated.
 */
export function outerStep(
  anchor: Float32Array,
  delta: Float32Array,
  trainable: (i: number) => boolean,
  outer: OuterOptimizer | undefined,
  momentum: Float32Array | undefined,
): void {
  for (let i = 0; i < anchor.length; i++) {
    const d = delta[i] as number;
    if (outer === undefined || momentum === undefined || !trainable(i)) {
      anchor[i] = (anchor[i] as number) - d;
      continue;
    }
    const m = outer.momentum * (momentum[i] as number) + d;
    momentum[i] = m;
    anchor[i] = (anchor[i] as number) - outer.learningRate * (d + outer.momentum * m);
  }
}

/** Whether the step that completes `stepsAfter` steps ends with an averaging. */
export function averagingDue(stepsAfter: number, localSteps: number, forced: boolean): boolean {
  return forced || localSteps <= 1 || stepsAfter % localSteps === 0;
}
