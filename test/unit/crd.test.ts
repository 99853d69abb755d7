import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { trainingJobCrd, trainingJobCrdYaml } from '../../operator/api/crd.ts';
import { withReference } from '../../operator/api/reference.ts';

const committedPath = new URL('../../crds/tensile.dev_trainingjobs.yaml', import.meta.url);

test('the committed CRD is what the schema generates (run `npm run gen` when this fails)', () => {
  const committed = readFileSync(committedPath, 'utf8');
  assert.ok(
    committed === trainingJobCrdYaml(),
    'crds/tensile.dev_trainingjobs.yaml is stale: run `npm run gen`',
  );
});

test('the README field reference is what the schema generates (run `npm run gen` when this fails)', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  assert.ok(
    readme === withReference(readme),
    'the TrainingJob reference in README.md is stale: run `npm run gen`',
  );
});

test('the Helm chart carries the same CRD (run `npm run gen` when this fails)', () => {
  const chart = readFileSync(
    new URL('../../charts/tensile/crds/tensile.dev_trainingjobs.yaml', import.meta.url),
    'utf8',
  );
  assert.ok(
    chart === trainingJobCrdYaml(),
    'charts/tensile/crds/tensile.dev_trainingjobs.yaml is stale: run `npm run gen`',
  );
});

test('generation is deterministic', () => {
  assert.is(trainingJobCrdYaml(), trainingJobCrdYaml());
});

type Node = Record<string, unknown>;
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);

function walk(node: Node, path: string, visit: (node: Node, path: string) => void): void {
  visit(node, path);
  const props = node['properties'];
  if (isNode(props))
    for (const [k, v] of Object.entries(props)) if (isNode(v)) walk(v, `${path}.${k}`, visit);
  const items = node['items'];
  if (isNode(items)) walk(items, `${path}[]`, visit);
  const extra = node['additionalProperties'];
  if (isNode(extra)) walk(extra, `${path}{}`, visit);
}

function openApiSchema(): Node {
  const crd = parse(readFileSync(committedPath, 'utf8')) as Node;
  const version = ((crd['spec'] as Node)['versions'] as Node[])[0] as Node;
  return (version['schema'] as Node)['openAPIV3Schema'] as Node;
}

test('the schema is structural: every node has a type or is explicitly free-form', () => {
  const problems: string[] = [];
  walk(openApiSchema(), '', (node, path) => {
    const typed = typeof node['type'] === 'string';
    const free = node['x-kubernetes-preserve-unknown-fields'] === true;
    const intOrString = node['x-kubernetes-int-or-string'] === true;
    if (!typed && !free && !intOrString) problems.push(`${path}: no type`);
    for (const banned of ['$ref', 'definitions', 'patternProperties', 'const', '$schema', 'nullable']) {
      if (banned in node) problems.push(`${path}: ${banned}`);
    }
    if (node['additionalProperties'] === false) problems.push(`${path}: additionalProperties false`);
    if (isNode(node['properties']) && 'additionalProperties' in node)
      problems.push(`${path}: properties and additionalProperties`);
    if (
      intOrString &&
      JSON.stringify(node['anyOf']) !== JSON.stringify([{ type: 'integer' }, { type: 'string' }])
    ) {
      problems.push(`${path}: int-or-string must be anyOf [integer, string]`);
    }
    if (node['type'] === null) problems.push(`${path}: type null`);
  });
  assert.equal(problems, []);
});

test('metadata carries no description: the API server refuses the CRD otherwise', () => {
  const metadata = (openApiSchema()['properties'] as Node)['metadata'];
  assert.equal(metadata, { type: 'object' });
});

test('every field has a description, so `kubectl explain` says what it is', () => {
  const missing: string[] = [];
  const visit = (node: Node, path: string) => {
    // metadata is the API server's: a CRD may say nothing about it, not even a description.
    if (path !== '' && path !== '.metadata' && typeof node['description'] !== 'string') missing.push(path);
    const properties = node['properties'];
    if (isNode(properties))
      for (const [name, child] of Object.entries(properties)) visit(child as Node, `${path}.${name}`);
    // Array items are described by their field (kubectl explain shows the field, then the item's fields).
    const items = node['items'];
    if (isNode(items) && isNode(items['properties']))
      for (const [name, child] of Object.entries(items['properties']))
        visit(child as Node, `${path}[].${name}`);
  };
  visit(openApiSchema(), '');
  assert.equal(missing, []);
});

test('cross-field and immutability rules are in the CRD as CEL', () => {
  const rules: string[] = [];
  walk(openApiSchema(), '', (node) => {
    const v = node['x-kubernetes-validations'];
    if (Array.isArray(v)) for (const r of v as Node[]) rules.push(String(r['rule']));
  });
  for (const expected of [
    'self.minReplicas <= self.replicas',
    '!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas',
    '!has(self.maxReplicas) || self.replicas <= self.maxReplicas',
    'has(self.intervalSteps) || has(self.intervalSeconds)',
    'has(self.epochs) || has(self.steps)',
  ]) {
    assert.ok(rules.includes(expected), `missing CEL rule ${expected}`);
  }
  assert.is(
    rules.filter((r) => r === 'self == oldSelf').length,
    3,
    'model, dataset and optimizer are immutable',
  );
});

test('subresources, printer columns, names and category', () => {
  const crd = trainingJobCrd() as Node;
  const spec = crd['spec'] as Node;
  const names = spec['names'] as Node;
  assert.equal(names['shortNames'], ['tj']);
  assert.equal(names['categories'], ['tensile']);
  const version = (spec['versions'] as Node[])[0] as Node;
  assert.equal(version['subresources'], {
    status: {},
    scale: {
      specReplicasPath: '.spec.replicas',
      statusReplicasPath: '.status.replicas',
      labelSelectorPath: '.status.selector',
    },
  });
  const columns = (version['additionalPrinterColumns'] as Node[]).map((c) => c['name']);
  for (const c of ['Phase', 'Ready', 'Desired', 'Step', 'Loss', 'Accuracy', 'Age'])
    assert.ok(columns.includes(c), `column ${c}`);
});

test.run();
