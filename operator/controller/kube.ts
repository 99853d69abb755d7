/**
 * The operator's few writes to the API server; every error becomes a KubeApiError, classified once
 * (operator/api/kube-errors.ts).
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1PersistentVolumeClaim,
  type V1Pod,
  type V1Secret,
} from '@kubernetes/client-node';
import { FINALIZER_ACCOUNTING } from '../api/contract.ts';
import { isAlreadyExists, isNotFound, KubeApiError, toKubeError } from '../api/kube-errors.ts';
import { API_GROUP, API_VERSION, PLURAL, type TrainingJobStatus } from '../api/training-job.ts';
import { ANNOTATION_LEAVE_REQUESTED } from './pods.ts';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

export class KubeClient {
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly events: EventsV1Api;

  constructor(kubeConfig: KubeConfig) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
    this.events = kubeConfig.makeApiClient(EventsV1Api);
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw toKubeError(error, what);
    }
  }

  /** Creates a pod; an existing pod of that name (a retried create) is not an error. */
  async createPod(namespace: string, pod: V1Pod): Promise<'created' | 'exists'> {
    try {
      await this.call(`create pod ${namespace}/${pod.metadata?.name}`, () =>
        this.core.createNamespacedPod({ namespace, body: pod }),
      );
      return 'created';
    } catch (error) {
      if (isAlreadyExists(error)) return 'exists';
      throw error;
    }
  }

  async deletePod(namespace: string, name: string, force: boolean): Promise<void> {
    try {
      await this.call(`delete pod ${namespace}/${name}`, () =>
        this.core.deleteNamespacedPod({ namespace, name, ...(force ? { gracePeriodSeconds: 0 } : {}) }),
      );
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
  }

  /** Removes the accounting finalizer; the `test` op makes it a no-op race loser, never a wrong removal. */
  async releasePod(namespace: string, pod: V1Pod): Promise<void> {
    const name = pod.metadata?.name ?? '';
    const index = pod.metadata?.finalizers?.indexOf(FINALIZER_ACCOUNTING) ?? -1;
    if (index < 0) return;
    const body = [
      { op: 'test', path: `/metadata/finalizers/${index}`, value: FINALIZER_ACCOUNTING },
      { op: 'remove', path: `/metadata/finalizers/${index}` },
    ];
    try {
      await this.call(`release pod ${namespace}/${name}`, () =>
        this.core.patchNamespacedPod({ namespace, name, body }, jsonPatch),
      );
    } catch (error) {
      if (isNotFound(error)) return;
      // 422: the finalizer moved (someone edited the list); the next pass sees the new list.
      if (error instanceof KubeApiError && error.status === 422) {
        throw new KubeApiError(error.message, 409, 'Conflict', { cause: error });
      }
      throw error;
    }
  }

  async markLeaving(namespace: string, name: string, reason: string): Promise<void> {
    const body = { metadata: { annotations: { [ANNOTATION_LEAVE_REQUESTED]: reason } } };
    try {
      await this.call(`annotate pod ${namespace}/${name}`, () =>
        this.core.patchNamespacedPod({ namespace, name, body }, mergePatch),
      );
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
  }

  /** Creates a Secret; one that exists already is kept (it was made for the same job). */
  async createSecret(namespace: string, secret: V1Secret): Promise<void> {
    try {
      await this.call(`create secret ${namespace}/${secret.metadata?.name}`, () =>
        this.core.createNamespacedSecret({ namespace, body: secret }),
      );
    } catch (error) {
      if (isAlreadyExists(error)) return;
      throw error;
    }
  }

  /** Annotates a node (merge patch); a node that is gone needs none. */
  /**
   * Marks a node with the annotation `key` (the reason, for people) and the label `key=true` (for the
   * scheduler: annotations cannot be selected, so the avoiding affinity matches the label).
   */
  async markNode(name: string, key: string, reason: string): Promise<void> {
    const body = { metadata: { annotations: { [key]: reason.slice(0, 1000) }, labels: { [key]: 'true' } } };
    try {
      await this.call(`mark node ${name}`, () => this.core.patchNode({ name, body }, mergePatch));
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
  }

  async createClaim(namespace: string, claim: V1PersistentVolumeClaim): Promise<void> {
    try {
      await this.call(`create claim ${namespace}/${claim.metadata?.name}`, () =>
        this.core.createNamespacedPersistentVolumeClaim({ namespace, body: claim }),
      );
    } catch (error) {
      if (isAlreadyExists(error)) return;
      throw error;
    }
  }

  /**
   * Writes the status with the resourceVersion the decision was based on: a stale read fails with a
   * conflict instead of counting a preemption twice. Fields that disappeared are sent as null.
   */
  async patchStatus(
    namespace: string,
    name: string,
    resourceVersion: string,
    previous: TrainingJobStatus | undefined,
    next: TrainingJobStatus,
  ): Promise<void> {
    const status: Record<string, unknown> = { ...next };
    for (const key of Object.keys(previous ?? {})) if (!(key in next)) status[key] = null;
    const body = resourceVersion === '' ? { status } : { metadata: { resourceVersion }, status };
    await this.call(`patch status ${namespace}/${name}`, () =>
      this.custom.patchNamespacedCustomObjectStatus(
        { group: API_GROUP, version: API_VERSION, namespace, plural: PLURAL, name, body },
        mergePatch,
      ),
    );
  }

  async deleteJob(namespace: string, name: string): Promise<void> {
    try {
      await this.call(`delete trainingjob ${namespace}/${name}`, () =>
        this.custom.deleteNamespacedCustomObject({
          group: API_GROUP,
          version: API_VERSION,
          namespace,
          plural: PLURAL,
          name,
          propagationPolicy: 'Background',
        }),
      );
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
  }

  async createEvent(
    namespace: string,
    body: Parameters<EventsV1Api['createNamespacedEvent']>[0]['body'],
  ): Promise<void> {
    await this.call(`create event in ${namespace}`, () =>
      this.events.createNamespacedEvent({ namespace, body }),
    );
  }
}
