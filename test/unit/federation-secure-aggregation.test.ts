import type { KeyObject } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { newSiteSigningKey } from '../../operator/api/federation.ts';
import { FederationSpecSchema } from '../../operator/api/training-job.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { federationIdentity } from '../../worker/federation/client.ts';
import {
  type Advertise,
  FederationKeyRejected,
  RoundFailed,
  SecureRound,
  type Unmask,
} from '../../worker/federation/round.ts';
import {
  addMask,
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
  signingPublicKey,
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

/** Pearson's r of two vectors. */
function correlation(x: Float32Array, y: Float32Array): number {
  const mean = (v: Float32Array) => v.reduce((a, b) => a + b, 0) / v.length;
  const [mx, my] = [mean(x), mean(y)];
  let cov = 0;
  let vx = 0;
  let vy = 0;
  for (let i = 0; i < x.length; i++) {
    const a = (x[i] as number) - mx;
    const b = (y[i] as number) - my;
    cov += a * b;
    vx += a * a;
    vy += b * b;
  }
  return cov / Math.sqrt(vx * vy);
}

test('a masked delta is uncorrelated with the true delta', () => {
  const keys = [newKeyPair(), newKeyPair(), newKeyPair()];
  const publics = new Map(keys.map((k, i) => [i, k.public]));
  const delta = vector(7, 20_000);
  const masked = decodeFixed(
    maskInput(0, encodeFixed(delta), (keys[0] as { secret: Buffer }).secret, publics, 'r'),
  );
  const r = correlation(delta, masked);
  // 20,000 independent pairs: |r| of noise stays below 4/√n ≈ 0.028.
  assert.ok(Math.abs(r) < 0.03, `correlation ${r}`);
  // The measure can fail: the unmasked fixed-point delta is the delta.
  assert.ok(correlation(delta, decodeFixed(encodeFixed(delta))) > 0.999);
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

test('a sealed pair of shares opens only under its channel key and binding', () => {
  const key = Buffer.alloc(32, 3);
  const pair = { key: { x: 2, y: 123456789n }, seed: { x: 2, y: 987654321n } };
  assert.equal(openShare(sealShare(pair, key, 'r1|0|1'), key, 'r1|0|1'), pair);
  assert.throws(() => openShare(sealShare(pair, key, 'r1|0|1'), Buffer.alloc(32, 4), 'r1|0|1'));
  assert.throws(() => openShare(sealShare(pair, key, 'r1|0|1'), key, 'r1|0|2'), 'moved to another holder');
});

const ROUND = 'job/3/0';

/** Every site's identity key, and the public keys as every site knows them. */
function identities(n: number) {
  const keys = Array.from({ length: n }, newSiteSigningKey);
  const siteKeys = new Map(keys.map((k, i) => [i, signingPublicKey(k.public) as KeyObject]));
  return { keys, siteKeys };
}

function leaders(n: number, secure: boolean, threshold: number): SecureRound[] {
  const { keys, siteKeys } = identities(n);
  return keys.map(
    (key, self) =>
      new SecureRound({ self, roundId: ROUND, secure, threshold, siteKeys, signingKey: key.privatePem }),
  );
}

/** Phases 1 and 2 among all leaders. */
function advertiseAndShare(rounds: SecureRound[], samples: number[]): void {
  const ads = rounds.map((r, i) => r.advertise(samples[i] as number));
  for (const [i, r] of rounds.entries()) for (const [j, a] of ads.entries()) if (j !== i) r.onAdvertise(a);
  const shares = rounds.map((r) => r.shares());
  for (const [i, r] of rounds.entries()) for (const [j, s] of shares.entries()) if (j !== i) r.onShares(s);
}

/** Phases 3 and 4 among the `live` leaders: inputs exchanged, then the reveals. */
function inputAndUnmask(rounds: SecureRound[], live: number[], deltas: Float32Array[]): Unmask[] {
  const inputs = new Map(live.map((i) => [i, (rounds[i] as SecureRound).input(deltas[i] as Float32Array)]));
  for (const i of live) for (const [j, words] of inputs) if (j !== i) rounds[i]?.onInput(j, words);
  const unmasks = live.map((i) => (rounds[i] as SecureRound).unmask());
  for (const i of live) for (const u of unmasks) if (u.site !== i) rounds[i]?.onUnmask(u);
  return unmasks;
}

function weightedMean(deltas: Float32Array[], samples: number[], live: number[], length: number) {
  const total = live.reduce((a, i) => a + (samples[i] as number), 0);
  const expected = new Float32Array(length);
  for (const i of live)
    for (let k = 0; k < length; k++)
      expected[k] =
        (expected[k] as number) +
        ((deltas[i] as Float32Array)[k] as number) * ((samples[i] as number) / total);
  return expected;
}

/** Runs the four phases among `sites` leaders; `drop` sites stop after sharing their keys. */
function runRound(options: {
  samples: number[];
  secure: boolean;
  threshold: number;
  drop?: number[];
  length: number;
}) {
  const n = options.samples.length;
  const rounds = leaders(n, options.secure, options.threshold);
  advertiseAndShare(rounds, options.samples);
  const deltas = options.samples.map((_, i) => vector(100 + i, options.length));
  const live = rounds.map((_, i) => i).filter((i) => !options.drop?.includes(i));
  inputAndUnmask(rounds, live, deltas);
  const expected = weightedMean(deltas, options.samples, live, options.length);
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

test('double masking: survivors reveal seed shares of survivors and key shares of the dropped, never both', () => {
  const rounds = leaders(4, true, 3);
  advertiseAndShare(rounds, [1, 1, 1, 1]);
  const deltas = [0, 1, 2, 3].map((i) => vector(200 + i, 64));
  const unmasks = inputAndUnmask(rounds, [0, 1, 3], deltas);
  for (const u of unmasks) {
    assert.equal(Object.keys(u.seeds).sort(), ['0', '1', '3']);
    assert.equal(Object.keys(u.keys), ['2']);
  }
  // Asked again (a retried read of the phase), a holder says the same: no second kind of share.
  assert.is(rounds[0]?.unmask(), unmasks[0]);
});

test('double masking: an input stripped of all its pairwise masks is still noise (the self-mask)', () => {
  const rounds = leaders(3, true, 2);
  advertiseAndShare(rounds, [1, 1, 1]);
  const delta = vector(9, 20_000);
  const masked = (rounds[0] as SecureRound).input(delta);
  assert.ok(Math.abs(correlation(delta, decodeFixed(masked))) < 0.03);
});

test('a late site (taken for dropped, its vector arriving after the unmask) is still not revealed', () => {
  const samples = [10, 20, 30, 40];
  const rounds = leaders(4, true, 3);
  advertiseAndShare(rounds, samples);
  const length = 20_000;
  const deltas = samples.map((_, i) => vector(300 + i, length));
  const live = [0, 1, 3];
  const lateInput = (rounds[2] as SecureRound).input(deltas[2] as Float32Array);
  const unmasks = inputAndUnmask(rounds, live, deltas);
  const expected = weightedMean(deltas, samples, live, length);
  for (const i of live) {
    rounds[i]?.onInput(2, lateInput); // it arrives now
    const r = (rounds[i] as SecureRound).result(length);
    assert.equal(r.sites, live, 'the late input is not in the sum');
    for (let k = 0; k < length; k += 97)
      assert.ok(Math.abs((r.mean[k] as number) - (expected[k] as number)) < 1e-5, `element ${k}`);
    assert.is(rounds[i]?.unmask(), unmasks[live.indexOf(i)], 'a late input changes no reveal');
  }
  // Everything public is every reveal: site 2's key rebuilds (it was dropped), its seed cannot.
  assert.is(unmasks.filter((u) => u.seeds['2'] !== undefined).length, 0);
  const s2 = shamirCombine(
    unmasks.map((u) => u.keys['2']).map((s) => ({ x: s?.x ?? 0, y: BigInt(`0x${s?.y ?? '0'}`) })),
    3,
  );
  // Strip every pairwise mask from site 2's input (the most anyone can): the self-mask remains.
  const stripped = lateInput.slice();
  for (const peer of [0, 1, 3]) {
    const ad = (rounds[0] as SecureRound).advertised.get(peer) as Advertise;
    const pub = Buffer.from(ad.maskKey as string, 'base64');
    addMask(stripped, expandMask(pairwiseSeed(s2, pub, ROUND, 'mask'), stripped.length), peer > 2 ? -1 : 1);
  }
  const weighted = (deltas[2] as Float32Array).map((v) => (v * 30) / 100);
  const r = correlation(weighted, decodeFixed(stripped).subarray(0, length));
  assert.ok(Math.abs(r) < 0.03, `correlation ${r}`);
});

test('inconsistent views of who survived (a relay showing a late input to some): never both secrets', () => {
  // 5 sites, t = 3: site 4's input reaches sites 0, 1 and itself, not 2 and 3, before they unmask.
  const rounds = leaders(5, true, 3);
  advertiseAndShare(rounds, [1, 1, 1, 1, 1]);
  const deltas = [0, 1, 2, 3, 4].map((i) => vector(400 + i, 256));
  const inputs = rounds.map((r, i) => r.input(deltas[i] as Float32Array));
  const sees = (i: number) => (i === 2 || i === 3 ? [0, 1, 2, 3] : [0, 1, 2, 3, 4]);
  for (const [i, r] of rounds.entries())
    for (const j of sees(i)) if (j !== i) r.onInput(j, inputs[j] as Uint32Array);
  const unmasks = rounds.map((r) => r.unmask());
  for (const [i, r] of rounds.entries()) for (const u of unmasks) if (u.site !== i) r.onUnmask(u);
  const seeds = unmasks.filter((u) => u.seeds['4'] !== undefined).length;
  const keys = unmasks.filter((u) => u.keys['4'] !== undefined).length;
  assert.is(seeds + keys, 5, 'every holder revealed one share of site 4');
  assert.ok(seeds < 3 || keys < 3, `${seeds} seed and ${keys} key shares of site 4: never both rebuildable`);
  // Those that saw it sum it; those that did not cannot rebuild its key and fail the attempt (a retry).
  const all = deltas.map((_, i) => i);
  const expected = weightedMean(deltas, [1, 1, 1, 1, 1], all, 256);
  for (const i of [0, 1, 4]) {
    const r = (rounds[i] as SecureRound).result(256);
    assert.equal(r.sites, all);
    assert.ok(r.mean.every((v, k) => Math.abs(v - (expected[k] as number)) < 1e-5));
  }
  for (const i of [2, 3])
    assert.throws(
      () => rounds[i]?.result(256),
      (e: unknown) => e instanceof RoundFailed && /retry/.test(String(e)),
    );
});

test('signatures: keys changed in the middle, or signed by another key, are refused naming the site', () => {
  const names = ['north', 'south', 'east'];
  const other = leaders(3, true, 2);
  const { siteKeys } = identities(3);
  const victim = new SecureRound({
    self: 0,
    roundId: ROUND,
    secure: true,
    threshold: 2,
    siteKeys,
    siteNames: names,
    observer: true,
  });
  assert.throws(
    () => victim.onAdvertise((other[1] as SecureRound).advertise(5)),
    (e: unknown) => e instanceof FederationKeyRejected && /site "south".*a bad signature/.test(e.message),
  );
  const own = leaders(3, true, 2);
  const honest = own[1]?.advertise(5) as Advertise;
  const swapped = { ...honest, maskKey: newKeyPair().public.toString('base64') };
  assert.throws(
    () => own[0]?.onAdvertise(swapped),
    (e: unknown) => e instanceof FederationKeyRejected && /site 1\b/.test(e.message),
  );
  assert.throws(
    () => own[0]?.onAdvertise({ ...honest, samples: 500 }),
    /a bad signature/,
    'samples are signed',
  );
  const { signature: _, ...unsigned } = honest;
  assert.throws(() => own[0]?.onAdvertise(unsigned), /no signature/);
  own[0]?.onAdvertise(honest); // the untouched advertisement passes
  assert.is(own[0]?.advertised.get(1), honest);
});

test('federation identity: every site needs a public key; a key file or pin that disagrees is refused', () => {
  const keys = [newSiteSigningKey(), newSiteSigningKey()];
  const spec = FederationSpecSchema.parse({ rounds: 1, sites: [{ name: 'a' }, { name: 'b' }] });
  const launcher = { a: keys[0]?.public as string, b: keys[1]?.public as string };
  assert.is(federationIdentity(spec, 0, keys[0]?.privatePem, launcher).siteKeys.size, 2);
  assert.throws(
    () => federationIdentity(spec, 0, keys[0]?.privatePem, { a: launcher.a }),
    /site "b" has no signing public key/,
  );
  assert.throws(() => federationIdentity(spec, 0, undefined, launcher), /site "a" has no signing key/);
  assert.throws(() => federationIdentity(spec, 0, keys[1]?.privatePem, launcher), /does not hold the key/);
  const pinned = FederationSpecSchema.parse({
    rounds: 1,
    sites: [{ name: 'a', signingKey: newSiteSigningKey().public }, { name: 'b' }],
  });
  assert.throws(() => federationIdentity(pinned, 0, keys[0]?.privatePem, launcher), /sites\[0\]\.signingKey/);
  const off = FederationSpecSchema.parse({
    rounds: 1,
    sites: [{ name: 'a' }, { name: 'b' }],
    secureAggregation: { enabled: false },
  });
  assert.is(federationIdentity(off, 0, undefined, undefined).siteKeys.size, 0);
});

test('spec: a signing key must be an Ed25519 public key; the threshold more than half the sites', () => {
  const bad = FederationSpecSchema.safeParse({
    rounds: 1,
    sites: [{ name: 'a', signingKey: 'bm90IGEga2V5' }, { name: 'b' }],
  });
  assert.not.ok(bad.success);
  assert.match(JSON.stringify(bad.error?.issues), /Ed25519 public key/);
  const low = FederationSpecSchema.safeParse({
    rounds: 1,
    sites: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }],
    secureAggregation: { threshold: 2 },
  });
  assert.not.ok(low.success);
  assert.match(JSON.stringify(low.error?.issues), /more than half the sites/);
});

test.run();
