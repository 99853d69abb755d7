/**
 * The TrainingJob controller: informers on TrainingJobs, worker Pods and Nodes feed a de-duplicating,
 * rate-limited work queue drained by a few concurrent reconcilers.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type V1Node,
  type V1Pod,
} from '@kubernetes/client-node';
import type { NatsConnection } from 'nats';
import type { Logger } from 'winston';
import { bucketOwner, LABEL_JOB_NAME, LABEL_ROLE, orphanedBuckets, ROLE_WORKER } from '../api/contract.ts';
import {
  API_GROUP,
  API_GROUP_VERSION,
  API_VERSION,
  KIND,
  PHASES,
  PLURAL,
  type TrainingJobStatus,
} from '../api/training-job.ts';
import { validateTrainingJob } from '../api/validate.ts';
import { Index, ResilientInformer } from './cache.ts';
import type { EventRecorder } from './events.ts';
import { bucketOwningJobs, remoteSiteJobs, siteOwner } from './federation-sites.ts';
import { goodputShares, type ShareJob } from './goodput-shares.ts';
import type { JobMetricInput } from './job-metrics.ts';
import type { KubeClient } from './kube.ts';
import { KUEUE_GROUP, KUEUE_VERSION } from './kueue.ts';
import type { KueueClient } from './kueue-client.ts';
import type { OperatorMetrics } from './metrics.ts';
import type { JobCredentialMinter } from './nats-credentials.ts';
import type { ControlPublisher, JobStateStore } from './nats-link.ts';
import type { CredentialRevoker } from './nats-revocation.ts';
import { nodeHealth } from './nodes.ts';
import type { PlanConfig } from './plan.ts';
import { ProgressTracker } from './progress.ts';
import { JobReconciler } from './reconciler.ts';
import { WorkQueue } from './work-queue.ts';

export interface ControllerOptions {
  readonly kubeConfig: KubeConfig;
  readonly kube: KubeClient;
  readonly publisher: ControlPublisher;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly config: PlanConfig;
  readonly log: Logger;
  readonly concurrency: number;
  /** Every job is reconciled at least this often, whatever the watches said. */
  readonly resyncMs?: number;
  /** The NATS connection for worker reports, once there is one. */
  readonly nats?: () => Promise<NatsConnection | undefined>;
  /** The workers' rendezvous state, deleted with the job; absent without NATS. */
  readonly jobState?: JobStateStore;
  /** Kueue's objects; absent: the kueue.x-k8s.io/queue-name label is ignored. */
  readonly kueue?: KueueClient;
  /**
   * Single-namespace mode: TrainingJobs and pods of this namespace only (RBAC may then be a Role
   * there); undefined watches every namespace.
   */
  readonly watchNamespace?: string;
  /** Mints each job its own NATS identity (see JobReconciler). */
  readonly credentials?: JobCredentialMinter;
  readonly revoker?: CredentialRevoker;
}

export const jobKey = (namespace: string, name: string) => `${namespace}/${name}`;

/** What of a job (besides its status) a reconcile depends on. */
function jobFingerprint(job: KubernetesObject): string {
  const m = job.metadata;
  return `${m?.uid}|${m?.generation}|${m?.deletionTimestamp ?? ''}`;
}

/**
 * managedFields are most of an object's size and the operator never reads them: dropping them from
 * the informer caches (as client-go's transforms do) keeps memory flat with thousands of objects.
 */
function slim<T extends KubernetesObject>(object: T): T {
  if (object.metadata?.managedFields !== undefined) delete object.metadata.managedFields;
  return object;
}

function splitKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return [key.slice(0, slash), key.slice(slash + 1)];
}

export class TrainingJobController {
  readonly queue: WorkQueue;
  private readonly jobs: ResilientInformer<KubernetesObject>;
  private readonly pods: ResilientInformer<V1Pod>;
  private readonly nodes: ResilientInformer<V1Node>;
  /** Kueue's Workloads, so that an admission or eviction reaches the job at once; absent without Kueue. */
  private readonly workloads: ResilientInformer<KubernetesObject> | undefined;
  private readonly podsByJob = new Index<V1Pod>((pod) => {
    const job = pod.metadata?.labels?.[LABEL_JOB_NAME];
    return job === undefined ? undefined : jobKey(pod.metadata?.namespace ?? '', job);
  });
  private readonly podsByNode = new Index<V1Pod>((pod) => pod.spec?.nodeName || undefined);
  private readonly nodeStates = new Map<string, string>();
  private readonly seenJobs = new Map<string, string>();
  private nodeMap = new Map<string, V1Node>();
  private readonly reconciler: JobReconciler;
  private readonly progress: ProgressTracker;
  /** While this replica leads: a standby follows the workers' reports but records no Events. */
  private leading = false;
  private following: Promise<NatsConnection | undefined> | undefined;

  constructor(private readonly options: ControllerOptions) {
    const { kubeConfig, log, metrics } = options;
    this.queue = new WorkQueue({
      baseDelayMs: 50,
      maxDelayMs: 60_000,
      observer: { added: () => metrics.queueAdds.inc(), waited: (s) => metrics.queueWait.observe(s) },
    });
    const custom = kubeConfig.makeApiClient(CustomObjectsApi);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const workerSelector = `${LABEL_ROLE}=${ROLE_WORKER}`;
    const ns = options.watchNamespace;
    this.jobs = customObjectInformer(
      kubeConfig,
      custom,
      'trainingjobs',
      { group: API_GROUP, version: API_VERSION, plural: PLURAL },
      ns,
      log,
    );
    this.pods = new ResilientInformer<V1Pod>(
      kubeConfig,
      'pods',
      ns === undefined ? '/api/v1/pods' : `/api/v1/namespaces/${ns}/pods`,
      () =>
        ns === undefined
          ? core.listPodForAllNamespaces({ labelSelector: workerSelector })
          : core.listNamespacedPod({ namespace: ns, labelSelector: workerSelector }),
      log,
      workerSelector,
    );
    this.nodes = new ResilientInformer<V1Node>(
      kubeConfig,
      'nodes',
      '/api/v1/nodes',
      () => core.listNode(),
      log,
    );

    this.workloads =
      options.kueue === undefined ? undefined : this.workloadInformer(kubeConfig, custom, ns, log);
    for (const informer of [this.jobs, this.pods, this.nodes] as ResilientInformer<KubernetesObject>[]) {
      informer.onChange((_event, object) => slim(object));
    }
    this.jobs.onChange((event, job) => {
      const key = jobKey(job.metadata?.namespace ?? '', job.metadata?.name ?? '');
      if (event === 'delete') {
        this.queue.forget(key);
        this.progress.forget(key);
        this.seenJobs.delete(key);
        this.queue.add(key);
        return;
      }
      // A write of the status alone (ours, mostly) changes nothing to decide on.
      const fingerprint = jobFingerprint(job);
      if (event === 'update' && this.seenJobs.get(key) === fingerprint) return;
      this.seenJobs.set(key, fingerprint);
      this.queue.add(key);
    });
    this.pods.onChange((event, pod) => {
      for (const key of this.podsByJob.apply(event, pod)) this.queue.add(key);
      this.podsByNode.apply(event, pod);
    });
    this.nodes.onChange((event, node) => {
      const name = node.metadata?.name ?? '';
      if (event === 'delete') this.nodeMap.delete(name);
      else this.nodeMap.set(name, node);
      // Node objects change every few seconds (heartbeats); only a change of health concerns the workers.
      const state = event === 'delete' ? 'missing' : nodeHealth(node).state;
      if (this.nodeStates.get(name) === state) return;
      if (event === 'delete') this.nodeStates.delete(name);
      else this.nodeStates.set(name, state);
      for (const pod of this.podsByNode.members(name)) {
        const job = pod.metadata?.labels?.[LABEL_JOB_NAME];
        if (job !== undefined) this.queue.add(jobKey(pod.metadata?.namespace ?? '', job));
      }
    });

    this.progress = new ProgressTracker(
      {
        // A site's report is its federated job's news.
        changed: (key, delayMs) => this.queue.addAfter(this.ownerKey(key), delayMs),
        rescaled: (key, event) => {
          if (!this.leading) return;
          const [namespace, name] = splitKey(key);
          const job = this.jobs.get(name, namespace);
          const uid = job?.metadata?.uid;
          // News of another incarnation's world is not this job's.
          if (uid === undefined || event.jobUid !== uid) return;
          void options.events.record(
            { namespace, name, uid },
            {
              type: 'Normal',
              reason: 'Rescaled',
              message: `generation ${event.generation}: ${event.worldSize} workers, global batch ${event.globalBatch}, learning rate ${event.learningRate.toPrecision(4)}, from step ${event.step} (${event.reason})`,
            },
          );
        },
      },
      log,
      {
        // Only jobs that exist are tracked: reports naming anything else are dropped and counted.
        liveUid: (key) => {
          const [namespace, name] = splitKey(key);
          return this.jobs.get(name, namespace)?.metadata?.uid ?? this.siteOwnerOf(namespace, name)?.uid;
        },
        // Before the first list, a job missing from the cache may exist (see TrackerBounds).
        knowsJobs: () => this.jobs.hasSynced,
      },
    );
    this.reconciler = new JobReconciler({
      kube: options.kube,
      getJob: (namespace, name) => this.jobs.get(name, namespace),
      podsOf: (namespace, name) => this.podsByJob.members(jobKey(namespace, name)),
      nodes: () => this.nodeMap,
      observations: (namespace, name) =>
        this.progress.observations(
          jobKey(namespace, name),
          this.jobs.get(name, namespace)?.metadata?.uid ?? '(unknown)',
        ),
      siteObservations: (namespace, siteJob, uid) =>
        this.progress.observations(jobKey(namespace, siteJob), uid),
      completionRecord: (namespace, name, uid, record, source) =>
        this.progress.receiveCompletionRecord(jobKey(namespace, name), uid, record, source),
      publisher: options.publisher,
      goodputShare: (namespace, name) => this.goodputShares().get(jobKey(namespace, name)),
      ...(options.jobState === undefined ? {} : { jobState: options.jobState }),
      ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
      ...(options.revoker === undefined ? {} : { revoker: options.revoker }),
      events: options.events,
      metrics: options.metrics,
      config: options.config,
      log,
      ...(options.kueue === undefined ? {} : { kueue: options.kueue }),
      workloadsWatched: () => this.workloads?.watching ?? false,
    });
  }

  /** The leader's division of the GPUs among competing goodput jobs, from the caches (goodput-shares.ts). */
  private goodputShares(): Map<string, number> {
    const jobs = this.jobs.list().flatMap((raw) => {
      const spec = (raw as { spec?: { autoscaling?: { policy?: string } } }).spec;
      if (spec?.autoscaling?.policy !== 'goodput') return [];
      const parsed = validateTrainingJob({ ...raw, status: undefined });
      if (!parsed.ok) return [];
      const status = (raw as { status?: TrainingJobStatus }).status;
      return [
        {
          ...parsed.job,
          metadata: { ...parsed.job.metadata, ...raw.metadata },
          ...(status === undefined ? {} : { status }),
        } as ShareJob,
      ];
    });
    return goodputShares(
      jobs,
      this.pods.list(),
      (pod) => {
        const job = pod.metadata?.labels?.[LABEL_JOB_NAME];
        return job === undefined ? undefined : jobKey(pod.metadata?.namespace ?? '', job);
      },
      this.nodeMap,
    );
  }

  /**
   * A watch on Kueue's Workloads that queues the TrainingJob owning each one that changes. A cluster
   * without Kueue answers 404: the informer retries slowly and the jobs poll meanwhile; it is not one of
   * the caches readiness waits for.
   */
  private workloadInformer(
    kubeConfig: KubeConfig,
    custom: CustomObjectsApi,
    ns: string | undefined,
    log: Logger,
  ): ResilientInformer<KubernetesObject> {
    const informer = customObjectInformer(
      kubeConfig,
      custom,
      'workloads',
      { group: KUEUE_GROUP, version: KUEUE_VERSION, plural: 'workloads' },
      ns,
      log,
      { firstRestartMs: 1000, maxRestartMs: 300_000 },
    );
    informer.onChange((_event, workload) => {
      slim(workload);
      for (const owner of workload.metadata?.ownerReferences ?? [])
        if (owner.kind === KIND && owner.apiVersion === API_GROUP_VERSION)
          this.queue.add(jobKey(workload.metadata?.namespace ?? '', owner.name));
    });
    return informer;
  }

  /** The federated job (by the jobs in the cache) whose site job `name` is, if it is one. */
  private siteOwnerOf(namespace: string, name: string): { name: string; uid: string } | undefined {
    // Before the first list the cache knows no job: nothing to look through (and nothing may throw
    // into the tracker's receive loop).
    if (!this.jobs.hasSynced) return undefined;
    try {
      return siteOwner(
        name,
        this.jobs.list().filter((j) => j.metadata?.namespace === namespace),
      );
    } catch {
      return undefined;
    }
  }

  /** The key of the job a report under `key` concerns: a site job's is its federated job's. */
  private ownerKey(key: string): string {
    const [namespace, name] = splitKey(key);
    if (this.jobs.get(name, namespace) !== undefined) return key;
    const owner = this.siteOwnerOf(namespace, name);
    return owner === undefined ? key : jobKey(namespace, owner.name);
  }

  /**
   * Starts the informers; resolves once each made its first attempt (a failed list is retried in the
   * background). Every replica runs them, leader or standby, so that a standby is ready to take over.
   */
  async startCaches(): Promise<void> {
    this.followWorkers();
    // What was kept of jobs the cache could not yet vouch for goes once it can.
    void this.jobs.waitForSync(new AbortController().signal).then(() => this.progress.prune());
    await Promise.all([this.nodes.start(), this.pods.start(), this.jobs.start(), this.workloads?.start()]);
  }

  /**
   * The workers' reports over NATS, followed by every replica from its start, as the informers are:
   * core NATS keeps nothing, so a completion published while the leader was changing (the old one
   * gone with the API server, the new one not yet elected) was lost, and the job stayed Running with
   * the last progress (chaos seed 3). In the background: NATS being down holds nothing up, and the
   * client keeps the subscriptions across reconnects.
   */
  private followWorkers(): Promise<NatsConnection | undefined> {
    this.following ??= (this.options.nats?.() ?? Promise.resolve(undefined)).then(
      (connection) => {
        if (connection !== undefined) {
          this.progress.subscribe(connection, this.options.watchNamespace);
          // Said once the server has the subscriptions: a report published after the line reaches
          // us. Nothing waits for it (a NATS server that is down delays only the line).
          void connection.flush().then(
            () => this.options.log.info('following worker reports'),
            () => this.options.log.info('following worker reports (once NATS answers)'),
          );
        }
        return connection;
      },
      (error: unknown) => {
        this.options.log.warn('not following worker progress: no NATS connection', {
          error: (error as Error).message,
        });
        this.following = undefined;
        return undefined;
      },
    );
    return this.following;
  }

  async stopCaches(): Promise<void> {
    await Promise.all([this.jobs.stop(), this.pods.stop(), this.nodes.stop(), this.workloads?.stop()]);
  }

  /** Each informer and whether its cache has synced (for /readyz). */
  cacheStatus(): { name: string; synced: boolean }[] {
    return [this.jobs, this.pods, this.nodes].map((i) => ({ name: i.name, synced: i.hasSynced }));
  }

  /**
   * Runs until `signal` aborts: waits for the caches (started by `startCaches`) to sync, then
   * reconciles with `concurrency` workers.
   */
  async run(signal: AbortSignal): Promise<void> {
    const { log, metrics } = this.options;
    // Nothing is reconciled before every cache has synced: a job reconciled before its pods are known
    // would create them again.
    await Promise.all([this.nodes, this.pods, this.jobs].map((i) => i.waitForSync(signal)));
    if (signal.aborted) return;
    log.info('caches synced', {
      jobs: this.jobs.list().length,
      pods: this.pods.list().length,
      nodes: this.nodeMap.size,
    });
    // Events that arrived while standing by are queued already; a job whose events came before a
    // handler could see them is not missed either.
    for (const job of this.jobs.list())
      this.queue.add(jobKey(job.metadata?.namespace ?? '', job.metadata?.name ?? ''));
    this.leading = true;
    signal.addEventListener('abort', () => {
      this.leading = false;
    });
    // In the background: NATS being down must not hold up reconciling.
    void this.followWorkers().then(async (connection) => {
      if (connection !== undefined && !signal.aborted) await this.sweep();
    });
    metrics.followJobs(() => this.jobMetricInputs());
    const gauges = setInterval(() => this.updateGauges(), 5000);
    gauges.unref();
    const resync = setInterval(() => {
      for (const job of this.jobs.list())
        this.queue.add(jobKey(job.metadata?.namespace ?? '', job.metadata?.name ?? ''));
      void this.sweep();
    }, this.options.resyncMs ?? 300_000);
    resync.unref();
    signal.addEventListener('abort', () => this.queue.shutdown(), { once: true });
    const workers = Array.from({ length: this.options.concurrency }, () => this.work());
    this.updateGauges();
    await Promise.all(workers);
    clearInterval(gauges);
    clearInterval(resync);
    await this.progress[Symbol.asyncDispose]();
    metrics.queueDepth.set(0);
    log.info('controller stopped');
  }

  /**
   * Deletes the rendezvous buckets no live job owns: what a deletion the operator did not see (it was
   * down, or NATS was) or a pod started after its job was deleted left behind. Leader only, after the
   * caches synced: a job missing from them is gone.
   */
  private async sweep(): Promise<void> {
    const store = this.options.jobState;
    if (store === undefined) return;
    const { log } = this.options;
    try {
      const buckets = await store.buckets();
      const live = bucketOwningJobs(this.jobs.list());
      // In single-namespace mode the jobs of other namespaces are not ours to judge.
      const ns = this.options.watchNamespace;
      const elsewhere = remoteSiteJobs(this.jobs.list());
      const ours = buckets.filter((b) => {
        const owner = bucketOwner(b);
        if (owner !== undefined && elsewhere.has(`${owner.namespace}/${owner.job}`)) return false;
        return ns === undefined || owner?.namespace === ns;
      });
      for (const bucket of orphanedBuckets(ours, live)) {
        // A job deleted while we did not look: its bucket is what is left to name its identity by.
        const uid = bucketOwner(bucket)?.uid;
        if (uid !== undefined) await this.options.revoker?.revoke([uid]);
        await store.deleteBucket(bucket);
      }
    } catch (error) {
      log.warn('could not sweep rendezvous buckets; trying again later', { error: (error as Error).message });
    }
  }

  /** Each job in the cache with what its current incarnation's workers reported. */
  private jobMetricInputs(): JobMetricInput[] {
    return this.jobs.list().map((job) => {
      const namespace = job.metadata?.namespace ?? '';
      const name = job.metadata?.name ?? '';
      const seen = this.progress.observations(jobKey(namespace, name), job.metadata?.uid ?? '(unknown)');
      return {
        namespace,
        name,
        status: (job as { status?: TrainingJobStatus }).status,
        progress: seen?.progress,
        useful: seen?.useful,
        completed: seen?.completed,
      };
    });
  }

  private updateGauges(): void {
    const counts = new Map<string, number>(PHASES.map((p) => [p, 0]));
    for (const job of this.jobs.list()) {
      const phase = (job as { status?: { phase?: string } }).status?.phase ?? 'Pending';
      counts.set(phase, (counts.get(phase) ?? 0) + 1);
    }
    for (const [phase, n] of counts) this.options.metrics.jobsByPhase.set({ phase }, n);
    this.options.metrics.queueDepth.set(this.queue.length);
  }

  private async work(): Promise<void> {
    const { log, metrics } = this.options;
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const [namespace, name] = splitKey(key);
      const end = metrics.reconcileDuration.startTimer();
      let result: Awaited<ReturnType<JobReconciler['reconcile']>>;
      try {
        result = await this.reconciler.reconcile(namespace, name);
      } catch (error) {
        result = { kind: 'error', error: error instanceof Error ? error : new Error(String(error)) };
      }
      const seconds = end({ result: result.kind });
      metrics.reconcileQuantiles.observe(seconds);
      switch (result.kind) {
        case 'done':
          this.queue.forget(key);
          break;
        case 'requeue':
          this.queue.forget(key);
          this.queue.addAfter(key, result.afterMs);
          break;
        case 'error': {
          const delay = this.queue.addRateLimited(key);
          metrics.queueRetries.inc();
          log.warn('reconcile failed; retrying', {
            namespace,
            job: name,
            error: result.error.message,
            retryInMs: delay,
          });
          break;
        }
        case 'terminal':
          this.queue.forget(key);
          log.error('reconcile failed for good', { namespace, job: name, error: result.error.message });
          break;
      }
      this.queue.done(key);
      metrics.queueDepth.set(this.queue.length);
    }
  }
}

/** An informer on a custom resource, cluster-wide or in the one namespace the operator watches. */
function customObjectInformer(
  kubeConfig: KubeConfig,
  custom: CustomObjectsApi,
  name: string,
  crd: { group: string; version: string; plural: string },
  ns: string | undefined,
  log: Logger,
  options?: ConstructorParameters<typeof ResilientInformer>[6],
): ResilientInformer<KubernetesObject> {
  const { group, version, plural } = crd;
  return new ResilientInformer<KubernetesObject>(
    kubeConfig,
    name,
    `/apis/${group}/${version}${ns === undefined ? '' : `/namespaces/${ns}`}/${plural}`,
    async () =>
      (await (ns === undefined
        ? custom.listClusterCustomObject(crd)
        : custom.listNamespacedCustomObject({
            ...crd,
            namespace: ns,
          }))) as KubernetesListObject<KubernetesObject>,
    log,
    undefined,
    options,
  );
}
