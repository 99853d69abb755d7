import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { RoundFailed, SecureRound } from '../../worker/federation/round.ts';
import {
  decodeFixed,
  encodeFixed,
  expandMask,
  maskInput,
  newKeyPair,
  openShare,
  pairwiseSeed,
  sealShare,
  shamirCombine,
  shamirSplit,
  sumInputs,
} from '../../worker/federation/secure-aggregation.ts';

const vector = (seed: number, length: number): Float32Array => {
  const next = uint32Stream(seed);
  return Float32Array.from({ length }, () => (next() / 0x100000000 - 0.5) * 0.2);
};

test('both ends of a pair derive the same seed, bound to the round', () => {
  const a = newKeyPair();
  const b = newKeyPair();
  assert.ok(
    pairwiseSeed(a.secret, b.public, 'r1', 'mask').equals(pairwiseSeed(b.secret, a.public, 'r1', 'mask')),
  );
  assert.not.ok(
    pairwiseSeed(a.secret, b.public, 'r1', 'mask').equals(pairwiseSeed(a.secret, b.public, 'r2', 'mask')),
  );
});

test('fixed point round-trips within the scale, negatives included', () => {
  const values = Float32Array.from([0, 1e-3, -1e-3, 0.5, -1.75, 1000, -1000]);
  const back = decodeFixed(encodeFixed(values));
  values.forEach((v, i) => {
    assert.ok(Math.abs((back[i] as number) - v) <= 2 ** -20, `${v} → ${back[i]}`);
  });
});

for (const sites of [2, 3, 5]) {
  test(`masks cancel: ${sites} masked inputs sum to the plain sum exactly`, () => {
    const keys = Array.from({ length: sites }, newKeyPair);
    const publics = new Map(keys.map((k, i) => [i, k.public]));
    const plain = Array.from({ length: sites }, (_, i) => encodeFixed(vector(i + 1, 257)));
    const masked = plain.map((words, i) =>
      maskInput(i, words, (keys[i] as { secret: Buffer }).secret, publics, 'r'),
    );
    assert.equal([...sumInputs(masked, 257)], [...sumInputs(plain, 257)]);
    assert.not.equal([...(masked[0] as Uint32Array)], [...(plain[0] as Uint32Array)]);
  });
}

test('a masked delta is uncorrelated with the true delta', () => {
  const keys = [newKeyPair(), newKeyPair(), newKeyPair()];
  const publics = new Map(keys.map((k, i) => [i, k.public]));
  const delta = vector(7, 20_000);
  const masked = decodeFixed(
    maskInput(0, encodeFixed(delta), (keys[0] as { secret: Buffer }).secret, publics, 'r'),
  );
  const mean = (x: Float32Array) => x.reduce((a, b) => a + b, 0) / x.length;
  const [ma, mb] = [mean(delta), mean(masked)];
  let cov = 0;
  let va = 0;
  let vb = 0;
  for (let i = 0; i < delta.length; i++) {
    const a = (delta[i] as number) - ma;
    const b = (masked[i] as number) - mb;
    cov += a * b;
    va += a * a;
    vb += b * b;
  }
  const correlation = cov / Math.sqrt(va * vb);
  // 20,000 independent pairs: |r| of noise stays below 4/√n ≈ 0.028.
  assert.ok(Math.abs(correlation) < 0.03, `correlation ${correlation}`);
  const words = expandMask(Buffer.alloc(32, 1), 4096);
  const high = words.filter((w) => w >= 0x80000000).length;
  assert.ok(high > 1900 && high < 2200, `mask words look uniform (${high} of 4096 in the upper half)`);
});

const table: { name: string; threshold: number; holders: number[]; pick: number[] }[] = [
  { name: '2 of 3, first two', threshold: 2, holders: [1, 2, 3], pick: [0, 1] },
  { name: '2 of 3, last two', threshold: 2, holders: [1, 2, 3], pick: [1, 2] },
  { name: '3 of 5, scattered', threshold: 3, holders: [1, 2, 3, 4, 5], pick: [4, 0, 2] },
  { name: '1 of 2 (a copy)', threshold: 1, holders: [1, 2], pick: [1] },
];
for (const c of table) {
  test(`Shamir ${c.name} rebuilds the key`, () => {
    const { secret } = newKeyPair();
    const shares = shamirSplit(secret, c.holders, c.threshold);
    assert.ok(
      shamirCombine(
        c.pick.map((i) => shares[i] as (typeof shares)[number]),
        c.threshold,
      ).equals(secret),
    );
  });
}

test('Shamir: fewer shares than the threshold are refused, not guessed', () => {
  const shares = shamirSplit(newKeyPair().secret, [1, 2, 3], 3);
  assert.throws(() => shamirCombine(shares.slice(0, 2), 3), /cannot rebuild/);
});

test('a sealed share opens only under its channel key', () => {
  const key = Buffer.alloc(32, 3);
  const share = { x: 2, y: 123456789n };
  assert.equal(openShare(sealShare(share, key), key), share);
  assert.throws(() => openShare(sealShare(share, key), Buffer.alloc(32, 4)));
});

/** Runs the four phases among `sites` leaders; `drop` sites stop after sharing their keys. */
function runRound(options: {
  samples: number[];
  secure: boolean;
  threshold: number;
  drop?: number[];
  length: number;
}) {
  const n = options.samples.length;
  const rounds = options.samples.map(
    (_, self) =>
      new SecureRound({ self, roundId: 'job/3/0', secure: options.secure, threshold: options.threshold }),
  );
  const ads = rounds.map((r, i) => r.advertise(options.samples[i] as number));
  for (const [i, r] of rounds.entries()) for (const [j, a] of ads.entries()) if (j !== i) r.onAdvertise(a);
  const shares = rounds.map((r) => r.shares());
  for (const [i, r] of rounds.entries()) for (const [j, s] of shares.entries()) if (j !== i) r.onShares(s);
  const deltas = options.samples.map((_, i) => vector(100 + i, options.length));
  const live = rounds.map((_, i) => i).filter((i) => !options.drop?.includes(i));
  const inputs = new Map(live.map((i) => [i, (rounds[i] as SecureRound).input(deltas[i] as Float32Array)]));
  for (const i of live) for (const [j, words] of inputs) if (j !== i) rounds[i]?.onInput(j, words);
  const unmasks = live.map((i) => (rounds[i] as SecureRound).unmask());
  for (const i of live) for (const u of unmasks) if (u.site !== i) rounds[i]?.onUnmask(u);
  const total = live.reduce((a, i) => a + (options.samples[i] as number), 0);
  const expected = new Float32Array(options.length);
  for (const i of live)
    for (let k = 0; k < options.length; k++)
      expected[k] =
        (expected[k] as number) +
        ((deltas[i] as Float32Array)[k] as number) * ((options.samples[i] as number) / total);
  return { results: live.map((i) => (rounds[i] as SecureRound).result(options.length)), expected, n };
}

const rounds: { name: string; samples: number[]; secure: boolean; threshold: number; drop?: number[] }[] = [
  { name: 'plain FedAvg of 3 sites', samples: [100, 300, 600], secure: false, threshold: 2 },
  { name: 'secure FedAvg of 3 sites', samples: [100, 300, 600], secure: true, threshold: 2 },
  {
    name: 'secure, 4 sites, one dropped after sharing',
    samples: [500, 500, 1000, 2000],
    secure: true,
    threshold: 3,
    drop: [2],
  },
  {
    name: 'secure, 5 sites, two dropped',
    samples: [1, 2, 3, 4, 5],
    secure: true,
    threshold: 3,
    drop: [0, 4],
  },
];
for (const c of rounds) {
  test(`round: ${c.name} gives the sample-weighted mean of the survivors`, () => {
    const { results, expected } = runRound({ ...c, length: 513 });
    for (const r of results) {
      assert.equal(r.sites.length, c.samples.length - (c.drop?.length ?? 0));
      for (let k = 0; k < expected.length; k++)
        assert.ok(
          Math.abs((r.mean[k] as number) - (expected[k] as number)) < 1e-5,
          `element ${k}: ${r.mean[k]} vs ${expected[k]}`,
        );
      assert.equal([...r.mean], [...(results[0]?.mean ?? [])], 'every leader gets the same aggregate');
    }
  });
}

test('round: more drops than the threshold allows fail the round (to be retried), not a wrong sum', () => {
  assert.throws(
    () => runRound({ samples: [1, 1, 1, 1], secure: true, threshold: 3, drop: [0, 1], length: 8 }),
    (e: unknown) => e instanceof RoundFailed && /retry the round/.test(e.message),
  );
});

test.run();
