import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { dirichletSample, gammaSample, partitionByLabel } from '../../worker/federation/partition.ts';

const labels = (() => {
  const next = uint32Stream(5);
  return Int32Array.from({ length: 6000 }, () => next() % 10);
})();

const classCounts = (part: Uint32Array) => {
  const counts = new Array(10).fill(0);
  for (const i of part) counts[labels[i] as number]++;
  return counts;
};

for (const c of [
  { type: 'dirichlet' as const, alpha: 0.5, sites: 4 },
  { type: 'dirichlet' as const, alpha: 100, sites: 3 },
  { type: 'iid' as const, alpha: 1, sites: 5 },
]) {
  test(`${c.type} α=${c.alpha} over ${c.sites} sites: every sample in exactly one site, deterministic`, () => {
    const parts = partitionByLabel(labels, { ...c, seed: 1 });
    assert.is(parts.length, c.sites);
    const seen = new Uint8Array(labels.length);
    for (const p of parts) for (const i of p) seen[i] = (seen[i] as number) + 1;
    assert.ok(seen.every((s) => s === 1));
    assert.equal(
      partitionByLabel(labels, { ...c, seed: 1 }).map((p) => [...p]),
      parts.map((p) => [...p]),
    );
    assert.not.equal(
      partitionByLabel(labels, { ...c, seed: 2 }).map((p) => [...p]),
      parts.map((p) => [...p]),
    );
  });
}

/** Mean over sites of the largest class's share of the site: 0.1 for a perfectly even split. */
const skew = (parts: Uint32Array[]) =>
  parts.reduce((a, p) => a + Math.max(...classCounts(p)) / Math.max(1, p.length), 0) / parts.length;

test('small α skews the labels, large α and iid do not', () => {
  const skewed = skew(partitionByLabel(labels, { type: 'dirichlet', alpha: 0.1, sites: 4, seed: 1 }));
  const even = skew(partitionByLabel(labels, { type: 'dirichlet', alpha: 1000, sites: 4, seed: 1 }));
  const iid = skew(partitionByLabel(labels, { type: 'iid', alpha: 1, sites: 4, seed: 1 }));
  assert.ok(skewed > 0.35, `α=0.1: ${skewed}`);
  assert.ok(even < 0.13, `α=1000: ${even}`);
  assert.ok(iid < 0.13, `iid: ${iid}`);
});

test('gamma and Dirichlet draws have the right means', () => {
  const next = uint32Stream(9);
  const u = () => (next() + 0.5) / 0x100000000;
  for (const shape of [0.3, 1, 4]) {
    let sum = 0;
    for (let i = 0; i < 20_000; i++) sum += gammaSample(shape, u);
    assert.ok(
      Math.abs(sum / 20_000 - shape) < 0.05 * Math.max(1, shape),
      `Gamma(${shape}) mean ${sum / 20_000}`,
    );
  }
  const d = dirichletSample(4, 0.5, u);
  assert.ok(Math.abs(d.reduce((a, b) => a + b, 0) - 1) < 1e-12);
});

test.run();
