/**
 * The operator's decision for one TrainingJob: given the job, its pods, the nodes and the clock, which
 * pods to create and delete, what to tell the workers, which events to record, what the status is now
 * and when to look again. Pure and deterministic; the reconciler carries the result out.
 */
import type { V1Node, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { autoscale } from '../api/autoscaling.ts';
import { exponentialBackoffMs } from '../api/backoff.ts';
import { ANNOTATION_SLOW, type ControlMessage } from '../api/contract.ts';
import { type Condition, desiredReplicas, type TrainingJobStatus } from '../api/training-job.ts';
import { clearCondition, findCondition, isTrue, setCondition } from './conditions.ts';
import {
  combineSiteObservations,
  federatedReplicas,
  federationStatus,
  localSites,
  type SitePods,
  sitePods,
} from './federation-sites.ts';
import { QUEUE_LABEL, queueNameOf } from './kueue.ts';
import {
  buildCheckpointClaim,
  buildWorkerPod,
  GPU_RESOURCE,
  type OwnedJob,
  specRevisionOf,
  type WorkerPodDefaults,
  workerPodProblems,
  workerSelector,
  workerSpecOf,
} from './pod-builder.ts';
import {
  finishedAt,
  hasAccountingFinalizer,
  type PodState,
  podState,
  replicaIndex,
  toMillis,
} from './pods.ts';
import type { JobObservations } from './progress.ts';

/** On a node that ran a straggler the operator asked to leave: schedulers and people can avoid it. */

export interface PlanConfig extends WorkerPodDefaults {
  /**
   * First delay before replacing a failed worker; doubles with every failure in a row (like the Job
   * controller), capped at `maxFailureBackoffSeconds`.
   */
  readonly failureBackoffSeconds: number;
  readonly maxFailureBackoffSeconds: number;
  /**
   * A worker that failed after running this long was not crash-looping: the doubling starts over, as a
   * kubelet's CrashLoopBackOff does after a container ran long enough. Default 60.
   */
  readonly failureBackoffResetSeconds?: number;
}

/** See PlanConfig.failureBackoffResetSeconds. */
export const FAILURE_BACKOFF_RESET_SECONDS = 60;

export interface PlanInput {
  readonly job: OwnedJob;
  readonly pods: readonly V1Pod[];
  readonly nodes: ReadonlyMap<string, V1Node>;
  /** Whether the claim from `checkpoint.volume.claimTemplate` exists already. */
  readonly claimExists: boolean;
  readonly now: Date;
  readonly config: PlanConfig;
  /** What the workers reported over NATS (progress, completion, a world re-forming). */
  readonly observations?: JobObservations;
  /**
   * spec.federation: what each site's workers reported (the sites this job runs, in spec order; they
   * report as the site job),
   * which stands in for `observations`.
   */
  readonly siteObservations?: readonly (JobObservations | undefined)[];
  /**
   * Why the API server refused a worker pod built from this spec (422), seen by an earlier pass:
   * retrying cannot help, so the job fails, written like every other status.
   */
  readonly podRejected?: string;
  /** For a job in a Kueue queue: whether Kueue admits it now, and with how many workers. */
  /**
   * spec.autoscaling goodput with GPUs: this job's share of the cluster's workers from the leader's
   * division among the goodput jobs competing for them (goodput-shares.ts); absent: it decides alone.
   */
  readonly share?: number;
  readonly queue?:
    | { readonly admitted: false; readonly reason: string; readonly message: string }
    | { readonly admitted: true; readonly count: number };
}

export interface JobEventRecord {
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
}

export interface DeletePod {
  readonly name: string;
  readonly reason: string;
  /** Delete with grace period 0: its node is gone, nobody is left to stop the process. */
  readonly force: boolean;
}

export interface Plan {
  readonly status: TrainingJobStatus;
  /** Pods whose accounting finalizer goes (after the status that counts them is written). */
  readonly releasePods: readonly string[];
  readonly deletePods: readonly DeletePod[];
  readonly createPods: readonly V1Pod[];
  readonly createClaim: V1PersistentVolumeClaim | undefined;
  /** Pods to mark as asked to leave (annotation), with the reason. */
  readonly markLeaving: readonly { readonly name: string; readonly reason: string }[];
  /** Nodes that ran an evicted straggler: annotated `tensile.dev/slow` with the reason. */
  readonly markSlowNodes: readonly { readonly name: string; readonly reason: string }[];
  readonly publish: readonly ControlMessage[];
  readonly events: readonly JobEventRecord[];
  readonly deleteJob: boolean;
  readonly requeueAfterMs: number | undefined;
}

interface ClassifiedPod {
  readonly pod: V1Pod;
  readonly name: string;
  readonly uid: string;
  readonly index: number;
  readonly state: PodState;
  readonly created: number;
}

const TERMINAL_PHASES = new Set(['Succeeded', 'Failed']);

function rfc3339(now: Date): string {
  return now.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Problems the CRD cannot see but the operator can; the job fails with InvalidSpec. */
export function specProblems(job: OwnedJob, config: WorkerPodDefaults): string[] {
  const problems: string[] = [];
  const { requests, limits } = job.spec.worker.resources;
  const gpuRequest = requests?.[GPU_RESOURCE];
  const gpuLimit = limits?.[GPU_RESOURCE];
  if (gpuRequest !== undefined && gpuLimit !== undefined && String(gpuRequest) !== String(gpuLimit)) {
    problems.push(
      `spec.worker.resources: ${GPU_RESOURCE} requests (${gpuRequest}) and limits (${gpuLimit}) must be equal`,
    );
  }
  problems.push(...workerPodProblems(job, config));
  problems.push(...federationProblems(job));
  if (job.spec.worker.image === undefined && config.workerImage === '') {
    problems.push(
      'spec.worker.image: not set, and the operator has no default worker image (--worker-image)',
    );
  }
  return problems;
}

/** A federated job runs its sites at their own sizes: what would resize them is refused. */
function federationProblems(job: OwnedJob): string[] {
  const spec = job.spec;
  if (spec.federation === undefined) return [];
  const problems: string[] = [];
  if (spec.autoscaling.policy === 'goodput')
    problems.push(
      'spec.autoscaling.policy: goodput cannot resize a federated job (each site runs spec.federation.sites[].replicas workers); use policy none',
    );
  // Kueue's partial admission would cut whole sites off (the slots are the sites'): not yet supported.
  if (queueNameOf(job) !== undefined)
    problems.push(
      `metadata.labels["${QUEUE_LABEL}"]: a federated job cannot run in a Kueue queue yet (its sites need all their workers); drop the label`,
    );
  const group = `${job.metadata.name}-${spec.federation.sites.reduce((a, s) => (s.name.length > a.length ? s.name : a), '')}`;
  if (group.length > 63 - '-nats-credentials'.length)
    problems.push(
      `spec.federation.sites: the site job ${group} is too long a name for its Secrets; shorten the job or site names`,
    );
  return problems;
}

/**
 * Status figures as `kubectl get tj` shows them: four significant digits of the loss (0.3412, 0.0001235)
 * and four decimals of the accuracy (0.8874); the full values are in the worker events and metrics.
 */
export function roundLoss(loss: number): number {
  return Number.isFinite(loss) && loss !== 0 ? Number(loss.toPrecision(4)) : loss;
}

export function roundAccuracy(accuracy: number): number {
  return Number.isFinite(accuracy) ? Math.round(accuracy * 10_000) / 10_000 : accuracy;
}

/**
 * How long a failed worker's container ran, when its pod says (undefined: it never started or the
 * status does not say, which counts as a short run).
 */
function ranMs(pod: V1Pod): number | undefined {
  const terminated = pod.status?.containerStatuses?.[0]?.state?.terminated;
  const started = toMillis(terminated?.startedAt) ?? toMillis(pod.status?.startTime);
  const finished = toMillis(terminated?.finishedAt);
  return started === undefined || finished === undefined ? undefined : finished - started;
}

/**
 * Failures in a row after this one: reset by a worker that ran long enough before it failed. Without
 * the reset every replacement of a long chaos run waited the 6-minute cap once 9 workers had been
 * killed, each after training for minutes (chaos seed 2, 20 minutes).
 */
export function nextFailureStreak(streak: number, pod: V1Pod, config: PlanConfig): number {
  const ran = ranMs(pod);
  const reset = (config.failureBackoffResetSeconds ?? FAILURE_BACKOFF_RESET_SECONDS) * 1000;
  return ran !== undefined && ran >= reset ? 1 : streak + 1;
}

function failureBackoffMs(failures: number, config: PlanConfig): number {
  return exponentialBackoffMs(
    failures - 1,
    config.failureBackoffSeconds * 1000,
    config.maxFailureBackoffSeconds * 1000,
  );
}

function lowestFreeIndices(taken: ReadonlySet<number>, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; out.length < count; i++) if (!taken.has(i)) out.push(i);
  return out;
}

/** Scale-down order: Pending workers first (they have done no work), then the newest. */
function scaleDownOrder(a: ClassifiedPod, b: ClassifiedPod): number {
  const pendingA = a.state.kind === 'active' && a.state.pending ? 0 : 1;
  const pendingB = b.state.kind === 'active' && b.state.pending ? 0 : 1;
  if (pendingA !== pendingB) return pendingA - pendingB;
  if (a.created !== b.created) return b.created - a.created;
  return b.index - a.index;
}

const MAX_MESSAGE = 2000;

/**
 * The decision for a job whose spec does not validate (so `plan` cannot read it): Failed/InvalidSpec,
 * once. Its pods are left alone: which pods a spec we cannot read would keep is unknowable.
 */
export function planInvalidSpec(input: {
  readonly status: TrainingJobStatus | undefined;
  readonly reason: string;
  readonly now: Date;
}): Plan {
  const { now } = input;
  const previous: TrainingJobStatus = input.status ?? {};
  const nothing: Omit<Plan, 'status' | 'events'> = {
    releasePods: [],
    deletePods: [],
    createPods: [],
    createClaim: undefined,
    markLeaving: [],
    markSlowNodes: [],
    publish: [],
    deleteJob: false,
    requeueAfterMs: undefined,
  };
  if (previous.phase === 'Failed') return { ...nothing, status: previous, events: [] };
  const reason = input.reason.slice(0, MAX_MESSAGE);
  let conditions = setCondition(previous.conditions ?? [], 'Failed', 'True', 'InvalidSpec', reason, now);
  conditions = setCondition(conditions, 'Running', 'False', 'InvalidSpec', 'invalid spec', now);
  return {
    ...nothing,
    status: {
      ...previous,
      phase: 'Failed',
      conditions,
      message: reason,
      completionTime: previous.completionTime ?? rfc3339(now),
    },
    events: [{ type: 'Warning', reason: 'InvalidSpec', message: reason.slice(0, 1000) }],
  };
}

/**
 * Whether to read the job's completion record (the `completed` key of its rendezvous bucket) before
 * planning, and plan with it as a `completed` message. Core NATS keeps nothing: a replica that began
 * leading after the workers published their completion never saw it, and would finish the job from
 * its pods with the last progress it knew. So: when the workers are done (a pod completed, or the
 * status says Succeeded) and no completion arrived, once per leadership term (a new leader is a new
 * process, so `read` starts empty: it fills in a status an earlier leader left without the figures).
 */
export function wantsCompletionRecord(input: {
  readonly job: Pick<OwnedJob, 'status'>;
  readonly pods: readonly V1Pod[];
  readonly nodes: ReadonlyMap<string, V1Node>;
  readonly observations?: JobObservations | undefined;
  /** This replica read the record (found or not) since it began leading. */
  readonly read: boolean;
}): boolean {
  if (input.read || input.observations?.completed !== undefined) return false;
  if (input.job.status?.phase === 'Succeeded') return true;
  return input.pods.some((pod) => {
    const state = podState(pod, input.nodes);
    return state.kind === 'ended' && state.outcome === 'completed';
  });
}

export function plan(input: PlanInput): Plan {
  const { job, now, config } = input;
  const nowMs = now.getTime();
  const spec = job.spec;
  // Suspended by the user, or held (queued, evicted) by Kueue: either way the workers checkpoint and go.
  const suspension = spec.runPolicy.suspend
    ? { reason: 'JobSuspended', message: 'spec.runPolicy.suspend is true' }
    : input.queue?.admitted === false
      ? { reason: input.queue.reason, message: input.queue.message }
      : undefined;
  const previous: TrainingJobStatus = job.status ?? {};
  let conditions: Condition[] = [...(previous.conditions ?? [])];
  const events: JobEventRecord[] = [];
  const releasePods: string[] = [];
  const deletePods: DeletePod[] = [];
  const createPods: V1Pod[] = [];
  const markLeaving: { name: string; reason: string }[] = [];
  const markSlowNodes: { name: string; reason: string }[] = [];
  const publish: ControlMessage[] = [];
  const wakeAt: number[] = [];
  let deleteJob = false;
  let createClaim: V1PersistentVolumeClaim | undefined;

  const pods: ClassifiedPod[] = input.pods
    .map((pod) => ({
      pod,
      name: pod.metadata?.name ?? '',
      uid: pod.metadata?.uid ?? '',
      index: replicaIndex(pod),
      state: podState(pod, input.nodes),
      created: toMillis(pod.metadata?.creationTimestamp) ?? 0,
    }))
    .sort((a, b) => a.index - b.index || a.name.localeCompare(b.name));

  if (findCondition(conditions, 'Created') === undefined) {
    conditions = setCondition(
      conditions,
      'Created',
      'True',
      'JobCreated',
      'TrainingJob accepted by the operator',
      now,
    );
    events.push({
      type: 'Normal',
      reason: 'JobCreated',
      message: `desired ${desiredReplicas(spec)} workers`,
    });
  }

  // ---- accounting: every ended worker is counted once, as a failure or a preemption.
  const counted = new Set(previous.countedPods ?? []);
  let restarts = previous.restarts ?? 0;
  // A status written before the streak existed: every failure was in a row.
  let failureStreak = previous.failureStreak ?? restarts;
  let preemptions = previous.preemptions ?? 0;
  let completedBy: ClassifiedPod | undefined;
  const failedPods: ClassifiedPod[] = [];
  for (const p of pods) {
    if (p.state.kind !== 'ended') continue;
    if (p.state.outcome === 'completed') completedBy ??= p;
    if (p.state.outcome === 'failed') failedPods.push(p);
    if (!hasAccountingFinalizer(p.pod)) continue;
    if (!counted.has(p.uid)) {
      counted.add(p.uid);
      if (p.state.outcome === 'failed') {
        restarts++;
        failureStreak = nextFailureStreak(failureStreak, p.pod, config);
        events.push({
          type: 'Warning',
          reason: 'WorkerFailed',
          message: `worker ${p.name} failed: ${p.state.reason}`,
        });
      } else if (p.state.outcome === 'preempted') {
        preemptions++;
        events.push({
          type: 'Warning',
          reason: 'WorkerPreempted',
          message: `worker ${p.name} lost: ${p.state.reason}`,
        });
      }
    }
    releasePods.push(p.name);
  }
  // A counted uid is forgotten once its pod is gone for good.
  const present = new Set(pods.map((p) => p.uid));
  const countedPods = [...counted].filter((uid) => present.has(uid)).sort();

  const active = pods.filter((p) => p.state.kind === 'active');
  const leaving = pods.filter((p) => p.state.kind === 'leaving');
  // spec.autoscaling goodput: the policy's count, unless the user scaled since it decided.
  const scaling =
    spec.autoscaling.policy === 'goodput' &&
    suspension === undefined &&
    !TERMINAL_PHASES.has(previous.phase ?? '')
      ? autoscale({
          spec,
          status: previous.autoscaling,
          report: input.observations?.progress,
          // Spot-aware, coarsely: while a worker is Pending or leaving a going node, capacity is
          // short or about to vanish, and the job does not grow.
          pending: active.filter((p) => p.state.kind === 'active' && p.state.pending).length + leaving.length,
          ...(input.share === undefined ? {} : { capacity: input.share }),
          now,
        })
      : undefined;
  if (scaling?.event !== undefined) events.push({ type: 'Normal', ...scaling.event });
  if (scaling?.retryAtMs !== undefined) wakeAt.push(scaling.retryAtMs);
  const wanted =
    scaling?.replicas ?? (spec.federation === undefined ? desiredReplicas(spec) : federatedReplicas(spec));
  // Kueue's partial admission may grant fewer workers than asked for (never fewer than minReplicas).
  const desired = input.queue?.admitted === true ? Math.min(wanted, input.queue.count) : wanted;
  let phase = previous.phase;
  let startTime = previous.startTime;
  let completionTime = previous.completionTime;
  let message = previous.message;

  const finish = (outcome: 'Succeeded' | 'Failed', reason: string, text: string) => {
    phase = outcome;
    completionTime ??= rfc3339(now);
    message = text;
    conditions = setCondition(conditions, outcome, 'True', reason, text, now);
    conditions = setCondition(conditions, 'Running', 'False', reason, text, now);
    events.push({ type: outcome === 'Succeeded' ? 'Normal' : 'Warning', reason, message: text });
    if (outcome === 'Failed') publish.push({ type: 'stop', reason: text });
  };

  // ---- progress reported by the workers (a federated job's: its sites', added up).
  const federation = spec.federation;
  const siteNames = localSites(spec).map((s) => s.name);
  const observed =
    federation === undefined
      ? (input.observations ?? {})
      : combineSiteObservations(
          siteNames.map((name, i) => ({ name, observations: input.siteObservations?.[i] })),
        );
  const bySite: SitePods[] =
    federation === undefined
      ? []
      : sitePods(
          spec,
          pods.map((p) => ({
            pod: p.pod,
            active: p.state.kind === 'active',
            ready: p.state.kind === 'active' && p.state.ready,
            succeeded: p.state.kind === 'ended' && p.state.outcome === 'completed',
          })),
        );
  // A federated job is done when every site is: one site's end is not the others'.
  if (federation !== undefined && !bySite.every((s) => s.succeeded)) completedBy = undefined;
  const report = observed.completed ?? observed.progress;
  const progress: Partial<TrainingJobStatus> = {};
  if (report !== undefined) {
    progress.step = report.step;
    progress.epoch = report.epoch;
    progress.loss = roundLoss(report.loss);
    if (report.accuracy !== undefined) progress.accuracy = roundAccuracy(report.accuracy);
    if (report.lastCheckpoint !== undefined) progress.lastCheckpoint = report.lastCheckpoint;
  }
  if (observed.completed?.model !== undefined) {
    const m = observed.completed.model;
    progress.model = {
      uri: m.uri,
      step: m.step,
      time: m.time,
      ...(m.accuracy === undefined ? {} : { accuracy: m.accuracy }),
    };
  }
  if (observed.progress !== undefined) {
    progress.worldSize = observed.progress.worldSize;
    progress.generation = observed.progress.generation;
    progress.samplesPerSecond = observed.progress.samplesPerSecond;
    if (observed.progress.workers !== undefined) progress.workers = observed.progress.workers;
    progress.stragglers = observed.progress.stragglers ?? [];
  }

  const terminal = phase !== undefined && TERMINAL_PHASES.has(phase);
  if (!terminal) {
    const problems = specProblems(job, config);
    if (input.podRejected !== undefined)
      problems.push(`worker pod rejected: ${input.podRejected}`.slice(0, MAX_MESSAGE));
    if (problems.length > 0) finish('Failed', 'InvalidSpec', problems.join('; '));
    else if (observed.completed !== undefined) {
      const c = observed.completed;
      finish(
        'Succeeded',
        'TrainingCompleted',
        `training completed at step ${c.step}, epoch ${c.epoch}: ${c.reason}`,
      );
    } else if (completedBy !== undefined)
      finish('Succeeded', 'TrainingCompleted', `training completed (reported by ${completedBy.name})`);
    else if (restarts > spec.runPolicy.backoffLimit) {
      finish(
        'Failed',
        'BackoffLimitExceeded',
        `${restarts} worker failures exceed backoffLimit ${spec.runPolicy.backoffLimit}`,
      );
    } else if (
      spec.runPolicy.activeDeadlineSeconds !== undefined &&
      startTime !== undefined &&
      suspension === undefined
    ) {
      const deadline = (toMillis(startTime) ?? nowMs) + spec.runPolicy.activeDeadlineSeconds * 1000;
      if (nowMs >= deadline)
        finish(
          'Failed',
          'DeadlineExceeded',
          `running longer than activeDeadlineSeconds ${spec.runPolicy.activeDeadlineSeconds}`,
        );
      else wakeAt.push(deadline);
    }
  }

  if (phase === 'Succeeded' || phase === 'Failed') {
    // Finished: let go of every pod, delete what cleanPodPolicy says (by default what still runs, so
    // the logs of finished workers stay readable), and delete the job after its TTL.
    const clean = spec.runPolicy.cleanPodPolicy;
    for (const p of pods) {
      if (p.state.kind === 'removing') continue;
      if (hasAccountingFinalizer(p.pod) && !releasePods.includes(p.name)) releasePods.push(p.name);
      const running = p.state.kind === 'active' || p.state.kind === 'leaving';
      if (clean === 'All' || (clean === 'Running' && running))
        deletePods.push({ name: p.name, reason: `job ${phase} (cleanPodPolicy ${clean})`, force: false });
    }
    const ttl = spec.runPolicy.ttlSecondsAfterFinished;
    if (ttl !== undefined) {
      const expiry = (toMillis(completionTime) ?? nowMs) + ttl * 1000;
      if (nowMs >= expiry) deleteJob = true;
      else wakeAt.push(expiry);
    }
  } else if (suspension !== undefined) {
    if (!isTrue(conditions, 'Suspended')) {
      publish.push({ type: 'checkpoint', reason: 'job suspended' });
      events.push({
        type: 'Normal',
        reason: 'Suspended',
        message: `job suspended: workers checkpoint and stop (${suspension.message})`,
      });
    }
    phase = 'Suspended';
    // The deadline restarts on resume, as for a batch/v1 Job.
    startTime = undefined;
    message = 'suspended';
    conditions = setCondition(conditions, 'Suspended', 'True', suspension.reason, suspension.message, now);
    conditions = setCondition(conditions, 'Running', 'False', suspension.reason, 'suspended', now);
    for (const p of pods) {
      if (p.state.kind === 'removing') continue;
      if (hasAccountingFinalizer(p.pod) && !releasePods.includes(p.name)) releasePods.push(p.name);
      const nodeLost = p.state.kind === 'ended' && p.state.nodeLost;
      if (p.state.kind !== 'ended' || p.pod.metadata?.deletionTimestamp === undefined || nodeLost) {
        deletePods.push({ name: p.name, reason: 'job suspended', force: nodeLost });
      }
    }
  } else {
    if (isTrue(conditions, 'Suspended')) {
      conditions = setCondition(
        conditions,
        'Suspended',
        'False',
        'JobResumed',
        input.queue?.admitted === true ? 'admitted by Kueue' : 'spec.runPolicy.suspend is false',
        now,
      );
      events.push({ type: 'Normal', reason: 'Resumed', message: 'job resumed' });
    }
    // ---- workers on nodes that are going: ask them to leave, and start their replacements now.
    for (const p of leaving) {
      if (p.state.kind === 'leaving' && !p.state.asked) {
        markLeaving.push({ name: p.name, reason: p.state.reason });
        events.push({
          type: 'Warning',
          reason: 'NodeDisruption',
          message: `asked worker ${p.name} to leave: ${p.state.reason}`,
        });
      }
    }
    // ---- stragglers, with spec.balancing.evictStragglers: asked to leave like a worker on a going node.
    if (spec.balancing.evictStragglers)
      for (const name of observed.progress?.stragglers ?? []) {
        const p = active.find((a) => a.name === name && a.state.kind === 'active');
        if (p === undefined) continue;
        const reason = 'straggler: persistently below the straggler threshold of the median throughput';
        markLeaving.push({ name, reason });
        const node = p.pod.spec?.nodeName;
        if (node !== undefined) markSlowNodes.push({ name: node, reason: `${name}: ${reason}` });
        events.push({
          type: 'Warning',
          reason: 'StragglerEvicted',
          message: `asked worker ${name} to leave${node === undefined ? '' : ` (node ${node} annotated ${ANNOTATION_SLOW})`}: ${reason}`,
        });
      }
    // ---- a spec edit (or a scale): running workers offer it, and the next world follows it on every rank.
    const revision = specRevisionOf(job);
    const observedRevision = previous.observedGeneration;
    if (observedRevision !== undefined && revision > observedRevision && active.length > 0) {
      publish.push({
        type: 'spec',
        revision,
        spec: workerSpecOf(spec),
        reason: `spec revision ${observedRevision} → ${revision}`,
      });
      events.push({
        type: 'Normal',
        reason: 'SpecChanged',
        message: `spec revision ${revision} sent to ${active.length} running worker(s); it takes effect at the next world`,
      });
    }
    if (markLeaving.length > 0) {
      publish.push({
        type: 'leave',
        workers: markLeaving.map((m) => m.name),
        reason: markLeaving.map((m) => m.reason).join('; '),
      });
    }
    // ---- ended pods go once counted; a pod whose node vanished needs a forced delete.
    let blockedUntil: number | undefined;
    for (const p of pods) {
      if (p.state.kind !== 'ended') continue;
      // A site that finished while others still train keeps its pods: its slots stay filled.
      if (federation !== undefined && p.state.outcome === 'completed') continue;
      if (p.state.outcome === 'failed') {
        // The failed pod stays until its backoff expires: its finish time is the backoff's clock.
        const until = (finishedAt(p.pod) ?? nowMs) + failureBackoffMs(failureStreak, config);
        if (until > nowMs) {
          blockedUntil = Math.max(blockedUntil ?? 0, until);
          continue;
        }
      }
      if (p.pod.metadata?.deletionTimestamp === undefined || p.state.nodeLost) {
        deletePods.push({ name: p.name, reason: p.state.reason, force: p.state.nodeLost });
      }
    }
    // ---- scale to the desired number of active workers.
    if (active.length < desired) {
      if (blockedUntil !== undefined) {
        wakeAt.push(blockedUntil);
      } else {
        const claim = buildCheckpointClaim(job);
        if (claim !== undefined && !input.claimExists) createClaim = claim;
        const taken = new Set(pods.map((p) => p.index));
        // A federated job's pod slots are its sites' (federationSlot): a slot still held by an ended
        // pod is filled once that pod is gone (its deletion brings the next pass).
        const indices = lowestFreeIndices(taken, desired - active.length).filter(
          (i) => spec.federation === undefined || i < desired,
        );
        for (const index of indices) createPods.push(buildWorkerPod(job, index, config));
        const why =
          leaving.length > 0 || releasePods.length > 0 ? 'replacing lost workers' : `scaling to ${desired}`;
        events.push({
          type: 'Normal',
          reason: 'WorkersCreated',
          message: `creating ${createPods.map((p) => p.metadata?.name ?? '?').join(', ')} (${why})`,
        });
      }
    } else if (active.length > desired) {
      const victims = [...active].sort(scaleDownOrder).slice(0, active.length - desired);
      for (const v of victims) {
        if (hasAccountingFinalizer(v.pod) && !releasePods.includes(v.name)) releasePods.push(v.name);
        deletePods.push({ name: v.name, reason: `scaling down to ${desired}`, force: false });
      }
      events.push({
        type: 'Normal',
        reason: 'ScaledDown',
        message: `scaling down to ${desired}: deleting ${victims.map((v) => v.name).join(', ')}`,
      });
    }
    // ---- workers stuck in Pending are reported, not deleted: an autoscaler may be buying a node.
    const timeoutMs = spec.runPolicy.pendingTimeoutSeconds * 1000;
    const stuck: string[] = [];
    for (const p of active) {
      if (!(p.state.kind === 'active' && p.state.pending)) continue;
      const since = p.created + timeoutMs;
      if (nowMs >= since) stuck.push(p.name);
      else wakeAt.push(since);
    }
    if (stuck.length > 0) {
      const text = `${stuck.join(', ')} pending for more than ${spec.runPolicy.pendingTimeoutSeconds}s`;
      if (!isTrue(conditions, 'PodsPending'))
        events.push({ type: 'Warning', reason: 'WorkersPending', message: text });
      conditions = setCondition(conditions, 'PodsPending', 'True', 'PendingTimeout', text, now);
    } else {
      conditions = clearCondition(
        conditions,
        'PodsPending',
        'WorkersScheduled',
        'no worker pending past the timeout',
        now,
      );
    }
    // ---- the world re-forming after a loss or a join.
    if (observed.rescaling !== undefined) {
      if (!isTrue(conditions, 'Rescaling')) {
        events.push({
          type: 'Normal',
          reason: 'Rescaling',
          message: `world re-forming: ${observed.rescaling.reason}`,
        });
      }
      conditions = setCondition(
        conditions,
        'Rescaling',
        'True',
        'WorldReforming',
        observed.rescaling.reason,
        now,
      );
    } else if (isTrue(conditions, 'Rescaling')) {
      conditions = setCondition(
        conditions,
        'Rescaling',
        'False',
        'WorldFormed',
        `training with ${progress.worldSize ?? previous.worldSize ?? '?'} workers`,
        now,
      );
    }
    conditions = stragglerCondition(conditions, progress.stragglers, events, now);
    // ---- phase and the Running condition.
    const ready = active.filter((p) => p.state.kind === 'active' && p.state.ready).length;
    // Federated: every site needs a ready worker (a site without one holds every round up).
    const running = federation === undefined ? ready >= spec.minReplicas : bySite.every((s) => s.ready > 0);
    if (startTime === undefined && (createPods.length > 0 || active.length > 0)) startTime = rfc3339(now);
    phase = running ? 'Running' : 'Pending';
    message = `${ready}/${desired} workers ready`;
    if (running && !isTrue(conditions, 'Running')) {
      events.push({
        type: 'Normal',
        reason: 'Running',
        message: `${ready} workers ready (minReplicas ${spec.minReplicas})`,
      });
    }
    conditions = setCondition(
      conditions,
      'Running',
      running ? 'True' : 'False',
      running ? 'WorkersReady' : 'WaitingForWorkers',
      running ? message : `${ready} of at least ${spec.minReplicas} workers ready`,
      now,
    );
  }

  const status: TrainingJobStatus = {
    ...previous,
    ...progress,
    ...(scaling === undefined ? {} : { autoscaling: scaling.status }),
    ...(federation === undefined
      ? {}
      : { federation: federationStatus(spec, input.siteObservations ?? [], bySite) }),
    phase,
    conditions,
    observedGeneration: (job.metadata as { generation?: number }).generation,
    // Pods created in this pass count: they exist once it is carried out.
    replicas: active.length + createPods.length,
    readyReplicas: active.filter((p) => p.state.kind === 'active' && p.state.ready).length,
    selector: workerSelector(job.metadata.name),
    restarts,
    ...(failureStreak === 0 ? {} : { failureStreak }),
    preemptions,
    countedPods,
    startTime,
    completionTime,
    message,
  };
  for (const key of Object.keys(status) as (keyof TrainingJobStatus)[]) {
    if (status[key] === undefined) delete status[key];
  }
  if (countedPods.length === 0) delete status.countedPods;

  const future = wakeAt.filter((t) => t > nowMs);
  const requeueAfterMs = future.length > 0 ? Math.max(1, Math.min(...future) - nowMs) : undefined;
  return {
    status,
    releasePods,
    deletePods,
    createPods,
    createClaim,
    markLeaving,
    markSlowNodes,
    publish,
    events,
    deleteJob,
    requeueAfterMs,
  };
}

/**
 * `Stragglers`: raised (with a Warning event) while the workers report persistently slow members,
 * cleared once they report none; untouched while no progress says either way.
 */
function stragglerCondition(
  conditions: Condition[],
  stragglers: readonly string[] | undefined,
  events: JobEventRecord[],
  now: Date,
): Condition[] {
  if (stragglers === undefined) return conditions;
  if (stragglers.length === 0)
    return clearCondition(conditions, 'Stragglers', 'WorkersKeepPace', 'no worker is persistently slow', now);
  const text = `persistently below the straggler threshold of the median throughput: ${stragglers.join(', ')}`;
  if (!isTrue(conditions, 'Stragglers')) events.push({ type: 'Warning', reason: 'Straggler', message: text });
  return setCondition(conditions, 'Stragglers', 'True', 'SlowWorkers', text.slice(0, 1000), now);
}
