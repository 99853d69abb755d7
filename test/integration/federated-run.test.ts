/**
 * spec.federation end to end: `tensile run` starts three sites (one of two workers) as real worker
 * processes around a real nats-server, each training on its Dirichlet(0.5) part of real Fashion-MNIST
 * samples. With secure aggregation on, every round must complete at every rank with the same mean,
 * that mean must be the sample-weighted average of the sites' plain deltas (written aside by the test
 * audit, TENSILE_FEDERATION_AUDIT) to fixed-point precision, and accuracy must rise over the rounds.
 * Then a site is killed with SIGKILL mid-run: the other sites finish every round without it, with
 * differential privacy on (clipped, noised deltas) and the ε the RDP accountant gives reported.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gaussianEpsilon } from '../../operator/api/privacy-accountant.ts';
import type { FederatedSummary } from '../../operator/local-run/federated-run.ts';
import { fashionMnistDir } from '../helpers/fashion-mnist.ts';
import { readAuditedRound, worstMeanError } from '../helpers/federation-audit.ts';
import { tensileRun, writeJobManifest } from '../helpers/tensile-run.ts';

const FASHION = fashionMnistDir();
const dir = mkdtempSync(join(tmpdir(), 'tensile-federated-'));
const ROUNDS = 5;
const LOCAL_STEPS = 15;

function manifest(name: string, federation: Record<string, unknown>): string {
  return writeJobManifest(join(dir, `${name}.yaml`), name, {
    model: { mlp: { hiddenUnits: [64], dropout: 0 }, seed: 3 },
    dataset: {
      format: 'idx',
      path: FASHION,
      normalize: 'scale',
      maxTrainSamples: 6000,
      eval: { source: 'test', maxSamples: 1000 },
    },
    optimizer: { type: 'sgd', learningRate: 0.1 },
    batch: { global: 32 },
    checkpoint: { intervalSteps: 1000 },
    rendezvous: { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 500 },
    federation: {
      rounds: ROUNDS,
      localSteps: LOCAL_STEPS,
      partition: { type: 'dirichlet', alpha: 0.5, seed: 1 },
      sites: [{ name: 'a', replicas: 2 }, { name: 'b' }, { name: 'c' }],
      ...federation,
    },
  });
}

const readSummary = (out: string): FederatedSummary =>
  JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as FederatedSummary;

/** The ranks that logged a federation-round event for `round`, over every site's worker logs. */
function ranksInRound(out: string, round: number): number {
  let n = 0;
  for (const site of ['a', 'b', 'c'])
    for (const log of readdirSync(join(out, site)).filter((f) => f.endsWith('.log')))
      for (const line of readFileSync(join(out, site, log), 'utf8').split('\n'))
        if (line.includes('"event":"federation-round"') && line.includes(`"round":${round},`)) n++;
  return n;
}

test('secure FedAvg over 3 sites: rounds complete, the aggregate is the plain weighted average, accuracy rises', async () => {
  const out = join(dir, 'secure');
  const run = tensileRun(manifest('fed-secure', {}), out, [], { TENSILE_FEDERATION_AUDIT: '1' });
  const { code } = await run.done;
  assert.is(code, 0, run.lines.slice(-30).join('\n'));
  const summary = readSummary(out);
  assert.is(summary.rounds.length, ROUNDS);
  for (const r of summary.rounds) {
    assert.equal([...r.sites], [0, 1, 2], `round ${r.round}`);
    assert.ok(r.agreed, `round ${r.round}: every rank applied the same mean`);
  }
  const audit = join(out, 'federation');
  const files = readdirSync(audit);
  for (let round = 1; round <= ROUNDS; round++) {
    const sites = ['a', 'b', 'c'];
    const audited = readAuditedRound(audit, round, sites);
    const { means } = audited;
    // Every rank that applied the round wrote its mean (a rank of site a that joined its site's world
    // late, on a loaded machine, starts at a later round).
    assert.is(means.length, ranksInRound(out, round), 'every rank of every site wrote the mean it applied');
    for (const s of sites)
      assert.ok(files.includes(`r${round}-delta-${s}.bin`), `site ${s} in round ${round}`);
    const worst = worstMeanError(audited);
    // Fixed point at 2^-20 per site, divided by the summed weight: a few 1e-6 at most.
    assert.ok(worst < 1e-5, `round ${round}: the secure mean is ${worst} from the plain one`);
  }
  // The first evaluated round: a rank joining its site's world exactly at a round's end (a loaded
  // machine) leaves that round without an evaluation line.
  const evaluated = summary.rounds.filter((r) => r.accuracy !== null);
  assert.ok(evaluated.length >= ROUNDS - 1, `${evaluated.length} of ${ROUNDS} rounds evaluated`);
  const first = evaluated[0]?.accuracy ?? 1;
  const last = summary.rounds.at(-1)?.accuracy ?? 0;
  assert.ok(
    last > first,
    `accuracy ${first} after round ${evaluated[0]?.round}, ${last} after round ${ROUNDS}`,
  );
  assert.ok(last > 0.6, `accuracy after ${ROUNDS} rounds: ${last}`);
});

test('a site killed mid-run: the others finish every round without it (with differential privacy)', async () => {
  const out = join(dir, 'killed');
  const dp = { clipNorm: 5, noiseMultiplier: 0.001, delta: 1e-5 };
  const run = tensileRun(
    manifest('fed-killed', {
      roundTimeoutMillis: 5000,
      aggregation: 'fedprox',
      proximalMu: 0.01,
      differentialPrivacy: dp,
    }),
    out,
  );
  const pid = Number(/pid (\d+)/.exec(await run.waitFor(/fed-killed-c-worker-0: pid \d+/))?.[1]);
  await run.waitFor(/^round 2:/);
  process.kill(pid, 'SIGKILL');
  const { code } = await run.done;
  assert.is(code, 1, 'the killed worker is reported as failed');
  const summary = readSummary(out);
  assert.is(summary.rounds.length, ROUNDS, run.lines.slice(-20).join('\n'));
  const last = summary.rounds.at(-1);
  assert.equal([...(last?.sites ?? [])], [0, 1], 'the last round is the two surviving sites’');
  assert.ok(last?.agreed);
  assert.equal(
    summary.exitCodes.filter((c) => c === 0).length,
    3,
    'the surviving sites’ three workers finished',
  );
  assert.equal(summary.privacy, {
    ...dp,
    epsilon: gaussianEpsilon(dp.noiseMultiplier, ROUNDS, dp.delta).epsilon,
  });
  const epsilons = summary.rounds.map((r) => r.epsilon ?? Number.NaN);
  for (const [i, e] of epsilons.entries())
    assert.is(e, gaussianEpsilon(dp.noiseMultiplier, i + 1, dp.delta).epsilon, `ε after round ${i + 1}`);
  assert.ok(
    run.lines.some((l) => /differential privacy ε = \S+ at δ = 0.00001/.test(l)),
    'ε on the console',
  );
});

test.run();
