/**
 * The operator's reads and writes of Kueue objects (Workloads, ResourceFlavors). A cluster without
 * Kueue answers 404 for the kind: the queued job then says so in its status instead of waiting forever.
 */
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { isAlreadyExists, isNotFound, toKubeError } from '../api/kube-errors.ts';
import { KUEUE_GROUP, KUEUE_VERSION, type ResourceFlavor, type Workload } from './kueue.ts';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export class KueueClient {
  private readonly custom: CustomObjectsApi;

  constructor(kubeConfig: KubeConfig) {
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw toKubeError(error, what);
    }
  }

  async getWorkload(namespace: string, name: string): Promise<Workload | undefined> {
    try {
      return (await this.call(`get workload ${namespace}/${name}`, () =>
        this.custom.getNamespacedCustomObject({
          group: KUEUE_GROUP,
          version: KUEUE_VERSION,
          namespace,
          plural: 'workloads',
          name,
        }),
      )) as Workload;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async createWorkload(workload: Workload): Promise<void> {
    try {
      await this.call(`create workload ${workload.metadata.namespace}/${workload.metadata.name}`, () =>
        this.custom.createNamespacedCustomObject({
          group: KUEUE_GROUP,
          version: KUEUE_VERSION,
          namespace: workload.metadata.namespace,
          plural: 'workloads',
          body: workload,
        }),
      );
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
    }
  }

  async getFlavor(name: string): Promise<ResourceFlavor | undefined> {
    try {
      return (await this.call(`get resourceflavor ${name}`, () =>
        this.custom.getClusterCustomObject({
          group: KUEUE_GROUP,
          version: KUEUE_VERSION,
          plural: 'resourceflavors',
          name,
        }),
      )) as ResourceFlavor;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** The value of a PriorityClass, for the Workload's priority; undefined when there is none. */
  async priorityOf(name: string): Promise<number | undefined> {
    try {
      const pc = (await this.call(`get priorityclass ${name}`, () =>
        this.custom.getClusterCustomObject({
          group: 'scheduling.k8s.io',
          version: 'v1',
          plural: 'priorityclasses',
          name,
        }),
      )) as { value?: number };
      return pc.value;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Writes a workload's status at the resourceVersion it was read at (a stale write conflicts). */
  async patchWorkloadStatus(workload: Workload, status: NonNullable<Workload['status']>): Promise<void> {
    const { namespace, name, resourceVersion } = workload.metadata;
    await this.call(`patch workload status ${namespace}/${name}`, () =>
      this.custom.patchNamespacedCustomObjectStatus(
        {
          group: KUEUE_GROUP,
          version: KUEUE_VERSION,
          namespace,
          plural: 'workloads',
          name,
          body: { ...(resourceVersion === undefined ? {} : { metadata: { resourceVersion } }), status },
        },
        mergePatch,
      ),
    );
  }
}
