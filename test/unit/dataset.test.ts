/**
 * Dataset readers (idx, csv, jsonl, records), their errors, the splits and the fitted preprocessing,
 * on small files written here.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type DatasetSpec, DatasetSpecSchema } from '../../operator/api/training-job.ts';
import { holdoutSplit, loadDataset } from '../../worker/data/dataset.ts';
import { readIdx } from '../../worker/data/idx.ts';
import { fitNormalization, fitPca, normalizeInPlace } from '../../worker/data/preprocess.ts';
import { globToRegExp } from '../../worker/data/records.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';
import { type InMemoryStore, SampleStoreBuilder, scanStore } from '../../worker/data/store.ts';
import { DatasetError } from '../../worker/errors.ts';

await tf.setBackend('cpu');
const dir = mkdtempSync(join(tmpdir(), 'tensile-dataset-'));
const quiet = () => undefined;

function idx(type: number, dims: number[], values: ArrayLike<number>): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = type;
  header[3] = dims.length;
  dims.forEach((d, i) => {
    header.writeUInt32BE(d, 4 + 4 * i);
  });
  return Buffer.concat([header, Buffer.from(Uint8Array.from(values))]);
}

/** An idx dataset of n train and m test samples of 4×4 bytes; sample i is filled with i % 256, label i % 3. */
function writeIdxDataset(name: string, n: number, m: number, gzip: boolean): string {
  const path = join(dir, name);
  mkdirSync(path, { recursive: true });
  const write = (file: string, bytes: Buffer) =>
    writeFileSync(join(path, file), gzip ? gzipSync(bytes) : bytes);
  const images = (count: number) => Array.from({ length: count * 16 }, (_, k) => Math.floor(k / 16) % 256);
  const labels = (count: number) => Array.from({ length: count }, (_, i) => i % 3);
  write('train-images-idx3-ubyte.gz', idx(0x08, [n, 4, 4], images(n)));
  write('train-labels-idx1-ubyte.gz', idx(0x08, [n], labels(n)));
  write('t10k-images-idx3-ubyte.gz', idx(0x08, [m, 4, 4], images(m)));
  write('t10k-labels-idx1-ubyte.gz', idx(0x08, [m], labels(m)));
  return path;
}

const spec = (fields: object): DatasetSpec => DatasetSpecSchema.parse(fields);

async function datasetError(promise: Promise<unknown>): Promise<DatasetError> {
  try {
    await promise;
  } catch (error) {
    assert.instance(error, DatasetError);
    return error as DatasetError;
  }
  throw new Error('expected a DatasetError');
}

function rows(store: { read: InMemoryStore['read']; featureSize: number }, indices: number[]) {
  const features = new Float32Array(indices.length * store.featureSize);
  const labels = new Int32Array(indices.length);
  store.read(indices, features, labels);
  return { features: [...features], labels: [...labels] };
}

test('idx: gzip and plain files read the same', async () => {
  const gz = writeIdxDataset('gz', 5, 2, true);
  const plain = writeIdxDataset('plain', 5, 2, false);
  const a = await readIdx(join(gz, 'train-images-idx3-ubyte.gz'));
  const b = await readIdx(join(plain, 'train-images-idx3-ubyte.gz'));
  assert.equal(a.dims, [5, 4, 4]);
  assert.equal([...a.data], [...b.data]);
  assert.instance(a.data, Uint8Array);
});

test('idx: float32 values are read from big-endian', async () => {
  const header = Buffer.from([0, 0, 0x0d, 1, 0, 0, 0, 2]);
  const values = Buffer.alloc(8);
  values.writeFloatBE(1.5, 0);
  values.writeFloatBE(-2.25, 4);
  const file = join(dir, 'floats.idx');
  writeFileSync(file, Buffer.concat([header, values]));
  const read = await readIdx(file);
  assert.equal([...read.data], [1.5, -2.25]);
});

test('idx: loadDataset uses the test files, counts the classes, keeps bytes', async () => {
  const path = writeIdxDataset('full', 40, 10, true);
  const dataset = await loadDataset(spec({ format: 'idx', path }), quiet);
  assert.is(dataset.train.size, 40);
  assert.is(dataset.eval?.size, 10);
  assert.is(dataset.classes, 3);
  assert.equal(dataset.featureShape, [4, 4]);
  assert.is(dataset.train.dtype, 'uint8');
  assert.equal(rows(dataset.train, [7]).labels, [1]);
  assert.equal(rows(dataset.train, [7]).features, new Array(16).fill(7));
  // scale: bytes are divided by 255 without a pass over the data
  const sample = Float32Array.from(new Array(16).fill(255));
  normalizeInPlace(dataset.normalization, sample, 1);
  assert.ok(sample.every((v) => Math.abs(v - 1) < 1e-6));
});

test('idx: maxTrainSamples, eval.maxSamples and holdout', async () => {
  const path = writeIdxDataset('split', 50, 10, false);
  const limited = await loadDataset(
    spec({ format: 'idx', path, maxTrainSamples: 20, eval: { maxSamples: 4 } }),
    quiet,
  );
  assert.is(limited.train.size, 20);
  assert.is(limited.eval?.size, 4);
  const held = await loadDataset(
    spec({ format: 'idx', path, eval: { source: 'holdout', fraction: 0.2 } }),
    quiet,
  );
  assert.is(held.train.size, 40);
  assert.is(held.eval?.size, 10);
});

const idxBreakages: [string, (path: string) => void, RegExp][] = [
  [
    'a truncated gzip stream',
    (path) => {
      const file = join(path, 'train-images-idx3-ubyte.gz');
      const bytes = readFileSync(file);
      writeFileSync(file, bytes.subarray(0, bytes.length - 30));
    },
    /train-images-idx3-ubyte\.gz: truncated/,
  ],
  [
    'missing data after the header',
    (path) =>
      writeFileSync(join(path, 'train-images-idx3-ubyte.gz'), idx(0x08, [10, 4, 4], new Array(100).fill(1))),
    /train-images-idx3-ubyte\.gz: truncated: expected 160 bytes of data for dimensions \[10, 4, 4\], got 100/,
  ],
  [
    'a wrong magic number',
    (path) =>
      writeFileSync(join(path, 'train-images-idx3-ubyte.gz'), Buffer.from('PK\u0003\u0004 not idx at all')),
    /train-images-idx3-ubyte\.gz: not an IDX file: wrong magic/,
  ],
  [
    'more data than the header announces',
    (path) =>
      writeFileSync(join(path, 'train-images-idx3-ubyte.gz'), idx(0x08, [2, 4, 4], new Array(40).fill(1))),
    /more data than the header's dimensions \[2, 4, 4\]/,
  ],
  [
    'labels that do not match the images',
    (path) => writeFileSync(join(path, 'train-labels-idx1-ubyte.gz'), idx(0x08, [9], new Array(9).fill(1))),
    /train-labels-idx1-ubyte\.gz: holds 9 labels but .*train-images-idx3-ubyte\.gz holds 10 samples/,
  ],
  [
    'a missing file',
    (path) => writeFileSync(join(path, 'unrelated'), ''),
    /t10k-images-idx3-ubyte\.gz: no such file/,
  ],
];
idxBreakages.forEach(([name, breakIt, message], i) => {
  test(`idx: ${name} is a DatasetError naming the file`, async () => {
    const path = writeIdxDataset(`broken-${i}`, 10, 3, true);
    if (name === 'a missing file') writeFileSync(join(path, 't10k-images-idx3-ubyte.gz'), '');
    breakIt(path);
    const missing =
      name === 'a missing file' ? { idx: { testImages: 'nope/t10k-images-idx3-ubyte.gz' } } : {};
    const error = await datasetError(loadDataset(spec({ format: 'idx', path, ...missing }), quiet));
    assert.match(error.message, message);
  });
});

test('idx: labels above dataset.classes are refused', async () => {
  const path = writeIdxDataset('classes', 10, 3, false);
  const error = await datasetError(loadDataset(spec({ format: 'idx', path, classes: 2 }), quiet));
  assert.match(error.message, /labels go up to 2, but dataset\.classes is 2/);
});

function csv(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

test('csv: a label column anywhere, header names, holdout split', async () => {
  const lines = ['a,label,b'];
  for (let i = 0; i < 30; i++) lines.push(`${i},${i % 2},${i * 2}`);
  const path = csv('ok.csv', `${lines.join('\n')}\n`);
  const dataset = await loadDataset(
    spec({ format: 'csv', path, classes: 2, eval: { fraction: 0.1 }, normalize: 'none' }),
    quiet,
  );
  assert.is(dataset.train.size + (dataset.eval?.size ?? 0), 30);
  assert.is(dataset.eval?.size, 3);
  assert.equal(dataset.featureShape, [2]);
  const all = [...Array(dataset.train.size).keys()].map((i) => rows(dataset.train, [i]));
  for (const r of all) assert.is(r.features[1], (r.features[0] as number) * 2);
  for (const r of all) assert.is(r.labels[0], (r.features[0] as number) % 2);
});

test('csv: gzip, no header with a numbered label column, float values', async () => {
  const file = join(dir, 'floats.csv.gz');
  writeFileSync(file, gzipSync('0.5;1;-2\n1.5;0;3\n2.5;1;4\n'));
  const dataset = await loadDataset(
    spec({
      format: 'csv',
      path: file,
      classes: 2,
      csv: { header: false, labelColumn: '1', delimiter: ';' },
      normalize: 'none',
      eval: { fraction: 0.34 },
    }),
    quiet,
  );
  assert.is(dataset.train.dtype, 'float32');
  assert.is(dataset.train.size, 2);
});

const csvBreakages: [string, string, object, RegExp][] = [
  ['a short row', 'label,x,y\n1,2,3\n0,5\n', {}, /short\.csv:3: expected 3 columns, got 2/],
  [
    'a word where a number belongs',
    'label,x,y\n1,2,3\n0,five,6\n',
    {},
    /word\.csv:3: column x: "five" is not a number/,
  ],
  ['an empty value', 'label,x,y\n1,,3\n', {}, /empty\.csv:2: column x: "" is not a number/],
  [
    'a label out of range',
    'label,x\n1,2\n7,3\n',
    {},
    /range\.csv:3: the label 7 is not below dataset\.classes \(2\)/,
  ],
  ['a fractional label', 'label,x\n1.5,2\n', {}, /fraction\.csv:2: the label "1\.5" is not a class number/],
  ['no label column', 'y,x\n1,2\n', {}, /nolabel\.csv: no column "label" in the header \(y, x\)/],
  [
    'a named label column without header',
    '1,2\n',
    { csv: { header: false } },
    /header is false, so dataset\.csv\.labelColumn must be a 0-based column number/,
  ],
];
for (const [name, text, extra, message] of csvBreakages) {
  test(`csv: ${name} is a DatasetError with file and line`, async () => {
    const file = {
      'a short row': 'short',
      'a word where a number belongs': 'word',
      'an empty value': 'empty',
      'a label out of range': 'range',
      'a fractional label': 'fraction',
      'no label column': 'nolabel',
      'a named label column without header': 'noheader',
    }[name];
    const path = csv(`${file}.csv`, text);
    const error = await datasetError(loadDataset(spec({ format: 'csv', path, classes: 2, ...extra }), quiet));
    assert.match(error.message, message);
  });
}

test('csv: a UTF-8 byte order mark and CRLF line ends do not reach the first column name', async () => {
  const path = csv('bom.csv', '\uFEFFlabel,x,y\r\n1,2,3\r\n0,4,5\r\n1,6,7\r\n');
  // With the mark kept, the first column would be "\uFEFFlabel" and there would be no label column.
  const dataset = await loadDataset(spec({ format: 'csv', path, classes: 2, normalize: 'none' }), quiet);
  assert.is(dataset.train.size + (dataset.eval?.size ?? 0), 3);
  const all = [...Array(dataset.train.size).keys()].map((i) => rows(dataset.train, [i]));
  for (const r of all) assert.ok([2, 4, 6].includes(r.features[0] as number), String(r.features[0]));
});

test('csv: quoted fields may hold newlines, delimiters and quotes; lines count as in the file', async () => {
  const text = ['label,"x, the\nfirst","y ""2"""', '1,"2",3', '0,"4",5', '1,6,"7"', '0,8,x'].join('\n');
  const path = csv('quoted.csv', `${text}\n`);
  const error = await datasetError(loadDataset(spec({ format: 'csv', path, classes: 2 }), quiet));
  // The header spans lines 1-2, so the bad row is on line 6.
  assert.match(error.message, /quoted\.csv:6: column y "2": "x" is not a number/);
  const good = csv('quoted-ok.csv', `${text.split('\n').slice(0, -1).join('\n')}\n`);
  const dataset = await loadDataset(
    spec({ format: 'csv', path: good, classes: 2, normalize: 'none' }),
    quiet,
  );
  assert.is(dataset.train.size + (dataset.eval?.size ?? 0), 3);
  assert.equal(dataset.featureShape, [2]);
});

test('csv: an unclosed quote is a DatasetError naming the file', async () => {
  const path = csv('unclosed.csv', 'label,x\n1,"2\n0,3\n');
  const error = await datasetError(loadDataset(spec({ format: 'csv', path, classes: 2 }), quiet));
  assert.match(error.message, /unclosed\.csv(:\d+)?: .*quote/i);
});

test('jsonl: nested features give the shape; bad lines name the line', async () => {
  const lines = Array.from({ length: 10 }, (_, i) =>
    JSON.stringify({
      features: [
        [i, 1],
        [2, 3],
      ],
      label: i % 2,
    }),
  );
  const path = csv('ok.jsonl', `${lines.join('\n')}\n`);
  const dataset = await loadDataset(spec({ format: 'jsonl', path, classes: 2, normalize: 'none' }), quiet);
  assert.equal(dataset.featureShape, [2, 2]);
  const broken: [string, RegExp][] = [
    [`${lines[0]}\n{"features": [[1, 2], [3]], "label": 0}\n`, /:2: field "features" is a ragged array/],
    [`${lines[0]}\n{"features": [1, 2, 3, 4], "label": 0}\n`, /:2: field "features" has 4 values|shape/],
    [`${lines[0]}\n{"features": [[1, 2], [3, 4]]}\n`, /:2: no field "label"/],
    [`${lines[0]}\nnot json\n`, /:2: not JSON/],
  ];
  for (const [text, message] of broken) {
    const file = csv('broken.jsonl', text);
    const error = await datasetError(loadDataset(spec({ format: 'jsonl', path: file, classes: 2 }), quiet));
    assert.match(error.message, message);
  }
});

function writeShards(name: string, shards: number[][][], dtype: 'uint8' | 'float32'): string {
  const path = join(dir, name);
  mkdirSync(path, { recursive: true });
  shards.forEach((records, s) => {
    const parts = records.map(([label, ...values]) => {
      const body =
        dtype === 'uint8'
          ? Buffer.from(values as number[])
          : Buffer.from(Float32Array.from(values as number[]).buffer);
      return Buffer.concat([Buffer.from([label as number]), body]);
    });
    writeFileSync(join(path, `part-${s}.bin`), Buffer.concat(parts));
  });
  writeFileSync(join(path, 'README.txt'), 'not a shard');
  return path;
}

test('records: shards in name order, read per batch, labels in memory', async () => {
  const path = writeShards(
    'records',
    [
      [
        [0, 1, 2],
        [1, 3, 4],
      ],
      [[2, 5, 6]],
    ],
    'float32',
  );
  const dataset = await loadDataset(
    spec({
      format: 'records',
      path,
      classes: 3,
      featureShape: [2],
      records: { dtype: 'float32' },
      normalize: 'none',
      eval: { fraction: 0.34 },
    }),
    quiet,
  );
  assert.is(dataset.train.size + (dataset.eval?.size ?? 0), 3);
  assert.is(dataset.train.residentBytes < 64, true, 'features stay on disk');
  const seen = [...Array(dataset.train.size).keys()].map((i) => rows(dataset.train, [i]));
  for (const r of seen) assert.is(r.features[0], 2 * (r.labels[0] as number) + 1);
});

test('records: a shard of the wrong size and a label out of range are DatasetErrors', async () => {
  const path = writeShards(
    'records-bad',
    [
      [
        [0, 1, 2],
        [1, 3, 4],
      ],
    ],
    'uint8',
  );
  writeFileSync(join(path, 'part-9.bin'), Buffer.from([0, 1, 2, 1]));
  let error = await datasetError(
    loadDataset(spec({ format: 'records', path, classes: 3, featureShape: [2] }), quiet),
  );
  assert.match(
    error.message,
    /part-9\.bin: size 4 is not a multiple of the record size 3 \(1 label byte \+ 2 uint8 values/,
  );
  const labels = writeShards(
    'records-label',
    [
      [
        [0, 1, 2],
        [9, 3, 4],
      ],
    ],
    'uint8',
  );
  error = await datasetError(
    loadDataset(spec({ format: 'records', path: labels, classes: 3, featureShape: [2] }), quiet),
  );
  assert.match(error.message, /part-0\.bin: record 1: label 9 is not below dataset\.classes \(3\)/);
  error = await datasetError(
    loadDataset(
      spec({
        format: 'records',
        path: labels,
        classes: 3,
        featureShape: [2],
        records: { shardPattern: '*.rec' },
      }),
      quiet,
    ),
  );
  assert.match(error.message, /no shard matches dataset\.records\.shardPattern "\*\.rec"/);
});

test('globToRegExp matches whole names with * and ?', () => {
  assert.ok(globToRegExp('*.bin').test('part-1.bin'));
  assert.not.ok(globToRegExp('*.bin').test('part-1.bin.tmp'));
  assert.ok(globToRegExp('part-?.bin').test('part-7.bin'));
  assert.not.ok(globToRegExp('part-?.bin').test('part-17.bin'));
});

function floatStore(values: number[][]): InMemoryStore {
  const builder = new SampleStoreBuilder(values[0]?.length ?? 0, 'float32');
  for (const v of values) builder.add(v, 0);
  return builder.finish();
}

test('the store keeps bytes until a value needs float32, then upgrades', () => {
  const builder = new SampleStoreBuilder(2);
  builder.add([1, 2], 0);
  const bytes = builder.finish();
  assert.is(bytes.dtype, 'uint8');
  const upgraded = new SampleStoreBuilder(2);
  upgraded.add([1, 2], 0);
  upgraded.add([0.5, 300], 1);
  const store = upgraded.finish();
  assert.is(store.dtype, 'float32');
  assert.equal(rows(store, [0, 1]).features, [1, 2, 0.5, 300]);
});

test('normalisation: scale to [0, 1] and standardize from the training data', () => {
  const store = floatStore([
    [0, 10],
    [2, 30],
    [4, 20],
  ]);
  const scaled = fitNormalization(store, 'scale');
  const x = Float32Array.from([2, 30]);
  normalizeInPlace(scaled, x, 1);
  assert.equal([...x], [0.5, 1]);
  const standard = fitNormalization(store, 'standardize');
  const all = new Float32Array(6);
  scanStore(store, 2, (features, _labels, count, first) =>
    all.set(features.subarray(0, count * 2), first * 2),
  );
  normalizeInPlace(standard, all, 3);
  for (const j of [0, 1]) {
    const column = [all[j], all[2 + j], all[4 + j]] as number[];
    const mean = column.reduce((a, b) => a + b, 0) / 3;
    const variance = column.reduce((a, b) => a + (b - mean) ** 2, 0) / 3;
    assert.ok(Math.abs(mean) < 1e-6 && Math.abs(variance - 1) < 1e-5, `column ${j}: ${column}`);
  }
});

test('PCA finds the directions of largest variance, deterministically', () => {
  const next = uint32Stream(3);
  const u = () => next() / 2 ** 32 - 0.5;
  // Variance mostly along (1, 1, 0, 0, 0)/√2, then along e3, then noise.
  const samples = Array.from({ length: 2000 }, () => {
    const a = 10 * u();
    const b = 3 * u();
    return [a + 0.01 * u(), a + 0.01 * u(), b, 0.01 * u(), 0.01 * u()];
  });
  const store = floatStore(samples);
  const none = fitNormalization(store, 'none');
  const pca = fitPca(store, none, 2, 42);
  const first = [0, 1, 2, 3, 4].map((i) => pca.components[i * 2] as number);
  const second = [0, 1, 2, 3, 4].map((i) => pca.components[i * 2 + 1] as number);
  assert.ok(
    Math.abs(Math.abs(first[0] as number) - Math.SQRT1_2) < 1e-3 &&
      Math.abs(Math.abs(first[1] as number) - Math.SQRT1_2) < 1e-3,
    `first ${first}`,
  );
  assert.ok(Math.abs(Math.abs(second[2] as number) - 1) < 1e-3, `second ${second}`);
  assert.ok(pca.explained > 0.999);
  assert.equal(fitPca(store, none, 2, 42).components, pca.components);
});

test('holdout split: disjoint, complete, seeded', () => {
  const split = holdoutSplit(100, 0.25, 7);
  assert.is(split.eval.length, 25);
  assert.is(new Set([...split.train, ...split.eval]).size, 100);
  assert.equal(holdoutSplit(100, 0.25, 7), split);
  assert.not.equal(holdoutSplit(100, 0.25, 8).eval, split.eval);
  assert.ok(
    [...split.train].every((v, i, a) => i === 0 || v > (a[i - 1] as number)),
    'training keeps file order',
  );
});

test.run();
