/**
 * The operator's reads and writes of Kueue objects (Workloads, ResourceFlavors). A cluster without
 * Kueue answers 404 for the kind: the queued job then says so in its status instead of waiting forever.
 */
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { LABEL_JOB_NAME } from '../api/contract.ts';
import { isAlreadyExists, isNotFound, toKubeError } from '../api/kube-errors.ts';
import { KUEUE_GROUP, KUEUE_VERSION, POD_SET, type ResourceFlavor, type Workload } from './kueue.ts';

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

  /**
   * A job's Workloads (slices and earlier ones): those labelled with its name and owned by its uid, and
   * the first-named one, which workloads written before the label lack.
   */
  async listWorkloads(namespace: string, job: string, uid: string, firstName: string): Promise<Workload[]> {
    const list = (await this.call(`list workloads of ${namespace}/${job}`, () =>
      this.custom.listNamespacedCustomObject({
        group: KUEUE_GROUP,
        version: KUEUE_VERSION,
        namespace,
        plural: 'workloads',
        labelSelector: `${LABEL_JOB_NAME}=${job}`,
      }),
    )) as { items?: Workload[] };
    const owned = (w: Workload) =>
      (w.metadata.ownerReferences as { uid?: string }[] | undefined)?.some((o) => o.uid === uid) ?? false;
    const items = (list.items ?? []).filter(owned);
    if (!items.some((w) => w.metadata.name === firstName)) {
      const first = await this.getWorkload(namespace, firstName);
      if (first !== undefined && owned(first)) items.push(first);
    }
    return items;
  }

  /** Sets the worker pod set's count (and minCount) at the resourceVersion the workload was read at. */
  async resizeWorkload(workload: Workload, count: number, minCount: number | undefined): Promise<void> {
    const { namespace, name, resourceVersion } = workload.metadata;
    // A merge patch replaces the whole list: every pod set goes out as read, the worker's resized.
    const podSets = workload.spec.podSets.map((set) => {
      if (set.name !== POD_SET) return set;
      const { minCount: _old, ...rest } = set;
      return { ...rest, count, ...(minCount === undefined ? {} : { minCount }) };
    });
    await this.call(`resize workload ${namespace}/${name}`, () =>
      this.custom.patchNamespacedCustomObject(
        {
          group: KUEUE_GROUP,
          version: KUEUE_VERSION,
          namespace,
          plural: 'workloads',
          name,
          body: { metadata: resourceVersion === undefined ? {} : { resourceVersion }, spec: { podSets } },
        },
        mergePatch,
      ),
    );
  }

  /** Deletes a workload, its finalizers first (as Kueue's job framework does for a stale one). */
  async deleteWorkload(workload: Workload): Promise<void> {
    const { namespace, name } = workload.metadata;
    const target = { group: KUEUE_GROUP, version: KUEUE_VERSION, namespace, plural: 'workloads', name };
    try {
      if ((workload.metadata.finalizers ?? []).length > 0)
        await this.call(`remove finalizers of workload ${namespace}/${name}`, () =>
          this.custom.patchNamespacedCustomObject(
            { ...target, body: { metadata: { finalizers: null } } },
            mergePatch,
          ),
        );
      await this.call(`delete workload ${namespace}/${name}`, () =>
        this.custom.deleteNamespacedCustomObject(target),
      );
    } catch (error) {
      if (!isNotFound(error)) throw error;
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
