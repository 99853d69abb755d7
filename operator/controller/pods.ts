/**
 * What each worker pod is, from the operator's point of view. Pure: a function of the pod, the nodes
 * and the clock.
 */
import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { FINALIZER_ACCOUNTING, LABEL_REPLICA_INDEX } from '../api/contract.ts';
import { nodeHealth } from './nodes.ts';

/** Set on a worker that was asked to leave (node disruption), so its exit counts as a preemption. */
export const ANNOTATION_LEAVE_REQUESTED = 'tensile.dev/leave-requested';

/** Pod status reasons of a pod ended by the platform rather than by its own failure. */
const PLATFORM_REASONS = new Set([
  'Evicted',
  'Preempted',
  'NodeLost',
  'Shutdown',
  'NodeShutdown',
  'Terminated',
  'NodeAffinity',
]);

export type PodState =
  /** Counts toward the desired number of workers. */
  | { readonly kind: 'active'; readonly ready: boolean; readonly pending: boolean }
  /** Still alive but on its way out (its node is going); a replacement may start now. */
  | { readonly kind: 'leaving'; readonly reason: string; readonly asked: boolean }
  | {
      readonly kind: 'ended';
      readonly outcome: 'completed' | 'failed' | 'preempted';
      readonly reason: string;
      /** Its node is gone: no kubelet will finish the deletion, so it must be forced. */
      readonly nodeLost: boolean;
    }
  /** Being deleted by the operator itself (no accounting finalizer left). */
  | { readonly kind: 'removing' };

export function toMillis(time: Date | string | undefined): number | undefined {
  if (time === undefined) return undefined;
  const ms = time instanceof Date ? time.getTime() : Date.parse(time);
  return Number.isNaN(ms) ? undefined : ms;
}

export function hasAccountingFinalizer(pod: V1Pod): boolean {
  return pod.metadata?.finalizers?.includes(FINALIZER_ACCOUNTING) ?? false;
}

export function replicaIndex(pod: V1Pod): number {
  const raw = pod.metadata?.labels?.[LABEL_REPLICA_INDEX];
  const index = raw === undefined ? Number.NaN : Number(raw);
  return Number.isInteger(index) && index >= 0 ? index : -1;
}

function exitDescription(pod: V1Pod): string {
  const terminated = pod.status?.containerStatuses?.[0]?.state?.terminated;
  if (terminated === undefined) return pod.status?.reason ?? pod.status?.message ?? 'no container status';
  const reason = terminated.reason ?? 'Error';
  return `exit code ${terminated.exitCode}${reason === 'Error' ? '' : ` (${reason})`}`;
}

function endedByPlatform(pod: V1Pod): string | undefined {
  const disruption = pod.status?.conditions?.find(
    (c) => c.type === 'DisruptionTarget' && c.status === 'True',
  );
  if (disruption !== undefined) return `disrupted: ${disruption.reason ?? 'DisruptionTarget'}`;
  const reason = pod.status?.reason;
  if (reason !== undefined && PLATFORM_REASONS.has(reason))
    return `${reason}${pod.status?.message ? `: ${pod.status.message}` : ''}`;
  return undefined;
}

export function podState(pod: V1Pod, nodes: ReadonlyMap<string, V1Node>): PodState {
  const leaveAsked = pod.metadata?.annotations?.[ANNOTATION_LEAVE_REQUESTED];
  const nodeName = pod.spec?.nodeName;
  const health = nodeName === undefined || nodeName === '' ? undefined : nodeHealth(nodes.get(nodeName));
  const nodeLost = health?.state === 'missing';
  const ended = (outcome: 'completed' | 'failed' | 'preempted', reason: string): PodState => ({
    kind: 'ended',
    outcome,
    reason,
    nodeLost,
  });
  if (pod.metadata?.deletionTimestamp !== undefined) {
    if (!hasAccountingFinalizer(pod)) return { kind: 'removing' };
    if (nodeLost) return ended('preempted', `node ${nodeName} is gone`);
    return ended('preempted', leaveAsked ?? 'pod deleted (evicted, drained or its node removed)');
  }
  const phase = pod.status?.phase;
  if (phase === 'Succeeded') {
    if (leaveAsked !== undefined) return ended('preempted', `left: ${leaveAsked}`);
    return ended('completed', 'worker finished training');
  }
  if (phase === 'Failed') {
    const platform = endedByPlatform(pod);
    if (platform !== undefined) return ended('preempted', platform);
    if (leaveAsked !== undefined) return ended('preempted', `left: ${leaveAsked}`);
    return ended('failed', exitDescription(pod));
  }
  if (health !== undefined) {
    if (health.state === 'missing') return ended('preempted', `node ${nodeName} is gone`);
    if (health.state !== 'ready') {
      return {
        kind: 'leaving',
        reason: `node ${nodeName}: ${health.reason}`,
        asked: leaveAsked !== undefined,
      };
    }
  }
  if (phase === 'Unknown')
    return { kind: 'leaving', reason: 'pod state unknown', asked: leaveAsked !== undefined };
  if (leaveAsked !== undefined) return { kind: 'leaving', reason: leaveAsked, asked: true };
  const ready = pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  return { kind: 'active', ready, pending: phase !== 'Running' };
}

export function finishedAt(pod: V1Pod): number | undefined {
  return (
    toMillis(pod.status?.containerStatuses?.[0]?.state?.terminated?.finishedAt) ??
    toMillis(pod.metadata?.creationTimestamp)
  );
}
