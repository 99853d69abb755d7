/**
 * Builds the TrainingJob CustomResourceDefinition from the zod schema. Pure and deterministic:
 * hack/gen-crd.ts writes its YAML to crds/, and a test fails when the committed file differs.
 */
import { stringify } from 'yaml';
import { z } from 'zod';
import {
  API_GROUP,
  API_VERSION,
  CATEGORIES,
  KIND,
  MAX_JOB_NAME_LENGTH,
  PLURAL,
  SHORT_NAMES,
  SINGULAR,
  TrainingJobSpecSchema,
  TrainingJobStatusSchema,
} from './training-job.ts';

type JsonSchema = { [key: string]: unknown };

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const KNOWN_FORMATS = new Set([
  'int32',
  'int64',
  'float',
  'double',
  'byte',
  'date',
  'date-time',
  'duration',
  'uuid',
  'hostname',
  'ipv4',
  'ipv6',
  'uri',
  'email',
  'password',
]);

function isObject(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Rewrites zod's OpenAPI 3.0 output into a structural schema the API server accepts: no
 * `additionalProperties: false`, open maps and free-form values as `x-kubernetes-preserve-unknown-fields`,
 * int-or-string in its one accepted shape, and no zod-internal bounds or patterns that add nothing.
 */
export function toStructural(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(toStructural);
  if (!isObject(node)) return node;
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$schema' || key === 'propertyNames') continue;
    if (key === 'default' || key === 'enum' || key === 'x-kubernetes-validations') {
      out[key] = value;
      continue;
    }
    out[key] = toStructural(value);
  }
  if (out['x-kubernetes-int-or-string'] === true) {
    const pattern = findPattern(node);
    const result: JsonSchema = {
      anyOf: [{ type: 'integer' }, { type: 'string' }],
      'x-kubernetes-int-or-string': true,
    };
    if (pattern !== undefined) result['pattern'] = pattern;
    // minimum constrains the integer form (pattern only the string form): both are needed.
    if (typeof out['minimum'] === 'number') result['minimum'] = out['minimum'];
    if (out['description'] !== undefined) result['description'] = out['description'];
    if (out['default'] !== undefined) result['default'] = out['default'];
    return result;
  }
  if (out['type'] === 'integer') {
    if (out['minimum'] === -MAX_SAFE) delete out['minimum'];
    if (out['maximum'] === MAX_SAFE) delete out['maximum'];
    out['format'] = 'int64';
  }
  if (out['format'] === 'date-time') delete out['pattern'];
  // zod names checks such as startsWith as formats; the API server only knows OpenAPI's formats.
  if (typeof out['format'] === 'string' && !KNOWN_FORMATS.has(out['format'])) delete out['format'];
  if ('additionalProperties' in node) {
    const extra = node['additionalProperties'];
    if (extra === false) {
      delete out['additionalProperties'];
    } else if (isObject(extra) && Object.keys(extra).length === 0) {
      delete out['additionalProperties'];
      if (isObject(out['properties']) && Object.keys(out['properties']).length === 0)
        delete out['properties'];
      out['x-kubernetes-preserve-unknown-fields'] = true;
    }
  }
  if (Object.keys(out).length === 0 || (Object.keys(out).length === 1 && 'description' in out)) {
    out['x-kubernetes-preserve-unknown-fields'] = true;
  }
  return out;
}

function findPattern(node: unknown): string | undefined {
  if (!isObject(node)) return undefined;
  if (typeof node['pattern'] === 'string') return node['pattern'];
  const anyOf = node['anyOf'];
  if (Array.isArray(anyOf)) {
    for (const branch of anyOf) {
      const found = findPattern(branch);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

function openApi(schema: z.ZodType): JsonSchema {
  const json = z.toJSONSchema(schema, {
    target: 'openapi-3.0',
    io: 'input',
    unrepresentable: 'throw',
    override: ({ zodSchema, jsonSchema }) => {
      // The API server validates a default (CEL included) before nested defaults apply, so `{}` must be
      // written out with its nested defaults: the value zod itself produces for a missing field.
      if (zodSchema._zod.def.type === 'prefault') jsonSchema.default = z.parse(zodSchema, undefined) as never;
    },
  });
  const structural = toStructural(json);
  if (!isObject(structural)) throw new Error('zod produced a non-object schema');
  return structural;
}

const DNS_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';

export function trainingJobOpenApiSchema(): JsonSchema {
  const status = openApi(TrainingJobStatusSchema);
  const conditions = (status['properties'] as JsonSchema)['conditions'] as JsonSchema;
  conditions['x-kubernetes-list-type'] = 'map';
  conditions['x-kubernetes-list-map-keys'] = ['type'];
  return {
    type: 'object',
    description:
      'A data-parallel TensorFlow.js training job that keeps running while its workers come and go.',
    required: ['spec'],
    properties: {
      apiVersion: {
        type: 'string',
        description: `The versioned schema of this object: ${API_GROUP}/${API_VERSION}.`,
      },
      kind: { type: 'string', description: `${KIND}.` },
      // The API server refuses anything but name and generateName here, a description included.
      metadata: { type: 'object' },
      spec: {
        description: 'What to train, on how many workers, and how (`kubectl explain trainingjob.spec`).',
        ...openApi(TrainingJobSpecSchema),
      },
      status: { description: 'What the operator observed; written by it alone.', ...status },
    },
    'x-kubernetes-validations': [
      {
        rule: `self.metadata.name.size() <= ${MAX_JOB_NAME_LENGTH} && self.metadata.name.matches('${DNS_LABEL_PATTERN}')`,
        message: `metadata.name must be a DNS-1123 label of at most ${MAX_JOB_NAME_LENGTH} characters, so worker pod names stay valid hostnames`,
      },
    ],
  };
}

export function trainingJobCrd(): JsonSchema {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${PLURAL}.${API_GROUP}`,
      annotations: {
        'tensile.dev/generated-by': 'hack/gen-crd.ts from operator/api/training-job.ts; do not edit',
      },
    },
    spec: {
      group: API_GROUP,
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: PLURAL,
        singular: SINGULAR,
        shortNames: SHORT_NAMES,
        categories: CATEGORIES,
      },
      scope: 'Namespaced',
      versions: [
        {
          name: API_VERSION,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: trainingJobOpenApiSchema() },
          subresources: {
            status: {},
            scale: {
              specReplicasPath: '.spec.replicas',
              statusReplicasPath: '.status.replicas',
              labelSelectorPath: '.status.selector',
            },
          },
          additionalPrinterColumns: [
            { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
            {
              name: 'Ready',
              type: 'integer',
              jsonPath: '.status.readyReplicas',
              description: 'Workers ready',
            },
            { name: 'Desired', type: 'integer', jsonPath: '.spec.replicas', description: 'Workers wanted' },
            {
              name: 'World',
              type: 'integer',
              jsonPath: '.status.worldSize',
              priority: 1,
              description: 'Workers training together',
            },
            { name: 'Step', type: 'integer', jsonPath: '.status.step' },
            {
              name: 'Loss',
              type: 'number',
              jsonPath: '.status.loss',
              description: 'Training loss of the last step (4 significant digits)',
            },
            {
              name: 'Accuracy',
              type: 'number',
              jsonPath: '.status.accuracy',
              description: 'Accuracy of the last evaluation',
            },
            { name: 'Preemptions', type: 'integer', jsonPath: '.status.preemptions', priority: 1 },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
        },
      ],
    },
  };
}

export function trainingJobCrdYaml(): string {
  return `# Generated by hack/gen-crd.ts from operator/api/training-job.ts. Do not edit; run \`npm run gen\`.\n${stringify(trainingJobCrd(), { lineWidth: 0 })}`;
}
