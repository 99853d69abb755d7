import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'operator/bin/tensile.mjs');
const dir = mkdtempSync(join(tmpdir(), 'tensile-validate-'));

function tensile(...args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: 'utf8' });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const examples = [
  'examples/fashion-mnist-mlp.yaml',
  'examples/fashion-mnist-cnn.yaml',
  'examples/minimal.yaml',
];

test('every example validates (exit 0)', () => {
  const r = tensile('validate', ...examples);
  assert.is(r.code, 0, r.out);
  for (const name of ['fashion-mnist-mlp', 'fashion-mnist-cnn', 'minimal'])
    assert.match(r.out, `${name}: valid`);
});

// One broken copy per example, each naming a different field.
const breakages: [string, (text: string) => string, RegExp][] = [
  [
    'examples/fashion-mnist-mlp.yaml',
    (t) => t.replace('minReplicas: 1', 'minReplicas: 5'),
    /:\d+: document 1: spec\.minReplicas: minReplicas must not exceed replicas/,
  ],
  [
    'examples/fashion-mnist-cnn.yaml',
    (t) => t.replace('    gpus: 1', '    gpus: one'),
    /:\d+: document 1: spec\.worker\.gpus: /,
  ],
  [
    'examples/minimal.yaml',
    (t) => t.replace('learningRate: 0.001', 'learningRate: 0'),
    /:\d+: document 1: spec\.optimizer\.learningRate: must be > 0, got 0/,
  ],
];

for (const [example, breakIt, expected] of breakages) {
  test(`a broken copy of ${example} exits non-zero and names the field`, () => {
    const original = readFileSync(join(root, example), 'utf8');
    const broken = breakIt(original);
    assert.is.not(broken, original, 'the breakage must change the file');
    const r = tensile('validate', write(example.replace('examples/', 'broken-'), broken));
    assert.is(r.code, 1, r.out);
    assert.match(r.out, expected);
    assert.not.match(r.out, /\n\s+at /, 'no stack trace');
  });
}

test('an empty file, unparsable YAML and a file without a TrainingJob each get one clear line', () => {
  const empty = write('empty.yaml', '\n');
  const garbage = write('garbage.yaml', 'spec:\n  replicas: [1, 2\n');
  const other = write('other.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n');
  const r = tensile('validate', empty, garbage, other);
  assert.is(r.code, 1);
  assert.match(r.out, `${empty}: the file is empty`);
  assert.match(r.out, new RegExp(`${garbage}:\\d+: document 1: not valid YAML`));
  assert.match(
    r.out,
    `${other}: document 1: note: v1 ConfigMap is not a tensile.dev/v1alpha1 TrainingJob; skipped`,
  );
  assert.match(r.out, `${other}: no TrainingJob in this file`);
  assert.not.match(r.out, /\n\s+at /, 'no stack trace');
});

test('multi-document files: a ConfigMap beside a valid TrainingJob is a note, not a failure', () => {
  const text = `${readFileSync(join(root, 'examples/minimal.yaml'), 'utf8')}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: topology}\n`;
  const r = tensile('validate', write('multi.yaml', text));
  assert.is(r.code, 0, r.out);
  assert.match(r.out, 'document 2: note:');
});

test('problems in the second document carry its index', () => {
  const good = readFileSync(join(root, 'examples/minimal.yaml'), 'utf8');
  const r = tensile(
    'validate',
    write('two.yaml', `${good}---\n${good.replace('name: minimal', 'name: Minimal')}`),
  );
  assert.is(r.code, 1);
  assert.match(r.out, /document 2: metadata\.name: expected a lowercase DNS-1123 label/);
});

test('a missing file and no arguments are reported without a stack trace', () => {
  const missing = tensile('validate', join(dir, 'nope.yaml'));
  assert.is(missing.code, 1);
  assert.match(missing.out, 'nope.yaml: cannot read: no such file');
  const none = tensile('validate');
  assert.is(none.code, 2);
  assert.match(none.out, 'usage: tensile validate FILE');
});

test.run();
