/**
 * The I/O shell around `plan`: read the job, its pods and the nodes from the informer caches, decide,
 * write the status (optimistically locked), then carry out the decision. Idempotent: running it twice
 * on the same state does the same thing once.
 */
import type { KubernetesObject, V1Node, V1Pod, V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'winston';
import {
  ANNOTATION_SLOW,
  AUTOSCALING_KEY,
  type AutoscalingRecord,
  COMPLETED_KEY,
  encodeMessage,
  LABEL_JOB_NAME,
  rendezvousBucket,
} from '../api/contract.ts';
import { federationBucket, newSiteSigningKey, siteJobName } from '../api/federation.ts';
import { isConflict, KubeApiError } from '../api/kube-errors.ts';
import type { TrainingJob, TrainingJobStatus } from '../api/training-job.ts';
import { validateTrainingJob } from '../api/validate.ts';
import type { EventRecorder, JobRef } from './events.ts';
import {
  LABEL_FEDERATION_SITE,
  localSites,
  SITE_KEY_FILE,
  SITE_PUBLIC_KEY,
  siteKeySecretName,
} from './federation-sites.ts';
import type { KubeClient } from './kube.ts';
import {
  assignedFlavors,
  buildWorkload,
  finishedStatus,
  type KueueGate,
  kueueGate,
  queueNameOf,
  type ResourceFlavor,
  releasedQuotaStatus,
  type Workload,
  withAdmission,
  workloadName,
} from './kueue.ts';
import type { KueueClient } from './kueue-client.ts';
import { planWorkloads, type WorkloadAction } from './kueue-slices.ts';
import type { OperatorMetrics } from './metrics.ts';
import { type JobCredentialMinter, siteIdentity } from './nats-credentials.ts';
import type { ControlPublisher, JobStateStore } from './nats-link.ts';
import type { CredentialRevoker } from './nats-revocation.ts';
import {
  type Plan,
  type PlanConfig,
  type PlanInput,
  plan,
  planInvalidSpec,
  wantsCompletionRecord,
} from './plan.ts';
import { buildWorkerPod, jobNetworkPolicy, type OwnedJob, ownerReference } from './pod-builder.ts';
import { hasAccountingFinalizer } from './pods.ts';
import type { JobObservations } from './progress.ts';

export type ReconcileResult =
  | { readonly kind: 'done' }
  | { readonly kind: 'requeue'; readonly afterMs: number }
  | { readonly kind: 'error'; readonly error: Error }
  | { readonly kind: 'terminal'; readonly error: Error };

export interface ReconcilerDeps {
  readonly kube: KubeClient;
  /** Mints each job its NATS identity; absent when NATS runs without per-job authentication. */
  readonly credentials?: JobCredentialMinter;
  /** Takes a job's NATS identity away when it ends (finished or deleted); absent: identities outlive jobs. */
  readonly revoker?: CredentialRevoker;
  readonly getJob: (namespace: string, name: string) => KubernetesObject | undefined;
  readonly podsOf: (namespace: string, name: string) => V1Pod[];
  readonly nodes: () => ReadonlyMap<string, V1Node>;
  readonly observations?: (namespace: string, name: string) => JobObservations | undefined;
  /** spec.federation: what the workers of site job `siteJob` (`<job>-<site>`) of incarnation `uid` reported. */
  readonly siteObservations?: (
    namespace: string,
    siteJob: string,
    uid: string,
  ) => JobObservations | undefined;
  /** Takes a completion record read from the job's bucket as its `completed` message (progress.ts). */
  readonly completionRecord?: (
    namespace: string,
    name: string,
    uid: string,
    record: Uint8Array,
    source: string,
  ) => void;
  readonly publisher: ControlPublisher;
  /** A goodput job's share of the cluster's workers (goodput-shares.ts); undefined: it decides alone. */
  readonly goodputShare?: (namespace: string, name: string) => number | undefined;
  /** Where the workers keep rendezvous state; absent: no NATS, nothing to clean up. */
  readonly jobState?: JobStateStore;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly config: PlanConfig;
  readonly log: Logger;
  readonly now?: () => Date;
  /** Kueue's Workloads and ResourceFlavors; absent: the queue-name label is ignored. */
  readonly kueue?: Pick<
    KueueClient,
    | 'listWorkloads'
    | 'createWorkload'
    | 'resizeWorkload'
    | 'deleteWorkload'
    | 'getFlavor'
    | 'patchWorkloadStatus'
    | 'priorityOf'
  >;
  /** Whether a watch on Workloads is up (their changes requeue the job): no need to poll them then. */
  readonly workloadsWatched?: () => boolean;
}

/** How often a job held or admitted by Kueue looks at its Workload again while no watch is up. */
const KUEUE_POLL_MS = 1000;

/** How soon a pass that could not read a finished job's completion record (NATS away) tries again. */
const RECORD_RETRY_MS = 5000;

interface Admission {
  readonly job: OwnedJob;
  readonly queue?: NonNullable<PlanInput['queue']>;
  readonly workload?: Workload;
}

/** JSON with sorted keys, so two statuses compare equal whatever order their fields were written in. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>)
        .filter(([, x]) => x !== undefined)
        .sort(([a], [b]) => a.localeCompare(b)),
    );
  });
}

export function statusChanged(before: TrainingJobStatus | undefined, after: TrainingJobStatus): boolean {
  return canonical(before ?? {}) !== canonical(after);
}

function errorOf(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** A new Ed25519 identity key for `site`, as the Secret its pods mount (the job owns it). */
function siteKeySecret(job: OwnedJob, site: string): V1Secret {
  const key = newSiteSigningKey();
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name: siteKeySecretName(job.metadata.name, site),
      namespace: job.metadata.namespace,
      labels: { [LABEL_JOB_NAME]: job.metadata.name, [LABEL_FEDERATION_SITE]: site },
      ownerReferences: [ownerReference(job)],
    },
    stringData: { [SITE_KEY_FILE]: key.privatePem, [SITE_PUBLIC_KEY]: key.public },
  };
}

/** The NATS identities of a job incarnation: its own and, federated, each site's. */
function identities(uid: string, sites: readonly string[]): string[] {
  return [uid, ...sites.map((s) => siteIdentity(uid, s))];
}

/** The sites a (deleted) job's pods name: all that is left to know a federated job's sites by. */
function sitesOfPods(pods: readonly V1Pod[]): string[] {
  const sites = pods.map((p) => p.metadata?.labels?.[LABEL_FEDERATION_SITE]);
  return [...new Set(sites.filter((s): s is string => s !== undefined))].sort();
}

export class JobReconciler {
  /** Claims known to exist, by job uid, so a scale-up does not try to create the claim every time. */
  private readonly claims = new Set<string>();
  /** Jobs (by uid) whose NATS credentials Secret exists. */
  private readonly minted = new Set<string>();
  /** Federated jobs (by uid) whose site key Secrets exist. */
  private readonly keyed = new Set<string>();
  /** The revision of the chosen global batch written to each job's bucket, by job uid. */
  private readonly batchWritten = new Map<string, number>();
  /** Jobs (by uid) whose NetworkPolicy exists. */
  private readonly fenced = new Set<string>();
  /** Why the API server refused a job's worker pod, by job uid, until the job is gone. */
  private readonly rejected = new Map<string, string>();
  /** Jobs (by uid) whose completion record this replica read (found or not) since it began leading. */
  private readonly recordsRead = new Set<string>();
  /** The uid each job had when last reconciled, by namespace/name: whose state to delete once it is gone. */
  private readonly known = new Map<string, string>();

  constructor(private readonly deps: ReconcilerDeps) {}

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  async reconcile(namespace: string, name: string): Promise<ReconcileResult> {
    const key = `${namespace}/${name}`;
    const raw = this.deps.getJob(namespace, name);
    if (raw === undefined) {
      // The job is gone: its pods go with it (garbage collector); our finalizer must not hold them.
      const left = this.deps.podsOf(namespace, name);
      const orphans = left.filter(hasAccountingFinalizer);
      await Promise.all(orphans.map((p) => this.deps.kube.releasePod(namespace, p)));
      // So does its rendezvous state: of the incarnation we saw, and of any its pods still name.
      const uids = new Set(left.flatMap((p) => (p.metadata?.ownerReferences ?? []).map((o) => o.uid)));
      const seen = this.known.get(key);
      if (seen !== undefined) uids.add(seen);
      try {
        for (const uid of uids) await this.deleteState(namespace, name, uid, sitesOfPods(left));
      } catch (error) {
        return { kind: 'error', error: errorOf(error) };
      }
      this.known.delete(key);
      for (const uid of uids) {
        this.rejected.delete(uid);
        this.claims.delete(uid);
        this.minted.delete(uid);
        this.keyed.delete(uid);
        this.fenced.delete(uid);
        this.batchWritten.delete(uid);
        this.recordsRead.delete(uid);
      }
      return { kind: 'done' };
    }
    const log = this.deps.log.child({ namespace, job: name });
    const metadata = raw.metadata ?? {};
    const uid = metadata.uid ?? '';
    const ref: JobRef = { namespace, name, uid };
    const pods = this.deps
      .podsOf(namespace, name)
      .filter((p) => p.metadata?.ownerReferences?.some((o) => o.uid === uid));
    const previous = this.known.get(key);
    if (previous !== undefined && previous !== uid) {
      // Deleted and created again before we looked: the first incarnation's state goes now (or, if
      // NATS cannot be reached, with the next sweep), and is never read by the second.
      await this.deleteState(namespace, name, previous).catch((error: unknown) =>
        log.warn('could not delete the rendezvous state of the previous incarnation', {
          uid: previous,
          error: errorOf(error).message,
        }),
      );
    }
    this.known.set(key, uid);

    if (metadata.deletionTimestamp !== undefined) {
      // The garbage collector deletes the pods; our finalizer must not hold them.
      await Promise.all(
        pods.filter(hasAccountingFinalizer).map((p) => this.deps.kube.releasePod(namespace, p)),
      );
      try {
        await this.deleteState(namespace, name, uid, sitesOfPods(pods));
      } catch (error) {
        return { kind: 'error', error: errorOf(error) };
      }
      return { kind: 'done' };
    }

    const rawStatus = (raw as { status?: TrainingJobStatus }).status;
    const resourceVersion = metadata.resourceVersion ?? '';
    const validation = validateTrainingJob({ ...raw, status: undefined });
    if (!validation.ok) {
      const reason = validation.problems.map((p) => `${p.path}: ${p.message}`).join('; ');
      const decision = planInvalidSpec({ status: rawStatus, reason, now: this.now() });
      if (decision.events.length > 0) log.warn('invalid TrainingJob', { reason });
      const written = await this.writeStatus(ref, resourceVersion, rawStatus, decision, log);
      if (written !== undefined) return written;
      for (const event of decision.events) await this.deps.events.record(ref, event);
      return { kind: 'terminal', error: new Error(`invalid spec: ${reason}`) };
    }
    const validJob = {
      ...(validation.job as TrainingJob),
      metadata: { ...metadata, name, namespace, uid },
      ...(rawStatus === undefined ? {} : { status: rawStatus }),
    } as OwnedJob;

    let admission: Admission;
    try {
      admission = await this.admission(validJob, pods.length, log);
    } catch (error) {
      return { kind: 'error', error: errorOf(error) };
    }
    const { job, queue, workload } = admission;
    const recordUnread = !(await this.readCompletionRecord(job, pods, log));
    const observations = this.deps.observations?.(namespace, name);
    const siteNames = localSites(job.spec).map((s) => s.name);
    const siteObservations =
      job.spec.federation === undefined
        ? undefined
        : siteNames.map((site) => this.deps.siteObservations?.(namespace, siteJobName(name, site), uid));
    const podRejected = this.rejected.get(uid);
    const share =
      job.spec.autoscaling.policy === 'goodput' ? this.deps.goodputShare?.(namespace, name) : undefined;
    const decision = plan({
      ...(share === undefined ? {} : { share }),
      job,
      ...(queue === undefined ? {} : { queue }),
      pods,
      nodes: this.deps.nodes(),
      claimExists: this.claims.has(uid),
      now: this.now(),
      config: this.deps.config,
      ...(observations === undefined ? {} : { observations }),
      ...(siteObservations === undefined ? {} : { siteObservations }),
      ...(podRejected === undefined ? {} : { podRejected }),
    });

    // Creating pods does not depend on the status write (their names are deterministic, so a create
    // on a stale view hits AlreadyExists), so it runs beside it; everything that counts or removes
    // workers waits for the status to be written.
    const creating = this.create(ref, decision, log, job);
    creating.catch(() => undefined);
    const written = await this.writeStatus(ref, resourceVersion, rawStatus, decision, log);
    if (written !== undefined) {
      await creating.catch(() => undefined);
      return written;
    }
    // Failed now, for good: the refusal has done its work.
    if (podRejected !== undefined && decision.status.phase === 'Failed') this.rejected.delete(uid);
    this.countMetrics(rawStatus, decision.status);
    try {
      await this.execute(ref, decision, log, creating, siteNames);
    } catch (error) {
      return { kind: 'error', error: errorOf(error) };
    }
    // A pod refused in this pass fails the job in the next one, on the status this pass wrote.
    if (podRejected === undefined && this.rejected.has(uid)) return { kind: 'requeue', afterMs: 0 };
    const finished = decision.status.phase === 'Succeeded' || decision.status.phase === 'Failed';
    // A finished job's workers have reported their end: nothing of theirs needs NATS any more.
    if (finished && job.spec.nats?.credentialsSecret === undefined && this.deps.revoker !== undefined) {
      try {
        await this.deps.revoker.revoke(identities(uid, siteNames));
      } catch (error) {
        return { kind: 'error', error: errorOf(error) };
      }
    }
    if (workload !== undefined && queue !== undefined) {
      try {
        await this.tellKueue(workload, queue, pods.length, decision, log);
      } catch (error) {
        return { kind: 'error', error: errorOf(error) };
      }
    }
    const poll = queue !== undefined && !finished && this.deps.workloadsWatched?.() !== true;
    const polled = poll
      ? Math.min(decision.requeueAfterMs ?? KUEUE_POLL_MS, KUEUE_POLL_MS)
      : decision.requeueAfterMs;
    // A finished job is not looked at again by itself: the record it still lacks would never come.
    const afterMs = recordUnread ? Math.min(polled ?? RECORD_RETRY_MS, RECORD_RETRY_MS) : polled;
    return afterMs === undefined ? { kind: 'done' } : { kind: 'requeue', afterMs };
  }

  /**
   * The one status write of a pass, with the resourceVersion the decision was read at: undefined when
   * it is written (or nothing changed), else what the pass returns.
   */
  private async writeStatus(
    ref: JobRef,
    resourceVersion: string,
    before: TrainingJobStatus | undefined,
    decision: Plan,
    log: Logger,
  ): Promise<ReconcileResult | undefined> {
    if (!statusChanged(before, decision.status)) return undefined;
    try {
      await this.deps.kube.patchStatus(ref.namespace, ref.name, resourceVersion, before, decision.status);
      return undefined;
    } catch (error) {
      if (isConflict(error)) {
        // Our view of the job was stale: decide again on the fresh object, and do nothing on the stale one.
        log.debug('status conflict; retrying with the fresh object');
        return { kind: 'requeue', afterMs: 100 };
      }
      return { kind: 'error', error: errorOf(error) };
    }
  }

  private countMetrics(before: TrainingJobStatus | undefined, after: TrainingJobStatus): void {
    const preempted = (after.preemptions ?? 0) - (before?.preemptions ?? 0);
    const failed = (after.restarts ?? 0) - (before?.restarts ?? 0);
    if (preempted > 0) this.deps.metrics.preemptions.inc(preempted);
    if (failed > 0) this.deps.metrics.failures.inc(failed);
    const slow = new Set(before?.stragglers ?? []);
    const newlySlow = (after.stragglers ?? []).filter((w) => !slow.has(w)).length;
    if (newlySlow > 0) this.deps.metrics.stragglers.inc(newlySlow);
  }

  /**
   * The job's own NATS identity, before its first pods (they mount it): minted once per incarnation,
   * owned by the job, so it goes when the job goes. A job that names its own Secret needs none,
   * unless the operator's NATS takes TLS: then the Secret carries the TLS material alone.
   */
  private async ensureCredentials(job: OwnedJob, decision: Plan, log: Logger): Promise<void> {
    const minter = this.deps.credentials;
    const uid = job.metadata.uid;
    if (minter === undefined || decision.createPods.length === 0 || this.minted.has(uid)) return;
    const mint = minter.mints && job.spec.nats?.credentialsSecret === undefined;
    const tls = minter.carriesTls && job.spec.nats?.url === undefined;
    if (!mint && !tls) return;
    // A federated job's sites each get an identity of their own: no site reads another's subjects.
    const secrets =
      job.spec.federation === undefined
        ? [await minter.secretFor(job, mint)]
        : await Promise.all(localSites(job.spec).map((s) => minter.siteSecretFor(job, s.name, mint)));
    for (const secret of secrets) await this.deps.kube.createSecret(job.metadata.namespace, secret);
    this.minted.add(uid);
    log.info('NATS credentials ready', { secrets: secrets.map((s) => s.metadata?.name) });
  }

  /**
   * Secure aggregation: each site's Ed25519 identity key, made here once per incarnation, in a Secret
   * of the site's own (owned by the job) before its first pods. A Secret that exists is kept: it holds
   * the pair its public half came from. A site that pins its key brings its own Secret.
   */
  private async ensureFederationKeys(job: OwnedJob, decision: Plan, log: Logger): Promise<void> {
    const federation = job.spec.federation;
    const uid = job.metadata.uid;
    if (federation === undefined || !federation.secureAggregation.enabled) return;
    if (decision.createPods.length === 0 || this.keyed.has(uid)) return;
    const made: string[] = [];
    for (const site of localSites(job.spec)) {
      if (site.signingKey !== undefined) continue;
      const secret = siteKeySecret(job, site.name);
      await this.deps.kube.createSecret(job.metadata.namespace, secret);
      made.push(secret.metadata?.name ?? '');
    }
    this.keyed.add(uid);
    log.info('federation site keys ready', { secrets: made });
  }

  /** The job's own NetworkPolicy (only its workers reach its workers), before its first pods. */
  private async ensureNetworkPolicy(job: OwnedJob, decision: Plan): Promise<void> {
    const uid = job.metadata.uid;
    if (this.deps.config.jobNetworkPolicies !== true || decision.createPods.length === 0) return;
    if (this.fenced.has(uid)) return;
    await this.deps.kube.createNetworkPolicy(job.metadata.namespace, jobNetworkPolicy(job));
    this.fenced.add(uid);
  }

  /**
   * Creates the checkpoint claim and the new workers; a pod the API server refuses fails the job.
   * Resolves with how many pods this pass created (not those that existed already).
   */
  private async create(ref: JobRef, decision: Plan, log: Logger, job: OwnedJob): Promise<number> {
    const { kube, metrics } = this.deps;
    const { namespace } = ref;
    if (decision.createClaim !== undefined) {
      await kube.createClaim(namespace, decision.createClaim);
      this.claims.add(ref.uid);
    }
    await this.ensureCredentials(job, decision, log);
    await this.ensureFederationKeys(job, decision, log);
    await this.ensureNetworkPolicy(job, decision);
    let count = 0;
    const created = await Promise.allSettled(
      decision.createPods.map(async (pod) => {
        const result = await kube.createPod(namespace, pod);
        if (result === 'created') {
          metrics.podsCreated.inc();
          count++;
          log.info('created worker', { pod: pod.metadata?.name });
        }
      }),
    );
    const failure = created.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure === undefined) return count;
    const error = failure.reason as unknown;
    if (error instanceof KubeApiError && error.status === 422) {
      // The API server refuses the pod we built from this spec: retrying cannot help. The job fails in
      // the next pass, written on the status this pass wrote rather than on the one it read.
      log.warn('worker pod rejected', { error: error.message });
      this.rejected.set(ref.uid, error.message);
      return count;
    }
    await this.deps.events.record(ref, {
      type: 'Warning',
      reason: 'FailedCreateWorker',
      message: errorOf(error).message,
    });
    throw error;
  }

  /** Everything that must follow the status write: counting is durable before a worker is let go. */
  private async execute(
    ref: JobRef,
    decision: Plan,
    log: Logger,
    creating: Promise<number>,
    sites: readonly string[],
  ): Promise<void> {
    const { kube, publisher, metrics } = this.deps;
    const { namespace } = ref;
    const byName = new Map(this.deps.podsOf(namespace, ref.name).map((p) => [p.metadata?.name ?? '', p]));
    // A federated job's workers listen on their site job's control subject.
    const groups = sites.length === 0 ? [ref.name] : sites.map((s) => siteJobName(ref.name, s));
    for (const message of decision.publish)
      for (const group of groups) publisher.publish(namespace, group, ref.uid, message);
    await this.publishChosenBatch(ref, decision, log);
    await Promise.all(
      decision.releasePods.map(async (name) => {
        const pod = byName.get(name);
        if (pod !== undefined) await kube.releasePod(namespace, pod);
      }),
    );
    await Promise.all(decision.markLeaving.map((m) => kube.markLeaving(namespace, m.name, m.reason)));
    await Promise.all(decision.markSlowNodes.map((n) => kube.markNode(n.name, ANNOTATION_SLOW, n.reason)));
    metrics.leaveRequests.inc(decision.markLeaving.length);
    await Promise.all(
      decision.deletePods.map(async (d) => {
        await kube.deletePod(namespace, d.name, d.force);
        metrics.podsDeleted.inc();
        log.info('deleted worker', { pod: d.name, reason: d.reason, force: d.force });
      }),
    );
    // The events of this pass are recorded even when a create failed: the status that counted them
    // is written, so a retry would not plan them again.
    const created = await creating.then(
      (count) => ({ count, error: undefined }),
      (error: unknown) => ({ count: 0, error }),
    );
    for (const event of decision.events) {
      // A pass on a stale cache plans pods that exist already (AlreadyExists): no news for the user.
      if (event.reason === 'WorkersCreated' && created.count === 0) continue;
      await this.deps.events.record(ref, event);
    }
    if (created.error !== undefined) throw created.error;
    if (decision.deleteJob) {
      await kube.deleteJob(namespace, ref.name);
      log.info('deleted finished job after ttlSecondsAfterFinished');
      await this.deleteState(namespace, ref.name, ref.uid, sites);
    }
  }

  /**
   * The workers' completion record, when plan.ts `wantsCompletionRecord` asks for it, handed to the
   * progress tracker (which validates it) before this pass plans. NATS being down holds nothing up:
   * the job is planned without it, and false asks for a pass that tries again.
   */
  private async readCompletionRecord(job: OwnedJob, pods: V1Pod[], log: Logger): Promise<boolean> {
    const { jobState, completionRecord } = this.deps;
    // A federated job's sites keep no record in a bucket of the job's own (theirs are the site jobs'):
    // its completion is every site's pods or reports.
    if (jobState === undefined || completionRecord === undefined || job.spec.federation !== undefined)
      return true;
    const { namespace, name, uid } = job.metadata;
    const observations = this.deps.observations?.(namespace, name);
    const read = this.recordsRead.has(uid);
    if (!wantsCompletionRecord({ job, pods, nodes: this.deps.nodes(), observations, read })) return true;
    try {
      const bucket = rendezvousBucket(namespace, name, uid);
      const record = await jobState.getRecord(bucket, COMPLETED_KEY);
      this.recordsRead.add(uid);
      if (record === undefined) return true;
      completionRecord(namespace, name, uid, record, `${bucket}/${COMPLETED_KEY}`);
      log.info('read the completion record the workers left', { bucket });
    } catch (error) {
      log.warn('could not read the completion record; trying again shortly', {
        error: errorOf(error).message,
      });
      return false;
    }
    return true;
  }

  /**
   * The goodput policy's chosen global batch, into the job's rendezvous bucket (key `autoscaling`),
   * where the workers read it and the next world trains at it. Written once per revision and
   * incarnation; a failed write is tried again on the next pass (the status still holds the choice).
   */
  private async publishChosenBatch(ref: JobRef, decision: Plan, log: Logger): Promise<void> {
    const autoscaling = decision.status.autoscaling;
    const chosen = autoscaling?.chosenBatch;
    const store = this.deps.jobState;
    // A finished job's bucket goes (deleteState): writing would bring it back.
    const finished = decision.status.phase === 'Succeeded' || decision.status.phase === 'Failed';
    if (chosen === undefined || store === undefined || finished) return;
    if (this.batchWritten.get(ref.uid) === chosen.revision) return;
    const record: AutoscalingRecord = {
      jobUid: ref.uid,
      globalBatch: chosen.globalBatch,
      revision: chosen.revision,
      ...(autoscaling === undefined ? {} : { replicas: autoscaling.replicas }),
    };
    try {
      await store.putRecord(
        rendezvousBucket(ref.namespace, ref.name, ref.uid),
        AUTOSCALING_KEY,
        encodeMessage(record),
      );
      this.batchWritten.set(ref.uid, chosen.revision);
      log.info('published the chosen global batch', {
        globalBatch: chosen.globalBatch,
        revision: chosen.revision,
      });
    } catch (error) {
      log.warn('could not publish the chosen global batch; trying again next pass', {
        error: (error as Error).message,
      });
    }
  }

  /**
   * A job labelled kueue.x-k8s.io/queue-name runs only while its Workload is admitted: the Workload is
   * created on first sight and follows the job's scale (kueue-slices.ts), and the admission's flavors
   * shape the workers (node labels, tolerations).
   */
  private async admission(job: OwnedJob, workersLeft: number, log: Logger): Promise<Admission> {
    const kueue = this.deps.kueue;
    const queueName = queueNameOf(job);
    if (kueue === undefined || queueName === undefined) return { job };
    const { namespace, name, uid } = job.metadata;
    const workloads = await kueue.listWorkloads(namespace, name, uid, workloadName(name));
    const slices = planWorkloads(job, workloads, workersLeft);
    await this.applyWorkloadAction(job, queueName, slices.action, log);
    const workload = slices.current;
    const flavors = await Promise.all(assignedFlavors(workload).map((f) => kueue.getFlavor(f)));
    const gate: KueueGate =
      slices.requeue === undefined
        ? kueueGate(
            workload,
            flavors.filter((f): f is ResourceFlavor => f !== undefined),
          )
        : { admitted: false, reason: 'QueuedByKueue', message: slices.requeue };
    const queue = gate.admitted
      ? { admitted: true as const, count: gate.count }
      : { admitted: false as const, reason: gate.reason, message: gate.message };
    return { job: withAdmission(job, gate), queue, ...(workload === undefined ? {} : { workload }) };
  }

  /** Carries out what planWorkloads decided for the job's Workloads. */
  private async applyWorkloadAction(
    job: OwnedJob,
    queueName: string,
    action: WorkloadAction,
    log: Logger,
  ): Promise<void> {
    const kueue = this.deps.kueue;
    if (kueue === undefined) return;
    switch (action.kind) {
      case 'none':
        return;
      case 'create': {
        let pod: ReturnType<typeof buildWorkerPod> | undefined;
        try {
          pod = buildWorkerPod(job, 0, this.deps.config);
        } catch {
          // A template that cannot become a pod fails the job in plan (InvalidSpec); nothing to queue.
          return;
        }
        const priorityClass = pod.spec?.priorityClassName;
        const priority = priorityClass === undefined ? undefined : await kueue.priorityOf(priorityClass);
        const { kind: _kind, ...naming } = action;
        await kueue.createWorkload(buildWorkload(job, queueName, pod, priority, naming));
        log.info(
          action.replacementFor === undefined ? 'created Kueue workload' : 'created Kueue workload slice',
          {
            workload: action.name,
            queue: queueName,
            ...(action.replacementFor === undefined ? {} : { replaces: action.replacementFor }),
          },
        );
        return;
      }
      case 'resize':
        await kueue.resizeWorkload(action.workload, action.count, action.minCount);
        log.info('resized Kueue workload', { workload: action.workload.metadata.name, count: action.count });
        return;
      case 'finish': {
        const status = finishedStatus(action.workload, false, action.message, this.now(), 'OutOfSync');
        if (status !== undefined) await kueue.patchWorkloadStatus(action.workload, status);
        log.info('finished replaced Kueue workload slice', { workload: action.workload.metadata.name });
        return;
      }
      case 'delete':
        await kueue.deleteWorkload(action.workload);
        log.info('workers stopped; Kueue workload deleted to queue the job again with its new size', {
          workload: action.workload.metadata.name,
        });
        return;
    }
  }

  /** Hands an evicted workload's quota back once its workers are gone; marks a finished one Finished. */
  private async tellKueue(
    workload: Workload,
    queue: NonNullable<PlanInput['queue']>,
    podsLeft: number,
    decision: Plan,
    log: Logger,
  ): Promise<void> {
    const kueue = this.deps.kueue;
    if (kueue === undefined) return;
    const phase = decision.status.phase;
    if (phase === 'Succeeded' || phase === 'Failed') {
      const status = finishedStatus(
        workload,
        phase === 'Succeeded',
        decision.status.message ?? '',
        this.now(),
      );
      if (status !== undefined) await kueue.patchWorkloadStatus(workload, status);
      return;
    }
    if (queue.admitted || queue.reason !== 'EvictedByKueue' || podsLeft > 0) return;
    const status = releasedQuotaStatus(workload, this.now());
    if (status === undefined) return;
    await kueue.patchWorkloadStatus(workload, status);
    log.info('workers stopped after a Kueue eviction; quota handed back', {
      workload: workload.metadata.name,
    });
  }

  /**
   * Ends one incarnation of a job on NATS: its identity is revoked (a worker still connected with it
   * is cut off) and its rendezvous bucket deleted (none there is fine).
   */
  /** A job's NATS identities and buckets; a federated job's (`sites`): each site's, and its rounds'. */
  private async deleteState(
    namespace: string,
    name: string,
    uid: string,
    sites: readonly string[] = [],
  ): Promise<void> {
    if (uid === '') return;
    await this.deps.revoker?.revoke(identities(uid, sites));
    const store = this.deps.jobState;
    if (store === undefined) return;
    await store.deleteBucket(rendezvousBucket(namespace, name, uid));
    for (const site of sites)
      await store.deleteBucket(rendezvousBucket(namespace, siteJobName(name, site), uid));
    if (sites.length > 0) await store.deleteBucket(federationBucket(namespace, name));
  }
}
