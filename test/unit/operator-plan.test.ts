import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TrainingJobStatus } from '../../operator/api/training-job.ts';
import {
  type Plan,
  type PlanConfig,
  plan,
  planInvalidSpec,
  roundAccuracy,
  roundLoss,
  wantsCompletionRecord,
} from '../../operator/controller/plan.ts';
import type { OwnedJob } from '../../operator/controller/pod-builder.ts';
import type { JobObservations } from '../../operator/controller/progress.ts';
import { at, node, nodeMap, ownedJob, T0, workerPod } from '../helpers/k8s-builders.ts';

const config: PlanConfig = {
  workerImage: 'ghcr.io/tensile-dev/tensile-worker:test',
  workerGpuImage: 'ghcr.io/tensile-dev/tensile-worker:test-gpu',
  natsUrl: 'nats://nats:4222',
  failureBackoffSeconds: 10,
  maxFailureBackoffSeconds: 360,
};

const running = (): TrainingJobStatus => ({
  phase: 'Running',
  startTime: '2026-11-21T11:50:00Z',
  conditions: [
    {
      type: 'Created',
      status: 'True',
      reason: 'JobCreated',
      message: '',
      lastTransitionTime: '2026-11-21T11:50:00Z',
    },
    {
      type: 'Running',
      status: 'True',
      reason: 'WorkersReady',
      message: '',
      lastTransitionTime: '2026-11-21T11:51:00Z',
    },
  ],
});

interface Case {
  name: string;
  job: OwnedJob;
  observations?: JobObservations;
  pods?: V1Pod[];
  nodes?: Map<string, V1Node>;
  claimExists?: boolean;
  now?: Date;
  podRejected?: string;
  expect: (p: Plan) => void;
}

const names = (pods: readonly V1Pod[]) => pods.map((p) => p.metadata?.name);
const deleted = (p: Plan) => p.deletePods.map((d) => d.name);
const condition = (p: Plan, type: string) => p.status.conditions?.find((c) => c.type === type);
const defaultNodes = () => nodeMap(node('node-0'), node('node-1'), node('node-2'));

const cases: Case[] = [
  {
    name: 'a new job gets its workers, its checkpoint claim and the Created condition',
    job: ownedJob({ 'spec.replicas': 3 }),
    expect: (p) => {
      assert.equal(names(p.createPods), ['job-worker-0', 'job-worker-1', 'job-worker-2']);
      assert.is(p.createClaim?.metadata?.name, 'job-checkpoints');
      assert.is(condition(p, 'Created')?.status, 'True');
      assert.is(p.status.phase, 'Pending');
      assert.is(p.status.startTime, '2026-11-21T12:00:00Z');
      assert.is(p.status.selector, 'tensile.dev/job-name=job,tensile.dev/role=worker');
      assert.ok(p.events.some((e) => e.reason === 'JobCreated'));
    },
  },
  {
    name: 'an existing claim is not created again',
    job: ownedJob({ 'spec.replicas': 1 }),
    claimExists: true,
    expect: (p) => assert.is(p.createClaim, undefined),
  },
  {
    name: 'steady state: nothing to do, phase Running',
    job: ownedJob({ 'spec.replicas': 3 }, running()),
    pods: [workerPod(0), workerPod(1), workerPod(2)],
    expect: (p) => {
      assert.equal(p.createPods, []);
      assert.equal(p.deletePods, []);
      assert.is(p.status.phase, 'Running');
      assert.is(p.status.replicas, 3);
      assert.is(p.status.readyReplicas, 3);
      assert.is(
        condition(p, 'Running')?.lastTransitionTime,
        '2026-11-21T11:51:00Z',
        'no flip, no new transition time',
      );
      assert.equal(p.events, []);
    },
  },
  {
    name: 'scale up 2 → 4 creates the two lowest free indices',
    job: ownedJob({ 'spec.replicas': 4 }, running()),
    pods: [workerPod(0), workerPod(2)],
    expect: (p) => assert.equal(names(p.createPods), ['job-worker-1', 'job-worker-3']),
  },
  {
    name: 'replicas above maxReplicas are clamped',
    job: (() => {
      const j = ownedJob({ 'spec.replicas': 4 }, running());
      j.spec.replicas = 9;
      return j;
    })(),
    pods: [workerPod(0), workerPod(1), workerPod(2), workerPod(3)],
    expect: (p) => assert.equal(p.createPods, []),
  },
  {
    name: 'scale down 4 → 1 removes the Pending worker first, then the newest',
    job: ownedJob({ 'spec.replicas': 1 }, running()),
    pods: [
      workerPod(0, { created: -900 }),
      workerPod(1, { created: -100 }),
      workerPod(2, { created: -500 }),
      workerPod(3, { phase: 'Pending', created: -800 }),
    ],
    expect: (p) => {
      assert.equal(deleted(p), ['job-worker-3', 'job-worker-1', 'job-worker-2']);
      assert.equal(
        p.releasePods,
        ['job-worker-3', 'job-worker-1', 'job-worker-2'],
        'released before deletion, so not counted as preempted',
      );
      assert.ok(p.events.some((e) => e.reason === 'ScaledDown'));
    },
  },
  {
    name: 'a worker deleted by someone else is a preemption, replaced at once, restarts unchanged',
    job: ownedJob({ 'spec.replicas': 2 }, { ...running(), restarts: 1, preemptions: 2 }),
    pods: [workerPod(0), workerPod(1, { deleting: true })],
    expect: (p) => {
      assert.is(p.status.preemptions, 3);
      assert.is(p.status.restarts, 1);
      assert.equal(p.status.countedPods, ['uid-job-worker-1']);
      assert.equal(p.releasePods, ['job-worker-1']);
      assert.equal(deleted(p), [], 'already being deleted');
      assert.equal(names(p.createPods), ['job-worker-2']);
      assert.ok(p.events.some((e) => e.reason === 'WorkerPreempted' && e.type === 'Warning'));
    },
  },
  {
    name: 'a worker already counted is not counted twice (status written, finalizer not yet removed)',
    job: ownedJob(
      { 'spec.replicas': 2 },
      { ...running(), preemptions: 3, countedPods: ['uid-job-worker-1'] },
    ),
    pods: [workerPod(0), workerPod(1, { deleting: true }), workerPod(2)],
    expect: (p) => {
      assert.is(p.status.preemptions, 3);
      assert.equal(p.releasePods, ['job-worker-1']);
    },
  },
  {
    name: 'a counted uid is forgotten once its pod is gone',
    job: ownedJob({ 'spec.replicas': 1 }, { ...running(), preemptions: 3, countedPods: ['uid-gone'] }),
    pods: [workerPod(0)],
    expect: (p) => assert.is(p.status.countedPods, undefined),
  },
  {
    name: 'an evicted worker (Failed, reason Evicted) is a preemption, not a failure',
    job: ownedJob({ 'spec.replicas': 1 }, running()),
    pods: [workerPod(0, { phase: 'Failed', reason: 'Evicted', exitCode: 137 })],
    expect: (p) => {
      assert.is(p.status.preemptions, 1);
      assert.is(p.status.restarts, 0);
      assert.equal(deleted(p), ['job-worker-0']);
      assert.equal(names(p.createPods), ['job-worker-1']);
    },
  },
  {
    name: 'a DisruptionTarget condition marks a preemption',
    job: ownedJob({ 'spec.replicas': 1 }, running()),
    pods: [workerPod(0, { phase: 'Failed', disruption: 'PreemptionByScheduler' })],
    expect: (p) => assert.is(p.status.preemptions, 1),
  },
  {
    name: 'a failed worker counts against backoffLimit and waits out its backoff',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1, { phase: 'Failed', exitCode: 3, finishedAt: -2 })],
    expect: (p) => {
      assert.is(p.status.restarts, 1);
      assert.is(p.status.preemptions ?? 0, 0);
      assert.equal(p.createPods, [], 'replacement waits for the backoff');
      assert.equal(deleted(p), [], 'the failed pod keeps the backoff clock');
      assert.is(p.requeueAfterMs, 8000);
      assert.ok(p.events.some((e) => e.reason === 'WorkerFailed' && e.message.includes('exit code 3')));
    },
  },
  {
    name: 'after the backoff the failed pod goes and a replacement starts',
    job: ownedJob({ 'spec.replicas': 2 }, { ...running(), restarts: 1, countedPods: ['uid-job-worker-1'] }),
    pods: [workerPod(0), workerPod(1, { phase: 'Failed', finishedAt: -11, finalizer: false })],
    expect: (p) => {
      assert.equal(deleted(p), ['job-worker-1']);
      assert.equal(names(p.createPods), ['job-worker-2']);
      assert.is(p.status.restarts, 1);
    },
  },
  {
    name: 'backoff doubles with each failure',
    job: ownedJob({ 'spec.replicas': 2 }, { ...running(), restarts: 2 }),
    pods: [workerPod(0), workerPod(1, { phase: 'Failed', finishedAt: -30 })],
    expect: (p) => {
      assert.is(p.status.restarts, 3);
      assert.is(p.requeueAfterMs, 10_000, '10 s × 2² = 40 s after the failure');
    },
  },
  {
    // Chaos seed 2 (20 minutes): 9 workers killed, each after training for minutes, and every
    // replacement after the 8th waited the 6-minute cap.
    name: 'a worker that failed after running a minute or more starts the doubling over',
    job: ownedJob(
      { 'spec.replicas': 2, 'spec.runPolicy': { backoffLimit: 100 } },
      { ...running(), restarts: 8, failureStreak: 8 },
    ),
    pods: [workerPod(0), workerPod(1, { phase: 'Failed', exitCode: 137, startedAt: -300, finishedAt: -2 })],
    expect: (p) => {
      assert.is(p.status.restarts, 9);
      assert.is(p.status.failureStreak, 1);
      assert.is(p.requeueAfterMs, 8000, 'the first delay, 10 s after the failure');
    },
  },
  {
    name: 'a worker that failed within a minute of its start doubles the delay again',
    job: ownedJob(
      { 'spec.replicas': 2, 'spec.runPolicy': { backoffLimit: 100 } },
      { ...running(), restarts: 8, failureStreak: 2 },
    ),
    pods: [workerPod(0), workerPod(1, { phase: 'Failed', startedAt: -32, finishedAt: -2 })],
    expect: (p) => {
      assert.is(p.status.restarts, 9);
      assert.is(p.status.failureStreak, 3);
      assert.is(p.requeueAfterMs, 38_000, '10 s × 2² = 40 s after the failure');
    },
  },
  {
    name: 'a status from before the streak: every failure counted was in a row',
    job: ownedJob({ 'spec.replicas': 2 }, { ...running(), restarts: 3 }),
    pods: [workerPod(0), workerPod(1, { phase: 'Failed', startedAt: -5, finishedAt: -2 })],
    expect: (p) => {
      assert.is(p.status.failureStreak, 4);
      assert.is(p.requeueAfterMs, 78_000, '10 s × 2³');
    },
  },
  {
    name: 'failures beyond backoffLimit fail the job (BackoffLimitExceeded) and stop the workers',
    job: ownedJob(
      { 'spec.replicas': 2, 'spec.runPolicy': { backoffLimit: 1 } },
      { ...running(), restarts: 1 },
    ),
    pods: [workerPod(0), workerPod(1, { phase: 'Failed' })],
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.is(condition(p, 'Failed')?.reason, 'BackoffLimitExceeded');
      assert.is(condition(p, 'Running')?.status, 'False');
      assert.is(p.status.completionTime, '2026-11-21T12:00:00Z');
      assert.equal(deleted(p), ['job-worker-0']);
      assert.ok(p.publish.some((m) => m.type === 'stop'));
      assert.equal(p.createPods, []);
    },
  },
  {
    name: 'a disruption taint: ask the worker to leave and start its replacement early',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0, { node: 'node-0' }), workerPod(1, { node: 'node-1' })],
    nodes: nodeMap(
      node('node-0'),
      node('node-1', { taints: [{ key: 'karpenter.sh/disrupted', effect: 'NoSchedule' }] }),
    ),
    expect: (p) => {
      assert.equal(
        p.markLeaving.map((m) => m.name),
        ['job-worker-1'],
      );
      assert.equal(p.publish, [
        { type: 'leave', workers: ['job-worker-1'], reason: 'node node-1: taint karpenter.sh/disrupted' },
      ]);
      assert.equal(names(p.createPods), ['job-worker-2']);
      assert.is(p.status.replicas, 2, 'the leaving worker is not counted; its replacement is');
      assert.ok(p.events.some((e) => e.reason === 'NodeDisruption'));
    },
  },
  {
    name: 'a spec edit while workers run: they are sent the new revision, once it is newer than observed',
    job: (() => {
      const job = ownedJob(
        { 'spec.replicas': 2, 'spec.stopping.epochs': 4 },
        {
          ...running(),
          observedGeneration: 1,
        },
      );
      job.metadata = { ...job.metadata, generation: 3 } as OwnedJob['metadata'];
      return job;
    })(),
    pods: [workerPod(0), workerPod(1, { node: 'node-1' })],
    expect: (p) => {
      assert.equal(
        p.publish.map((m) => (m.type === 'spec' ? [m.type, m.revision, m.spec.stopping.epochs] : [m.type])),
        [['spec', 3, 4]],
      );
      assert.ok(p.events.some((e) => e.reason === 'SpecChanged'));
      assert.is(p.status.observedGeneration, 3, 'sent once: the next pass sees it observed');
    },
  },
  {
    name: 'no spec message when nothing changed, before any status, or with no worker running',
    job: ownedJob({ 'spec.replicas': 2 }, { ...running(), observedGeneration: 1 }),
    pods: [workerPod(0), workerPod(1, { node: 'node-1' })],
    expect: (p) => {
      assert.equal(p.publish, []);
      assert.not.ok(p.events.some((e) => e.reason === 'SpecChanged'));
    },
  },
  {
    name: 'a worker already asked to leave is not asked again',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1, { node: 'node-1', leave: 'node node-1: taint x' }), workerPod(2)],
    nodes: nodeMap(
      node('node-0'),
      node('node-1', { taints: [{ key: 'aws-node-termination-handler/spot-itn', effect: 'NoSchedule' }] }),
    ),
    expect: (p) => {
      assert.equal(p.markLeaving, []);
      assert.equal(p.publish, []);
      assert.equal(p.createPods, []);
    },
  },
  {
    name: 'a NotReady node: its worker is asked to leave and replaced',
    job: ownedJob({ 'spec.replicas': 1 }, running()),
    pods: [workerPod(0, { node: 'node-1' })],
    nodes: nodeMap(node('node-1', { ready: 'Unknown' })),
    expect: (p) => {
      assert.equal(
        p.markLeaving.map((m) => m.name),
        ['job-worker-0'],
      );
      assert.equal(names(p.createPods), ['job-worker-1']);
    },
  },
  {
    name: 'a worker that left gracefully (exit 0 after a leave request) is a preemption, not completion',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1, { phase: 'Succeeded', leave: 'node node-1: taint x' }), workerPod(2)],
    expect: (p) => {
      assert.is(p.status.preemptions, 1);
      assert.is(p.status.phase, 'Running');
      assert.equal(deleted(p), ['job-worker-1']);
    },
  },
  {
    name: 'a worker whose node is gone: preemption, forced delete, replacement',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0, { node: 'node-0' }), workerPod(1, { node: 'node-9' })],
    expect: (p) => {
      assert.is(p.status.preemptions, 1);
      assert.equal(p.deletePods, [{ name: 'job-worker-1', reason: 'node node-9 is gone', force: true }]);
      assert.equal(names(p.createPods), ['job-worker-2']);
    },
  },
  {
    name: 'a worker that finished training completes the job; the others are stopped',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0, { phase: 'Succeeded' }), workerPod(1)],
    expect: (p) => {
      assert.is(p.status.phase, 'Succeeded');
      assert.is(condition(p, 'Succeeded')?.reason, 'TrainingCompleted');
      assert.is(p.status.completionTime, '2026-11-21T12:00:00Z');
      assert.equal(deleted(p), ['job-worker-1']);
      assert.equal([...p.releasePods].sort(), ['job-worker-0', 'job-worker-1']);
      assert.is(p.status.restarts, 0);
    },
  },
  ...(['None', 'Running', 'All'] as const).map((policy) => ({
    name: `cleanPodPolicy ${policy} at the end: ${{ None: 'no pod', Running: 'the running worker', All: 'every pod' }[policy]} deleted`,
    job: ownedJob({ 'spec.replicas': 2, 'spec.runPolicy': { cleanPodPolicy: policy } }, running()),
    pods: [workerPod(0, { phase: 'Succeeded' }), workerPod(1)],
    expect: (p: Plan) => {
      assert.is(p.status.phase, 'Succeeded');
      assert.equal(
        deleted(p),
        { None: [], Running: ['job-worker-1'], All: ['job-worker-0', 'job-worker-1'] }[policy],
      );
      assert.equal([...p.releasePods].sort(), ['job-worker-0', 'job-worker-1'], 'released either way');
    },
  })),
  {
    name: 'a pod template overriding what Tensile owns fails the job with InvalidSpec, no pod created',
    job: ownedJob({
      'spec.worker.podTemplate': {
        spec: {
          restartPolicy: 'Always',
          containers: [{ name: 'worker', env: [{ name: 'TENSILE_JOB', value: 'x' }] }],
        },
      },
    }),
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.is(condition(p, 'Failed')?.reason, 'InvalidSpec');
      assert.match(
        condition(p, 'Failed')?.message ?? '',
        'spec.worker.podTemplate.spec.restartPolicy: must be Never',
      );
      assert.match(condition(p, 'Failed')?.message ?? '', 'TENSILE_JOB is set by the operator');
      assert.equal(p.createPods, []);
    },
  },
  {
    name: 'suspend: checkpoint request, all workers deleted, Suspended',
    job: ownedJob({ 'spec.replicas': 2, 'spec.runPolicy': { suspend: true } }, running()),
    pods: [workerPod(0), workerPod(1)],
    expect: (p) => {
      assert.equal(p.publish, [{ type: 'checkpoint', reason: 'job suspended' }]);
      assert.equal(deleted(p), ['job-worker-0', 'job-worker-1']);
      assert.equal(p.releasePods, ['job-worker-0', 'job-worker-1']);
      assert.is(p.status.phase, 'Suspended');
      assert.is(condition(p, 'Suspended')?.status, 'True');
      assert.is(p.status.startTime, undefined, 'the deadline clock restarts on resume');
      assert.equal(p.createPods, []);
    },
  },
  {
    name: 'still suspended: no second checkpoint request',
    job: ownedJob(
      { 'spec.replicas': 2, 'spec.runPolicy': { suspend: true } },
      {
        phase: 'Suspended',
        conditions: [
          {
            type: 'Created',
            status: 'True',
            reason: 'JobCreated',
            message: '',
            lastTransitionTime: '2026-11-21T11:00:00Z',
          },
          {
            type: 'Suspended',
            status: 'True',
            reason: 'JobSuspended',
            message: '',
            lastTransitionTime: '2026-11-21T11:00:00Z',
          },
        ],
      },
    ),
    expect: (p) => {
      assert.equal(p.publish, []);
      assert.equal(p.events, [], 'no event either');
    },
  },
  {
    name: 'resume: Suspended turns False and the workers are created again',
    job: ownedJob(
      { 'spec.replicas': 2 },
      {
        phase: 'Suspended',
        conditions: [
          {
            type: 'Suspended',
            status: 'True',
            reason: 'JobSuspended',
            message: '',
            lastTransitionTime: '2026-11-21T11:00:00Z',
          },
        ],
      },
    ),
    claimExists: true,
    expect: (p) => {
      assert.is(condition(p, 'Suspended')?.status, 'False');
      assert.is(condition(p, 'Suspended')?.lastTransitionTime, '2026-11-21T12:00:00Z');
      assert.equal(names(p.createPods), ['job-worker-0', 'job-worker-1']);
      assert.ok(p.events.some((e) => e.reason === 'Resumed'));
    },
  },
  {
    name: 'activeDeadlineSeconds passed: Failed/DeadlineExceeded',
    job: ownedJob(
      { 'spec.replicas': 1, 'spec.runPolicy': { activeDeadlineSeconds: 60 } },
      { ...running(), startTime: '2026-11-21T11:58:59Z' },
    ),
    pods: [workerPod(0)],
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.is(condition(p, 'Failed')?.reason, 'DeadlineExceeded');
      assert.equal(deleted(p), ['job-worker-0']);
    },
  },
  {
    name: 'activeDeadlineSeconds not yet passed: look again at the deadline',
    job: ownedJob(
      { 'spec.replicas': 1, 'spec.runPolicy': { activeDeadlineSeconds: 60 } },
      { ...running(), startTime: '2026-11-21T11:59:30Z' },
    ),
    pods: [workerPod(0)],
    expect: (p) => {
      assert.is(p.status.phase, 'Running');
      assert.is(p.requeueAfterMs, 30_000);
    },
  },
  {
    name: 'ttlSecondsAfterFinished passed: delete the job',
    job: ownedJob(
      { 'spec.runPolicy': { ttlSecondsAfterFinished: 30 } },
      { phase: 'Succeeded', completionTime: '2026-11-21T11:59:00Z' },
    ),
    expect: (p) => assert.ok(p.deleteJob),
  },
  {
    name: 'ttlSecondsAfterFinished not passed: look again when it is',
    job: ownedJob(
      { 'spec.runPolicy': { ttlSecondsAfterFinished: 90 } },
      { phase: 'Succeeded', completionTime: '2026-11-21T11:59:00Z' },
    ),
    expect: (p) => {
      assert.not.ok(p.deleteJob);
      assert.is(p.requeueAfterMs, 30_000);
    },
  },
  {
    name: 'a worker Pending past the timeout is reported, not deleted',
    job: ownedJob({ 'spec.replicas': 2, 'spec.runPolicy': { pendingTimeoutSeconds: 120 } }, running()),
    pods: [workerPod(0), workerPod(1, { phase: 'Pending', created: -121 })],
    expect: (p) => {
      assert.is(condition(p, 'PodsPending')?.status, 'True');
      assert.is(condition(p, 'PodsPending')?.reason, 'PendingTimeout');
      assert.equal(p.deletePods, []);
      assert.ok(p.events.some((e) => e.reason === 'WorkersPending' && e.message.includes('job-worker-1')));
    },
  },
  {
    name: 'a Pending worker before the timeout: look again at the timeout',
    job: ownedJob({ 'spec.replicas': 2, 'spec.runPolicy': { pendingTimeoutSeconds: 120 } }, running()),
    pods: [workerPod(0), workerPod(1, { phase: 'Pending', created: -100 })],
    expect: (p) => {
      assert.is(condition(p, 'PodsPending'), undefined);
      assert.is(p.requeueAfterMs, 20_000);
      assert.is(p.status.phase, 'Running', 'minReplicas 1 is ready');
    },
  },
  {
    name: 'below minReplicas ready: phase Pending, Running=False WaitingForWorkers',
    job: ownedJob({ 'spec.replicas': 3, 'spec.minReplicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1, { phase: 'Pending' }), workerPod(2, { phase: 'Pending' })],
    expect: (p) => {
      assert.is(p.status.phase, 'Pending');
      assert.is(condition(p, 'Running')?.reason, 'WaitingForWorkers');
      assert.is(condition(p, 'Running')?.lastTransitionTime, '2026-11-21T12:00:00Z');
    },
  },
  {
    name: 'InvalidSpec: goodput autoscaling cannot resize a federated job’s sites, no pod created',
    job: ownedJob({
      'spec.federation': { rounds: 2, sites: [{ name: 'a' }, { name: 'b' }] },
      'spec.autoscaling': { policy: 'goodput' },
      'spec.maxReplicas': 4,
    }),
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.is(condition(p, 'Failed')?.reason, 'InvalidSpec');
      assert.match(
        condition(p, 'Failed')?.message ?? '',
        'spec.autoscaling.policy: goodput cannot resize a federated job',
      );
      assert.equal(p.createPods, []);
    },
  },
  {
    name: 'InvalidSpec: GPU requests and limits differ',
    job: ownedJob({
      'spec.replicas': 1,
      'spec.worker': { resources: { requests: { 'nvidia.com/gpu': 1 }, limits: { 'nvidia.com/gpu': 2 } } },
    }),
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.is(condition(p, 'Failed')?.reason, 'InvalidSpec');
      assert.match(
        condition(p, 'Failed')?.message ?? '',
        'nvidia.com/gpu requests (1) and limits (2) must be equal',
      );
      assert.equal(p.createPods, []);
    },
  },
  {
    name: 'a worker pod the API server refused: Failed/InvalidSpec, counts kept, workers stopped',
    job: ownedJob({ 'spec.replicas': 2 }, { ...running(), restarts: 1, preemptions: 3 }),
    pods: [workerPod(0)],
    podRejected: 'create pod default/job-worker-1: 422 Invalid: spec.containers[0].resources: Invalid value',
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.is(condition(p, 'Failed')?.reason, 'InvalidSpec');
      assert.match(condition(p, 'Failed')?.message ?? '', /^worker pod rejected: create pod/);
      assert.is(p.status.preemptions, 3);
      assert.is(p.status.restarts, 1);
      assert.equal(p.createPods, []);
      assert.equal(deleted(p), ['job-worker-0']);
      assert.ok(p.publish.some((m) => m.type === 'stop'));
      assert.ok(p.events.some((e) => e.reason === 'InvalidSpec' && e.type === 'Warning'));
    },
  },
  {
    name: 'a refusal seen after the job finished changes nothing',
    job: ownedJob({}, { phase: 'Succeeded', completionTime: '2026-11-21T11:00:00Z' }),
    podRejected: 'create pod default/job-worker-0: 422 Invalid',
    expect: (p) => {
      assert.is(p.status.phase, 'Succeeded');
      assert.is(condition(p, 'Failed'), undefined);
      assert.not.ok(p.events.some((e) => e.reason === 'InvalidSpec'));
    },
  },
  {
    name: 'a finished job lets go of its pods',
    job: ownedJob({}, { phase: 'Failed', completionTime: '2026-11-21T11:00:00Z' }),
    pods: [workerPod(0, { phase: 'Failed' })],
    expect: (p) => {
      assert.equal(p.releasePods, ['job-worker-0']);
      assert.equal(p.createPods, []);
      assert.is(p.status.restarts, 1, 'counted, though it no longer matters');
    },
  },
];

const progress = {
  type: 'progress' as const,
  worker: 'job-worker-0',
  generation: 4,
  worldSize: 2,
  step: 1200,
  epoch: 3,
  loss: 0.41,
  accuracy: 0.86,
  samplesPerSecond: 5120.5,
  lastCheckpoint: { step: 1000, path: '/checkpoints/ckpt-000001000', time: '2026-11-21T11:59:00Z' },
  time: '2026-11-21T11:59:58Z',
};

cases.push(
  {
    name: 'worker progress reaches the status',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1)],
    observations: { progress },
    expect: (p) => {
      assert.is(p.status.step, 1200);
      assert.is(p.status.epoch, 3);
      assert.is(p.status.loss, 0.41);
      assert.is(p.status.accuracy, 0.86);
      assert.is(p.status.worldSize, 2);
      assert.is(p.status.generation, 4);
      assert.is(p.status.samplesPerSecond, 5120.5);
      assert.equal(p.status.lastCheckpoint, progress.lastCheckpoint);
    },
  },
  {
    name: 'a world re-forming sets Rescaling (once, with an event); the next progress clears it',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1)],
    observations: {
      progress,
      rescaling: { reason: 'job-worker-2 lost', since: '2026-11-21T11:59:59Z', generation: 4 },
    },
    expect: (p) => {
      const c = condition(p, 'Rescaling');
      assert.is(c?.status, 'True');
      assert.is(c?.reason, 'WorldReforming');
      assert.ok(p.events.some((e) => e.reason === 'Rescaling'));
      const after = plan({
        job: ownedJob({ 'spec.replicas': 2 }, p.status),
        pods: [workerPod(0), workerPod(1)],
        nodes: defaultNodes(),
        claimExists: true,
        now: at(3),
        config,
        observations: { progress: { ...progress, generation: 5 } },
      });
      assert.is(condition(after, 'Rescaling')?.status, 'False');
      assert.is(condition(after, 'Rescaling')?.reason, 'WorldFormed');
    },
  },
  {
    name: 'per-worker throughput reaches the status; a reported straggler raises Stragglers (once, a Warning), none clears it',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1)],
    observations: {
      progress: {
        ...progress,
        workers: [
          { worker: 'job-worker-0', batch: 100, samplesPerSecond: 4000, waitSeconds: 0.001 },
          { worker: 'job-worker-1', batch: 28, samplesPerSecond: 1100, waitSeconds: 0.02 },
        ],
        stragglers: ['job-worker-1'],
      },
    },
    expect: (p) => {
      assert.equal(
        p.status.workers?.map((w) => w.batch),
        [100, 28],
      );
      assert.equal(p.status.stragglers, ['job-worker-1']);
      assert.is(condition(p, 'Stragglers')?.status, 'True');
      assert.match(condition(p, 'Stragglers')?.message ?? '', /job-worker-1/);
      assert.is(p.events.filter((e) => e.reason === 'Straggler').length, 1);
      const again = plan({
        job: ownedJob({ 'spec.replicas': 2 }, p.status),
        pods: [workerPod(0), workerPod(1)],
        nodes: defaultNodes(),
        claimExists: true,
        now: at(3),
        config,
        observations: { progress: { ...progress, stragglers: ['job-worker-1'] } },
      });
      assert.is(again.events.filter((e) => e.reason === 'Straggler').length, 0, 'no second event');
      const after = plan({
        job: ownedJob({ 'spec.replicas': 2 }, p.status),
        pods: [workerPod(0), workerPod(1)],
        nodes: defaultNodes(),
        claimExists: true,
        now: at(3),
        config,
        observations: { progress },
      });
      assert.is(condition(after, 'Stragglers')?.status, 'False');
      assert.is(condition(after, 'Stragglers')?.reason, 'WorkersKeepPace');
    },
  },
  {
    name: 'evictStragglers: a reported straggler is asked to leave and its node annotated tensile.dev/slow',
    job: ownedJob(
      { 'spec.replicas': 2, 'spec.balancing': { mode: 'proportional', evictStragglers: true } },
      running(),
    ),
    pods: [workerPod(0), workerPod(1, { node: 'node-1' })],
    observations: { progress: { ...progress, stragglers: ['job-worker-1', 'job-worker-9'] } },
    expect: (p) => {
      assert.equal(
        p.markLeaving.map((m) => m.name),
        ['job-worker-1'],
      );
      assert.equal(
        p.markSlowNodes.map((n) => n.name),
        ['node-1'],
      );
      assert.ok(p.publish.some((m) => m.type === 'leave' && m.workers.includes('job-worker-1')));
      assert.ok(p.events.some((e) => e.reason === 'StragglerEvicted'));
    },
  },
  {
    name: 'without evictStragglers a straggler is only reported',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1)],
    observations: { progress: { ...progress, stragglers: ['job-worker-1'] } },
    expect: (p) => {
      assert.equal(p.markLeaving, []);
      assert.equal(p.markSlowNodes, []);
    },
  },
  {
    name: 'completion reported over NATS: Succeeded with the final figures',
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1)],
    observations: {
      progress,
      completed: {
        type: 'completed',
        worker: 'job-worker-0',
        step: 4690,
        epoch: 10,
        loss: 0.3,
        accuracy: 0.89,
        reason: 'reached 10 epochs',
        model: { uri: 'pvc://models/team-a/job', step: 4690, accuracy: 0.89, time: '2026-11-21T12:00:00Z' },
        time: '2026-11-21T12:00:00Z',
      },
    },
    expect: (p) => {
      assert.is(p.status.phase, 'Succeeded');
      assert.is(p.status.step, 4690);
      assert.is(p.status.accuracy, 0.89);
      assert.equal(p.status.model, {
        uri: 'pvc://models/team-a/job',
        step: 4690,
        time: '2026-11-21T12:00:00Z',
        accuracy: 0.89,
      });
      assert.match(condition(p, 'Succeeded')?.message ?? '', 'step 4690');
      assert.equal(deleted(p), ['job-worker-0', 'job-worker-1']);
    },
  },
);

for (const c of cases) {
  test(c.name, () => {
    const p = plan({
      job: c.job,
      pods: c.pods ?? [],
      nodes: c.nodes ?? defaultNodes(),
      claimExists: c.claimExists ?? false,
      now: c.now ?? T0,
      config,
      ...(c.observations === undefined ? {} : { observations: c.observations }),
      ...(c.podRejected === undefined ? {} : { podRejected: c.podRejected }),
    });
    c.expect(p);
  });
}

const invalidCases: {
  name: string;
  status: TrainingJobStatus | undefined;
  expect: (p: Plan) => void;
}[] = [
  {
    name: 'a new job with an invalid spec: Failed/InvalidSpec, one event, no pod touched',
    status: undefined,
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.is(condition(p, 'Failed')?.reason, 'InvalidSpec');
      assert.is(condition(p, 'Failed')?.message, 'spec.replicas: must be >= 0');
      assert.is(condition(p, 'Running')?.status, 'False');
      assert.is(p.status.completionTime, '2026-11-21T12:00:00Z');
      assert.equal(p.events, [
        { type: 'Warning', reason: 'InvalidSpec', message: 'spec.replicas: must be >= 0' },
      ]);
      assert.equal([p.createPods, p.deletePods, p.releasePods, p.publish], [[], [], [], []]);
    },
  },
  {
    name: 'a running job edited into an invalid spec keeps its counts',
    status: { ...running(), restarts: 2, preemptions: 5, countedPods: ['uid-a'] },
    expect: (p) => {
      assert.is(p.status.phase, 'Failed');
      assert.equal([p.status.restarts, p.status.preemptions, p.status.countedPods], [2, 5, ['uid-a']]);
      assert.is(condition(p, 'Created')?.reason, 'JobCreated');
    },
  },
  {
    name: 'an invalid job already Failed: nothing changes, no event',
    status: { phase: 'Failed', completionTime: '2026-11-21T11:00:00Z', message: 'earlier' },
    expect: (p) => {
      assert.equal(p.status, { phase: 'Failed', completionTime: '2026-11-21T11:00:00Z', message: 'earlier' });
      assert.equal(p.events, []);
    },
  },
];

for (const c of invalidCases) {
  test(c.name, () => {
    c.expect(planInvalidSpec({ status: c.status, reason: 'spec.replicas: must be >= 0', now: T0 }));
  });
}

const kueueCases: [string, Parameters<typeof plan>[0]['queue'], V1Pod[], (p: Plan) => void][] = [
  [
    'queued in Kueue: no workers, Suspended (QueuedByKueue)',
    { admitted: false, reason: 'QueuedByKueue', message: 'waiting in Kueue queue team-a' },
    [],
    (p) => {
      assert.equal(p.createPods, []);
      assert.is(p.status.phase, 'Suspended');
      assert.is(condition(p, 'Suspended')?.reason, 'QueuedByKueue');
    },
  ],
  [
    'admitted with 2 of 4: two workers',
    { admitted: true, count: 2 },
    [],
    (p) => assert.equal(names(p.createPods), ['job-worker-0', 'job-worker-1']),
  ],
  [
    'evicted while running: workers checkpoint and go, progress stays',
    { admitted: false, reason: 'EvictedByKueue', message: 'evicted by Kueue: Preempted' },
    [workerPod(0), workerPod(1)],
    (p) => {
      assert.equal(p.publish, [{ type: 'checkpoint', reason: 'job suspended' }]);
      assert.equal(deleted(p), ['job-worker-0', 'job-worker-1']);
      assert.is(condition(p, 'Suspended')?.reason, 'EvictedByKueue');
      assert.is(p.status.step, 120, 'the step reached is kept');
    },
  ],
];
for (const [name, queue, pods, expect] of kueueCases) {
  test(`Kueue: ${name}`, () => {
    expect(
      plan({
        job: ownedJob(
          { 'spec.replicas': 4, 'spec.minReplicas': 2, 'spec.maxReplicas': 4 },
          { ...running(), step: 120 },
        ),
        pods,
        nodes: defaultNodes(),
        claimExists: true,
        now: T0,
        config,
        ...(queue === undefined ? {} : { queue }),
      }),
    );
  });
}

test('status figures are rounded as kubectl get tj shows them', () => {
  const figures: [number, number][] = [
    [0.123456789, 0.1235],
    [0.000123456, 0.0001235],
    [12.3456, 12.35],
    [0, 0],
  ];
  for (const [raw, shown] of figures) assert.is(roundLoss(raw), shown, String(raw));
  assert.is(roundAccuracy(0.887654), 0.8877);
  assert.is(roundAccuracy(1), 1);
  const p = plan({
    job: ownedJob({ 'spec.replicas': 2 }, running()),
    pods: [workerPod(0), workerPod(1)],
    nodes: defaultNodes(),
    claimExists: true,
    now: T0,
    config,
    observations: {
      completed: {
        type: 'completed',
        worker: 'job-worker-0',
        step: 10,
        epoch: 1,
        loss: 0.3412987,
        accuracy: 0.8912345,
        reason: 'done',
        time: '2026-11-21T12:00:00Z',
      },
    },
  });
  assert.equal([p.status.loss, p.status.accuracy], [0.3413, 0.8912]);
});

// The workers' completion, as a `completed` message or the record that stands for it.
const completion = {
  type: 'completed' as const,
  worker: 'job-worker-0',
  step: 4690,
  epoch: 10,
  loss: 0.33,
  accuracy: 0.8839,
  lastCheckpoint: { step: 4690, path: '/c/ckpt-4690', time: '2026-11-21T12:00:00Z' },
  model: { uri: 'pvc://job-checkpoints/model', step: 4690, accuracy: 0.8839, time: '2026-11-21T12:00:00Z' },
  reason: 'completed 10 epochs',
  time: '2026-11-21T12:00:00Z',
};
const stale = { step: 1876, epoch: 4, loss: 0.3418, accuracy: 0.8698 };
const finishedWithoutFigures: TrainingJobStatus = {
  ...running(),
  ...stale,
  phase: 'Succeeded',
  completionTime: '2026-11-21T11:59:00Z',
};

const recordCases: [string, Parameters<typeof wantsCompletionRecord>[0], boolean][] = [
  [
    'running workers: not done, nothing to read',
    { job: ownedJob({}, running()), pods: [workerPod(0), workerPod(1)], nodes: defaultNodes(), read: false },
    false,
  ],
  [
    'a pod completed, no completion message: read',
    {
      job: ownedJob({}, running()),
      pods: [workerPod(0, { phase: 'Succeeded' }), workerPod(1)],
      nodes: defaultNodes(),
      read: false,
    },
    true,
  ],
  [
    'a pod completed and the message came: nothing to read',
    {
      job: ownedJob({}, running()),
      pods: [workerPod(0, { phase: 'Succeeded' })],
      nodes: defaultNodes(),
      observations: { completed: completion },
      read: false,
    },
    false,
  ],
  [
    'a pod completed, read already this term: not again',
    {
      job: ownedJob({}, running()),
      pods: [workerPod(0, { phase: 'Succeeded' })],
      nodes: defaultNodes(),
      read: true,
    },
    false,
  ],
  [
    'Succeeded by an earlier leader, its pods gone: read once on leading',
    { job: ownedJob({}, finishedWithoutFigures), pods: [], nodes: defaultNodes(), read: false },
    true,
  ],
  [
    'a failed pod is no completion',
    {
      job: ownedJob({}, running()),
      pods: [workerPod(0, { phase: 'Failed' })],
      nodes: defaultNodes(),
      read: false,
    },
    false,
  ],
  [
    'Failed: no completion to read',
    { job: ownedJob({}, { ...running(), phase: 'Failed' }), pods: [], nodes: defaultNodes(), read: false },
    false,
  ],
];
for (const [name, input, expected] of recordCases)
  test(`completion record: ${name}`, () => assert.is(wantsCompletionRecord(input), expected));

test('a leader that missed the completion: the record finishes the job with its final figures', () => {
  const p = plan({
    job: ownedJob({ 'spec.replicas': 2 }, { ...running(), ...stale }),
    pods: [workerPod(0, { phase: 'Succeeded' }), workerPod(1, { phase: 'Succeeded' })],
    nodes: defaultNodes(),
    claimExists: true,
    now: at(0),
    config,
    // What progress.ts made of the record: the completion, beside progress of an older step.
    observations: { completed: completion },
  });
  assert.is(p.status.phase, 'Succeeded');
  assert.equal(
    [p.status.step, p.status.epoch, p.status.loss, p.status.accuracy, p.status.lastCheckpoint?.step],
    [4690, 10, 0.33, 0.8839, 4690],
  );
  assert.equal(p.status.model, {
    uri: 'pvc://job-checkpoints/model',
    step: 4690,
    time: completion.time,
    accuracy: 0.8839,
  });
  assert.match(condition(p, 'Succeeded')?.message ?? '', 'step 4690, epoch 10');
});

test('a job an earlier leader finished without the figures gets them, and stays finished as it was', () => {
  const p = plan({
    job: ownedJob({ 'spec.replicas': 2 }, finishedWithoutFigures),
    pods: [],
    nodes: defaultNodes(),
    claimExists: true,
    now: at(60),
    config,
    observations: { completed: completion },
  });
  assert.is(p.status.phase, 'Succeeded');
  assert.is(p.status.completionTime, '2026-11-21T11:59:00Z');
  assert.equal(
    [p.status.step, p.status.accuracy, p.status.model?.uri],
    [4690, 0.8839, 'pvc://job-checkpoints/model'],
  );
  assert.equal(p.events, []);
});

test('plan is deterministic: the same input gives the same decision', () => {
  const input = {
    job: ownedJob({ 'spec.replicas': 3 }),
    pods: [workerPod(1)],
    nodes: defaultNodes(),
    claimExists: false,
    now: at(5),
    config,
  };
  assert.equal(plan(input), plan(input));
});

test.run();
