/** Builders for TrainingJob manifests in tests: a valid base, changed one field at a time. */
import type { TrainingJobInput } from '../../operator/api/training-job.ts';

export type Manifest = Record<string, unknown>;

export function validManifest(name = 'job'): Manifest {
  const job: TrainingJobInput = {
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'TrainingJob',
    metadata: { name, namespace: 'default' },
    spec: {
      replicas: 2,
      minReplicas: 1,
      maxReplicas: 4,
      model: { mlp: { hiddenUnits: [64] } },
      dataset: { format: 'idx', path: '/usr/share/datasets/fashion-mnist' },
      optimizer: { type: 'adam', learningRate: 0.001 },
      stopping: { epochs: 1 },
      checkpoint: { intervalSteps: 50 },
    },
  };
  return structuredClone(job) as unknown as Manifest;
}

/** Sets (or, with `undefined`, deletes) the value at a dotted path such as `spec.worker.tolerations.0.key`. */
export function setPath(target: Manifest, path: string, value: unknown): Manifest {
  const keys = path.split('.');
  let node: Record<string, unknown> = target;
  for (const key of keys.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  const last = keys[keys.length - 1] as string;
  if (value === undefined) delete node[last];
  else node[last] = value;
  return target;
}

export function withField(path: string, value: unknown, base: Manifest = validManifest()): Manifest {
  return setPath(structuredClone(base), path, value);
}
