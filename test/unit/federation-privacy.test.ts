/**
 * spec.federation.differentialPrivacy: the clip, the noise, and the accountant. The expected ε are
 * Opacus 1.6.0's RDPAccountant (opacus.accountants.analysis.rdp: compute_rdp with q = 1, then
 * get_privacy_spent over its DEFAULT_ALPHAS), computed outside this repository.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gaussianEpsilon, gaussianRdp, RDP_ORDERS } from '../../operator/api/privacy-accountant.ts';
import { FederationSpecSchema } from '../../operator/api/training-job.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { addGaussianNoise, clipL2, privatize } from '../../worker/federation/privacy.ts';

const seeded = (seed: number) => {
  const next = uint32Stream(seed);
  return () => (next() + 0.5) / 0x100000000;
};

const opacus: { z: number; rounds: number; delta: number; epsilon: number; order: number }[] = [
  { z: 1.0, rounds: 1, delta: 1e-5, epsilon: 4.728507067217623, order: 5.4 },
  { z: 1.0, rounds: 20, delta: 1e-5, epsilon: 30.12663110385034, order: 2.0 },
  { z: 2.0, rounds: 100, delta: 1e-5, epsilon: 35.08175401905626, order: 1.9 },
  { z: 0.5, rounds: 10, delta: 1e-6, epsilon: 51.723724650111365, order: 1.8 },
  { z: 5.0, rounds: 1000, delta: 1e-5, epsilon: 48.80169282486775, order: 1.7 },
  { z: 1.1, rounds: 50, delta: 1e-5, epsilon: 49.925659767016505, order: 1.7 },
];
for (const c of opacus) {
  test(`accountant: z ${c.z}, ${c.rounds} rounds, δ ${c.delta} → ε ${c.epsilon.toFixed(4)} (Opacus)`, () => {
    const spent = gaussianEpsilon(c.z, c.rounds, c.delta);
    assert.ok(Math.abs(spent.epsilon - c.epsilon) < 1e-9, `ε ${spent.epsilon}`);
    assert.ok(Math.abs(spent.order - c.order) < 1e-9, `order ${spent.order}`);
  });
}

test('accountant: the orders are Opacus’s, RDP of the Gaussian is α/(2z²) per round, ε grows with rounds', () => {
  assert.is(RDP_ORDERS.length, 151);
  assert.is(RDP_ORDERS[0], 1.1);
  assert.is(RDP_ORDERS.at(-1), 63);
  assert.is(gaussianRdp(2, 3, 4), 1.5);
  assert.is(gaussianEpsilon(1, 0, 1e-5).epsilon, 0);
  let previous = 0;
  for (const rounds of [1, 2, 5, 10, 50]) {
    const e = gaussianEpsilon(1.5, rounds, 1e-5).epsilon;
    assert.ok(e > previous, `${rounds} rounds: ${e}`);
    previous = e;
  }
  assert.ok(
    gaussianEpsilon(4, 10, 1e-5).epsilon < gaussianEpsilon(2, 10, 1e-5).epsilon,
    'more noise, less ε',
  );
});

test('clip: a delta over the bound is scaled to it, one under it is left alone', () => {
  const long = Float32Array.from([3, 4]);
  assert.is(clipL2(long, 1), 5);
  assert.ok(Math.abs((long[0] as number) - 0.6) < 1e-7 && Math.abs((long[1] as number) - 0.8) < 1e-7);
  const short = Float32Array.from([0.3, 0.4]);
  clipL2(short, 1);
  assert.equal([...short], [...Float32Array.from([0.3, 0.4])]);
});

test('noise: mean 0 and standard deviation σ (odd length too)', () => {
  const n = 40_001;
  const x = new Float32Array(n);
  addGaussianNoise(x, 0.5, seeded(11));
  const mean = x.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(sd - 0.5) < 0.01, `sd ${sd}`);
  assert.ok(x[n - 1] !== 0, 'the last, unpaired coordinate is noised too');
});

test('privatize: the clipped delta plus noise of z·C', () => {
  const delta = Float32Array.from({ length: 10_000 }, () => 1);
  const norm = privatize(delta, { clipNorm: 2, noiseMultiplier: 0.1 }, seeded(5));
  assert.is(norm, 100);
  // Clipped to norm 2: every coordinate 0.02, then noise of σ = 0.2.
  const mean = delta.reduce((a, b) => a + b, 0) / delta.length;
  const sd = Math.sqrt(delta.reduce((a, b) => a + (b - mean) ** 2, 0) / delta.length);
  assert.ok(Math.abs(mean - 0.02) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(sd - 0.2) < 0.01, `sd ${sd}`);
});

test('spec: differentialPrivacy needs clipNorm and noiseMultiplier, δ defaults to 1e-5, bad values named', () => {
  const base = { rounds: 3, sites: [{ name: 'a' }, { name: 'b' }] };
  const ok = FederationSpecSchema.parse({
    ...base,
    differentialPrivacy: { clipNorm: 1, noiseMultiplier: 1.1 },
  });
  assert.equal(ok.differentialPrivacy, { clipNorm: 1, noiseMultiplier: 1.1, delta: 1e-5 });
  for (const [dp, path] of [
    [{ noiseMultiplier: 1 }, 'clipNorm'],
    [{ clipNorm: 0, noiseMultiplier: 1 }, 'clipNorm'],
    [{ clipNorm: 1, noiseMultiplier: -1 }, 'noiseMultiplier'],
    [{ clipNorm: 1, noiseMultiplier: 1, delta: 0.5 }, 'delta'],
    [{ clipNorm: 1, noiseMultiplier: 1, epsilon: 3 }, ''],
  ] as const) {
    const r = FederationSpecSchema.safeParse({ ...base, differentialPrivacy: dp });
    assert.not.ok(r.success, JSON.stringify(dp));
    assert.ok(
      r.error?.issues.some((i) =>
        i.path.join('.').startsWith(`differentialPrivacy${path ? `.${path}` : ''}`),
      ),
      JSON.stringify(r.error?.issues),
    );
  }
});

test.run();
