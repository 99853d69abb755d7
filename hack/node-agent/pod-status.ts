/**
 * The status a kubelet would report for a pod whose (first) container is a local process, and the
 * restart decisions of its restartPolicy. Pure: the runner (pods.ts) owns the processes and the clock.
 */
import type { V1Pod, V1PodCondition } from '@kubernetes/client-node';
import { exponentialBackoffMs } from '../../operator/api/backoff.ts';
import { isoTime } from './kube.ts';

export interface Termination {
  readonly exitCode: number;
  readonly signal?: number;
  readonly reason: string;
  readonly message?: string;
  readonly startedAt?: string;
  readonly finishedAt: string;
  readonly containerID?: string;
}

export type ContainerState =
  | { readonly kind: 'waiting'; readonly reason: string; readonly message?: string }
  | { readonly kind: 'running'; readonly startedAt: string; readonly containerID: string }
  | ({ readonly kind: 'terminated' } & Termination);

export interface LocalContainer {
  readonly state: ContainerState;
  readonly lastTermination?: Termination;
  readonly restartCount: number;
  /** No further start: the pod has reached its final phase. */
  readonly finished: boolean;
}

export type RestartPolicy = 'Always' | 'OnFailure' | 'Never';
export type PodPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed';

/** The agent's default pod address (AgentConfig.podIp). */
export const POD_IP = '127.0.0.1';

export function restartPolicyOf(pod: V1Pod): RestartPolicy {
  const policy = pod.spec?.restartPolicy;
  return policy === 'OnFailure' || policy === 'Never' ? policy : 'Always';
}

export function terminationReason(exitCode: number): 'Completed' | 'Error' {
  return exitCode === 0 ? 'Completed' : 'Error';
}

/** Exit code as a shell reports it: a process killed by signal N exits with 128 + N. */
export function exitCodeOf(code: number | null, signalNumber: number | undefined): number {
  if (code !== null) return code;
  return 128 + (signalNumber ?? 9);
}

export function shouldRestart(policy: RestartPolicy, exitCode: number): boolean {
  return policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0);
}

/** Kubelet's crash-loop back-off, shortened for tests: 1 s doubling to at most 10 s. */
export function restartDelayMs(restartCount: number): number {
  return exponentialBackoffMs(restartCount - 1, 1000, 10_000);
}

export function podPhase(local: LocalContainer): PodPhase {
  const { state } = local;
  if (state.kind === 'terminated' && local.finished) return state.exitCode === 0 ? 'Succeeded' : 'Failed';
  if (state.kind === 'running') return 'Running';
  // Waiting to restart after a termination, or terminated and about to restart: kubelet says Running.
  if (local.lastTermination !== undefined || state.kind === 'terminated') return 'Running';
  return 'Pending';
}

function condition(
  type: string,
  ok: boolean,
  previous: readonly V1PodCondition[],
  now: string,
  why?: { reason: string; message?: string },
) {
  const status = ok ? 'True' : 'False';
  const before = previous.find((c) => c.type === type);
  const lastTransitionTime =
    before !== undefined && before.status === status ? (isoTime(before.lastTransitionTime) ?? now) : now;
  return {
    type,
    status,
    lastProbeTime: null,
    lastTransitionTime,
    ...(ok || why === undefined
      ? {}
      : { reason: why.reason, ...(why.message ? { message: why.message } : {}) }),
  };
}

const OWN_CONDITIONS = new Set(['PodReadyToStartContainers', 'Initialized', 'ContainersReady', 'Ready']);

function stateJson(state: ContainerState) {
  switch (state.kind) {
    case 'waiting':
      return { waiting: { reason: state.reason, ...(state.message ? { message: state.message } : {}) } };
    case 'running':
      return { running: { startedAt: state.startedAt } };
    case 'terminated':
      return { terminated: terminationJson(state) };
  }
}

function terminationJson(t: Termination) {
  return {
    exitCode: t.exitCode,
    ...(t.signal === undefined ? {} : { signal: t.signal }),
    reason: t.reason,
    ...(t.message ? { message: t.message } : {}),
    ...(t.startedAt ? { startedAt: t.startedAt } : {}),
    finishedAt: t.finishedAt,
    ...(t.containerID ? { containerID: t.containerID } : {}),
  };
}

/**
 * The pod status for a merge patch of pods/status. Lists are replaced whole by a merge patch, so
 * conditions the agent does not own (PodScheduled, DisruptionTarget, readiness gates) are carried over.
 */
export function podStatus(
  pod: V1Pod,
  local: LocalContainer,
  startTime: string,
  now: Date,
  podIp: string = POD_IP,
) {
  const nowIso = isoTime(now) as string;
  const phase = podPhase(local);
  const previous = pod.status?.conditions ?? [];
  const container = pod.spec?.containers[0];
  const name = container?.name ?? '';
  const running = local.state.kind === 'running';
  const terminal = phase === 'Succeeded' || phase === 'Failed';
  const notReady = terminal
    ? { reason: 'PodCompleted' }
    : { reason: 'ContainersNotReady', message: `containers with unready status: [${name}]` };
  const conditions = [
    condition('PodReadyToStartContainers', !terminal, previous, nowIso),
    condition('Initialized', true, previous, nowIso),
    condition('ContainersReady', running, previous, nowIso, notReady),
    condition('Ready', running, previous, nowIso, notReady),
    ...previous
      .filter((c) => !OWN_CONDITIONS.has(c.type))
      .map((c) => ({
        ...c,
        lastProbeTime: isoTime(c.lastProbeTime) ?? null,
        lastTransitionTime: isoTime(c.lastTransitionTime) ?? nowIso,
      })),
  ];
  const containerID = local.state.kind === 'running' ? local.state.containerID : undefined;
  return {
    phase,
    conditions,
    hostIP: podIp,
    hostIPs: [{ ip: podIp }],
    podIP: podIp,
    podIPs: [{ ip: podIp }],
    startTime,
    containerStatuses: [
      {
        name,
        image: container?.image ?? '',
        imageID: '',
        ...(containerID === undefined ? {} : { containerID }),
        started: running,
        ready: running,
        restartCount: local.restartCount,
        state: stateJson(local.state),
        lastState:
          local.lastTermination === undefined ? {} : { terminated: terminationJson(local.lastTermination) },
      },
    ],
  };
}
