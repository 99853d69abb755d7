/**
 * The training step: learning, memory, exact resume from a snapshot, micro-batching, and the world as
 * an input (two ranks in one process, summed by a test reducer, equal one rank with their batch).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CommunicationSpecSchema,
  ModelSpecSchema,
  OptimizerSpecSchema,
} from '../../operator/api/training-job.ts';
import { selectBackend } from '../../worker/backend/select.ts';
import { AuditLog, auditEpochs, readAuditFile } from '../../worker/data/audit.ts';
import type { Dataset } from '../../worker/data/dataset.ts';
import { encodePreprocessing, fitNormalization, fitPca } from '../../worker/data/preprocess.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { InMemoryStore } from '../../worker/data/store.ts';
import { buildModel } from '../../worker/model/build.ts';
import type { World } from '../../worker/train/policy.ts';
import { type GradientReducer, LocalReducer } from '../../worker/train/reducer.ts';
import {
  decodeSnapshot,
  encodeSnapshot,
  initialTrainingState,
  type TrainingState,
} from '../../worker/train/snapshot.ts';
import { type StepResult, Trainer } from '../../worker/train/trainer.ts';
import { testBackend } from '../helpers/backend.ts';
import { InProcessReducer, InProcessWorld } from '../helpers/in-process-reducer.ts';

await selectBackend(testBackend());
const dir = mkdtempSync(join(tmpdir(), 'tensile-trainer-'));

/** Three Gaussian blobs in 8 dimensions: learnable in a few dozen steps. */
function blobs(count: number, seed: number): InMemoryStore {
  const next = uint32Stream(seed);
  const u = () => next() / 2 ** 32 - 0.5;
  const features = new Float32Array(count * 8);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = i % 3;
    labels[i] = label;
    for (let j = 0; j < 8; j++) features[i * 8 + j] = (j % 3 === label ? 2 : 0) + u();
  }
  return InMemoryStore.of(features, labels, 8);
}

function dataset(trainSize = 300): Dataset {
  const train = blobs(trainSize, 1);
  return {
    train,
    eval: blobs(150, 2),
    featureShape: [8],
    classes: 3,
    normalization: fitNormalization(train, 'none'),
    pca: undefined,
    sampleShape: [8],
    fingerprint: { trainSamples: trainSize, featureSize: 8, classes: 3 },
    describe: {},
    close: () => undefined,
  };
}

function state(data: Dataset): TrainingState {
  return {
    ...initialTrainingState({ shuffleSeed: 5, modelSeed: 7, dataset: data.fingerprint }),
    preprocessing: encodePreprocessing(data.normalization, data.pca),
  };
}

async function trainer(
  options: {
    model?: object;
    maxPerWorker?: number;
    optimizer?: object;
    audit?: AuditLog;
    data?: Dataset;
  } = {},
) {
  const data = options.data ?? dataset();
  const built = await buildModel(
    ModelSpecSchema.parse({
      mlp: { hiddenUnits: [16], dropout: 0.3, batchNorm: true },
      seed: 7,
      ...(options.model ?? {}),
    }),
    data.sampleShape,
    data.classes,
  );
  return new Trainer({
    model: built,
    optimizer: OptimizerSpecSchema.parse(options.optimizer ?? { learningRate: 0.02 }),
    dataset: data,
    maxPerWorker: options.maxPerWorker,
    state: state(data),
    ...(options.audit === undefined ? {} : { audit: options.audit }),
  });
}

const world = (perWorker: number[], rank = 0): World => ({
  generation: 0,
  rank,
  size: perWorker.length,
  perWorker,
  learningRate: 0.02,
});

function weights(t: Trainer): Float32Array {
  return t.snapshot().weights.buffer;
}

function evaluate(t: Trainer): { loss: number; accuracy: number } {
  const result = t.evaluate(dataset().eval as InMemoryStore);
  if (result === undefined) throw new Error('evaluation without a stop request must finish');
  return result;
}

function maxDifference(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}

test('training learns the blobs, and tensors do not accumulate', async () => {
  const t = await trainer();
  const local = new LocalReducer();
  const before = evaluate(t);
  await t.step(world([32]), local);
  const tensors = tf.memory().numTensors;
  let last = await t.step(world([32]), local);
  for (let i = 0; i < 60; i++) last = await t.step(world([32]), local);
  assert.is(tf.memory().numTensors, tensors, 'tensors per step must be disposed');
  const after = evaluate(t);
  assert.ok(
    after.accuracy > 0.9 && after.accuracy > before.accuracy + 0.2,
    `accuracy ${before.accuracy} → ${after.accuracy}`,
  );
  assert.ok(after.loss < before.loss, `loss ${before.loss} → ${after.loss}`);
  assert.is(tf.memory().numTensors, tensors, 'evaluation disposes its tensors');
  assert.is(last.step, 62);
  // 10 steps per epoch of 300 (the tenth has 12 samples): 6 epochs and 2 steps.
  assert.is(t.state.samples, 6 * 300 + 2 * 32);
  assert.is(t.state.epoch, 6);
  t.dispose();
});

test('FedProx: the proximal term holds the weights near the round’s anchor; off again, they move freely', async () => {
  const free = await trainer();
  const held = await trainer();
  const local = new LocalReducer();
  const start = weights(held);
  held.anchorProximal(10);
  const tensors = tf.memory().numTensors;
  for (let i = 0; i < 30; i++) {
    await free.step(world([32]), local);
    await held.step(world([32]), local);
  }
  assert.is(tf.memory().numTensors, tensors, 'the proximal gradients are disposed every step');
  const moved = (t: Trainer) =>
    Math.sqrt(weights(t).reduce((a, w, i) => a + (w - (start[i] as number)) ** 2, 0));
  assert.ok(moved(held) < 0.5 * moved(free), `held ${moved(held)}, free ${moved(free)}`);
  held.anchorProximal(undefined);
  const before = moved(held);
  for (let i = 0; i < 30; i++) await held.step(world([32]), local);
  assert.ok(moved(held) > before, 'without the term the weights leave the anchor');
  free.dispose();
  held.dispose();
});

test('an aborted evaluation stops early and reports nothing', async () => {
  const t = await trainer();
  const stop = new AbortController();
  stop.abort();
  assert.is(t.evaluate(dataset().eval as InMemoryStore, 10, stop.signal), undefined);
  t.dispose();
});

test('the sampler state advances by the global batch and wraps at the epoch end', async () => {
  const t = await trainer({ data: dataset(100) });
  const local = new LocalReducer();
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await t.step(world([32]), local));
  assert.equal(
    results.map((r) => [r.epoch, r.samples, r.endedEpoch]),
    [
      [0, 32, false],
      [0, 32, false],
      [0, 32, false],
      [1, 4, true],
    ],
  );
  assert.is(t.state.cursor, 0);
  t.dispose();
});

test('a snapshot restored into a fresh trainer continues bit for bit (dropout, batch norm, adam)', async () => {
  const local = new LocalReducer();
  const a = await trainer();
  for (let i = 0; i < 12; i++) await a.step(world([32]), local);
  const snapshot = a.snapshot();
  for (let i = 0; i < 12; i++) await a.step(world([32]), local);
  const b = await trainer({ model: { seed: 99 } });
  // A different initial seed: everything the continuation needs must come from the snapshot.
  b.state.modelSeed = 99;
  b.restore(snapshot);
  assert.is(b.state.step, 12);
  for (let i = 0; i < 12; i++) await b.step(world([32]), local);
  assert.equal(weights(b), weights(a));
  a.dispose();
  b.dispose();
});

test('a snapshot carries the fitted preprocessing; a trainer restored from it transforms inputs the same way', async () => {
  const fitted = dataset();
  const normalization = fitNormalization(fitted.train, 'standardize');
  const pca = fitPca(fitted.train, normalization, 4, 3);
  const withPca = { ...fitted, normalization, pca, sampleShape: [4] };
  const a = await trainer({ data: withPca });
  await a.step(world([32]), new LocalReducer());
  const saved = a.snapshot();
  assert.is(saved.state.preprocessing?.pca?.k, 4);
  // Another fit (here: none at all) on the restoring side: the snapshot's wins.
  const other = {
    ...withPca,
    normalization: fitNormalization(fitted.train, 'none'),
    pca: { ...pca, mean: new Float32Array(8) },
  };
  const b = await trainer({ data: other });
  assert.not.equal(b.preprocessing.normalization.kind, 'standardize');
  b.restore(saved);
  assert.is(b.preprocessing.normalization.kind, 'standardize');
  assert.equal(Array.from(b.preprocessing.pca?.components ?? []), Array.from(pca.components));
  assert.equal(b.evaluate(fitted.eval as InMemoryStore), a.evaluate(fitted.eval as InMemoryStore));
});

test('micro-batches of maxPerWorker give the gradient of the whole batch', async () => {
  const plain = { model: { mlp: { hiddenUnits: [16] } } };
  const whole = await trainer(plain);
  const micro = await trainer({ ...plain, maxPerWorker: 10 });
  const local = new LocalReducer();
  let a = await whole.step(world([32]), local);
  let b = await micro.step(world([32]), local);
  for (let i = 0; i < 5; i++) {
    a = await whole.step(world([32]), local);
    b = await micro.step(world([32]), local);
  }
  assert.ok(Math.abs(a.loss - b.loss) < 1e-5, `loss ${a.loss} vs ${b.loss}`);
  const wa = weights(whole);
  const wb = weights(micro);
  const worst = maxDifference(wa, wb);
  assert.ok(worst < 1e-5, `weights differ by ${worst}`);
  whole.dispose();
  micro.dispose();
});

test('two ranks with b = [12, 20], summed by a reducer, train like one rank with b = 32', async () => {
  const plain = { model: { mlp: { hiddenUnits: [16] } } };
  const single = await trainer(plain);
  const ranks = [await trainer(plain), await trainer(plain)];
  const reducer = new InProcessReducer(2);
  const local = new LocalReducer();
  for (let i = 0; i < 8; i++) {
    const one = await single.step(world([32]), local);
    const [r0, r1] = await Promise.all(ranks.map((t, rank) => t.step(world([12, 20], rank), reducer)));
    assert.is(r0?.localSamples, 12);
    assert.is(r1?.localSamples, 20);
    assert.ok(Math.abs((r0?.loss ?? 0) - one.loss) < 1e-5, `step ${i}: loss ${r0?.loss} vs ${one.loss}`);
  }
  const w = weights(single);
  for (const t of ranks) {
    const worst = maxDifference(w, weights(t));
    assert.ok(worst < 1e-5, `weights differ by ${worst}`);
  }
  assert.equal(weights(ranks[0] as Trainer), weights(ranks[1] as Trainer), 'ranks hold identical weights');
  for (const t of [single, ...ranks]) t.dispose();
});

test("every rank reads every rank's compute seconds, last wait and last update from the step's all-reduce", async () => {
  const plain = { model: { mlp: { hiddenUnits: [16] } } };
  const ranks = [await trainer(plain), await trainer(plain)];
  const reducer = new InProcessReducer(2);
  const results = [];
  for (let i = 0; i < 2; i++)
    results.push(await Promise.all(ranks.map((t, rank) => t.step(world([12, 20], rank), reducer))));
  for (const [r0, r1] of results) {
    assert.equal(r0?.computeSeconds, r1?.computeSeconds, 'the same times on both ranks');
    assert.equal(r0?.waitSeconds, r1?.waitSeconds);
    assert.equal(r0?.updateSeconds, r1?.updateSeconds);
    assert.is(r0?.computeSeconds.length, 2);
    assert.ok(
      r0?.computeSeconds.every((s) => s > 0),
      `compute ${r0?.computeSeconds}`,
    );
  }
  // Rank 0 reaches the all-reduce first and waits there for rank 1's compute (reported a step later).
  assert.equal(results[0]?.[0]?.waitSeconds, [0, 0]);
  assert.ok((results[1]?.[0]?.waitSeconds[0] ?? 0) > 0);
  // The update and bookkeeping follow the all-reduce: the first step of a world carries none, the
  // second both ranks' time since their last all-reduce ended.
  assert.equal(results[0]?.[0]?.updateSeconds, [0, 0]);
  assert.ok(
    results[1]?.[0]?.updateSeconds.every((s) => s > 0),
    `update ${results[1]?.[0]?.updateSeconds}`,
  );
  // An evaluation between two steps is not timed as fixed work: that rank reports none.
  ranks[0]?.untimedGap();
  const [third] = await Promise.all(ranks.map((t, rank) => t.step(world([12, 20], rank), reducer)));
  assert.is(third?.updateSeconds[0], 0);
  assert.ok((third?.updateSeconds[1] ?? 0) > 0);
  for (const t of ranks) t.dispose();
});

test('measureNoise: both ranks read the same noise scale and train exactly as without it (gain 1)', async () => {
  const plain = { model: { mlp: { hiddenUnits: [16] } } };
  const measured = [await trainer(plain), await trainer(plain)];
  const unmeasured = [await trainer(plain), await trainer(plain)];
  const reducers = [new InProcessReducer(2), new InProcessReducer(2)];
  let last: (StepResult | undefined)[] = [];
  for (let i = 0; i < 6; i++) {
    last = await Promise.all(
      measured.map((t, rank) =>
        t.step({ ...world([16, 16], rank), measureNoise: true }, reducers[0] as InProcessReducer),
      ),
    );
    const plainResults = await Promise.all(
      unmeasured.map((t, rank) => t.step(world([16, 16], rank), reducers[1] as InProcessReducer)),
    );
    assert.is(plainResults[0]?.noiseScale, undefined, 'not measured unless asked');
    assert.is(last[0]?.gain, 1);
  }
  const [r0, r1] = last;
  assert.ok((r0?.noiseScale ?? -1) > 0, `noise scale ${r0?.noiseScale}`);
  assert.is(r0?.noiseScale, r1?.noiseScale, 'every rank computes the same');
  assert.equal(
    weights(measured[0] as Trainer),
    weights(unmeasured[0] as Trainer),
    'the norms change nothing',
  );
  const alone = await trainer(plain);
  const single = await alone.step({ ...world([32]), measureNoise: true }, new LocalReducer());
  assert.is(single.noiseScale, undefined, 'a world of one has no spread to measure');
  for (const t of [...measured, ...unmeasured, alone]) t.dispose();
});

/** The non-trainable weights (batch-norm moving statistics) of a trainer, from its snapshot. */
function statistics(t: Trainer): Float32Array[] {
  const { specs, buffer } = t.snapshot().weights;
  return specs
    .filter((s) => s.name.includes('moving_'))
    .map((s) => buffer.slice(s.offset, s.offset + s.size));
}

test('two ranks keep identical batch-norm statistics, and the checksum covers them', async () => {
  const bn = { model: { mlp: { hiddenUnits: [16], dropout: 0, batchNorm: true } } };
  const ranks = [await trainer(bn), await trainer(bn)];
  const initial = statistics(ranks[0] as Trainer);
  assert.ok(initial.length >= 2, 'the model has moving mean and variance');
  const reducer = new InProcessReducer(2);
  for (let i = 0; i < 8; i++) {
    await Promise.all(ranks.map((t, rank) => t.step(world([12, 20], rank), reducer)));
    const [a, b] = ranks.map(statistics);
    assert.equal(a, b, `step ${i}: the ranks' moving statistics differ`);
    assert.is(ranks[0]?.weightsChecksum(), ranks[1]?.weightsChecksum(), `step ${i}: checksums differ`);
  }
  assert.not.equal(statistics(ranks[0] as Trainer), initial, 'the statistics moved');
  // A rank whose statistics alone differ must not pass the lockstep check.
  const snapshot = (ranks[0] as Trainer).snapshot();
  const moving = snapshot.weights.specs.find((s) => s.name.includes('moving_mean'));
  assert.ok(moving !== undefined);
  snapshot.weights.buffer[moving.offset] = (snapshot.weights.buffer[moving.offset] as number) + 0.5;
  (ranks[1] as Trainer).restore(snapshot);
  assert.is.not(ranks[0]?.weightsChecksum(), ranks[1]?.weightsChecksum());
  for (const t of ranks) t.dispose();
});

test('a step whose all-reduce fails leaves the batch-norm statistics as they were', async () => {
  const t = await trainer({ model: { mlp: { hiddenUnits: [16], dropout: 0, batchNorm: true } } });
  const before = statistics(t);
  const failing: GradientReducer = {
    allReduce: () => Promise.reject(new Error('peer lost')),
    allGather: () => Promise.reject(new Error('peer lost')),
  };
  let failed = false;
  try {
    await t.step(world([12, 20], 0), failing);
  } catch {
    failed = true;
  }
  assert.ok(failed, 'the step fails with its all-reduce');
  assert.equal(statistics(t), before);
  assert.is(t.state.step, 0);
  t.dispose();
});

for (const optimizer of [
  { type: 'lamb', learningRate: 0.01, weightDecay: 0.01 },
  { type: 'lars', learningRate: 0.5, trustCoefficient: 0.02, weightDecay: 0.001 },
]) {
  test(`${optimizer.type} under AdaScale on two ranks: a restored world continues bit for bit, gain and progress too`, async () => {
    const adascale: World = {
      ...world([16, 16]),
      adascale: { baseBatch: 16, scale: 2, smoothing: 0.5 },
    };
    const pair = async () => [await trainer({ optimizer }), await trainer({ optimizer })];
    const run = async (ranks: Trainer[], steps: number) => {
      const reducer = new InProcessReducer(2);
      for (let i = 0; i < steps; i++)
        await Promise.all(ranks.map((t, rank) => t.step({ ...adascale, rank }, reducer)));
    };
    const a = await pair();
    await run(a, 6);
    const snapshot = (a[0] as Trainer).snapshot();
    await run(a, 6);
    // Both ranks of the new world restore the source's snapshot, as the state broadcast does.
    const b = await pair();
    for (const t of b) t.restore(snapshot);
    await run(b, 6);
    const [a0, a1] = a as [Trainer, Trainer];
    const [b0, b1] = b as [Trainer, Trainer];
    assert.equal(weights(b0), weights(a0));
    assert.equal(weights(b1), weights(a1));
    assert.equal(weights(a0), weights(a1));
    assert.is(b0.state.progress, a0.state.progress);
    assert.equal(b0.state.adascale, a0.state.adascale);
    assert.ok((a0.state.progress ?? 0) > a0.state.step, 'the gain stretched the progress');
    for (const t of [...a, ...b]) t.dispose();
  });
}

test('the audit records every trained index with its step and epoch', async () => {
  const file = join(dir, 'audit.bin');
  const audit = new AuditLog(file);
  const t = await trainer({ data: dataset(100), audit });
  for (let i = 0; i < 7; i++) await t.step(world([32]), new LocalReducer());
  audit.close();
  const records = readAuditFile(file);
  assert.equal(
    records.map((r) => [r.epoch, r.step, r.indices.length]),
    [
      [0, 0, 32],
      [0, 1, 32],
      [0, 2, 32],
      [0, 3, 4],
      [1, 4, 32],
      [1, 5, 32],
      [1, 6, 32],
    ],
  );
  assert.equal(auditEpochs(records, 100), [
    { epoch: 0, seen: 100, duplicated: 0, missing: 0 },
    { epoch: 1, seen: 96, duplicated: 0, missing: 4 },
  ]);
  t.dispose();
});

/** Two ranks in one process, with the world's communication settings. */
async function pair(communication: object, optimizer?: object) {
  const spec = CommunicationSpecSchema.parse(communication);
  const options = { model: { mlp: { hiddenUnits: [16], dropout: 0 } }, ...(optimizer ? { optimizer } : {}) };
  const ranks = [await trainer(options), await trainer(options)];
  for (const t of ranks) t.beginWorld(spec, 2);
  const reducers = new InProcessWorld(2);
  const step = (averageNow = false) =>
    Promise.all(
      ranks.map((t, r) => t.step(world([16, 16], r), reducers.forRank(r), undefined, { averageNow })),
    );
  return { ranks, step, spec };
}

for (const communication of [
  { compression: 'fp16' },
  { compression: 'bf16' },
  { compression: 'topk', topk: { ratio: 0.1 } },
  { compression: 'topk', topk: { ratio: 0.1, sparsify: 'gradient', warmupSteps: 5 } },
  { compression: 'powersgd', powersgd: { rank: 2, startAfterSteps: 2, minCompressionRate: 1 } },
  { localSteps: 4, outerOptimizer: { learningRate: 0.7 } },
  { localSteps: 4, localStartAfterSteps: 6 },
]) {
  test(`${JSON.stringify(communication)}: both ranks hold the same weights and learn`, async () => {
    const { ranks, step } = await pair(communication);
    const before = evaluate(ranks[0] as Trainer).loss;
    let bytes = 0;
    for (let i = 0; i < 24; i++) bytes += (await step())[0]?.wireBytes ?? 0;
    const [a, b] = ranks as [Trainer, Trainer];
    assert.ok(a.synced && b.synced, 'step 24 ends with an averaging');
    assert.is(a.weightsChecksum(), b.weightsChecksum());
    assert.ok(evaluate(a).loss < 0.8 * before, `loss ${before} → ${evaluate(a).loss}`);
    assert.ok(bytes > 0, 'something crossed the wire');
    for (const t of ranks) t.dispose();
  });
}

test('local SGD between averagings: the snapshot is the last averaging, a new world rolls back to it', async () => {
  const { ranks, step, spec } = await pair({ localSteps: 4 });
  const [a, b] = ranks as [Trainer, Trainer];
  for (let i = 0; i < 4; i++) await step();
  const averaged = a.weightsChecksum();
  assert.is(a.committedStep, 4);
  const local = await step();
  assert.is(local[0]?.wireBytes, 0, 'a local step sends nothing');
  await step();
  assert.is(a.state.step, 6);
  assert.not.ok(a.synced);
  assert.is(a.committedStep, 4);
  const taken = a.snapshot();
  assert.is(taken.state.step, 4, 'a checkpoint or a newcomer gets the agreed state');
  // The checkpoint writer takes the buffers to its thread: the anchor must not go with them.
  structuredClone(taken, {
    transfer: [
      taken.weights.buffer.buffer as ArrayBuffer,
      taken.optimizer.slots.buffer.buffer as ArrayBuffer,
    ],
  });
  assert.is(a.snapshot().weights.buffer.length, weights(b).length);
  assert.not.equal(a.weightsChecksum(), b.weightsChecksum(), 'the ranks drifted apart locally');
  a.beginWorld(spec, 2);
  assert.is(a.state.step, 4);
  assert.is(a.weightsChecksum(), averaged);
  // Alone in the next world: no averaging, but the shared state is kept for a later one, and every
  // snapshot hands out its own copy (the checkpoint writer takes the buffers).
  const outer = await pair({ localSteps: 2, outerOptimizer: { learningRate: 0.7 } });
  for (let i = 0; i < 2; i++) await outer.step();
  const [solo] = outer.ranks as [Trainer, Trainer];
  solo.beginWorld(outer.spec, 1);
  for (let i = 0; i < 2; i++) {
    const s = solo.snapshot();
    assert.ok(
      s.communication !== undefined && s.communication.buffer.length > 0,
      'the outer momentum is kept',
    );
    structuredClone(s, { transfer: [s.communication.buffer.buffer as ArrayBuffer] });
  }
  for (const t of outer.ranks) t.dispose();
  for (const t of ranks) t.dispose();
});

test('post-local SGD: synchronous steps first (sending every step), local steps after', async () => {
  const { ranks, step } = await pair({ localSteps: 4, localStartAfterSteps: 3 });
  const sent: number[] = [];
  for (let i = 0; i < 7; i++) sent.push((await step())[0]?.wireBytes ?? 0);
  assert.equal(
    sent.map((b) => b > 0),
    [true, true, true, true, false, false, false],
    'steps 1–3 synchronous, then local steps averaged at every 4th step of the run',
  );
  const [a, b] = ranks as [Trainer, Trainer];
  assert.not.equal(a.weightsChecksum(), b.weightsChecksum(), 'step 7 has not averaged yet');
  for (const t of ranks) t.dispose();
});

test('top-k of the updates: a survivor keeps its residual in the next world, a redone step drops it', async () => {
  const { ranks, step, spec } = await pair({ compression: 'topk', topk: { ratio: 0.05 } });
  for (let i = 0; i < 3; i++) await step();
  const [a, b] = ranks as [Trainer, Trainer];
  assert.is(a.weightsChecksum(), b.weightsChecksum());
  const residual = (t: Trainer) => [...(t.communicationResidual ?? [])];
  const kept = residual(a);
  assert.ok(
    kept.some((v) => v !== 0),
    'something was held back',
  );
  a.beginWorld(spec, 3);
  assert.equal(residual(a), kept, 'same step, new world: the residual is still owed');
  const earlier = b.snapshot();
  await step();
  b.restore(earlier);
  b.beginWorld(spec, 2);
  assert.equal(residual(b), [], 'a state of another step: the residual does not belong to it');
  for (const t of ranks) t.dispose();
});

test('PowerSGD: Q travels in the snapshot; residuals start over in a new world', async () => {
  const { ranks, step, spec } = await pair({
    compression: 'powersgd',
    powersgd: { rank: 2, startAfterSteps: 0, minCompressionRate: 1 },
  });
  for (let i = 0; i < 3; i++) await step();
  const snapshot = (ranks[0] as Trainer).snapshot();
  assert.ok(snapshot.communication !== undefined && snapshot.communication.buffer.length > 0);
  const newcomer = await trainer({ model: { mlp: { hiddenUnits: [16], dropout: 0 } } });
  newcomer.restore(snapshot);
  newcomer.beginWorld(spec, 2);
  assert.equal([...(newcomer.snapshot().communication?.buffer ?? [])], [...snapshot.communication.buffer]);
  for (const t of [...ranks, newcomer]) t.dispose();
});

/** Two fresh ranks resumed from `a`'s checkpoint, as a restarted job's world: the files round-trip. */
async function resumedPair(
  from: Trainer,
  spec: ReturnType<typeof CommunicationSpecSchema.parse>,
  optimizer?: object,
) {
  const checkpoint = decodeSnapshot(encodeSnapshot(from.snapshot()));
  const options = { model: { mlp: { hiddenUnits: [16], dropout: 0 } }, ...(optimizer ? { optimizer } : {}) };
  const ranks = [await trainer(options), await trainer(options)];
  for (const t of ranks) {
    t.restore(checkpoint);
    t.beginWorld(spec, 2);
  }
  const reducers = new InProcessWorld(2);
  const step = () => Promise.all(ranks.map((t, r) => t.step(world([16, 16], r), reducers.forRank(r))));
  return { ranks, step };
}

// Plain SGD: under local SGD each rank's Adam moments are its own between averagings, and a
// checkpoint holds one rank's (see README, "Gradient compression and local SGD").
for (const communication of [
  {
    compression: 'powersgd',
    powersgd: { rank: 2, startAfterSteps: 0, minCompressionRate: 1, errorFeedback: false },
  },
  { localSteps: 4, outerOptimizer: { learningRate: 0.7, momentum: 0.9 } },
]) {
  test(`${JSON.stringify(communication)}: a resume from a checkpoint continues bit for bit (shared state in the files)`, async () => {
    const sgd = { type: 'sgd', learningRate: 0.05 };
    const { ranks, step, spec } = await pair(communication, sgd);
    for (let i = 0; i < 8; i++) await step();
    const [a, b] = ranks as [Trainer, Trainer];
    const shared = [...(a.snapshot().communication?.buffer ?? [])];
    assert.ok(
      shared.some((v) => v !== 0),
      'Q / the outer momentum is in the checkpoint',
    );
    const resumed = await resumedPair(a, spec, sgd);
    for (let i = 0; i < 8; i++) {
      await step();
      await resumed.step();
    }
    const [c, d] = resumed.ranks as [Trainer, Trainer];
    assert.is(c.weightsChecksum(), a.weightsChecksum(), 'resumed rank 0 = the run that went on');
    assert.is(d.weightsChecksum(), b.weightsChecksum(), 'resumed rank 1 = the run that went on');
    assert.equal(
      [...(c.snapshot().communication?.buffer ?? [])],
      [...(a.snapshot().communication?.buffer ?? [])],
    );
    for (const t of [...ranks, ...resumed.ranks]) t.dispose();
  });
}

test('top-k: residuals are not in a checkpoint; a resume restarts them from zero on every rank, in step', async () => {
  const { ranks, step, spec } = await pair({ compression: 'topk', topk: { ratio: 0.05 } });
  for (let i = 0; i < 3; i++) await step();
  const [a] = ranks as [Trainer, Trainer];
  assert.ok(
    (a.communicationResidual ?? []).some((v) => v !== 0),
    'the running rank owes a residual',
  );
  const resumed = await resumedPair(a, spec);
  const [c, d] = resumed.ranks as [Trainer, Trainer];
  assert.is(c.communicationResidual, undefined, 'the defined reset: zero residual after a resume');
  assert.is(d.communicationResidual, undefined);
  await resumed.step();
  assert.is(c.weightsChecksum(), d.weightsChecksum(), 'the resumed world stays identical');
  assert.ok(
    (c.communicationResidual ?? []).some((v) => v !== 0),
    'and builds a new residual',
  );
  for (const t of [...ranks, ...resumed.ranks]) t.dispose();
});

test.run();
