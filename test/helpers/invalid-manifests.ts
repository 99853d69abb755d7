/** Invalid TrainingJob manifests, one problem each, and the field each message must name. */
import { type Manifest, setPath, withField } from './job-builder.ts';

export interface InvalidCase {
  readonly name: string;
  readonly manifest: Manifest;
  /** The field the message must name. */
  readonly field: string;
  readonly message?: RegExp;
}

const gpuLimit = (value: unknown) =>
  withField('spec.worker', { resources: { limits: { 'nvidia.com/gpu': value } } });
const tolerations = (value: unknown) => withField('spec.worker', { tolerations: value });

export const invalidManifests: InvalidCase[] = [
  { name: 'replicas zero', manifest: withField('spec.replicas', 0), field: 'spec.replicas', message: /≥ 1/ },
  { name: 'replicas negative', manifest: withField('spec.replicas', -3), field: 'spec.replicas' },
  {
    name: 'replicas a string',
    manifest: withField('spec.replicas', 'three'),
    field: 'spec.replicas',
    message: /integer/,
  },
  {
    name: 'replicas fractional',
    manifest: withField('spec.replicas', 2.5),
    field: 'spec.replicas',
    message: /integer/,
  },
  {
    name: 'replicas above maxReplicas',
    manifest: withField('spec.replicas', 9),
    field: 'spec.replicas',
    message: /maxReplicas/,
  },
  {
    name: 'replicas above the hard cap',
    manifest: withField('spec.replicas', 20000),
    field: 'spec.replicas',
  },
  { name: 'minReplicas zero', manifest: withField('spec.minReplicas', 0), field: 'spec.minReplicas' },
  {
    name: 'minReplicas above replicas',
    manifest: withField('spec.minReplicas', 3),
    field: 'spec.minReplicas',
  },
  {
    name: 'minReplicas above maxReplicas',
    manifest: setPath(withField('spec.minReplicas', 5), 'spec.replicas', 5),
    field: 'spec.maxReplicas',
    message: /minReplicas must not exceed maxReplicas/,
  },
  { name: 'maxReplicas a boolean', manifest: withField('spec.maxReplicas', true), field: 'spec.maxReplicas' },
  {
    name: 'no model',
    manifest: withField('spec.model', undefined),
    field: 'spec.model',
    message: /required/,
  },
  {
    name: 'unknown model type',
    manifest: withField('spec.model', { transformer: {} }),
    field: 'spec.model.transformer',
    message: /unknown field/,
  },
  {
    name: 'two model types',
    manifest: withField('spec.model', { mlp: {}, cnn: {} }),
    field: 'spec.model',
    message: /exactly one/,
  },
  { name: 'empty model', manifest: withField('spec.model', {}), field: 'spec.model', message: /exactly one/ },
  {
    name: 'mlp without layers',
    manifest: withField('spec.model.mlp.hiddenUnits', []),
    field: 'spec.model.mlp.hiddenUnits',
  },
  {
    name: 'mlp unknown activation',
    manifest: withField('spec.model.mlp.activation', 'gelu2'),
    field: 'spec.model.mlp.activation',
    message: /relu/,
  },
  { name: 'dropout of 1', manifest: withField('spec.model.mlp.dropout', 1), field: 'spec.model.mlp.dropout' },
  {
    name: 'cnn block without filters',
    manifest: withField('spec.model', { cnn: { blocks: [{ kernelSize: 3 }] } }),
    field: 'spec.model.cnn.blocks[0].filters',
  },
  {
    name: 'layers with two sources',
    manifest: withField('spec.model', { layers: { path: '/m.json', configMap: { name: 'm' } } }),
    field: 'spec.model.layers',
    message: /exactly one/,
  },
  {
    name: 'no dataset',
    manifest: withField('spec.dataset', undefined),
    field: 'spec.dataset',
    message: /required/,
  },
  {
    name: 'dataset without path',
    manifest: withField('spec.dataset.path', undefined),
    field: 'spec.dataset.path',
  },
  {
    name: 'unknown dataset format',
    manifest: withField('spec.dataset.format', 'hdf5'),
    field: 'spec.dataset.format',
    message: /idx/,
  },
  {
    name: 'csv without classes',
    manifest: withField('spec.dataset', { format: 'csv', path: '/d.csv', eval: { source: 'holdout' } }),
    field: 'spec.dataset.classes',
  },
  {
    name: 'csv with test split',
    manifest: withField('spec.dataset', {
      format: 'csv',
      path: '/d.csv',
      classes: 3,
      eval: { source: 'test' },
    }),
    field: 'spec.dataset.eval.source',
  },
  {
    name: 'records without shape',
    manifest: withField('spec.dataset', { format: 'records', path: '/r', classes: 10 }),
    field: 'spec.dataset.featureShape',
  },
  {
    name: 'holdout fraction of 1',
    manifest: withField('spec.dataset.eval', { source: 'holdout', fraction: 1 }),
    field: 'spec.dataset.eval.fraction',
  },
  { name: 'no optimizer', manifest: withField('spec.optimizer', undefined), field: 'spec.optimizer' },
  {
    name: 'learning rate zero',
    manifest: withField('spec.optimizer.learningRate', 0),
    field: 'spec.optimizer.learningRate',
    message: /> 0/,
  },
  {
    name: 'learning rate negative',
    manifest: withField('spec.optimizer.learningRate', -0.01),
    field: 'spec.optimizer.learningRate',
  },
  {
    name: 'unknown optimizer',
    manifest: withField('spec.optimizer.type', 'lion'),
    field: 'spec.optimizer.type',
  },
  {
    name: 'momentum of 1',
    manifest: withField('spec.optimizer.momentum', 1),
    field: 'spec.optimizer.momentum',
  },
  {
    name: 'step schedule without decay',
    manifest: withField('spec.optimizer.schedule', { type: 'step' }),
    field: 'spec.optimizer.schedule',
  },
  {
    name: 'trustCoefficient with lamb',
    manifest: withField('spec.optimizer', { type: 'lamb', learningRate: 0.01, trustCoefficient: 0.001 }),
    field: 'spec.optimizer.trustCoefficient',
    message: /lars only/,
  },
  {
    name: 'adascaleSmoothing without adascale',
    manifest: withField('spec.batch', { policy: 'linear', adascaleSmoothing: 0.9 }),
    field: 'spec.batch.adascaleSmoothing',
    message: /adascale policy only/,
  },
  {
    name: 'ramp-up start not below global',
    manifest: withField('spec.batch', { global: 128, rampUp: { start: 128, increment: 32, samples: 1000 } }),
    field: 'spec.batch.rampUp.start',
    message: /below batch.global/,
  },
  {
    name: 'ramp-up without its length',
    manifest: withField('spec.batch', { global: 128, rampUp: { start: 32, increment: 32 } }),
    field: 'spec.batch.rampUp',
    message: /exactly one of samples or epochs/,
  },
  {
    name: 'negative weight decay',
    manifest: withField('spec.optimizer.weightDecay', -0.1),
    field: 'spec.optimizer.weightDecay',
  },
  {
    name: 'warm-up with both steps and epochs',
    manifest: withField('spec.optimizer.warmup', { steps: 10, epochs: 1 }),
    field: 'spec.optimizer.warmup',
    message: /exactly one/,
  },
  {
    name: 'warm-up with neither steps nor epochs',
    manifest: withField('spec.optimizer.warmup', {}),
    field: 'spec.optimizer.warmup',
    message: /exactly one/,
  },
  { name: 'global batch zero', manifest: withField('spec.batch', { global: 0 }), field: 'spec.batch.global' },
  {
    name: 'unknown rescale policy',
    manifest: withField('spec.batch', { policy: 'cubic' }),
    field: 'spec.batch.policy',
  },
  {
    name: 'perWorker with fixedGlobalBatch',
    manifest: withField('spec.batch', { perWorker: 32 }),
    field: 'spec.batch.perWorker',
  },
  {
    name: 'global batch below the worker count',
    manifest: withField('spec.batch', { global: 2 }),
    field: 'spec.batch.global',
  },
  {
    name: 'negative warm-up',
    manifest: withField('spec.batch', { policy: 'linear', warmupSteps: -1 }),
    field: 'spec.batch.warmupSteps',
  },
  {
    name: 'stopping without epochs or steps',
    manifest: withField('spec.stopping', { targetAccuracy: 0.9 }),
    field: 'spec.stopping',
  },
  {
    name: 'negative epochs',
    manifest: withField('spec.stopping', { epochs: -1 }),
    field: 'spec.stopping.epochs',
  },
  {
    name: 'target accuracy above 1',
    manifest: withField('spec.stopping', { epochs: 1, targetAccuracy: 90 }),
    field: 'spec.stopping.targetAccuracy',
  },
  {
    name: 'negative checkpoint interval',
    manifest: withField('spec.checkpoint.intervalSteps', -5),
    field: 'spec.checkpoint.intervalSteps',
  },
  {
    name: 'zero checkpoint seconds',
    manifest: withField('spec.checkpoint', { intervalSeconds: 0 }),
    field: 'spec.checkpoint.intervalSeconds',
  },
  {
    name: 'checkpoint without interval',
    manifest: withField('spec.checkpoint', { keep: 2 }),
    field: 'spec.checkpoint',
    message: /interval/,
  },
  {
    name: 'checkpoint keep zero',
    manifest: withField('spec.checkpoint.keep', 0),
    field: 'spec.checkpoint.keep',
  },
  {
    name: 'checkpoint relative path',
    manifest: withField('spec.checkpoint.path', 'ckpt'),
    field: 'spec.checkpoint.path',
  },
  {
    name: 'claim and template together',
    manifest: withField('spec.checkpoint.volume', { claimName: 'c', claimTemplate: {} }),
    field: 'spec.checkpoint.volume',
  },
  {
    name: 'bad claim size',
    manifest: withField('spec.checkpoint.volume', { claimTemplate: { size: 'ten gigs' } }),
    field: 'spec.checkpoint.volume.claimTemplate.size',
    message: /quantity/,
  },
  {
    name: 'ReadWriteMany claim without a storage class',
    manifest: withField('spec.checkpoint.volume', { claimTemplate: { accessModes: ['ReadWriteMany'] } }),
    field: 'spec.checkpoint.volume.claimTemplate.storageClassName',
    message: /ReadWriteMany needs storageClassName/,
  },
  {
    name: 'gpus and an nvidia.com/gpu resource together',
    manifest: withField('spec.worker', { gpus: 1, resources: { limits: { 'nvidia.com/gpu': 1 } } }),
    field: 'spec.worker.gpus',
    message: /not both/,
  },
  {
    name: 'gpus negative',
    manifest: withField('spec.worker', { gpus: -1 }),
    field: 'spec.worker.gpus',
  },
  {
    name: 'gpu quantity not a number',
    manifest: gpuLimit('lots'),
    field: 'spec.worker.resources.limits["nvidia.com/gpu"]',
    message: /quantity/,
  },
  {
    name: 'gpu quantity negative',
    manifest: gpuLimit(-1),
    field: 'spec.worker.resources.limits["nvidia.com/gpu"]',
  },
  {
    name: 'memory quantity with a bad suffix',
    manifest: withField('spec.worker', { resources: { requests: { memory: '4GB' } } }),
    field: 'spec.worker.resources.requests.memory',
  },
  {
    name: 'negative cpu string',
    manifest: withField('spec.worker', { resources: { requests: { cpu: '-1' } } }),
    field: 'spec.worker.resources.requests.cpu',
    message: /negative/,
  },
  {
    name: 'toleration Exists with value',
    manifest: tolerations([{ key: 'k', operator: 'Exists', value: 'v' }]),
    field: 'spec.worker.tolerations[0].value',
  },
  {
    name: 'toleration without key',
    manifest: tolerations([{ operator: 'Equal', value: 'v' }]),
    field: 'spec.worker.tolerations[0].key',
  },
  {
    name: 'toleration unknown effect',
    manifest: tolerations([{ key: 'k', effect: 'Evict' }]),
    field: 'spec.worker.tolerations[0].effect',
  },
  {
    name: 'node selector not strings',
    manifest: withField('spec.worker', { nodeSelector: { spot: true } }),
    field: 'spec.worker.nodeSelector.spot',
  },
  {
    name: 'negative grace period',
    manifest: withField('spec.worker', { terminationGracePeriodSeconds: -1 }),
    field: 'spec.worker.terminationGracePeriodSeconds',
  },
  {
    name: 'unknown backend',
    manifest: withField('spec.worker', { backend: 'webgpu' }),
    field: 'spec.worker.backend',
  },
  {
    name: 'bad env name',
    manifest: withField('spec.worker', { env: [{ name: '1X', value: 'y' }] }),
    field: 'spec.worker.env[0].name',
  },
  {
    name: 'negative backoff limit',
    manifest: withField('spec.runPolicy', { backoffLimit: -1 }),
    field: 'spec.runPolicy.backoffLimit',
  },
  {
    name: 'zero deadline',
    manifest: withField('spec.runPolicy', { activeDeadlineSeconds: 0 }),
    field: 'spec.runPolicy.activeDeadlineSeconds',
  },
  {
    name: 'negative ttl',
    manifest: withField('spec.runPolicy', { ttlSecondsAfterFinished: -10 }),
    field: 'spec.runPolicy.ttlSecondsAfterFinished',
  },
  {
    name: 'suspend not a boolean',
    manifest: withField('spec.runPolicy', { suspend: 'yes' }),
    field: 'spec.runPolicy.suspend',
  },
  {
    name: 'heartbeat slower than the timeout',
    manifest: withField('spec.rendezvous', { heartbeatMillis: 5000, timeoutMillis: 3000 }),
    field: 'spec.rendezvous.timeoutMillis',
  },
  {
    name: 'bad NATS URL',
    manifest: withField('spec.nats', { url: 'http://nats:4222' }),
    field: 'spec.nats.url',
    message: /nats:\/\//,
  },
  {
    name: 'unknown spec field (typo)',
    manifest: withField('spec.minReplica', 2),
    field: 'spec.minReplica',
    message: /did you mean minReplicas/,
  },
  {
    name: 'unknown nested field',
    manifest: withField('spec.optimizer.learningrate', 0.1),
    field: 'spec.optimizer.learningrate',
    message: /did you mean learningRate/,
  },
  { name: 'job name with capitals', manifest: withField('metadata.name', 'Fashion'), field: 'metadata.name' },
  {
    name: 'job name too long',
    manifest: withField('metadata.name', 'x'.repeat(60)),
    field: 'metadata.name',
    message: /52/,
  },
  {
    name: 'wrong apiVersion',
    manifest: withField('apiVersion', 'tensile.dev/v1'),
    field: 'apiVersion',
    message: /v1alpha1/,
  },
  { name: 'no spec', manifest: withField('spec', undefined), field: 'spec', message: /required/ },
  {
    name: 'unknown compression',
    manifest: withField('spec.communication', { compression: 'int8' }),
    field: 'spec.communication.compression',
    message: /powersgd/,
  },
  {
    name: 'topk settings without topk',
    manifest: withField('spec.communication', { compression: 'fp16', topk: { ratio: 0.01 } }),
    field: 'spec.communication.topk',
    message: /set compression: topk or remove topk/,
  },
  {
    name: 'topk ratio above one half',
    manifest: withField('spec.communication', { compression: 'topk', topk: { ratio: 0.9 } }),
    field: 'spec.communication.topk.ratio',
  },
  {
    name: 'powersgd rank zero',
    manifest: withField('spec.communication', { compression: 'powersgd', powersgd: { rank: 0 } }),
    field: 'spec.communication.powersgd.rank',
  },
  {
    name: 'compression with local SGD',
    manifest: withField('spec.communication', { compression: 'topk', localSteps: 8 }),
    field: 'spec.communication.compression',
    message: /must be none when localSteps > 1/,
  },
  {
    name: 'outer optimizer without local steps',
    manifest: withField('spec.communication', { outerOptimizer: { learningRate: 0.7 } }),
    field: 'spec.communication.outerOptimizer',
    message: /needs localSteps > 1/,
  },
  {
    name: 'local SGD with adascale',
    manifest: withField(
      'spec.communication',
      { localSteps: 4 },
      withField('spec.batch', { policy: 'adascale' }),
    ),
    field: 'spec.communication.localSteps',
    message: /adascale/,
  },
  {
    name: 'federation with one site',
    manifest: withField('spec.federation', { rounds: 3, sites: [{ name: 'a' }] }),
    field: 'spec.federation.sites',
  },
  {
    name: 'federation sites sharing a name',
    manifest: withField('spec.federation', { rounds: 3, sites: [{ name: 'a' }, { name: 'a' }] }),
    field: 'spec.federation.sites',
    message: /its own name/,
  },
  {
    name: 'federation site name not a DNS label',
    manifest: withField('spec.federation', { rounds: 3, sites: [{ name: 'Site_A' }, { name: 'b' }] }),
    field: 'spec.federation.sites[0].name',
    message: /DNS label/,
  },
  {
    name: 'federation fedprox without mu',
    manifest: withField('spec.federation', {
      rounds: 3,
      aggregation: 'fedprox',
      sites: [{ name: 'a' }, { name: 'b' }],
    }),
    field: 'spec.federation.proximalMu',
    message: /fedprox/,
  },
  {
    name: 'federation mu with fedavg',
    manifest: withField('spec.federation', {
      rounds: 3,
      proximalMu: 0.1,
      sites: [{ name: 'a' }, { name: 'b' }],
    }),
    field: 'spec.federation.proximalMu',
    message: /fedprox/,
  },
  {
    name: 'federation threshold above the sites',
    manifest: withField('spec.federation', {
      rounds: 3,
      secureAggregation: { threshold: 3 },
      sites: [{ name: 'a' }, { name: 'b' }],
    }),
    field: 'spec.federation.secureAggregation.threshold',
    message: /more than half the sites .* and at most their number/,
  },
  {
    name: 'federation without rounds',
    manifest: withField('spec.federation', { sites: [{ name: 'a' }, { name: 'b' }] }),
    field: 'spec.federation.rounds',
  },
  {
    name: 'federation with local SGD inside a site',
    manifest: withField(
      'spec.federation',
      { rounds: 3, sites: [{ name: 'a' }, { name: 'b' }] },
      withField('spec.communication', { localSteps: 4 }),
    ),
    field: 'spec.federation',
    message: /communication.localSteps: 1/,
  },
];
