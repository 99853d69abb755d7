/**
 * The user's pod template (spec.worker.podTemplate) merged into the pod Tensile builds, the way
 * Kubeflow replica specs take a full PodTemplateSpec. Pure. What Tensile must set stays Tensile's:
 * a template that overrides it, or sets a field that spec.worker also sets, is a list of problems
 * naming the field and the fix (the job fails with InvalidSpec; nothing is half-applied).
 */
import type { V1Container, V1Pod, V1PodSpec } from '@kubernetes/client-node';
import { TensileError } from '../api/errors.ts';
import type { WorkerSpec } from '../api/training-job.ts';

export type PodTemplate = NonNullable<WorkerSpec['podTemplate']>;

export class PodTemplateError extends TensileError {
  readonly classification = 'terminal' as const;
  constructor(readonly problems: readonly string[]) {
    super(problems.join('; '));
    this.name = 'PodTemplateError';
  }
}

const AT = 'spec.worker.podTemplate';
const WORKER = 'worker';
const RESERVED_PREFIX = 'tensile.dev/';

/** PodSpec fields Tensile decides alone. */
const OWNED: Readonly<Record<string, string>> = {
  nodeName: 'the scheduler places workers (use nodeSelector or affinity)',
  hostname: 'each worker is named after its pod',
  subdomain: 'each worker is named after its pod',
  terminationGracePeriodSeconds:
    "set spec.worker.terminationGracePeriodSeconds instead: the worker's time to checkpoint after SIGTERM",
};

/** PodSpec fields that spec.worker also has: one place only. */
const WORKER_FIELDS = [
  'nodeSelector',
  'tolerations',
  'affinity',
  'priorityClassName',
  'serviceAccountName',
] as const;

/** Worker-container fields that spec.worker also has. */
const CONTAINER_WORKER_FIELDS = ['image', 'imagePullPolicy', 'command', 'args'] as const;

type Named = { name?: unknown };
const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function list(problems: string[], spec: Record<string, unknown>, key: string): Record<string, unknown>[] {
  const value = spec[key];
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every(isRecord)) {
    problems.push(`${AT}.spec.${key}: expected a list of objects`);
    return [];
  }
  return value;
}

/** Appends named entries, refusing a name Tensile already uses. */
function appendNamed<T extends Named>(
  problems: string[],
  field: string,
  base: readonly T[] | undefined,
  added: readonly Record<string, unknown>[],
  why: string,
): T[] {
  const out = [...(base ?? [])];
  const names = new Set(out.map((x) => x.name));
  for (const [i, entry] of added.entries()) {
    if (names.has(entry['name'])) {
      problems.push(`${AT}.${field}[${i}]: name ${String(entry['name'])} is ${why}; choose another name`);
      continue;
    }
    names.add(entry['name']);
    out.push(structuredClone(entry) as T);
  }
  return out;
}

function mergeLabels(
  problems: string[],
  field: string,
  base: Record<string, string> | undefined,
  added: Record<string, string> | undefined,
): Record<string, string> | undefined {
  if (added === undefined) return base;
  for (const key of Object.keys(added))
    if (key.startsWith(RESERVED_PREFIX))
      problems.push(`${AT}.${field}.${key}: ${RESERVED_PREFIX} keys are Tensile's; use another prefix`);
  return { ...added, ...base };
}

function mergeWorkerContainer(
  problems: string[],
  base: V1Container,
  template: Record<string, unknown>,
  own: WorkerSpec,
): V1Container {
  const at = `${AT}.spec.containers[${WORKER}]`;
  const out: Record<string, unknown> = { ...structuredClone(template), ...base };
  for (const key of CONTAINER_WORKER_FIELDS) {
    if (template[key] === undefined) continue;
    if (own[key] !== undefined) problems.push(`${at}.${key}: set it in spec.worker.${key} or here, not both`);
    else out[key] = structuredClone(template[key]);
  }
  if (template['resources'] !== undefined)
    problems.push(`${at}.resources: set spec.worker.resources (and spec.worker.gpus) instead`);
  const env = Array.isArray(template['env']) ? (template['env'] as Record<string, unknown>[]) : [];
  for (const [i, v] of env.entries()) {
    if (String(v['name']).startsWith('TENSILE_'))
      problems.push(
        `${at}.env[${i}]: ${String(v['name'])} is set by the operator (TENSILE_* is the worker contract)`,
      );
  }
  out['env'] = appendNamed(
    problems,
    `spec.containers[${WORKER}].env`,
    base.env,
    env,
    'set by Tensile or spec.worker.env',
  );
  const mounts = Array.isArray(template['volumeMounts'])
    ? (template['volumeMounts'] as Record<string, unknown>[])
    : [];
  const paths = new Set((base.volumeMounts ?? []).map((m) => m.mountPath));
  for (const [i, m] of mounts.entries())
    if (paths.has(String(m['mountPath'])))
      problems.push(
        `${at}.volumeMounts[${i}]: ${String(m['mountPath'])} is where Tensile mounts its own volume`,
      );
  out['volumeMounts'] = [...(base.volumeMounts ?? []), ...mounts.map((m) => structuredClone(m))];
  return out as unknown as V1Container;
}

/** Spec fields that spec.worker also sets: the template's value wins where the job left it to the defaults. */
function mergeWorkerFields(
  problems: string[],
  out: V1PodSpec,
  spec: Record<string, unknown>,
  own: WorkerSpec,
) {
  const target = out as unknown as Record<string, unknown>;
  for (const key of WORKER_FIELDS) {
    const value = spec[key];
    if (value === undefined) continue;
    const ownValue = own[key];
    if (ownValue !== undefined) {
      problems.push(`${AT}.spec.${key}: set it in spec.worker.${key} or here, not both`);
      continue;
    }
    if (key === 'nodeSelector' && isRecord(value))
      out.nodeSelector = { ...out.nodeSelector, ...(value as Record<string, string>) };
    else if (key === 'tolerations' && Array.isArray(value))
      out.tolerations = [
        ...(out.tolerations ?? []),
        ...(structuredClone(value) as NonNullable<V1PodSpec['tolerations']>),
      ];
    else if (key === 'affinity' && isRecord(value)) out.affinity = withBaseAffinity(value, out.affinity);
    else target[key] = structuredClone(value);
  }
}

/** The template's affinity plus Tensile's co-location terms (a ReadWriteOnce checkpoint claim). */
function withBaseAffinity(
  template: Record<string, unknown>,
  base: V1PodSpec['affinity'],
): V1PodSpec['affinity'] {
  const out = structuredClone(template) as Record<string, Record<string, unknown[] | undefined> | undefined>;
  const terms = base?.podAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? [];
  if (terms.length === 0) return out as V1PodSpec['affinity'];
  const pod = { ...out['podAffinity'] };
  pod['requiredDuringSchedulingIgnoredDuringExecution'] = [
    ...(pod['requiredDuringSchedulingIgnoredDuringExecution'] ?? []),
    ...terms,
  ];
  out['podAffinity'] = pod;
  return out as V1PodSpec['affinity'];
}

/** The merged pod and what is wrong with the template (empty when it merged cleanly). */
export function mergePodTemplate(
  base: V1Pod,
  template: PodTemplate | undefined,
  own: WorkerSpec,
): { pod: V1Pod; problems: string[] } {
  if (template === undefined) return { pod: base, problems: [] };
  const problems: string[] = [];
  const spec = template.spec;
  const baseSpec = base.spec as V1PodSpec;
  for (const [key, why] of Object.entries(OWNED))
    if (spec[key] !== undefined) problems.push(`${AT}.spec.${key}: Tensile sets it (${why})`);
  if (spec['restartPolicy'] !== undefined && spec['restartPolicy'] !== 'Never')
    problems.push(`${AT}.spec.restartPolicy: must be Never (the operator replaces workers itself)`);
  const plain = Object.fromEntries(
    Object.entries(spec).filter(
      ([k]) =>
        ![
          'containers',
          'volumes',
          'imagePullSecrets',
          'topologySpreadConstraints',
          'initContainers',
        ].includes(k) &&
        !(WORKER_FIELDS as readonly string[]).includes(k) &&
        OWNED[k] === undefined,
    ),
  );
  const out: V1PodSpec = { ...structuredClone(plain), ...baseSpec, restartPolicy: 'Never' } as V1PodSpec;
  mergeWorkerFields(problems, out, spec, own);
  out.volumes = appendNamed(
    problems,
    'spec.volumes',
    baseSpec.volumes,
    list(problems, spec, 'volumes'),
    "one of Tensile's volumes",
  );
  const containers = list(problems, spec, 'containers');
  const worker = containers.find((c) => c['name'] === WORKER);
  const baseWorker = baseSpec.containers.find((c) => c.name === WORKER) as V1Container;
  out.containers = [
    worker === undefined ? baseWorker : mergeWorkerContainer(problems, baseWorker, worker, own),
    ...appendNamed<V1Container>(
      problems,
      'spec.containers',
      [],
      containers.filter((c) => c !== worker),
      'taken',
    ),
  ];
  const init = list(problems, spec, 'initContainers');
  if (init.length > 0) out.initContainers = init.map((c) => structuredClone(c) as unknown as V1Container);
  const secrets = list(problems, spec, 'imagePullSecrets');
  if (secrets.length > 0 || baseSpec.imagePullSecrets !== undefined) {
    const names = new Set((baseSpec.imagePullSecrets ?? []).map((s) => s.name));
    out.imagePullSecrets = [
      ...(baseSpec.imagePullSecrets ?? []),
      ...secrets.filter((s) => !names.has(String(s['name']))).map((s) => ({ name: String(s['name']) })),
    ];
  }
  const spread = list(problems, spec, 'topologySpreadConstraints');
  if (spread.length > 0)
    out.topologySpreadConstraints = structuredClone(
      spread,
    ) as unknown as V1PodSpec['topologySpreadConstraints'];
  const meta = base.metadata ?? {};
  const labels = mergeLabels(problems, 'metadata.labels', meta.labels, template.metadata?.labels);
  const annotations = mergeLabels(
    problems,
    'metadata.annotations',
    meta.annotations,
    template.metadata?.annotations,
  );
  const pod: V1Pod = {
    ...base,
    metadata: {
      ...meta,
      ...(labels === undefined ? {} : { labels }),
      ...(annotations === undefined ? {} : { annotations }),
    },
    spec: out,
  };
  return { pod, problems };
}
