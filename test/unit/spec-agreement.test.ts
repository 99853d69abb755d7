/**
 * What the ranks of a world agree on (rendezvous/agreement.ts) and how each rank plans its generation
 * from it (train/generation-plan.ts): pure functions of data, as tables.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ControlMessageSchema, decodeMessage, encodeMessage } from '../../operator/api/contract.ts';
import { TrainingJobSpecSchema } from '../../operator/api/training-job.ts';
import {
  type Agreement,
  agree,
  changedSettings,
  immutableMismatch,
  rendezvousRange,
  type SpecOffer,
  shapeWorld,
  soleAgreement,
  specOffer,
} from '../../worker/rendezvous/agreement.ts';
import {
  MemberRecordSchema,
  type ObservedMember,
  roundReason,
  type WorldRecord,
  WorldRecordSchema,
} from '../../worker/rendezvous/decide.ts';
import { planGeneration } from '../../worker/train/generation-plan.ts';

const base = {
  replicas: 2,
  minReplicas: 1,
  maxReplicas: 3,
  model: { mlp: { hiddenUnits: [32] } },
  dataset: { format: 'idx', path: '/data' },
  optimizer: { type: 'adam', learningRate: 0.002 },
  batch: { global: 64, policy: 'linear', warmupSteps: 10 },
  stopping: { epochs: 2 },
  evaluation: { intervalSteps: 50 },
  checkpoint: { intervalSteps: 100 },
};
type Patch = Record<string, unknown>;
const specOf = (patch: Patch = {}) => TrainingJobSpecSchema.parse({ ...base, ...patch });
const offer = (revision: number, patch: Patch = {}): SpecOffer => specOffer(specOf(patch), revision);

/** The world the survivors run: formed at revision 1 with two replicas. */
const survivors = soleAgreement(offer(1));
const scaled = offer(2, { replicas: 3 });

const agreeCases: {
  name: string;
  previous: Agreement | undefined;
  offers: SpecOffer[];
  revision: number | undefined;
  replicas?: number;
  batchReplicas?: number;
  global?: number;
}[] = [
  { name: 'nobody offers anything', previous: undefined, offers: [], revision: undefined },
  {
    name: 'first world: the offer, b over its replicas',
    previous: undefined,
    offers: [offer(1), offer(1)],
    revision: 1,
    replicas: 2,
    batchReplicas: 2,
  },
  {
    name: 'a pod created after a scale joins: its revision, the batch basis stays',
    previous: survivors,
    offers: [offer(1), offer(1), scaled],
    revision: 2,
    replicas: 3,
    batchReplicas: 2,
  },
  {
    name: 'a newer batch setting moves the basis to its replicas',
    previous: survivors,
    offers: [offer(1), offer(3, { replicas: 3, batch: { global: 96, policy: 'linear' } })],
    revision: 3,
    replicas: 3,
    batchReplicas: 3,
    global: 96,
  },
  {
    name: 'a newer warm-up alone leaves the basis',
    previous: survivors,
    offers: [offer(2, { replicas: 3, batch: { global: 64, policy: 'linear', warmupSteps: 99 } })],
    revision: 2,
    replicas: 3,
    batchReplicas: 2,
  },
  {
    name: 'survivors of an older revision keep the newer one of the world',
    previous: agree(survivors, [scaled]),
    offers: [offer(1), offer(1)],
    revision: 2,
    replicas: 3,
    batchReplicas: 2,
  },
  {
    name: 'an offer of another model is ignored, however new',
    previous: survivors,
    offers: [offer(1), offer(9, { model: { mlp: { hiddenUnits: [64] } } })],
    revision: 1,
    replicas: 2,
    batchReplicas: 2,
  },
];

for (const c of agreeCases) {
  test(`agree: ${c.name}`, () => {
    const agreed = agree(c.previous, c.offers);
    assert.is(agreed?.revision, c.revision);
    if (c.replicas !== undefined) assert.is(agreed?.settings.replicas, c.replicas);
    if (c.batchReplicas !== undefined) assert.is(agreed?.batchReplicas, c.batchReplicas);
    if (c.global !== undefined) assert.is(agreed?.settings.batch.global, c.global);
  });
}

test('agree: equal revisions with different settings give the same choice in any order', () => {
  const a = offer(0);
  const b = offer(0, { replicas: 3 });
  assert.equal(agree(undefined, [a, b]), agree(undefined, [b, a]));
});

test('immutable fields: which ones differ', () => {
  const agreed = soleAgreement(offer(1));
  assert.equal(immutableMismatch(agreed, offer(5, { replicas: 3, stopping: { epochs: 9 } })), []);
  assert.equal(immutableMismatch(agreed, offer(1, { model: { mlp: { hiddenUnits: [8] } } })), ['model']);
  assert.equal(
    immutableMismatch(
      agreed,
      offer(1, { optimizer: { learningRate: 0.1 }, dataset: { format: 'idx', path: '/x' } }),
    ),
    ['dataset', 'optimizer'],
  );
});

test('changed settings, in a fixed order', () => {
  const before = offer(1).settings;
  assert.equal(changedSettings(before, before), []);
  assert.equal(
    changedSettings(before, offer(2, { evaluation: { intervalSteps: 40 }, replicas: 3 }).settings),
    ['replicas', 'evaluation'],
  );
  assert.equal(changedSettings(before, offer(2, { checkpoint: { intervalSteps: 100, keep: 5 } }).settings), [
    'checkpoint',
  ]);
});

const previousWorld: WorldRecord = {
  generation: 1,
  members: [
    { id: 'a', address: 'a:1', batch: 32 },
    { id: 'b', address: 'b:1', batch: 32 },
  ],
  source: undefined,
  startStep: 0,
  globalBatch: 64,
  learningRate: 0.002,
  policy: { policy: 'linear', targetScale: 1, fromScale: 1, warmupStart: 0, warmupSteps: 0, scale: 1 },
  agreement: survivors,
  reason: 'first world',
  createdAt: 0,
  linkToken: 'a-test-token-of-sixteen',
};
const proposal = {
  generation: 2,
  members: [
    { id: 'a', address: 'a:1' },
    { id: 'b', address: 'b:1' },
    { id: 'c', address: 'c:1' },
  ],
  source: 'a',
  startStep: 200,
  reason: 'c joining',
};

test('shapeWorld: the issue, a third pod after a scale; the same world whoever proposes it', () => {
  const offers = [offer(1), offer(1), scaled];
  const byOld = shapeWorld(proposal, previousWorld, offers, offer(1), 0.002);
  const byNew = shapeWorld(proposal, previousWorld, offers, scaled, 0.002);
  assert.equal(byOld, byNew);
  assert.equal(
    byOld.members.map((m) => m.batch),
    [32, 32, 32],
  );
  assert.is(byOld.globalBatch, 96);
  assert.ok(Math.abs(byOld.learningRate - 0.003) < 1e-12, `${byOld.learningRate}`);
  assert.is(byOld.agreement?.revision, 2);
  // The warm-up goes from the previous world's rate to the new one.
  assert.is(byOld.policy['fromScale'], 1);
  assert.is(byOld.policy['targetScale'], 1.5);
});

test('shapeWorld: fixedGlobalBatch splits the global batch of the agreed settings', () => {
  const fixed = { batch: { global: 60, policy: 'fixedGlobalBatch' } };
  const shaped = shapeWorld(proposal, undefined, [offer(0, fixed)], offer(0, fixed), 0.002);
  assert.equal(
    shaped.members.map((m) => m.batch),
    [20, 20, 20],
  );
  assert.is(shaped.learningRate, 0.002);
});

test('shapeWorld with goodput batch bounds: the chosen batch, split evenly, the rate following it', () => {
  const goodput = {
    autoscaling: { policy: 'goodput', minGlobalBatch: 32, maxGlobalBatch: 512 },
  };
  const own = offer(0, goodput);
  const chosen = shapeWorld(proposal, undefined, [own], own, 0.002, 200);
  assert.equal(
    chosen.members.map((m) => m.batch),
    [67, 67, 66],
  );
  assert.is(chosen.globalBatch, 200);
  // linear: lr_base × 200/64.
  assert.ok(Math.abs(chosen.learningRate - (0.002 * 200) / 64) < 1e-12, `${chosen.learningRate}`);
  // Out of bounds: clamped. Nothing chosen yet: the policy's batch (3 × 32), in bounds.
  assert.is(shapeWorld(proposal, undefined, [own], own, 0.002, 5000).globalBatch, 512);
  assert.is(shapeWorld(proposal, undefined, [own], own, 0.002, undefined).globalBatch, 96);
  // Without bounds a chosen batch means nothing: the rescale policy decides.
  assert.is(shapeWorld(proposal, undefined, [offer(0)], offer(0), 0.002, 200).globalBatch, 96);
});

const chosenCases: {
  name: string;
  chosen: { globalBatch: number; revision: number; replicas?: number } | undefined;
  world: WorldRecord['chosenBatch'];
  reason: string | undefined;
}[] = [
  { name: 'nothing chosen', chosen: undefined, world: undefined, reason: undefined },
  {
    name: 'a new choice for a world of its size',
    chosen: { globalBatch: 256, revision: 1, replicas: 2 },
    world: undefined,
    reason: 'the operator chose global batch 256 (revision 1)',
  },
  {
    name: 'the choice the world was formed with',
    chosen: { globalBatch: 256, revision: 1 },
    world: { globalBatch: 256, revision: 1 },
    reason: undefined,
  },
  {
    name: 'a choice made with another size: the change of size brings it',
    chosen: { globalBatch: 256, revision: 2, replicas: 3 },
    world: { globalBatch: 128, revision: 1 },
    reason: undefined,
  },
];
for (const c of chosenCases) {
  test(`round reason, chosen batch: ${c.name}`, () => {
    const view = {
      self: 'a',
      now: 0,
      config: { minReplicas: 1, maxReplicas: 2, timeoutMs: 3000, lastCallMs: 1000 },
      members: new Map([observed('a', offer(1)), observed('b', offer(1))]),
      world: { ...previousWorld, ...(c.world === undefined ? {} : { chosenBatch: c.world }) },
      running: 1,
      roundSince: undefined,
      chosenBatch: c.chosen,
    };
    assert.is(roundReason(view, new Set(['a', 'b'])), c.reason);
  });
}

const rangeCases: {
  name: string;
  own: SpecOffer | undefined;
  agreement: Agreement | undefined;
  expected: [number, number];
}[] = [
  { name: 'no world yet: own range', own: offer(1), agreement: undefined, expected: [1, 3] },
  {
    name: 'a world of a newer revision: its range',
    own: offer(1),
    agreement: soleAgreement(offer(2, { minReplicas: 2, maxReplicas: 5, replicas: 4 })),
    expected: [2, 5],
  },
  {
    name: 'a world of an older revision: own range',
    own: offer(3, { maxReplicas: 4 }),
    agreement: soleAgreement(offer(2)),
    expected: [1, 4],
  },
];
for (const c of rangeCases) {
  test(`rendezvous range: ${c.name}`, () => {
    const own = { minReplicas: 1, maxReplicas: c.own?.settings.maxReplicas ?? 3 };
    const range = rendezvousRange(own, c.own, c.agreement);
    assert.equal([range.minReplicas, range.maxReplicas], c.expected);
  });
}

test('planGeneration: every rank plans the same world from the agreement, not from its own spec', () => {
  const agreement = agree(survivors, [scaled]) as Agreement;
  const policy = {
    policy: 'linear' as const,
    targetScale: 1,
    fromScale: 1,
    warmupStart: 0,
    warmupSteps: 0,
    scale: 1,
  };
  const plans = [0, 1, 2].map((rank) =>
    planGeneration({
      agreement,
      batches: [32, 32, 32],
      optimizer: specOf().optimizer,
      generation: 2,
      rank,
      size: 3,
      step: 213,
      previous: { policy, agreement: survivors },
    }),
  );
  for (const p of plans) {
    assert.equal(p.world.perWorker, [32, 32, 32]);
    assert.is(p.world.learningRate, 0.002, 'the warm-up starts at the old rate');
    assert.equal(p.policy, { ...(plans[0]?.policy ?? policy) });
    assert.equal(p.change, { from: 1, to: 2, changed: ['replicas'] });
  }
  assert.equal(
    plans.map((p) => p.world.rank),
    [0, 1, 2],
  );
  assert.is(plans[0]?.policy.warmupStart, 213);
  assert.is(plans[0]?.policy.targetScale, 1.5);
});

test('planGeneration: same settings, no change; missing batches are derived from the agreement', () => {
  const plan = planGeneration({
    agreement: survivors,
    batches: undefined,
    optimizer: specOf().optimizer,
    generation: 3,
    rank: 0,
    size: 3,
    step: 10,
    previous: undefined,
  });
  assert.equal(plan.world.perWorker, [32, 32, 32]);
  assert.is(plan.change, undefined);
  const adascale = soleAgreement(offer(1, { batch: { global: 64, policy: 'adascale' } }));
  const planned = planGeneration({
    agreement: adascale,
    batches: [32, 32, 32],
    optimizer: specOf().optimizer,
    generation: 1,
    rank: 1,
    size: 3,
    step: 0,
    previous: undefined,
  });
  // θ = 1 − S/1000 by default (batch.adascaleSmoothing unset).
  assert.equal(planned.world.adascale, { baseBatch: 64, scale: 1.5, smoothing: 0.9985 });
});

test('records: members and worlds of workers that offer no spec still parse', () => {
  const member = MemberRecordSchema.parse({
    id: 'a',
    address: 'a:1',
    joinedAt: 0,
    heartbeat: 0,
    state: 'active',
    hasState: false,
    step: 0,
    generation: 0,
  });
  assert.is(member.spec, undefined);
  const { agreement: _, ...legacy } = previousWorld;
  assert.is(WorldRecordSchema.parse(legacy).agreement, undefined);
  assert.equal(WorldRecordSchema.parse(previousWorld).agreement, survivors);
});

const observed = (id: string, spec: SpecOffer | undefined): [string, ObservedMember] => [
  id,
  {
    record: {
      id,
      address: `${id}:1`,
      joinedAt: id.charCodeAt(0),
      heartbeat: 1,
      state: 'active',
      hasState: true,
      step: 50,
      generation: 1,
      ...(spec === undefined ? {} : { spec }),
    },
    observedAt: 0,
  },
];

const roundCases: {
  name: string;
  offers: [SpecOffer | undefined, SpecOffer | undefined];
  reason: string | undefined;
}[] = [
  { name: 'members of the world offer its revision', offers: [offer(1), offer(1)], reason: undefined },
  { name: 'workers that offer nothing', offers: [undefined, undefined], reason: undefined },
  {
    name: 'a member offers a newer spec (the operator sent it)',
    offers: [offer(1), offer(4, { stopping: { epochs: 9 } })],
    reason: 'b brings spec revision 4',
  },
  {
    name: 'a newer spec of another model never asks for a new world',
    offers: [offer(1), offer(4, { model: { mlp: { hiddenUnits: [8] } } })],
    reason: undefined,
  },
];
for (const c of roundCases) {
  test(`round reason: ${c.name}`, () => {
    const members = new Map([observed('a', c.offers[0]), observed('b', c.offers[1])]);
    const view = {
      self: 'a',
      now: 0,
      config: { minReplicas: 1, maxReplicas: 2, timeoutMs: 3000, lastCallMs: 1000 },
      members,
      world: previousWorld,
      running: 1,
      roundSince: undefined,
    };
    assert.is(roundReason(view, new Set(['a', 'b'])), c.reason);
  });
}

test('the spec control message carries a revision and a valid spec', () => {
  const good = decodeMessage(
    ControlMessageSchema,
    encodeMessage({ type: 'spec', revision: 4, spec: specOf(), reason: 'spec changed' }),
  );
  assert.ok(good.ok && good.value.type === 'spec' && good.value.revision === 4);
  const bad = decodeMessage(
    ControlMessageSchema,
    encodeMessage({ type: 'spec', revision: 4, spec: { ...base, replicas: 0 }, reason: 'x' }),
  );
  assert.not.ok(bad.ok);
});

test.run();
