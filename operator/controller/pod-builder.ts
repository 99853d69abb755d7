/**
 * Worker pods and the checkpoint claim of a TrainingJob. Pure: the same job and index always give the
 * same object, so a retried create hits AlreadyExists instead of making a duplicate.
 */
import type {
  V1EnvVar,
  V1NetworkPolicy,
  V1PersistentVolumeClaim,
  V1Pod,
  V1SecurityContext,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import {
  ANNOTATION_SLOW,
  FINALIZER_ACCOUNTING,
  LABEL_JOB_NAME,
  LABEL_REPLICA_INDEX,
  LABEL_ROLE,
  ROLE_WORKER,
} from '../api/contract.ts';
import { siteJobName, siteSpec } from '../api/federation.ts';
import { checkpointClaimName as claimOf, modelLocation } from '../api/model-output.ts';
import {
  API_GROUP_VERSION,
  elasticRange,
  KIND,
  type TrainingJob,
  type WorkerSpec,
} from '../api/training-job.ts';
import { GPU_RESOURCE, type WorkerDefaultsInput, WorkerDefaultsSchema } from '../api/worker-defaults.ts';
import { WORKER_ENV, workerEnvVars } from '../api/worker-env.ts';
import {
  type FederationSlot,
  federationSlot,
  LABEL_FEDERATION_SITE,
  SITE_KEY_ENV_PREFIX,
  SITE_KEY_FILE,
  SITE_PUBLIC_KEY,
  siteKeySecretName,
} from './federation-sites.ts';
import { mergePodTemplate, PodTemplateError } from './pod-template.ts';

/** Cluster-wide defaults for worker pods (Helm value `workers`); a job's own setting always wins. */
export type WorkerTemplateDefaults = WorkerDefaultsInput;

export interface WorkerPodDefaults {
  /** Image for workers that do not name one. */
  readonly workerImage: string;
  /** Image for workers that request `nvidia.com/gpu` and do not name one. */
  readonly workerGpuImage: string;
  /** NATS URL for jobs without `spec.nats.url`. */
  readonly natsUrl: string;
  readonly template?: WorkerTemplateDefaults;
  /**
   * The operator mints each job its own NATS credentials (controller/nats-credentials.ts), in the
   * Secret `jobCredentialsSecretName`; a job's own `spec.nats.credentialsSecret` still wins.
   */
  readonly perJobCredentials?: boolean;
  /**
   * The operator's NATS takes TLS: each job's Secret carries the CA (and, when the server verifies
   * clients, a client certificate and key) under TLS_KEYS, mounted for jobs that use that NATS.
   */
  readonly natsTls?: { readonly clientCert: boolean };
  /**
   * Each job gets a NetworkPolicy that lets only its own workers connect to its workers (the chart's
   * per-namespace policy lets workers out, to NATS and DNS, and nobody in).
   */
  readonly jobNetworkPolicies?: boolean;
}

/** Where the TLS material is in a job's NATS Secret (the names of a kubernetes.io/tls Secret). */
export const TLS_KEYS = { ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key' } as const;

/** The Secret holding the NATS credentials the operator minted for a job. */
export function jobCredentialsSecretName(job: string): string {
  return `${job}-nats-credentials`;
}
export const CREDENTIALS_KEY = 'nats.creds';

type Toleration = NonNullable<WorkerSpec['tolerations']>[number];

function withTolerations(own: readonly Toleration[] | undefined, added: readonly Toleration[]): Toleration[] {
  const out = (own ?? []).map((t) => ({ ...t }));
  const key = (t: Toleration) => JSON.stringify([t.key, t.operator, t.value ?? '', t.effect ?? '']);
  const seen = new Set(out.map(key));
  for (const t of added) {
    if (seen.has(key(t))) continue;
    seen.add(key(t));
    out.push({ ...t });
  }
  return out;
}

/**
 * The worker spec as the pod gets it: cluster defaults where the job says nothing, then the opt-in
 * profiles: `gpus` (the job's, else the cluster's default of 0) becomes nvidia.com/gpu requests and
 * limits plus the GPU toleration; `spot` (the job's, else the cluster's default: off) merges the spot
 * node selector (the job's keys win) and tolerations.
 */
export function effectiveWorker(
  worker: WorkerSpec,
  template: WorkerTemplateDefaults | undefined,
): WorkerSpec {
  const defaults = WorkerDefaultsSchema.parse(template ?? {});
  const out: WorkerSpec = { ...worker };
  const own = worker.resources;
  const hasOwnResources = Object.keys(own.requests ?? {}).length + Object.keys(own.limits ?? {}).length > 0;
  out.resources = structuredClone(hasOwnResources ? own : (defaults.resources ?? own));
  if (worker.nodeSelector === undefined && defaults.nodeSelector !== undefined)
    out.nodeSelector = { ...defaults.nodeSelector };
  if (worker.tolerations === undefined && defaults.tolerations !== undefined)
    out.tolerations = defaults.tolerations.map((t) => ({ ...t }));
  if (worker.priorityClassName === undefined && defaults.priorityClassName !== undefined)
    out.priorityClassName = defaults.priorityClassName;
  const gpus = worker.gpus ?? (mentionsGpu(out.resources) ? undefined : defaults.gpu.default);
  if (gpus !== undefined && gpus > 0) {
    out.resources = {
      requests: { ...out.resources.requests, [GPU_RESOURCE]: gpus },
      limits: { ...out.resources.limits, [GPU_RESOURCE]: gpus },
    };
  }
  if (gpus === 0) out.resources = withoutGpu(out.resources);
  if (mentionsGpu(out.resources))
    out.tolerations = withTolerations(out.tolerations, defaults.gpu.tolerations);
  if (worker.spot ?? defaults.spot.default) {
    out.nodeSelector = { ...defaults.spot.nodeSelector, ...out.nodeSelector };
    out.tolerations = withTolerations(out.tolerations, defaults.spot.tolerations);
  }
  return out;
}

function mentionsGpu(resources: WorkerSpec['resources']): boolean {
  return resources.requests?.[GPU_RESOURCE] !== undefined || resources.limits?.[GPU_RESOURCE] !== undefined;
}

/** gpus: 0 says "no GPU" even where the cluster's default resources ask for one. */
function withoutGpu(resources: WorkerSpec['resources']): WorkerSpec['resources'] {
  const drop = (list: Record<string, string | number> | undefined) =>
    list === undefined
      ? undefined
      : Object.fromEntries(Object.entries(list).filter(([k]) => k !== GPU_RESOURCE));
  const requests = drop(resources.requests);
  const limits = drop(resources.limits);
  return { ...(requests === undefined ? {} : { requests }), ...(limits === undefined ? {} : { limits }) };
}

/** The job's worker spec with the cluster defaults and the opt-in profiles applied. */
export function withWorkerDefaults(job: OwnedJob, defaults: WorkerTemplateDefaults | undefined): OwnedJob {
  return { ...job, spec: { ...job.spec, worker: effectiveWorker(job.spec.worker, defaults) } };
}

export type OwnedJob = TrainingJob & { metadata: { uid: string; namespace: string } };

export const WORKER_CONTAINER = 'worker';
export { GPU_RESOURCE };

const CHECKPOINT_VOLUME = 'checkpoints';
const OUTPUT_VOLUME = 'output';
const DATASET_VOLUME = 'dataset';
const MODEL_VOLUME = 'model';
const SHM_VOLUME = 'dshm';
const NATS_CREDS_VOLUME = 'nats-credentials';
const MODEL_MOUNT = '/etc/tensile/model';
const NATS_CREDS_MOUNT = '/etc/tensile/nats';
const NATS_TLS_VOLUME = 'nats-tls';
const NATS_TLS_MOUNT = '/etc/tensile/nats-tls';
const FEDERATION_KEY_VOLUME = 'federation-key';
const FEDERATION_KEY_MOUNT = '/etc/tensile/federation';

export function workerPodName(job: string, index: number): string {
  return `${job}-worker-${index}`;
}

export function checkpointClaimName(job: TrainingJob): string {
  return claimOf(job.metadata.name, job.spec);
}

/** The label selector of a job's workers, as status.selector (for the scale subresource and HPA). */
export function workerSelector(job: string): string {
  return `${LABEL_JOB_NAME}=${job},${LABEL_ROLE}=${ROLE_WORKER}`;
}

export function ownerReference(job: OwnedJob) {
  return {
    apiVersion: API_GROUP_VERSION,
    kind: KIND,
    name: job.metadata.name,
    uid: job.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function requestsGpu(job: TrainingJob): boolean {
  const { requests, limits } = job.spec.worker.resources;
  const positive = (q: string | number | undefined) => q !== undefined && q !== 0 && q !== '0';
  return positive(requests?.[GPU_RESOURCE]) || positive(limits?.[GPU_RESOURCE]);
}

function quantityString(q: string | number): string {
  return typeof q === 'number' ? String(q) : q;
}

function resourceList(list: Record<string, string | number> | undefined): Record<string, string> | undefined {
  if (list === undefined) return undefined;
  return Object.fromEntries(Object.entries(list).map(([k, v]) => [k, quantityString(v)]));
}

/**
 * Extended resources such as nvidia.com/gpu must have requests equal to limits; a user who writes only
 * one of them means both, as the device plugin documentation says.
 */
function workerResources(job: TrainingJob) {
  const requests = resourceList(job.spec.worker.resources.requests) ?? {};
  const limits = resourceList(job.spec.worker.resources.limits) ?? {};
  const gpu = limits[GPU_RESOURCE] ?? requests[GPU_RESOURCE];
  if (gpu !== undefined) {
    requests[GPU_RESOURCE] = gpu;
    limits[GPU_RESOURCE] = gpu;
  }
  const out: { requests?: Record<string, string>; limits?: Record<string, string> } = {};
  if (Object.keys(requests).length > 0) out.requests = requests;
  if (Object.keys(limits).length > 0) out.limits = limits;
  return out;
}

/**
 * The spec as a worker receives it, in its pod and in a `spec` control message (which must match,
 * or the worker sees another model): a topology in a ConfigMap reaches the worker as a file, read
 * through model.layers.path.
 */
export function workerSpecOf(spec: TrainingJob['spec']): TrainingJob['spec'] {
  if (spec.model.layers?.configMap === undefined) return spec;
  return { ...spec, model: { ...spec.model, layers: { path: `${MODEL_MOUNT}/model.json` } } };
}

/** metadata.generation: the API server raises it with every change of the spec, scale included. */
export function specRevisionOf(job: TrainingJob): number {
  const generation = job.metadata['generation'];
  return typeof generation === 'number' && Number.isInteger(generation) && generation >= 0 ? generation : 0;
}

/** The worker image's user (worker/Dockerfile `USER 1000:1000`). */
export const WORKER_UID = 1000;
const TMP_VOLUME = 'tmp';

/**
 * What makes a worker pod pass the `restricted` Pod Security Standard: non-root, no privilege
 * escalation, no capabilities, the runtime's seccomp profile, a read-only root filesystem. The worker
 * writes only to its checkpoint volume and to /tmp (an emptyDir here); fsGroup makes both writable by
 * the image's user. Kept apart from the rest of the pod so that a job's own pod template can override
 * it in one place.
 */
export function restrictedSecurity(): {
  readonly pod: NonNullable<V1Pod['spec']>['securityContext'];
  readonly container: V1SecurityContext;
  readonly volume: V1Volume;
  readonly mount: V1VolumeMount;
} {
  return {
    pod: {
      runAsNonRoot: true,
      runAsUser: WORKER_UID,
      runAsGroup: WORKER_UID,
      fsGroup: WORKER_UID,
      seccompProfile: { type: 'RuntimeDefault' },
    },
    container: {
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
    },
    volume: { name: TMP_VOLUME, emptyDir: {} },
    mount: { name: TMP_VOLUME, mountPath: '/tmp' },
  };
}

/**
 * The worker pod: what Tensile sets, then the job's pod template merged in. Throws PodTemplateError
 * (terminal) for a template that overrides what Tensile owns; the planner checks that first
 * (workerPodProblems) and fails the job with InvalidSpec instead of trying.
 */
export function buildWorkerPod(ownJob: OwnedJob, index: number, defaults: WorkerPodDefaults): V1Pod {
  const { pod, problems } = mergePodTemplate(
    tensilePod(ownJob, index, defaults),
    ownJob.spec.worker.podTemplate,
    ownJob.spec.worker,
  );
  if (problems.length > 0) throw new PodTemplateError(problems);
  return pod;
}

/** What is wrong with the job's pod template, as InvalidSpec reasons (empty when it merges). */
export function workerPodProblems(job: OwnedJob, defaults: WorkerPodDefaults): string[] {
  return mergePodTemplate(tensilePod(job, 0, defaults), job.spec.worker.podTemplate, job.spec.worker)
    .problems;
}

/** The slot of pod `index` of a federated job (undefined for any other job); out of range throws. */
function slotOf(job: TrainingJob, index: number): FederationSlot | undefined {
  if (job.spec.federation === undefined) return undefined;
  const slot = federationSlot(job.spec, index);
  if (slot === undefined)
    throw new RangeError(`pod index ${index} is beyond the sites of ${job.metadata.name}`);
  return slot;
}

/**
 * A federated worker's keys: its site's private signing key (its site's Secret, of which only this
 * site's pods mount the private half) and every site's public key, each read from that site's Secret
 * by key (`signing-key.pub` only) or taken from the spec's pin, and put together by the kubelet's
 * `$(VAR)` expansion into the one JSON the worker reads (TENSILE_FEDERATION_SITE_KEYS). The operator
 * never has to read a Secret back to hand the public keys out.
 */
function federationKeyParts(
  job: OwnedJob,
  slot: FederationSlot,
): { volume: V1Volume; mount: V1VolumeMount; env: V1EnvVar[] } {
  const sites = job.spec.federation?.sites ?? [];
  const each: V1EnvVar[] = sites.map((site, i) =>
    site.signingKey !== undefined
      ? { name: `${SITE_KEY_ENV_PREFIX}${i}`, value: site.signingKey }
      : {
          name: `${SITE_KEY_ENV_PREFIX}${i}`,
          valueFrom: {
            secretKeyRef: { name: siteKeySecretName(job.metadata.name, site.name), key: SITE_PUBLIC_KEY },
          },
        },
  );
  const keys = Object.fromEntries(sites.map((site, i) => [site.name, `$(${SITE_KEY_ENV_PREFIX}${i})`]));
  return {
    volume: {
      name: FEDERATION_KEY_VOLUME,
      secret: {
        secretName: siteKeySecretName(job.metadata.name, slot.site),
        items: [{ key: SITE_KEY_FILE, path: SITE_KEY_FILE }],
        defaultMode: 0o440,
      },
    },
    mount: { name: FEDERATION_KEY_VOLUME, mountPath: FEDERATION_KEY_MOUNT, readOnly: true },
    env: [
      ...each,
      { name: WORKER_ENV.federationSigningKey, value: `${FEDERATION_KEY_MOUNT}/${SITE_KEY_FILE}` },
      { name: WORKER_ENV.federationSiteKeys, value: JSON.stringify(keys) },
    ],
  };
}

function tensilePod(ownJob: OwnedJob, index: number, defaults: WorkerPodDefaults): V1Pod {
  const job = withWorkerDefaults(ownJob, defaults.template);
  const { spec } = job;
  const slot = slotOf(job, index);
  // A site's pods are the site job's: named, credentialed and checkpointed as `<job>-<site>`.
  const group = slot === undefined ? job.metadata.name : siteJobName(job.metadata.name, slot.site);
  const name = workerPodName(group, slot?.replicaIndex ?? index);
  const dataset = slot === undefined ? spec.dataset : siteSpec(spec, slot.site).dataset;
  const volumes: V1Volume[] = [
    { name: CHECKPOINT_VOLUME, persistentVolumeClaim: { claimName: checkpointClaimName(job) } },
  ];
  const mounts: V1VolumeMount[] = [
    {
      name: CHECKPOINT_VOLUME,
      mountPath: spec.checkpoint.path,
      // Each site sees its own folder of the claim: its checkpoints (its model) are not another's.
      ...(slot === undefined ? {} : { subPath: `federation/${slot.site}` }),
    },
  ];
  // The model's claim is the user's, never the job's: no owner reference, so the model outlives the job.
  const output = spec.output;
  if (output?.claimName !== undefined) {
    volumes.push({ name: OUTPUT_VOLUME, persistentVolumeClaim: { claimName: output.claimName } });
    mounts.push({ name: OUTPUT_VOLUME, mountPath: output.mountPath });
  }
  if (dataset.volume !== undefined) {
    volumes.push({
      name: DATASET_VOLUME,
      persistentVolumeClaim: { claimName: dataset.volume.claimName, readOnly: true },
    });
    mounts.push({ name: DATASET_VOLUME, mountPath: dataset.volume.mountPath, readOnly: true });
  }
  if (spec.worker.sharedMemory !== undefined) {
    volumes.push({
      name: SHM_VOLUME,
      emptyDir: { medium: 'Memory', sizeLimit: quantityString(spec.worker.sharedMemory) },
    });
    mounts.push({ name: SHM_VOLUME, mountPath: '/dev/shm' });
  }
  const configMap = spec.model.layers?.configMap;
  if (configMap !== undefined) {
    volumes.push({
      name: MODEL_VOLUME,
      configMap: { name: configMap.name, items: [{ key: configMap.key, path: 'model.json' }] },
    });
    mounts.push({ name: MODEL_VOLUME, mountPath: MODEL_MOUNT, readOnly: true });
  }
  const creds =
    spec.nats?.credentialsSecret ??
    (defaults.perJobCredentials === true
      ? { name: jobCredentialsSecretName(group), key: CREDENTIALS_KEY }
      : undefined);
  if (creds !== undefined) {
    volumes.push({
      name: NATS_CREDS_VOLUME,
      secret: { secretName: creds.name, items: [{ key: creds.key, path: 'nats.creds' }] },
    });
    mounts.push({ name: NATS_CREDS_VOLUME, mountPath: NATS_CREDS_MOUNT, readOnly: true });
  }
  const tls = spec.nats?.url === undefined ? defaults.natsTls : undefined;
  if (tls !== undefined) {
    const keys = tls.clientCert ? [TLS_KEYS.ca, TLS_KEYS.cert, TLS_KEYS.key] : [TLS_KEYS.ca];
    volumes.push({
      name: NATS_TLS_VOLUME,
      secret: {
        secretName: jobCredentialsSecretName(group),
        items: keys.map((key) => ({ key, path: key })),
      },
    });
    mounts.push({ name: NATS_TLS_VOLUME, mountPath: NATS_TLS_MOUNT, readOnly: true });
  }
  const keyParts =
    slot !== undefined && spec.federation?.secureAggregation.enabled === true
      ? federationKeyParts(job, slot)
      : undefined;
  if (keyParts !== undefined) {
    volumes.push(keyParts.volume);
    mounts.push(keyParts.mount);
  }
  const env: V1EnvVar[] = workerEnvVars({
    jobName: job.metadata.name,
    namespace: job.metadata.namespace,
    jobUid: job.metadata.uid,
    spec: workerSpecOf(spec),
    specRevision: specRevisionOf(job),
    workerId: { fieldRef: 'metadata.name' },
    replicaIndex: slot?.replicaIndex ?? index,
    podIp: { fieldRef: 'status.podIP' },
    nodeName: { fieldRef: 'spec.nodeName' },
    zone: { fieldRef: "metadata.labels['topology.kubernetes.io/zone']" },
    natsUrl: spec.nats?.url ?? defaults.natsUrl,
    checkpointDir: spec.checkpoint.path,
    // Spelled out rather than left to the worker: a path under a mount, as every path the pod is given.
    modelDir: modelLocation({ name: job.metadata.name, namespace: job.metadata.namespace }, spec).dir,
    ...(spec.worker.backend === 'auto' ? {} : { backend: spec.worker.backend }),
    ...(creds === undefined ? {} : { natsCreds: `${NATS_CREDS_MOUNT}/nats.creds` }),
    ...(tls === undefined ? {} : { natsTlsCa: `${NATS_TLS_MOUNT}/${TLS_KEYS.ca}` }),
    ...(tls?.clientCert === true
      ? { natsTlsCert: `${NATS_TLS_MOUNT}/${TLS_KEYS.cert}`, natsTlsKey: `${NATS_TLS_MOUNT}/${TLS_KEYS.key}` }
      : {}),
    ...(slot === undefined ? {} : { federationSite: slot.site }),
  }).map((v) => ({ ...v }));
  env.push(...(keyParts?.env ?? []));
  for (const extra of spec.worker.env) {
    env.push(
      extra.valueFrom !== undefined
        ? { name: extra.name, valueFrom: extra.valueFrom }
        : { name: extra.name, value: extra.value ?? '' },
    );
  }
  const pullSecrets = defaults.template?.imagePullSecrets;
  const image = spec.worker.image ?? (requestsGpu(job) ? defaults.workerGpuImage : defaults.workerImage);
  const security = restrictedSecurity();
  volumes.push(security.volume);
  mounts.push(security.mount);
  const pod: V1Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: job.metadata.namespace,
      labels: {
        ...spec.worker.labels,
        [LABEL_JOB_NAME]: job.metadata.name,
        [LABEL_ROLE]: ROLE_WORKER,
        [LABEL_REPLICA_INDEX]: String(index),
        ...(slot === undefined ? {} : { [LABEL_FEDERATION_SITE]: slot.site }),
      },
      ...(spec.worker.annotations === undefined ? {} : { annotations: { ...spec.worker.annotations } }),
      ownerReferences: [ownerReference(job)],
      finalizers: [FINALIZER_ACCOUNTING],
    },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: spec.worker.terminationGracePeriodSeconds,
      containers: [
        {
          name: WORKER_CONTAINER,
          image,
          ...(spec.worker.imagePullPolicy === undefined
            ? {}
            : { imagePullPolicy: spec.worker.imagePullPolicy }),
          ...(spec.worker.command === undefined ? {} : { command: spec.worker.command }),
          args: spec.worker.args ?? ['worker'],
          env,
          resources: workerResources(job),
          volumeMounts: mounts,
          securityContext: security.container,
        },
      ],
      securityContext: security.pod,
      volumes,
      ...(spec.worker.nodeSelector === undefined ? {} : { nodeSelector: { ...spec.worker.nodeSelector } }),
      ...(spec.worker.tolerations === undefined
        ? {}
        : { tolerations: spec.worker.tolerations.map((t) => ({ ...t })) }),
      ...workerAffinity(job),
      ...(spec.worker.priorityClassName === undefined
        ? {}
        : { priorityClassName: spec.worker.priorityClassName }),
      ...(spec.worker.serviceAccountName === undefined
        ? {}
        : { serviceAccountName: spec.worker.serviceAccountName }),
      ...(pullSecrets === undefined ? {} : { imagePullSecrets: pullSecrets.map((s) => ({ ...s })) }),
    },
  };
  return pod;
}

/**
 * Workers of a job whose operator-made claim is ReadWriteOnce must share the node that mounts it (a
 * second node cannot attach it): a required pod affinity on the job's workers, added to the user's
 * own affinity. The first worker goes anywhere (a pod matching its own term may), the rest follow it.
 */
export function workerAffinity(job: TrainingJob): { affinity?: Record<string, unknown> } {
  const own = avoidingSlowNodes(job);
  const template = job.spec.checkpoint.volume.claimTemplate;
  const shared = template === undefined || template.accessModes.includes('ReadWriteMany');
  if (shared || elasticRange(job.spec).max <= 1)
    return own === undefined ? {} : { affinity: structuredClone(own) };
  const affinity: Record<string, unknown> = structuredClone(own ?? {});
  const podAffinity = { ...(affinity['podAffinity'] as Record<string, unknown> | undefined) };
  const required = podAffinity['requiredDuringSchedulingIgnoredDuringExecution'];
  podAffinity['requiredDuringSchedulingIgnoredDuringExecution'] = [
    ...(Array.isArray(required) ? required : []),
    {
      topologyKey: 'kubernetes.io/hostname',
      labelSelector: { matchLabels: { [LABEL_JOB_NAME]: job.metadata.name, [LABEL_ROLE]: ROLE_WORKER } },
    },
  ];
  affinity['podAffinity'] = podAffinity;
  return { affinity };
}

/**
 * The user's affinity, plus, for a job that evicts stragglers, a preference against nodes marked
 * `tensile.dev/slow` (by this or another job): a replacement should not land where its predecessor
 * was slow, yet may when no other node fits (preferred, not required).
 */
function avoidingSlowNodes(job: TrainingJob): Record<string, unknown> | undefined {
  const own = job.spec.worker.affinity;
  if (!job.spec.balancing.evictStragglers) return own;
  const affinity: Record<string, unknown> = structuredClone(own ?? {});
  const nodeAffinity = { ...(affinity['nodeAffinity'] as Record<string, unknown> | undefined) };
  const preferred = nodeAffinity['preferredDuringSchedulingIgnoredDuringExecution'];
  nodeAffinity['preferredDuringSchedulingIgnoredDuringExecution'] = [
    ...(Array.isArray(preferred) ? preferred : []),
    { weight: 100, preference: { matchExpressions: [{ key: ANNOTATION_SLOW, operator: 'DoesNotExist' }] } },
  ];
  affinity['nodeAffinity'] = nodeAffinity;
  return affinity;
}

/** The claim a job creates from `checkpoint.volume.claimTemplate`; undefined for an existing claim. */
export function buildCheckpointClaim(job: OwnedJob): V1PersistentVolumeClaim | undefined {
  const template = job.spec.checkpoint.volume.claimTemplate;
  if (template === undefined) return undefined;
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: checkpointClaimName(job),
      namespace: job.metadata.namespace,
      labels: { [LABEL_JOB_NAME]: job.metadata.name },
      ownerReferences: [ownerReference(job)],
    },
    spec: {
      accessModes: [...template.accessModes],
      resources: { requests: { storage: quantityString(template.size) } },
      ...(template.storageClassName === undefined ? {} : { storageClassName: template.storageClassName }),
    },
  };
}

/**
 * The job's NetworkPolicy: its workers take connections (the collective links) from its own workers
 * only, on any port, since each rank listens on a port of its own. Owned by the job.
 */
export function jobNetworkPolicy(job: OwnedJob): V1NetworkPolicy {
  const own = { [LABEL_JOB_NAME]: job.metadata.name, [LABEL_ROLE]: ROLE_WORKER };
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: `${job.metadata.name}-workers`,
      namespace: job.metadata.namespace,
      labels: { [LABEL_JOB_NAME]: job.metadata.name },
      ownerReferences: [ownerReference(job)],
    },
    spec: {
      podSelector: { matchLabels: own },
      policyTypes: ['Ingress'],
      ingress: [{ _from: [{ podSelector: { matchLabels: own } }] }],
    },
  };
}
