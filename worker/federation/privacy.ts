/**
 * A site's side of spec.federation.differentialPrivacy: its round delta clipped to L2 norm C, then
 * Gaussian noise of standard deviation z·C added to every coordinate, before the delta is weighted and
 * masked — so what leaves the site is already private, whatever happens to the aggregate. The ε this
 * spends is operator/api/privacy-accountant.ts's. Pure but for the default randomness.
 */
import { randomBytes } from 'node:crypto';

/** A uniform draw in (0, 1) from the system's CSPRNG: noise an observer could predict would be none. */
export function secureUniform(): number {
  for (;;) {
    const u = randomBytes(6).readUIntBE(0, 6) / 2 ** 48;
    if (u > 0) return u;
  }
}

/** Clips `delta` in place to L2 norm ≤ `clipNorm`; returns the norm it had. */
export function clipL2(delta: Float32Array, clipNorm: number): number {
  let sq = 0;
  for (const v of delta) sq += v * v;
  const norm = Math.sqrt(sq);
  if (norm > clipNorm) {
    const scale = clipNorm / norm;
    for (let i = 0; i < delta.length; i++) delta[i] = (delta[i] as number) * scale;
  }
  return norm;
}

/** Adds N(0, sigma²) to every coordinate (Box–Muller, two normals per pair of uniforms). */
export function addGaussianNoise(
  delta: Float32Array,
  sigma: number,
  uniform: () => number = secureUniform,
): void {
  for (let i = 0; i < delta.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())) * sigma;
    const theta = 2 * Math.PI * uniform();
    delta[i] = (delta[i] as number) + r * Math.cos(theta);
    if (i + 1 < delta.length) delta[i + 1] = (delta[i + 1] as number) + r * Math.sin(theta);
  }
}

export interface PrivacySettings {
  readonly clipNorm: number;
  readonly noiseMultiplier: number;
}

/** The delta a site releases: clipped, then noised; returns its norm before the clip. */
export function privatize(
  delta: Float32Array,
  settings: PrivacySettings,
  uniform: () => number = secureUniform,
): number {
  const norm = clipL2(delta, settings.clipNorm);
  addGaussianNoise(delta, settings.noiseMultiplier * settings.clipNorm, uniform);
  return norm;
}
