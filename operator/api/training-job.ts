/**
 * The TrainingJob API (tensile.dev/v1alpha1): the single source of the TypeScript types, of runtime
 * validation (operator, worker, `tensile validate`) and of the generated CRD (hack/gen-crd.ts).
 *
 * Unknown fields are rejected here (strict objects) so that a typo such as `minReplica` is reported
 * instead of silently ignored; the API server prunes them and kubectl's default strict field
 * validation rejects them, so all three agree for users of `kubectl apply`.
 */
import { z } from 'zod';
import { immutable, withRules } from './cel.ts';

export const API_GROUP = 'tensile.dev';
export const API_VERSION = 'v1alpha1';
export const API_GROUP_VERSION = `${API_GROUP}/${API_VERSION}`;
export const KIND = 'TrainingJob';
export const PLURAL = 'trainingjobs';
export const SINGULAR = 'trainingjob';
export const SHORT_NAMES = ['tj'];
export const CATEGORIES = ['tensile'];
/** Longest job name that still leaves room for `-worker-NNNN` inside a 63-character pod hostname. */
export const MAX_JOB_NAME_LENGTH = 52;

/** Kubernetes resource.Quantity, as the API server parses it. */
export const QUANTITY_PATTERN =
  /^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const positiveInt = () => z.int().min(1);
const nonNegativeInt = () => z.int().min(0);
const fraction = () => z.number().gt(0).lt(1);

/** QUANTITY_PATTERN without the minus sign: requests, limits and sizes cannot be negative. */
export const NON_NEGATIVE_QUANTITY_PATTERN =
  /^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;

// zod checks the sign separately for a clearer message; the CRD needs both bounds spelled out for the
// API server: `pattern` applies to the string form only and `minimum` to the integer form only.
const quantity = z
  .union([
    z.int().min(0),
    z
      .string()
      .regex(QUANTITY_PATTERN, 'expected a Kubernetes quantity such as "2", "500m", "16Gi"')
      .refine((s) => !s.startsWith('-'), 'a resource quantity cannot be negative'),
  ])
  .meta({ 'x-kubernetes-int-or-string': true, pattern: NON_NEGATIVE_QUANTITY_PATTERN.source, minimum: 0 });

const resourceList = z.record(z.string().min(1), quantity);

const objectName = (what: string) =>
  z
    .string()
    .min(1)
    .max(253)
    .regex(DNS_SUBDOMAIN, `expected a lowercase DNS-1123 ${what} name (a-z, 0-9, '-', '.')`);

// ---------------------------------------------------------------------------------------------- model

export const ACTIVATIONS = ['relu', 'elu', 'selu', 'tanh', 'sigmoid', 'swish', 'linear'] as const;

export const MlpSpecSchema = z.strictObject({
  hiddenUnits: z
    .array(positiveInt())
    .min(1)
    .max(16)
    .default([256, 128])
    .describe('Units of each hidden dense layer, input to output.'),
  activation: z.enum(ACTIVATIONS).default('relu').describe('Activation of the hidden layers.'),
  dropout: z.number().min(0).lt(1).default(0).describe('Dropout rate after each hidden layer.'),
  batchNorm: z.boolean().default(false).describe('Batch normalization after each hidden layer.'),
});

export const CnnBlockSchema = z.strictObject({
  filters: positiveInt().max(4096).describe('Convolution filters of this block.'),
  kernelSize: positiveInt().max(15).default(3).describe('Square kernel size.'),
  pool: positiveInt()
    .max(8)
    .default(2)
    .describe('Max-pooling window and stride after the convolution; 1 for none.'),
});

export const CnnSpecSchema = z.strictObject({
  blocks: z
    .array(CnnBlockSchema)
    .min(1)
    .max(8)
    .default([
      { filters: 32, kernelSize: 3, pool: 2 },
      { filters: 64, kernelSize: 3, pool: 2 },
    ])
    .describe('Convolution blocks, input to output: a convolution, then max-pooling.'),
  batchNorm: z.boolean().default(false).describe('Batch normalization after each hidden layer.'),
  dense: z
    .array(positiveInt())
    .max(8)
    .default([128])
    .describe('Units of the dense layers between the convolutions and the output.'),
  activation: z.enum(ACTIVATIONS).default('relu').describe('Activation of the hidden layers.'),
  dropout: z.number().min(0).lt(1).default(0.25).describe('Dropout rate before each dense layer.'),
});

export const LayersSpecSchema = withRules(
  z.strictObject({
    topology: z
      .record(z.string(), z.unknown())
      .optional()
      .describe('A tfjs Layers model topology (`model.toJSON()` output, without weights), inline.'),
    configMap: z
      .strictObject({
        name: objectName('ConfigMap').describe('The ConfigMap in the job’s namespace.'),
        key: z.string().min(1).default('model.json').describe('The key holding the topology JSON.'),
      })
      .optional()
      .describe('A topology JSON in a ConfigMap, mounted into every worker.'),
    path: z
      .string()
      .min(1)
      .optional()
      .describe("A topology JSON file inside the worker's filesystem (image or volume)."),
  }),
  [
    {
      cel: '[has(self.topology), has(self.configMap), has(self.path)].filter(x, x).size() == 1',
      message: 'set exactly one of model.layers.topology, model.layers.configMap or model.layers.path',
      field: [],
      holds: (l) => [l.topology, l.configMap, l.path].filter((x) => x !== undefined).length === 1,
    },
  ],
);

export const ModelSpecSchema = withRules(
  z.strictObject({
    mlp: MlpSpecSchema.optional().describe('A multi-layer perceptron.'),
    cnn: CnnSpecSchema.optional().describe('A convolutional network: conv/pool blocks, then a dense head.'),
    layers: LayersSpecSchema.optional().describe('A custom tfjs Layers topology.'),
    seed: nonNegativeInt()
      .default(42)
      .describe(
        'Seed of the weight initialisers, so two runs of the same manifest start from the same weights.',
      ),
  }),
  [
    {
      cel: '[has(self.mlp), has(self.cnn), has(self.layers)].filter(x, x).size() == 1',
      message: 'set exactly one of model.mlp, model.cnn or model.layers',
      field: [],
      holds: (m) => [m.mlp, m.cnn, m.layers].filter((x) => x !== undefined).length === 1,
    },
  ],
  [immutable('spec.model')],
);

// -------------------------------------------------------------------------------------------- dataset

export const DATASET_FORMATS = ['idx', 'csv', 'jsonl', 'records', 'parquet', 'mongodb'] as const;

export const IdxOptionsSchema = z.strictObject({
  trainImages: z.string().min(1).default('train-images-idx3-ubyte.gz').describe('Training images file.'),
  trainLabels: z.string().min(1).default('train-labels-idx1-ubyte.gz').describe('Training labels file.'),
  testImages: z.string().min(1).default('t10k-images-idx3-ubyte.gz').describe('Test images file.'),
  testLabels: z.string().min(1).default('t10k-labels-idx1-ubyte.gz').describe('Test labels file.'),
});

export const CsvOptionsSchema = z.strictObject({
  labelColumn: z
    .string()
    .min(1)
    .default('label')
    .describe('The column holding the class (name, or index without a header).'),
  header: z.boolean().default(true).describe('Whether the first line names the columns.'),
  delimiter: z.string().length(1).default(',').describe('The field separator, one character.'),
});

export const JsonlOptionsSchema = z.strictObject({
  featuresField: z.string().min(1).default('features').describe('The field holding the feature array.'),
  labelField: z.string().min(1).default('label').describe('The field holding the class.'),
});

export const ParquetOptionsSchema = z.strictObject({
  labelColumn: z.string().min(1).default('label').describe('The column holding the class.'),
  featureColumns: z
    .array(z.string().min(1))
    .min(1)
    .optional()
    .describe(
      'The feature columns, in order: numbers, or one column of number lists or byte arrays; default every column but the label.',
    ),
});

export const MongodbOptionsSchema = z.strictObject({
  collection: z.string().min(1).default('samples').describe('The collection holding the samples.'),
  featuresField: z
    .string()
    .min(1)
    .default('features')
    .describe('The field holding the feature array (nested arrays allowed: their nesting is the shape).'),
  labelField: z.string().min(1).default('label').describe('The field holding the class.'),
});

export const RecordsOptionsSchema = z.strictObject({
  dtype: z.enum(['uint8', 'float32']).default('uint8').describe('The type of each feature value.'),
  shardPattern: z.string().min(1).default('*.bin').describe('Glob of the shard files inside `path`.'),
});

export const DatasetCacheSchema = z.strictObject({
  memoryMiB: positiveInt()
    .max(1 << 20)
    .default(256)
    .describe('Memory for samples (block cache and read-ahead); the shuffle mixes a third of it at a time.'),
  directory: z
    .string()
    .startsWith('/')
    .optional()
    .describe(
      'Where converted shards (and downloaded remote sources) are kept; default $TMPDIR/tensile-dataset-cache. A volume lets restarts and other workers reuse them.',
    ),
});

/** How to reach an S3-compatible object store; credentials come from the environment, never the spec. */
export const S3OptionsSchema = z.strictObject({
  endpoint: z
    .url()
    .optional()
    .describe('An S3-compatible server (e.g. http://minio.storage:9000); default AWS.'),
  region: z.string().min(1).optional().describe('Default: $AWS_REGION, else us-east-1.'),
  forcePathStyle: z.boolean().optional().describe('Path-style URLs; default true when `endpoint` is set.'),
});
export type S3Options = z.output<typeof S3OptionsSchema>;

export const DatasetSpecSchema = withRules(
  z.strictObject({
    format: z
      .enum(DATASET_FORMATS)
      .describe(
        'idx (MNIST-style, gzip or not), csv, jsonl, parquet, records (binary shards), or mongodb (a collection).',
      ),
    path: z
      .string()
      .min(1)
      .describe(
        "Directory (idx, records) or file (csv, jsonl, parquet) inside the worker's filesystem, or an s3://bucket/key URL.",
      ),
    volume: z
      .strictObject({
        claimName: objectName('PersistentVolumeClaim').describe('The claim holding the data.'),
        mountPath: z.string().startsWith('/').describe('Where the workers see it; `path` lies inside.'),
      })
      .optional()
      .describe('A claim mounted read-only at `mountPath`; omit when the data ships in the image.'),
    idx: IdxOptionsSchema.optional().describe('idx: file names inside `path` (default: the MNIST names).'),
    csv: CsvOptionsSchema.optional().describe('csv: label column, header and delimiter.'),
    jsonl: JsonlOptionsSchema.optional().describe('jsonl: the fields holding the features and the label.'),
    parquet: ParquetOptionsSchema.optional().describe('parquet: the label column and the feature columns.'),
    mongodb: MongodbOptionsSchema.optional().describe(
      'mongodb: `path` is the connection string with the database (mongodb://host:27017/db); one document per sample.',
    ),
    records: RecordsOptionsSchema.optional().describe(
      'records: fixed-size binary records, one label byte then `featureShape` values of `dtype`.',
    ),
    featureShape: z
      .array(positiveInt())
      .min(1)
      .max(4)
      .optional()
      .describe('Shape of one sample, e.g. [28, 28, 1]; read from the file for idx, required for records.'),
    classes: z
      .int()
      .min(2)
      .max(100000)
      .optional()
      .describe(
        'Number of classes; read from the labels for idx, required for csv, jsonl, parquet and records.',
      ),
    normalize: z
      .enum(['none', 'scale', 'standardize'])
      .default('scale')
      .describe(
        'scale: features to [0, 1]; standardize: zero mean, unit variance per feature (from the training data).',
      ),
    pca: z
      .strictObject({ components: positiveInt().max(4096).describe('Principal components kept.') })
      .optional()
      .describe('Project features onto their first principal components (fitted on the training data).'),
    eval: z
      .strictObject({
        source: z
          .enum(['test', 'holdout'])
          .optional()
          .describe(
            "`test`: the dataset's own test files (idx, the default there); `holdout`: a fraction of training data.",
          ),
        fraction: fraction().default(0.1).describe('holdout: the share of the training data held out.'),
        maxSamples: positiveInt().optional().describe('Evaluate on at most this many samples.'),
      })
      .prefault({})
      .describe('The evaluation split.'),
    maxTrainSamples: positiveInt()
      .optional()
      .describe('Use only the first N training samples (smoke tests, quick demos).'),
    s3: S3OptionsSchema.optional().describe(
      'For `path: s3://bucket/key`: the objects are downloaded once into the local disk cache (`cache.directory`). Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …).',
    ),
    cache: DatasetCacheSchema.optional().describe(
      'Stream the data through a fixed memory budget instead of loading it (data larger than memory): idx, csv and jsonl are converted once into record shards cached under `directory` (keyed by a content hash of the source), then read in blocks with read-ahead.',
    ),
    shuffleSeed: nonNegativeInt()
      .default(42)
      .describe('Seed of the per-epoch permutation of the training samples.'),
  }),
  [
    {
      cel: "self.format == 'idx' || has(self.classes)",
      message: 'dataset.classes is required for csv, jsonl, parquet, records and mongodb datasets',
      field: ['classes'],
      holds: (d) => d.format === 'idx' || d.classes !== undefined,
    },
    {
      cel: "self.format != 'records' || has(self.featureShape)",
      message: 'dataset.featureShape is required for records datasets',
      field: ['featureShape'],
      holds: (d) => d.format !== 'records' || d.featureShape !== undefined,
    },
    {
      cel: "self.format == 'idx' || !has(self.eval.source) || self.eval.source != 'test'",
      message: "dataset.eval.source 'test' needs the idx format's test files; use 'holdout'",
      field: ['eval', 'source'],
      holds: (d) => d.format === 'idx' || d.eval.source !== 'test',
    },
  ],
  [immutable('spec.dataset')],
);

// ------------------------------------------------------------------------------------------ optimizer

export const OPTIMIZERS = ['sgd', 'momentum', 'adam', 'rmsprop', 'lars', 'lamb'] as const;

export const OptimizerSpecSchema = withRules(
  z.strictObject({
    type: z
      .enum(OPTIMIZERS)
      .default('adam')
      .describe('The optimizer; lars (momentum SGD) and lamb (Adam) scale each layer by a trust ratio.'),
    learningRate: z.number().gt(0).lte(10).describe('Base learning rate (lr_base of the rescale policy).'),
    momentum: z.number().min(0).lt(1).default(0.9).describe('momentum and rmsprop: the momentum term.'),
    beta1: fraction().default(0.9).describe('adam and lamb: decay of the first-moment estimate.'),
    beta2: fraction().default(0.999).describe('adam and lamb: decay of the second-moment estimate.'),
    epsilon: z
      .number()
      .gt(0)
      .lt(1)
      .default(1e-7)
      .describe('adam, rmsprop and lamb: numerical stability term.'),
    weightDecay: z
      .number()
      .min(0)
      .lt(1)
      .default(0)
      .describe(
        'Weight decay β of every weight but biases and normalisation weights: L2 for sgd, momentum and rmsprop, decoupled for adam (AdamW) and lamb, in the trust ratio for lars.',
      ),
    trustCoefficient: z
      .number()
      .gt(0)
      .lte(1)
      .optional()
      .describe('lars: the trust coefficient η of the layer-wise rate η·‖w‖/(‖g‖ + β‖w‖) (default 0.001).'),
    warmup: z
      .strictObject({
        steps: positiveInt()
          .max(10_000_000)
          .optional()
          .describe('Warm up over the first N steps of the run.'),
        epochs: positiveInt().max(10_000).optional().describe('Warm up over the first N epochs of the run.'),
        startFactor: z
          .number()
          .min(0)
          .lt(1)
          .default(0)
          .describe('The warm-up starts at this fraction of the rate and grows linearly to all of it.'),
      })
      .optional()
      .describe('Initial learning-rate warm-up of the run (Goyal et al. 2017); omit for none.'),
    schedule: z
      .strictObject({
        type: z
          .enum(['constant', 'step', 'exponential', 'cosine'])
          .default('constant')
          .describe('Learning rate schedule over steps.'),
        decaySteps: positiveInt()
          .optional()
          .describe(
            'step and exponential: the learning rate is multiplied by decayRate every decaySteps steps.',
          ),
        decayRate: fraction().optional().describe('step and exponential: the factor per decaySteps.'),
        minLearningRate: z.number().min(0).default(0).describe('cosine: the floor reached at the last step.'),
      })
      .prefault({})
      .describe('How the learning rate changes over the run, on top of warm-ups and rescales.'),
  }),
  [
    {
      cel: "!(self.schedule.type in ['step', 'exponential']) || (has(self.schedule.decaySteps) && has(self.schedule.decayRate))",
      message: 'optimizer.schedule.decaySteps and decayRate are required for step and exponential schedules',
      field: ['schedule'],
      holds: (o) =>
        !(o.schedule.type === 'step' || o.schedule.type === 'exponential') ||
        (o.schedule.decaySteps !== undefined && o.schedule.decayRate !== undefined),
    },
    {
      cel: "self.type == 'lars' || !has(self.trustCoefficient)",
      message: 'optimizer.trustCoefficient applies to lars only',
      field: ['trustCoefficient'],
      holds: (o) => o.type === 'lars' || o.trustCoefficient === undefined,
    },
    {
      cel: '!has(self.warmup) || (has(self.warmup.steps) != has(self.warmup.epochs))',
      message: 'optimizer.warmup needs exactly one of steps or epochs',
      field: ['warmup'],
      holds: (o) =>
        o.warmup === undefined || (o.warmup.steps === undefined) !== (o.warmup.epochs === undefined),
    },
    {
      cel: 'self.schedule.minLearningRate < self.learningRate',
      message: 'optimizer.schedule.minLearningRate must be below optimizer.learningRate',
      field: ['schedule', 'minLearningRate'],
      holds: (o) => o.schedule.minLearningRate < o.learningRate,
    },
  ],
  [immutable('spec.optimizer')],
);

// -------------------------------------------------------------------------------------------- batches

export const RESCALE_POLICIES = ['fixedGlobalBatch', 'linear', 'sqrt', 'adascale'] as const;
export type RescalePolicy = (typeof RESCALE_POLICIES)[number];

export const BatchSpecSchema = withRules(
  z.strictObject({
    global: positiveInt()
      .max(1_000_000)
      .default(128)
      .describe(
        'The base global batch B_base: the global batch of fixedGlobalBatch, the reference of the others.',
      ),
    perWorker: positiveInt()
      .max(1_000_000)
      .optional()
      .describe("linear, sqrt, adascale: each worker's batch b_i (default: global / initial replicas)."),
    maxPerWorker: positiveInt()
      .max(1_000_000)
      .optional()
      .describe('Largest batch one worker computes at once; bigger shares are split into micro-batches.'),
    policy: z
      .enum(RESCALE_POLICIES)
      .default('fixedGlobalBatch')
      .describe('How batch size and learning rate follow the number of workers.'),
    warmupSteps: nonNegativeInt()
      .max(1_000_000)
      .default(50)
      .describe('Steps of linear warm-up to the new learning rate after every rescale (0: none).'),
    warmupStartFactor: z
      .number()
      .gt(0)
      .lte(1)
      .default(1)
      .describe(
        'When a rescale keeps the rate (fixedGlobalBatch, adascale, or an unchanged B), the warm-up starts at this fraction of it; 1: no warm-up then.',
      ),
    rampUp: z
      .strictObject({
        start: positiveInt().max(1_000_000).describe('The global batch of the first steps.'),
        increment: positiveInt().max(1_000_000).describe('The global batch grows by this much per stage.'),
        samples: positiveInt().optional().describe('The ramp reaches `global` after this many samples.'),
        epochs: positiveInt()
          .max(10_000)
          .optional()
          .describe('The ramp reaches `global` after this many epochs.'),
      })
      .optional()
      .describe(
        "Batch-size warm-up (Megatron-style, stepwise): the global batch grows from `start` to `global` in steps of `increment` over `samples` or `epochs`; with linear, sqrt and adascale the world's batch shrinks by the same fraction, and the learning rate follows the policy.",
      ),
    adascaleSmoothing: z
      .number()
      .min(0)
      .lt(1)
      .optional()
      .describe(
        'adascale: the factor θ of the moving averages of the gradient variance and squared norm the gain is computed from (default max(1 − S/1000, 0)).',
      ),
  }),
  [
    {
      cel: '!has(self.rampUp) || self.rampUp.start < self.global',
      message: 'batch.rampUp.start must be below batch.global',
      field: ['rampUp', 'start'],
      holds: (b) => b.rampUp === undefined || b.rampUp.start < b.global,
    },
    {
      cel: '!has(self.rampUp) || (has(self.rampUp.samples) != has(self.rampUp.epochs))',
      message: 'batch.rampUp needs exactly one of samples or epochs',
      field: ['rampUp'],
      holds: (b) =>
        b.rampUp === undefined || (b.rampUp.samples === undefined) !== (b.rampUp.epochs === undefined),
    },
    {
      cel: "self.policy == 'adascale' || !has(self.adascaleSmoothing)",
      message: 'batch.adascaleSmoothing applies to the adascale policy only',
      field: ['adascaleSmoothing'],
      holds: (b) => b.policy === 'adascale' || b.adascaleSmoothing === undefined,
    },
    {
      cel: "self.policy != 'fixedGlobalBatch' || !has(self.perWorker)",
      message: 'batch.perWorker applies to linear, sqrt and adascale; fixedGlobalBatch splits batch.global',
      field: ['perWorker'],
      holds: (b) => b.policy !== 'fixedGlobalBatch' || b.perWorker === undefined,
    },
  ],
);

// ------------------------------------------------------------------------------------------ balancing

export const BALANCING_MODES = ['even', 'proportional'] as const;
export type BalancingMode = (typeof BALANCING_MODES)[number];

export const BalancingSpecSchema = z.strictObject({
  mode: z
    .enum(BALANCING_MODES)
    .default('even')
    .describe(
      "How the global batch is split among workers: even, or proportional to each worker's measured throughput (compute time per sample, waiting excluded); the global batch and the rescale policy stay as they are.",
    ),
  smoothing: z
    .number()
    .min(0)
    .lt(1)
    .default(0.9)
    .describe(
      "Weight of the past in the moving average of each worker's compute time per sample, which follows the median of its newest 5 steps (0: that median alone).",
    ),
  driftThreshold: z
    .number()
    .gt(0)
    .lt(1)
    .default(0.1)
    .describe(
      'proportional: re-plan at a step boundary only when the new split would shorten the predicted step by at least this fraction.',
    ),
  minIntervalSteps: positiveInt()
    .max(1_000_000)
    .default(50)
    .describe(
      'proportional: at least this many steps between two re-plans within a generation, doubled after each of them (up to 16×; a new generation starts over).',
    ),
  warmupSteps: positiveInt()
    .max(1_000_000)
    .default(10)
    .describe('Steps each worker is measured before its estimate is used (the first steps are slow).'),
  minShare: z
    .number()
    .gt(0)
    .lte(1)
    .default(0.1)
    .describe(
      'proportional: no worker gets less than this fraction of the even share B/N (a tiny batch measures badly and wastes a worker).',
    ),
  stragglerThreshold: z
    .number()
    .gt(0)
    .lt(1)
    .default(0.5)
    .describe("A worker whose throughput stays below this fraction of the workers' median is a straggler."),
  stragglerSteps: positiveInt()
    .max(1_000_000)
    .default(100)
    .describe('Steps a worker must stay below the straggler threshold before it is reported.'),
  evictStragglers: z
    .boolean()
    .default(false)
    .describe(
      'Ask a reported straggler to leave, so that it is replaced: its node gets the annotation tensile.dev/slow (the reason) and the label tensile.dev/slow=true, which new workers of the job avoid (a preference, not a requirement). Remove the label to clear it: kubectl label node NODE tensile.dev/slow-',
    ),
});
export type BalancingSpec = z.output<typeof BalancingSpecSchema>;

// ---------------------------------------------------------------------------------------- autoscaling

export const AUTOSCALING_POLICIES = ['none', 'goodput'] as const;
export type AutoscalingPolicy = (typeof AUTOSCALING_POLICIES)[number];

export const AutoscalingSpecSchema = z.strictObject({
  policy: z
    .enum(AUTOSCALING_POLICIES)
    .default('none')
    .describe(
      'none: the job runs spec.replicas workers. goodput: the operator chooses the number of workers in [minReplicas, maxReplicas] that maximises predicted goodput = throughput × statistical efficiency (Pollux), from the step times and gradient noise scale the workers report.',
    ),
  minIntervalSeconds: positiveInt()
    .max(86_400)
    .default(60)
    .describe('goodput: at least this long between two changes of the worker count (a re-form costs time).'),
  threshold: z
    .number()
    .min(0)
    .max(10)
    .default(0.05)
    .describe(
      'goodput: change the worker count only when the best option is predicted at least this fraction better than staying.',
    ),
  explorationFactor: z
    .number()
    .gt(1)
    .max(100)
    .default(2)
    .describe(
      'goodput: consider worlds of at most this many times the largest one measured so far (the model is not trusted further).',
    ),
  minSteps: positiveInt()
    .max(1_000_000)
    .default(20)
    .describe('goodput: steps a world size must be measured for before it counts as measured.'),
  minGlobalBatch: positiveInt()
    .max(1_000_000)
    .optional()
    .describe(
      'goodput: with maxGlobalBatch, the operator also chooses the global batch in [minGlobalBatch, maxGlobalBatch] (tried at powers of two), which the workers take up at the next world; without, the rescale policy gives it.',
    ),
  maxGlobalBatch: positiveInt()
    .max(1_000_000)
    .optional()
    .describe('goodput: the largest global batch the operator may choose (with minGlobalBatch).'),
});
export type AutoscalingSpec = z.output<typeof AutoscalingSpecSchema>;

// -------------------------------------------------------------------------------------- communication

export const COMPRESSIONS = ['none', 'fp16', 'bf16', 'topk', 'powersgd'] as const;
export type Compression = (typeof COMPRESSIONS)[number];

export const CommunicationSpecSchema = withRules(
  z.strictObject({
    compression: z
      .enum(COMPRESSIONS)
      .default('none')
      .describe(
        'Gradients on the wire: none (fp32), fp16 or bf16 (half the bytes), topk (the largest entries with error feedback), powersgd (rank-r low-rank factors, Vogels et al. 2019).',
      ),
    topk: z
      .strictObject({
        ratio: z
          .number()
          .gt(0)
          .lte(0.5)
          .default(0.01)
          .describe('topk: fraction of the gradient entries each worker sends per step.'),
        errorFeedback: z
          .boolean()
          .default(true)
          .describe('topk: add what was not sent to the next step’s gradient (residual accumulation).'),
        sparsify: z
          .enum(['update', 'gradient'])
          .default('update')
          .describe(
            'topk: what is sparsified. update: each worker applies its own optimizer step to its own gradient and the workers exchange the top-k of the weight change (with its residual), as Deep Gradient Compression’s momentum correction does for momentum (needed by Adam, whose per-entry scaling turns a sparse gradient into a slow update); gradient: the top-k of the gradient, summed and applied by the optimizer.',
          ),
        warmupSteps: nonNegativeInt()
          .max(1_000_000)
          .default(0)
          .describe(
            'topk: density warm-up (Deep Gradient Compression): the fraction sent falls exponentially from 25 % to ratio over the first N steps of the run.',
          ),
      })
      .optional()
      .describe('topk settings (defaults apply when omitted).'),
    powersgd: z
      .strictObject({
        rank: positiveInt().max(64).default(4).describe('powersgd: rank of the low-rank approximation.'),
        warmStart: z
          .boolean()
          .default(true)
          .describe('powersgd: start each power iteration from the previous step’s Q (kept across steps).'),
        errorFeedback: z
          .boolean()
          .default(true)
          .describe('powersgd: add the approximation error to the next step’s gradient.'),
        startAfterSteps: nonNegativeInt()
          .max(1_000_000)
          .default(10)
          .describe(
            'powersgd: plain fp32 all-reduce for the first N steps of the run (torch’s start_powerSGD_iter).',
          ),
        minCompressionRate: z
          .number()
          .min(1)
          .max(1000)
          .default(2)
          .describe(
            'powersgd: a matrix is compressed only when (rows·cols)/(r·(rows+cols)) is at least this; others go uncompressed.',
          ),
      })
      .optional()
      .describe('powersgd settings (defaults apply when omitted).'),
    localSteps: positiveInt()
      .max(10_000)
      .default(1)
      .describe(
        'Local SGD: each worker takes H steps on its own share, then the workers average their weights (1: synchronous all-reduce every step).',
      ),
    localStartAfterSteps: nonNegativeInt()
      .max(1_000_000)
      .optional()
      .describe(
        'localSteps > 1: synchronous all-reduce of the gradients for the first N steps of the run, local SGD after (post-local SGD, Lin et al. 2020; torch’s PostLocalSGDOptimizer warmup_steps); 0 when omitted.',
      ),
    hierarchical: z
      .boolean()
      .optional()
      .describe(
        'fp32 all-reduces within each node first, then among one leader per node, then back (Horovod’s hierarchical all-reduce), when more than one worker shares a node; omitted: the flat ring. Only the leaders’ ring crosses nodes: 2(G−1)/G of the gradients per link between G nodes instead of 2(n−1)/n.',
      ),
    outerOptimizer: z
      .strictObject({
        type: z
          .literal('nesterov')
          .default('nesterov')
          .describe('Nesterov momentum SGD on the averaged delta (DiLoCo).'),
        learningRate: z.number().gt(0).lte(10).default(0.7).describe('Outer learning rate.'),
        momentum: z.number().min(0).lt(1).default(0.9).describe('Outer momentum.'),
      })
      .optional()
      .describe(
        'localSteps > 1: apply the averaged change of the weights with an outer optimizer instead of plain averaging (DiLoCo, Douillard et al. 2023).',
      ),
  }),
  [
    {
      cel: "self.compression == 'topk' || !has(self.topk)",
      message: 'communication.topk applies to compression: topk only; set compression: topk or remove topk',
      field: ['topk'],
      holds: (c) => c.compression === 'topk' || c.topk === undefined,
    },
    {
      cel: "self.compression == 'powersgd' || !has(self.powersgd)",
      message:
        'communication.powersgd applies to compression: powersgd only; set compression: powersgd or remove powersgd',
      field: ['powersgd'],
      holds: (c) => c.compression === 'powersgd' || c.powersgd === undefined,
    },
    {
      cel: "self.localSteps == 1 || self.compression == 'none'",
      message:
        'communication.compression must be none when localSteps > 1 (local SGD averages weights, not gradients); set localSteps: 1 or compression: none',
      field: ['compression'],
      holds: (c) => c.localSteps === 1 || c.compression === 'none',
    },
    {
      cel: 'self.localSteps > 1 || !has(self.outerOptimizer)',
      message: 'communication.outerOptimizer needs localSteps > 1; raise localSteps or remove outerOptimizer',
      field: ['outerOptimizer'],
      holds: (c) => c.localSteps > 1 || c.outerOptimizer === undefined,
    },
  ],
);
export type CommunicationSpec = z.output<typeof CommunicationSpecSchema>;

// ----------------------------------------------------------------------------------------- federation

export const AGGREGATIONS = ['fedavg', 'fedprox'] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];

const SPKI_ED25519_PREFIX = '302a300506032b6570032100';

/** base64 of a raw 32-byte Ed25519 public key, or of its 44-byte DER SubjectPublicKeyInfo. */
function isEd25519PublicKey(text: string): boolean {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return false;
  const bytes = Buffer.from(text, 'base64');
  return (
    bytes.length === 32 ||
    (bytes.length === 44 && bytes.subarray(0, 12).toString('hex') === SPKI_ED25519_PREFIX)
  );
}

export const FederationSiteSchema = z.strictObject({
  name: z
    .string()
    .regex(DNS_LABEL, 'a site name is a DNS label: lower-case letters, digits and -')
    .max(20)
    .describe('The site: its workers form their own data-parallel group (rendezvous, ring) named after it.'),
  replicas: positiveInt().max(1000).default(1).describe('Workers at this site; they train data-parallel.'),
  dataset: z
    .strictObject({
      path: z.string().min(1).describe('The site’s own data, in the job’s dataset format and options.'),
      volume: z
        .strictObject({
          claimName: objectName('PersistentVolumeClaim').describe('The claim holding the site’s data.'),
          mountPath: z.string().startsWith('/').describe('Where the site’s workers see it.'),
        })
        .optional()
        .describe('A claim mounted read-only at `mountPath`.'),
    })
    .optional()
    .describe(
      'The site’s own data; when omitted the site trains on its part of the job’s dataset, cut by federation.partition.',
    ),
  signingKey: z
    .string()
    .refine(isEd25519PublicKey, {
      message:
        'expected the base64 of an Ed25519 public key: its raw 32 bytes, or its DER form (openssl pkey -pubout -outform DER | base64)',
    })
    .optional()
    .describe(
      'Pins the site’s Ed25519 public key: with secure aggregation every site signs the keys it advertises, and a signature under another key is refused. When omitted the launcher (tensile run, the operator) makes the site’s key and hands the public keys out.',
    ),
  remote: z
    .boolean()
    .default(false)
    .describe(
      'The site runs elsewhere (another cluster’s TrainingJob of the same name and namespace, joined through the same NATS or a leaf node of it): this job starts no workers for it and waits for it only in the rounds. With secure aggregation its signingKey must be pinned.',
    ),
});
export type FederationSite = z.output<typeof FederationSiteSchema>;

export const FederationSpecSchema = withRules(
  z.strictObject({
    sites: z
      .array(FederationSiteSchema)
      .min(2)
      .max(32)
      .describe('The sites; only model deltas leave a site, never samples.'),
    rounds: positiveInt().max(100_000).describe('Federated rounds: local training, then one aggregation.'),
    localSteps: positiveInt()
      .max(1_000_000)
      .default(50)
      .describe('Steps each site trains (data-parallel within the site) per round before its delta is sent.'),
    aggregation: z
      .enum(AGGREGATIONS)
      .default('fedavg')
      .describe(
        'fedavg: the deltas averaged weighted by each site’s sample count (McMahan et al. 2017); fedprox: the same, with the proximal term μ/2·‖w − w_round‖² in every local step (Li et al. 2020).',
      ),
    proximalMu: z
      .number()
      .gt(0)
      .lte(10)
      .optional()
      .describe('fedprox: μ of the proximal term (required with fedprox, refused otherwise).'),
    partition: z
      .strictObject({
        type: z
          .enum(['dirichlet', 'iid'])
          .default('dirichlet')
          .describe(
            'dirichlet: label skew, each class split over the sites by Dirichlet(α) shares; iid: even random split.',
          ),
        alpha: z.number().gt(0).lte(1000).default(0.5).describe('dirichlet: α (smaller is more skewed).'),
        seed: nonNegativeInt()
          .max(2 ** 31)
          .default(1)
          .describe('Seeds the split; every worker computes the same one.'),
      })
      .prefault({})
      .describe('How the job’s dataset is cut among sites that bring no dataset of their own.'),
    secureAggregation: z
      .strictObject({
        enabled: z
          .boolean()
          .default(true)
          .describe(
            'Mask each site’s delta with pairwise masks and a self-mask (double masking, Bonawitz et al. 2017), the advertised keys signed.',
          ),
        threshold: positiveInt()
          .max(32)
          .optional()
          .describe(
            'Sites needed to unmask a round (Shamir t of n, more than half the sites; default: a majority). A round with fewer survivors is retried.',
          ),
      })
      .prefault({})
      .describe('Secure aggregation: no single site’s delta is visible to anyone, only the sum.'),
    differentialPrivacy: z
      .strictObject({
        clipNorm: z
          .number()
          .gt(0)
          .lte(1_000_000)
          .describe(
            'C: each site’s round delta (the change of the weights over the round) is scaled down to L2 norm ≤ C.',
          ),
        noiseMultiplier: z
          .number()
          .gt(0)
          .lte(1000)
          .describe(
            'z: Gaussian noise of standard deviation z·C is added to every coordinate of the clipped delta before it leaves the site.',
          ),
        delta: z
          .number()
          .gt(0)
          .lte(0.01)
          .default(1e-5)
          .describe(
            'δ of the (ε, δ) reported: ε is what the rounds so far have spent, by an RDP accountant of the Gaussian mechanism.',
          ),
      })
      .optional()
      .describe(
        'Differential privacy per site (DP-FedAvg): each site clips its delta and adds Gaussian noise; the ε spent is reported every round (each site’s, under its own noise alone).',
      ),
    roundTimeoutMillis: z
      .int()
      .min(1000)
      .max(3_600_000)
      .default(60_000)
      .describe(
        'A site whose share of a round phase has not arrived by then is treated as dropped for that round (the first round waits 10 times as long for every site to start).',
      ),
  }),
  [
    {
      cel: 'self.sites.exists(s, !s.remote)',
      message: 'federation.sites: at least one site must run here (remote: false)',
      field: ['sites'],
      holds: (f) => f.sites.some((s) => !s.remote),
    },
    {
      cel: '!self.secureAggregation.enabled || self.sites.all(s, !s.remote || has(s.signingKey))',
      message:
        'federation.sites[].remote: a remote site’s public key must be pinned (signingKey) with secure aggregation, since its private key is never here',
      field: ['sites'],
      holds: (f) =>
        !f.secureAggregation.enabled || f.sites.every((s) => !s.remote || s.signingKey !== undefined),
    },
    {
      cel: 'self.sites.all(s, self.sites.exists_one(t, t.name == s.name))',
      message: 'federation.sites: every site needs its own name',
      field: ['sites'],
      holds: (f) => new Set(f.sites.map((s) => s.name)).size === f.sites.length,
    },
    {
      cel: "self.aggregation == 'fedprox' ? has(self.proximalMu) : !has(self.proximalMu)",
      message:
        'federation.proximalMu goes with aggregation: fedprox (and fedprox needs it); set both or neither',
      field: ['proximalMu'],
      holds: (f) => (f.aggregation === 'fedprox') === (f.proximalMu !== undefined),
    },
    {
      cel: '!has(self.secureAggregation.threshold) || (self.secureAggregation.threshold >= 2 && self.secureAggregation.threshold * 2 > size(self.sites) && self.secureAggregation.threshold <= size(self.sites))',
      message:
        'federation.secureAggregation.threshold must be more than half the sites (so no site’s self-mask seed and key can both be rebuilt) and at most their number',
      field: ['secureAggregation', 'threshold'],
      holds: (f) =>
        f.secureAggregation.threshold === undefined ||
        (f.secureAggregation.threshold >= 2 &&
          f.secureAggregation.threshold * 2 > f.sites.length &&
          f.secureAggregation.threshold <= f.sites.length),
    },
  ],
);
export type FederationSpec = z.output<typeof FederationSpecSchema>;

/** The Shamir threshold of a round: the configured one, else a majority of the sites (at least 2). */
export function secureThreshold(federation: FederationSpec): number {
  return federation.secureAggregation.threshold ?? Math.max(2, Math.floor(federation.sites.length / 2) + 1);
}

// ------------------------------------------------------------------------------------------- stopping

export const StoppingSpecSchema = withRules(
  z.strictObject({
    epochs: positiveInt().max(100_000).optional().describe('Train for this many epochs.'),
    steps: positiveInt()
      .optional()
      .describe('Train for this many global steps (whichever of epochs and steps comes first).'),
    targetAccuracy: z
      .number()
      .gt(0)
      .lte(1)
      .optional()
      .describe('Stop early once the evaluation accuracy reaches this value.'),
  }),
  [
    {
      cel: 'has(self.epochs) || has(self.steps)',
      message: 'set stopping.epochs or stopping.steps',
      field: [],
      holds: (s) => s.epochs !== undefined || s.steps !== undefined,
    },
  ],
);

export const EvaluationSpecSchema = z.strictObject({
  intervalSteps: positiveInt()
    .default(500)
    .describe('Evaluate every N steps (and always at the end of each epoch and of the run).'),
});

// ---------------------------------------------------------------------------------------- checkpoints

export const CheckpointVolumeSchema = withRules(
  z.strictObject({
    claimName: objectName('PersistentVolumeClaim')
      .optional()
      .describe(
        'An existing claim that every worker mounts (ReadWriteMany when workers may run on several nodes).',
      ),
    claimTemplate: withRules(
      z.strictObject({
        storageClassName: objectName('StorageClass')
          .optional()
          .describe("StorageClass of the claim; omitted: the cluster's default class."),
        accessModes: z
          .array(z.enum(['ReadWriteOnce', 'ReadWriteMany', 'ReadWriteOncePod']))
          .min(1)
          .max(3)
          .default(['ReadWriteOnce'])
          .describe(
            "ReadWriteOnce (the default; every cluster's default class offers it): the workers of a job of more than one share the node that mounts it (a required pod affinity). ReadWriteMany lets them spread over nodes and needs storageClassName.",
          ),
        size: quantity.default('1Gi').describe('Requested size.'),
      }),
      [
        {
          cel: "!self.accessModes.exists(m, m == 'ReadWriteMany') || has(self.storageClassName)",
          message:
            'checkpoint.volume.claimTemplate: ReadWriteMany needs storageClassName (a class that offers it: EFS, Filestore, NFS, …); default classes offer only ReadWriteOnce',
          field: ['storageClassName'],
          holds: (t) => !t.accessModes.includes('ReadWriteMany') || t.storageClassName !== undefined,
        },
      ],
    )
      .optional()
      .describe('A claim the operator creates for the job.'),
  }),
  [
    {
      cel: 'has(self.claimName) != has(self.claimTemplate)',
      message: 'set exactly one of checkpoint.volume.claimName or checkpoint.volume.claimTemplate',
      field: [],
      holds: (v) => (v.claimName === undefined) !== (v.claimTemplate === undefined),
    },
  ],
);

export const CheckpointSpecSchema = withRules(
  z.strictObject({
    path: z
      .string()
      .startsWith('/')
      .default('/checkpoints')
      .describe('Where the volume is mounted in the worker, and the folder `tensile run` uses locally.'),
    intervalSteps: positiveInt().optional().describe('Checkpoint every N global steps.'),
    intervalSeconds: positiveInt().optional().describe('Checkpoint at least every N seconds.'),
    keep: positiveInt().max(100).default(3).describe('Checkpoints retained; older ones are deleted.'),
    volume: CheckpointVolumeSchema.prefault({ claimTemplate: {} }).describe(
      'Where checkpoints live: an existing claim or one the operator creates (owned by the job).',
    ),
    objectStore: S3OptionsSchema.extend({
      url: z
        .string()
        .regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/, 'expected s3://bucket/prefix')
        .describe('s3://bucket/prefix: one prefix per job (checkpoints are ckpt-<step>/ below it).'),
    })
      .optional()
      .describe(
        'Mirror every checkpoint to object storage: uploaded after it is written to the volume (manifest last, so a partial upload is never taken), pruned to `keep`; a worker that starts on an empty or older volume (a new node with local disk) resumes from the newest checkpoint in the store. Credentials from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …).',
      ),
  }),
  [
    {
      cel: 'has(self.intervalSteps) || has(self.intervalSeconds)',
      message: 'set checkpoint.intervalSteps or checkpoint.intervalSeconds',
      field: [],
      holds: (c) => c.intervalSteps !== undefined || c.intervalSeconds !== undefined,
    },
  ],
);

// ---------------------------------------------------------------------------------------------- output

export const OutputSpecSchema = withRules(
  z.strictObject({
    claimName: z
      .string()
      .regex(DNS_SUBDOMAIN, 'expected a PersistentVolumeClaim name')
      .optional()
      .describe(
        'An existing claim for the trained model. The operator never owns or deletes it, so the model outlives the job (and its TTL); without it the model goes to `model/` on the checkpoint volume.',
      ),
    mountPath: z
      .string()
      .startsWith('/')
      .default('/output')
      .describe('Where the output claim is mounted in the worker pods.'),
    path: z
      .string()
      .min(1)
      .max(1024)
      .optional()
      .describe('Folder of the model inside the claim (default: <namespace>/<job name>).'),
    labels: z
      .array(z.string().min(1))
      .max(100_000)
      .optional()
      .describe('Class names, index = label, written to labels.json for serving (default: "0", "1", …).'),
  }),
  [
    {
      cel: "!has(self.path) || (!self.path.startsWith('/') && !self.path.matches('(^|/)[.][.](/|$)'))",
      message: 'output.path must be relative and must not contain ..',
      field: ['path'],
      holds: (o) => o.path === undefined || (!o.path.startsWith('/') && !o.path.split('/').includes('..')),
    },
  ],
);

// ------------------------------------------------------------------------------------- worker template

export const TolerationSchema = withRules(
  z.strictObject({
    key: z.string().optional().describe('The taint key; omitted with Exists: every taint.'),
    operator: z
      .enum(['Exists', 'Equal'])
      .default('Equal')
      .describe('Equal: key and value match; Exists: the key does.'),
    value: z.string().optional().describe('The taint value (Equal).'),
    effect: z
      .enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute'])
      .optional()
      .describe('The taint effect tolerated; omitted: all.'),
    tolerationSeconds: z
      .int()
      .optional()
      .describe('NoExecute: how long the pod stays once the taint appears.'),
  }),
  [
    {
      cel: "self.operator != 'Exists' || !has(self.value) || self.value == ''",
      message: 'a toleration with operator Exists must not set value',
      field: ['value'],
      holds: (t) => t.operator !== 'Exists' || t.value === undefined || t.value === '',
    },
    {
      cel: "has(self.key) || self.operator == 'Exists'",
      message: 'a toleration without key must use operator Exists',
      field: ['key'],
      holds: (t) => t.key !== undefined || t.operator === 'Exists',
    },
  ],
);

export const EnvVarSchema = z.strictObject({
  name: z
    .string()
    .min(1)
    .regex(/^[-._a-zA-Z][-._a-zA-Z0-9]*$/, 'expected an environment variable name')
    .describe('Variable name (TENSILE_* is the operator’s).'),
  value: z.string().optional().describe('Its value.'),
  valueFrom: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('A core/v1 EnvVarSource, passed to the pod unchanged.'),
});

export const PodTemplateSchema = z.strictObject({
  metadata: z
    .strictObject({
      labels: z
        .record(z.string(), z.string().max(63))
        .optional()
        .describe('Added to the labels of every worker pod.'),
      annotations: z
        .record(z.string(), z.string())
        .optional()
        .describe('Added to the annotations of every worker pod.'),
    })
    .optional()
    .describe('Labels and annotations of the worker pods.'),
  spec: z
    .record(z.string(), z.unknown())
    .default({})
    .describe(
      'A core/v1 PodSpec, merged with what Tensile sets; the API server validates it on pod creation.',
    ),
});

export const BACKENDS = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKENDS)[number];

export const WorkerSpecSchema = z.strictObject({
  image: z
    .string()
    .min(1)
    .optional()
    .describe("Defaults to the operator's worker image (Helm value workers.image)."),
  imagePullPolicy: z
    .enum(['Always', 'IfNotPresent', 'Never'])
    .optional()
    .describe('When the kubelet pulls the image.'),
  command: z.array(z.string()).optional().describe('Entrypoint override of the worker container.'),
  args: z.array(z.string()).optional().describe('Arguments of the worker container (default: [worker]).'),
  env: z.array(EnvVarSchema).default([]).describe('Extra environment variables for the worker container.'),
  resources: z
    .strictObject({
      requests: resourceList.optional().describe('Resources the scheduler reserves for each worker.'),
      limits: resourceList.optional().describe('Most each worker may use.'),
    })
    .prefault({})
    .describe(
      "The worker container's requests and limits; omitted: the cluster default (Helm workers.resources).",
    ),
  gpus: nonNegativeInt()
    .max(64)
    .optional()
    .describe(
      'GPUs (nvidia.com/gpu) per worker: opt-in; adds the GPU image and the GPU toleration. Omitted: the cluster default (Helm workers.gpu.default, 0).',
    ),
  spot: z
    .boolean()
    .optional()
    .describe(
      "Run on spot (preemptible) nodes: adds the cluster's spot node selector and tolerations (Helm workers.spot). Omitted: the cluster default (off).",
    ),
  nodeSelector: z
    .record(z.string(), z.string())
    .optional()
    .describe('Node labels a worker node must have (spot: true adds the spot label).'),
  tolerations: z
    .array(TolerationSchema)
    .optional()
    .describe('Taints the workers tolerate; gpus and spot add their own.'),
  affinity: z
    .record(z.string(), z.unknown())
    .optional()
    .describe(
      'A core/v1 Affinity, passed to the pod unchanged (the API server validates it on pod creation).',
    ),
  priorityClassName: objectName('PriorityClass').optional().describe('PriorityClass of the worker pods.'),
  serviceAccountName: objectName('ServiceAccount').optional().describe('ServiceAccount of the worker pods.'),
  labels: z
    .record(z.string(), z.string().max(63))
    .optional()
    .describe('Added to the labels of the worker pods.'),
  annotations: z
    .record(z.string(), z.string())
    .optional()
    .describe('Added to the annotations of the worker pods.'),
  terminationGracePeriodSeconds: nonNegativeInt()
    .max(3600)
    .default(30)
    .describe('Time a worker gets to checkpoint and leave after SIGTERM.'),
  backend: z
    .enum(BACKENDS)
    .default('auto')
    .describe('TensorFlow.js backend; auto tries tensorflow (GPU, then CPU), wasm, cpu in that order.'),
  sharedMemory: quantity
    .optional()
    .describe(
      "Size of /dev/shm, a memory-backed emptyDir (counted against the pod's memory); the container runtime's default is 64Mi.",
    ),
  podTemplate: PodTemplateSchema.optional().describe(
    "A core/v1 pod template merged into every worker pod, as Kubeflow replica specs take one: volumes, the worker container's volumeMounts, env and securityContext (a container named `worker`), extra containers, securityContext and fsGroup, imagePullSecrets, schedulerName, topologySpreadConstraints and the rest of a PodSpec. Tensile's own fields (restartPolicy, TENSILE_* variables, its volumes and mounts, tensile.dev/ labels) cannot be overridden, and a field spec.worker also has must be set in one place only: the job fails with InvalidSpec naming the field.",
  ),
});

export const RunPolicySchema = z.strictObject({
  suspend: z
    .boolean()
    .default(false)
    .describe(
      'Suspended jobs checkpoint, delete their workers and keep their progress; resuming recreates them.',
    ),
  backoffLimit: nonNegativeInt()
    .max(1000)
    .default(6)
    .describe('Pod failures tolerated before the job fails; preemptions never count.'),
  activeDeadlineSeconds: positiveInt()
    .optional()
    .describe('Fail the job (DeadlineExceeded) after this many seconds from start.'),
  ttlSecondsAfterFinished: nonNegativeInt()
    .optional()
    .describe('Delete the finished job (and its pods and claim) this long after it ends; omitted: never.'),
  cleanPodPolicy: z
    .enum(['None', 'Running', 'All'])
    .default('Running')
    .describe(
      'Worker pods deleted when the job finishes: Running (still running ones; finished workers stay, so `kubectl logs` works until the job is deleted), All, or None.',
    ),
  pendingTimeoutSeconds: positiveInt()
    .default(300)
    .describe(
      'A worker Pending longer than this is reported (condition and event) but kept for the autoscaler.',
    ),
});

export const RendezvousSpecSchema = withRules(
  z.strictObject({
    heartbeatMillis: z
      .int()
      .min(100)
      .max(60_000)
      .default(1000)
      .describe('How often each worker renews its membership.'),
    timeoutMillis: z
      .int()
      .min(200)
      .max(600_000)
      .default(3000)
      .describe('A member whose heartbeat is older than this is dropped from the world.'),
    lastCallMillis: z
      .int()
      .min(0)
      .max(600_000)
      .default(1000)
      .describe('Once minReplicas have joined, wait this long for more before closing the round.'),
  }),
  [
    {
      cel: 'self.timeoutMillis > self.heartbeatMillis',
      message: 'rendezvous.timeoutMillis must exceed rendezvous.heartbeatMillis',
      field: ['timeoutMillis'],
      holds: (r) => r.timeoutMillis > r.heartbeatMillis,
    },
  ],
);

export const NatsSpecSchema = z.strictObject({
  url: z
    .string()
    .regex(/^(nats|tls|ws|wss):\/\/[^\s]+$/, 'expected a NATS URL such as nats://nats.tensile-system:4222')
    .optional()
    .describe('The NATS server of this job’s workers.'),
  credentialsSecret: z
    .strictObject({
      name: objectName('Secret').describe('A Secret in the job’s namespace.'),
      key: z.string().min(1).default('nats.creds').describe('The key holding the credentials file.'),
    })
    .optional()
    .describe('A NATS credentials file mounted into every worker.'),
});

// ----------------------------------------------------------------------------------------------- spec

export const TrainingJobSpecSchema = withRules(
  z.strictObject({
    replicas: positiveInt()
      .max(10_000)
      .default(1)
      .describe('Desired number of workers (the scale subresource and HPA set this).'),
    minReplicas: positiveInt()
      .max(10_000)
      .default(1)
      .describe('Training goes on while at least this many workers are present.'),
    maxReplicas: positiveInt()
      .max(10_000)
      .optional()
      .describe('Upper end of the elastic range; when omitted the job never grows past `replicas`.'),
    model: ModelSpecSchema.describe('The network to train; immutable.'),
    dataset: DatasetSpecSchema.describe('Where the data is and how it is prepared; immutable.'),
    optimizer: OptimizerSpecSchema.describe('Optimizer and learning rate; immutable.'),
    batch: BatchSpecSchema.prefault({}).describe('Global batch size and the rescale policy.'),
    balancing: BalancingSpecSchema.prefault({}).describe(
      'How the global batch is split among workers of different speeds, and what happens to stragglers.',
    ),
    autoscaling: AutoscalingSpecSchema.prefault({}).describe(
      'Who chooses the number of workers: spec.replicas (none), or the goodput model (goodput).',
    ),
    stopping: StoppingSpecSchema.prefault({ epochs: 1 }).describe('When training ends.'),
    evaluation: EvaluationSpecSchema.prefault({}).describe('How often to evaluate on the eval split.'),
    checkpoint: CheckpointSpecSchema.prefault({ intervalSteps: 200 }).describe(
      'Checkpoint interval, retention and volume.',
    ),
    worker: WorkerSpecSchema.prefault({}).describe('The worker pod template.'),
    runPolicy: RunPolicySchema.prefault({}).describe('Suspension, failure limits, deadline and clean-up.'),
    communication: CommunicationSpecSchema.prefault({}).describe(
      'Gradient compression and local SGD: what the workers exchange each step.',
    ),
    rendezvous: RendezvousSpecSchema.prefault({}).describe(
      'How workers find each other and how fast a lost one is noticed.',
    ),
    nats: NatsSpecSchema.optional().describe("Override the operator's NATS server for this job."),
    federation: FederationSpecSchema.optional().describe(
      'Federated training across sites whose data never leaves them: rounds of local training and a (secure) aggregation of the model deltas.',
    ),
    output: OutputSpecSchema.optional().describe(
      'Where the trained model is written at the end of the job (tfjs Layers format with its preprocessing, labels, spec and metrics).',
    ),
  }),
  [
    {
      cel: 'self.minReplicas <= self.replicas',
      message: 'minReplicas must not exceed replicas',
      field: ['minReplicas'],
      holds: (s) => s.minReplicas <= s.replicas,
    },
    {
      cel: '!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas',
      message: 'minReplicas must not exceed maxReplicas',
      field: ['maxReplicas'],
      holds: (s) => s.maxReplicas === undefined || s.minReplicas <= s.maxReplicas,
    },
    {
      cel: '!has(self.maxReplicas) || self.replicas <= self.maxReplicas',
      message: 'replicas must not exceed maxReplicas',
      field: ['replicas'],
      holds: (s) => s.maxReplicas === undefined || s.replicas <= s.maxReplicas,
    },
    {
      cel: "!has(self.worker.gpus) || !((has(self.worker.resources.requests) && 'nvidia.com/gpu' in self.worker.resources.requests) || (has(self.worker.resources.limits) && 'nvidia.com/gpu' in self.worker.resources.limits))",
      message: 'set worker.gpus or nvidia.com/gpu in worker.resources, not both',
      field: ['worker', 'gpus'],
      holds: (s) =>
        s.worker.gpus === undefined ||
        (s.worker.resources.requests?.['nvidia.com/gpu'] === undefined &&
          s.worker.resources.limits?.['nvidia.com/gpu'] === undefined),
    },
    {
      cel: "self.batch.policy != 'fixedGlobalBatch' || self.batch.global >= (has(self.maxReplicas) ? self.maxReplicas : self.replicas)",
      message:
        'batch.global must be at least the largest number of workers, so that every worker gets a sample',
      field: ['batch', 'global'],
      holds: (s) => s.batch.policy !== 'fixedGlobalBatch' || s.batch.global >= (s.maxReplicas ?? s.replicas),
    },
    {
      cel: "self.autoscaling.policy != 'goodput' || (has(self.maxReplicas) && self.maxReplicas > self.minReplicas)",
      message:
        'autoscaling.policy goodput needs maxReplicas greater than minReplicas (the range it chooses in); set spec.maxReplicas',
      field: ['autoscaling', 'policy'],
      holds: (s) =>
        s.autoscaling.policy !== 'goodput' || (s.maxReplicas !== undefined && s.maxReplicas > s.minReplicas),
    },
    {
      cel: 'has(self.autoscaling.minGlobalBatch) == has(self.autoscaling.maxGlobalBatch)',
      message: 'autoscaling.minGlobalBatch and maxGlobalBatch go together (the range the batch is chosen in)',
      field: ['autoscaling', 'minGlobalBatch'],
      holds: (s) =>
        (s.autoscaling.minGlobalBatch === undefined) === (s.autoscaling.maxGlobalBatch === undefined),
    },
    {
      cel: '!has(self.autoscaling.minGlobalBatch) || !has(self.autoscaling.maxGlobalBatch) || self.autoscaling.minGlobalBatch <= self.autoscaling.maxGlobalBatch',
      message: 'autoscaling.minGlobalBatch must be at most maxGlobalBatch',
      field: ['autoscaling', 'minGlobalBatch'],
      holds: (s) =>
        s.autoscaling.minGlobalBatch === undefined ||
        s.autoscaling.maxGlobalBatch === undefined ||
        s.autoscaling.minGlobalBatch <= s.autoscaling.maxGlobalBatch,
    },
    {
      cel: "!has(self.autoscaling.minGlobalBatch) || (self.autoscaling.policy == 'goodput' && self.batch.policy != 'fixedGlobalBatch' && !has(self.batch.rampUp))",
      message:
        'autoscaling.minGlobalBatch/maxGlobalBatch need autoscaling.policy goodput and a batch.policy whose learning rate follows the batch (adascale, as Pollux, or linear / sqrt), without batch.rampUp',
      field: ['autoscaling', 'minGlobalBatch'],
      holds: (s) =>
        s.autoscaling.minGlobalBatch === undefined ||
        (s.autoscaling.policy === 'goodput' &&
          s.batch.policy !== 'fixedGlobalBatch' &&
          s.batch.rampUp === undefined),
    },
    {
      cel: "self.communication.localSteps == 1 || self.batch.policy != 'adascale'",
      message:
        'communication.localSteps > 1 cannot be combined with batch.policy adascale (its gain needs every step’s gradients); use localSteps: 1 or another policy',
      field: ['communication', 'localSteps'],
      holds: (s) => s.communication.localSteps === 1 || s.batch.policy !== 'adascale',
    },
    {
      cel: '!has(self.federation) || self.communication.localSteps == 1',
      message:
        'federation averages across sites every federation.localSteps; within a site training stays synchronous: set communication.localSteps: 1',
      field: ['federation'],
      holds: (s) => s.federation === undefined || s.communication.localSteps === 1,
    },
    {
      cel: "!has(self.federation) || self.batch.policy != 'adascale'",
      message: 'federation cannot be combined with batch.policy adascale; use another policy',
      field: ['federation'],
      holds: (s) => s.federation === undefined || s.batch.policy !== 'adascale',
    },
  ],
);

// --------------------------------------------------------------------------------------------- status

export const CONDITION_TYPES = [
  'Created',
  'Running',
  'Rescaling',
  'Succeeded',
  'Failed',
  'Suspended',
  'PodsPending',
  'Stragglers',
] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];
export const PHASES = ['Pending', 'Running', 'Suspended', 'Succeeded', 'Failed'] as const;
export type Phase = (typeof PHASES)[number];

export const ConditionSchema = z.strictObject({
  type: z.enum(CONDITION_TYPES).describe('What the condition is about.'),
  status: z.enum(['True', 'False', 'Unknown']).describe('Whether it holds.'),
  reason: z
    .string()
    .regex(/^[A-Z][A-Za-z0-9]*$/, 'expected a PascalCase reason')
    .describe('Why, as one PascalCase word (e.g. WorkersReady, InvalidSpec).'),
  message: z.string().default('').describe('Why, for people.'),
  lastTransitionTime: z.iso.datetime().describe('When the status last changed.'),
});

export const TrainingJobStatusSchema = z.strictObject({
  phase: z.enum(PHASES).optional().describe('Pending, Running, Suspended, Succeeded or Failed.'),
  conditions: z
    .array(ConditionSchema)
    .optional()
    .describe('Created, Running, Rescaling, Succeeded, Failed, Suspended, PodsPending.'),
  observedGeneration: z.int().optional().describe('The metadata.generation this status was computed from.'),
  replicas: nonNegativeInt().optional().describe('Worker pods that exist (for the scale subresource).'),
  readyReplicas: nonNegativeInt().optional().describe('Worker pods that are ready.'),
  selector: z
    .string()
    .optional()
    .describe("The workers' label selector (for the scale subresource and HPA)."),
  worldSize: nonNegativeInt().optional().describe('Workers training together in the current world.'),
  generation: nonNegativeInt()
    .optional()
    .describe('Rendezvous round of the current world (not metadata.generation).'),
  step: nonNegativeInt().optional().describe('Global steps done.'),
  epoch: nonNegativeInt().optional().describe('The epoch being trained.'),
  loss: z.number().optional().describe('Training loss of the last reported step, 4 significant digits.'),
  accuracy: z.number().optional().describe('Accuracy of the last evaluation, 4 decimals.'),
  samplesPerSecond: z.number().optional().describe('Training throughput of the whole world.'),
  workers: z
    .array(
      z.strictObject({
        worker: z.string().describe('The worker (its pod name).'),
        batch: nonNegativeInt().describe('Its share of the global batch per step.'),
        samplesPerSecond: z
          .number()
          .describe('Compute throughput: samples per second of compute, waiting excluded.'),
        waitSeconds: z
          .number()
          .describe('Seconds per step this worker waits for the others in the all-reduce.'),
      }),
    )
    .max(10_000)
    .optional()
    .describe("Each worker's batch, throughput and wait in the current world, in rank order."),
  stragglers: z
    .array(z.string())
    .max(10_000)
    .optional()
    .describe('Workers persistently below spec.balancing.stragglerThreshold of the median throughput.'),
  autoscaling: z
    .strictObject({
      replicas: positiveInt().describe(
        'The worker count the goodput policy chose (the desired count while spec.replicas stays as it was).',
      ),
      specReplicas: positiveInt().describe(
        'spec.replicas when it chose: a different spec.replicas is a user scale, which wins.',
      ),
      lastChangeTime: z.iso.datetime().optional().describe('When it last changed the worker count.'),
      changes: nonNegativeInt()
        .optional()
        .describe('How many changes (of the worker count or the global batch) it has made.'),
      globalBatch: positiveInt().optional().describe('The global batch its choice is predicted at.'),
      chosenBatch: z
        .strictObject({
          globalBatch: positiveInt().describe('The global batch the workers take up at their next world.'),
          revision: positiveInt().describe('Rises with every change of it: a world follows the newest.'),
        })
        .optional()
        .describe(
          'With autoscaling.minGlobalBatch/maxGlobalBatch: the global batch the policy chose, published to the workers (rendezvous key `autoscaling`).',
        ),
      reason: z
        .string()
        .describe('Why: the change, or why it holds, with the predicted goodput of each option.'),
      noiseScale: z
        .number()
        .min(0)
        .optional()
        .describe('The gradient noise scale the workers measured, in samples.'),
      model: z
        .strictObject({
          fixedSeconds: z.number().describe('Step time that depends on neither batch nor workers.'),
          perSampleSeconds: z.number().describe("Step time per sample of a worker's batch."),
          perReplicaSeconds: z.number().describe('Step time per worker beyond the first (synchronisation).'),
        })
        .optional()
        .describe('The step-time model fitted to the observations.'),
      options: z
        .array(
          z.strictObject({
            replicas: positiveInt().describe('Workers.'),
            globalBatch: positiveInt().describe('Global batch.'),
            goodput: z.number().describe('Predicted goodput: base-batch-equivalent samples per second.'),
          }),
        )
        .max(10_000)
        .optional()
        .describe('The predicted goodput of each worker count considered.'),
      observations: z
        .array(
          z.strictObject({
            replicas: positiveInt().describe('Workers in the world.'),
            perWorkerBatch: z.number().positive().describe('Mean per-worker batch.'),
            stepSeconds: z.number().positive().describe('Mean step time.'),
            steps: positiveInt().describe('Steps measured.'),
            generation: nonNegativeInt().describe('The world (rendezvous round) measured.'),
          }),
        )
        .max(64)
        .optional()
        .describe('Step times measured, one per (workers, per-worker batch): what the model is fitted to.'),
    })
    .optional()
    .describe(
      'The goodput autoscaler: its last decision and what it was taken on (spec.autoscaling.policy goodput).',
    ),
  federation: z
    .strictObject({
      rounds: nonNegativeInt().describe(
        'Federated rounds every site has completed (of spec.federation.rounds).',
      ),
      sites: z
        .array(
          z.strictObject({
            name: z.string().describe('The site (spec.federation.sites[].name).'),
            replicas: nonNegativeInt().describe('Its worker pods that exist.'),
            readyReplicas: nonNegativeInt().describe('Its worker pods that are ready.'),
            worldSize: nonNegativeInt().optional().describe('Its workers training together now.'),
            step: nonNegativeInt().optional().describe('Steps its world has done.'),
            round: nonNegativeInt().optional().describe('Rounds it has completed.'),
            completed: z.boolean().optional().describe('Its workers reported the end of training.'),
          }),
        )
        .max(32)
        .describe('Per site: its membership and progress.'),
      epsilon: z
        .number()
        .optional()
        .describe(
          'differentialPrivacy: the ε each site has spent after `rounds` rounds at spec.federation.differentialPrivacy.delta (RDP accountant).',
        ),
    })
    .optional()
    .describe('spec.federation: the rounds done, each site’s membership and the ε spent.'),
  lastCheckpoint: z
    .strictObject({
      step: nonNegativeInt().describe('The step it holds.'),
      path: z.string().describe('Its folder on the checkpoint volume.'),
      time: z.iso.datetime().describe('When it was written.'),
    })
    .optional()
    .describe('The newest checkpoint written.'),
  restarts: nonNegativeInt()
    .optional()
    .describe('Workers that failed on their own (counted against backoffLimit).'),
  failureStreak: nonNegativeInt()
    .optional()
    .describe(
      "Worker failures in a row, the last of them included: the delay before a failed worker is replaced doubles with each (from the operator's --failure-backoff, capped at 6 minutes); a worker that failed after running for a minute or more starts the count over.",
    ),
  preemptions: nonNegativeInt()
    .optional()
    .describe('Workers lost to node reclaims, drains and disruption (never counted against backoffLimit).'),
  countedPods: z
    .array(z.string())
    .max(1000)
    .optional()
    .describe(
      'Workers that ended and are counted in restarts/preemptions but whose pods still hold our finalizer.',
    ),
  model: z
    .strictObject({
      uri: z.string().describe('pvc://<claim>/<path> of the exported model.'),
      step: nonNegativeInt().describe('The step the exported weights are from.'),
      accuracy: z.number().optional().describe('Its evaluation accuracy.'),
      time: z.iso.datetime().describe('When it was exported.'),
    })
    .optional()
    .describe('The exported model, once the job completed.'),
  startTime: z.iso.datetime().optional().describe('When the operator first saw the job.'),
  completionTime: z.iso.datetime().optional().describe('When it Succeeded or Failed.'),
  message: z.string().optional().describe('The latest noteworthy thing, for people.'),
});

// ------------------------------------------------------------------------------------------- document

export const ObjectMetaSchema = z.looseObject({
  name: z
    .string()
    .min(1)
    .max(MAX_JOB_NAME_LENGTH, `a TrainingJob name must be at most ${MAX_JOB_NAME_LENGTH} characters`)
    .regex(DNS_LABEL, "expected a lowercase DNS-1123 label (a-z, 0-9, '-'), e.g. fashion-mnist"),
  namespace: z.string().regex(DNS_LABEL, 'expected a namespace name').optional(),
});

export const TrainingJobSchema = z.strictObject({
  apiVersion: z.literal(API_GROUP_VERSION),
  kind: z.literal(KIND),
  metadata: ObjectMetaSchema,
  spec: TrainingJobSpecSchema,
  status: TrainingJobStatusSchema.optional(),
});

export type TrainingJob = z.output<typeof TrainingJobSchema>;
export type TrainingJobInput = z.input<typeof TrainingJobSchema>;
export type TrainingJobSpec = z.output<typeof TrainingJobSpecSchema>;
export type TrainingJobStatus = z.output<typeof TrainingJobStatusSchema>;
export type Condition = z.output<typeof ConditionSchema>;
export type ModelSpec = z.output<typeof ModelSpecSchema>;
export type DatasetSpec = z.output<typeof DatasetSpecSchema>;
export type IdxOptions = z.output<typeof IdxOptionsSchema>;
export type CsvOptions = z.output<typeof CsvOptionsSchema>;
export type JsonlOptions = z.output<typeof JsonlOptionsSchema>;
export type RecordsOptions = z.output<typeof RecordsOptionsSchema>;
export type ParquetOptions = z.output<typeof ParquetOptionsSchema>;
export type MongodbOptions = z.output<typeof MongodbOptionsSchema>;
export type DatasetCache = z.output<typeof DatasetCacheSchema>;

/** The format options of a dataset with their defaults, whether or not the manifest spelled them out. */
export function datasetOptions(dataset: DatasetSpec): {
  idx: IdxOptions;
  csv: CsvOptions;
  jsonl: JsonlOptions;
  records: RecordsOptions;
  parquet: ParquetOptions;
  mongodb: MongodbOptions;
} {
  return {
    idx: dataset.idx ?? IdxOptionsSchema.parse({}),
    csv: dataset.csv ?? CsvOptionsSchema.parse({}),
    jsonl: dataset.jsonl ?? JsonlOptionsSchema.parse({}),
    records: dataset.records ?? RecordsOptionsSchema.parse({}),
    parquet: dataset.parquet ?? ParquetOptionsSchema.parse({}),
    mongodb: dataset.mongodb ?? MongodbOptionsSchema.parse({}),
  };
}
export type OptimizerSpec = z.output<typeof OptimizerSpecSchema>;
export type BatchSpec = z.output<typeof BatchSpecSchema>;
export type AutoscalingStatus = NonNullable<TrainingJobStatus['autoscaling']>;
export type CheckpointSpec = z.output<typeof CheckpointSpecSchema>;
export type OutputSpec = z.output<typeof OutputSpecSchema>;
export type WorkerSpec = z.output<typeof WorkerSpecSchema>;
export type RunPolicy = z.output<typeof RunPolicySchema>;
export type RendezvousSpec = z.output<typeof RendezvousSpecSchema>;

/** The elastic range after defaulting: `maxReplicas` falls back to `replicas`. */
export function elasticRange(spec: Pick<TrainingJobSpec, 'replicas' | 'minReplicas' | 'maxReplicas'>): {
  min: number;
  max: number;
} {
  const max = spec.maxReplicas ?? Math.max(spec.replicas, spec.minReplicas);
  return { min: Math.min(spec.minReplicas, max), max };
}

/** desired = clamp(spec.replicas, minReplicas, maxReplicas). */
export function desiredReplicas(
  spec: Pick<TrainingJobSpec, 'replicas' | 'minReplicas' | 'maxReplicas'>,
): number {
  const { min, max } = elasticRange(spec);
  return Math.min(max, Math.max(min, spec.replicas));
}
