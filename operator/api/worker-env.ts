/**
 * The operator↔worker environment contract: the variables that configure a worker and the one builder
 * that writes them. The pod builder (operator/controller/pod-builder.ts) and the local runner
 * (operator/local-run/run.ts) both call `workerEnvVars`; the worker reads them back with
 * `loadWorkerConfig` (worker/config.ts). test/unit/worker-contract.test.ts feeds both into the loader.
 */
import type { TrainingJobSpec } from './training-job.ts';

export const WORKER_ENV = {
  jobName: 'TENSILE_JOB_NAME',
  namespace: 'TENSILE_NAMESPACE',
  jobUid: 'TENSILE_JOB_UID',
  spec: 'TENSILE_JOB_SPEC',
  specRevision: 'TENSILE_SPEC_REVISION',
  workerId: 'TENSILE_WORKER_ID',
  replicaIndex: 'TENSILE_REPLICA_INDEX',
  podIp: 'TENSILE_POD_IP',
  nodeName: 'TENSILE_NODE_NAME',
  zone: 'TENSILE_ZONE',
  natsUrl: 'TENSILE_NATS_URL',
  natsCreds: 'TENSILE_NATS_CREDS',
  natsTlsCa: 'TENSILE_NATS_TLS_CA',
  natsTlsCert: 'TENSILE_NATS_TLS_CERT',
  natsTlsKey: 'TENSILE_NATS_TLS_KEY',
  checkpointDir: 'TENSILE_CHECKPOINT_DIR',
  backend: 'TENSILE_BACKEND',
  outDir: 'TENSILE_OUT_DIR',
  modelDir: 'TENSILE_MODEL_DIR',
  logLevel: 'TENSILE_LOG_LEVEL',
  progressMs: 'TENSILE_PROGRESS_MS',
  checksumEvery: 'TENSILE_CHECKSUM_EVERY',
  failpoint: 'TENSILE_FAILPOINT',
  configFile: 'TENSILE_CONFIG_FILE',
  federationSite: 'TENSILE_FEDERATION_SITE',
  federationAudit: 'TENSILE_FEDERATION_AUDIT',
  federationSigningKey: 'TENSILE_FEDERATION_SIGNING_KEY',
  federationSiteKeys: 'TENSILE_FEDERATION_SITE_KEYS',
} as const;

/** A value only the kubelet knows (the pod's name or IP), filled in through the downward API. */
export interface FieldRef {
  readonly fieldRef:
    | 'metadata.name'
    | 'status.podIP'
    | 'spec.nodeName'
    // Copied from the node at binding (Kubernetes ≥ 1.33, PodTopologyLabelsAdmission); empty before.
    | "metadata.labels['topology.kubernetes.io/zone']";
}

/** The shape of a Kubernetes V1EnvVar, narrowed to what the contract writes. */
export type WorkerEnvVar =
  | { readonly name: string; readonly value: string }
  | { readonly name: string; readonly valueFrom: { readonly fieldRef: { readonly fieldPath: string } } };

export interface WorkerEnvInput<Known = string | FieldRef> {
  readonly jobName: string;
  readonly namespace: string;
  readonly jobUid?: string;
  readonly spec: TrainingJobSpec;
  readonly specRevision?: number;
  readonly workerId?: Known;
  readonly replicaIndex: number;
  readonly podIp?: Known;
  /** Where the worker runs: its ring neighbours are chosen by them (worker/collective/topology.ts). */
  readonly nodeName?: Known;
  readonly zone?: Known;
  readonly natsUrl?: string;
  readonly natsCreds?: string;
  /** TLS to NATS: the CA's certificate, and the client's certificate and key (paths). */
  readonly natsTlsCa?: string;
  readonly natsTlsCert?: string;
  readonly natsTlsKey?: string;
  readonly checkpointDir: string;
  readonly backend?: string;
  readonly outDir?: string;
  /** Where the trained model goes: under spec.output's mount in a pod, a local folder for `tensile run`. */
  readonly modelDir?: string;
  readonly progressMs?: number;
  /** spec.federation: the site this worker belongs to (its data, its group). */
  readonly federationSite?: string;
  /**
   * Tests only: every rank writes the mean it applied, and each leader its own plain delta, under
   * outDir/federation/, so a test can check the secure sum against the plain one. Never in a pod.
   */
  readonly federationAudit?: boolean;
  /** Secure aggregation: the site's Ed25519 identity key (a PKCS8 PEM file's path). */
  readonly federationSigningKey?: string;
  /** Secure aggregation: every site's Ed25519 public key (site name → base64), from the launcher. */
  readonly federationSiteKeys?: Readonly<Record<string, string>>;
}

/** The variables in the order a pod lists them; absent inputs write nothing (the worker's default). */
export function workerEnvVars(input: WorkerEnvInput): WorkerEnvVar[] {
  const vars: WorkerEnvVar[] = [];
  const add = (key: keyof typeof WORKER_ENV, value: string | number | FieldRef | undefined) => {
    const name = WORKER_ENV[key];
    if (value === undefined) return;
    if (typeof value === 'object')
      vars.push({ name, valueFrom: { fieldRef: { fieldPath: value.fieldRef } } });
    else vars.push({ name, value: String(value) });
  };
  add('jobName', input.jobName);
  add('namespace', input.namespace);
  add('jobUid', input.jobUid);
  add('spec', JSON.stringify(input.spec));
  // Pods embed the spec of their creation; the revision lets the workers agree on the newest.
  add('specRevision', input.specRevision);
  add('workerId', input.workerId);
  add('replicaIndex', input.replicaIndex);
  add('podIp', input.podIp);
  add('nodeName', input.nodeName);
  add('zone', input.zone);
  add('natsUrl', input.natsUrl);
  add('checkpointDir', input.checkpointDir);
  add('backend', input.backend);
  add('natsCreds', input.natsCreds);
  add('natsTlsCa', input.natsTlsCa);
  add('natsTlsCert', input.natsTlsCert);
  add('natsTlsKey', input.natsTlsKey);
  add('outDir', input.outDir);
  add('modelDir', input.modelDir);
  add('progressMs', input.progressMs);
  add('federationSite', input.federationSite);
  add('federationAudit', input.federationAudit === true ? '1' : undefined);
  add('federationSigningKey', input.federationSigningKey);
  add(
    'federationSiteKeys',
    input.federationSiteKeys === undefined ? undefined : JSON.stringify(input.federationSiteKeys),
  );
  return vars;
}

/** The same variables as a process environment, for a worker started without a kubelet. */
export function workerEnvironment(input: WorkerEnvInput<string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of workerEnvVars(input)) if ('value' in v) env[v.name] = v.value;
  return env;
}
