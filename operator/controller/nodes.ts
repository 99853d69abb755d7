/**
 * What a Node's state means for the workers on it. Pure: a function of the Node object only.
 */
import type { V1Node, V1Taint } from '@kubernetes/client-node';

export type NodeHealth =
  | { readonly state: 'ready' }
  /** The node announced its end (spot reclaim, consolidation, drain): workers should leave now. */
  | { readonly state: 'disrupted'; readonly reason: string }
  /** The kubelet stopped reporting: the workers are probably gone already. */
  | { readonly state: 'notReady'; readonly reason: string }
  | { readonly state: 'missing' };

/** Exact taint keys that announce a node's end. */
const DISRUPTION_TAINTS = new Set([
  'karpenter.sh/disrupted',
  'karpenter.sh/disruption',
  'ToBeDeletedByClusterAutoscaler',
  'cloud.google.com/impending-node-termination',
  'node.kubernetes.io/unschedulable',
  'node.kubernetes.io/out-of-service',
]);

/** Taint key prefixes of the same kind (aws-node-termination-handler has one per notice type). */
const DISRUPTION_TAINT_PREFIXES = ['aws-node-termination-handler/'];

const NOT_READY_TAINTS = new Set(['node.kubernetes.io/not-ready', 'node.kubernetes.io/unreachable']);

export function isDisruptionTaint(taint: Pick<V1Taint, 'key'>): boolean {
  return DISRUPTION_TAINTS.has(taint.key) || DISRUPTION_TAINT_PREFIXES.some((p) => taint.key.startsWith(p));
}

export function nodeHealth(node: V1Node | undefined): NodeHealth {
  if (node === undefined) return { state: 'missing' };
  const taints = node.spec?.taints ?? [];
  const disruption = taints.find(isDisruptionTaint);
  if (disruption !== undefined) {
    return {
      state: 'disrupted',
      reason: `taint ${disruption.key}${disruption.value ? `=${disruption.value}` : ''}`,
    };
  }
  if (node.spec?.unschedulable === true) return { state: 'disrupted', reason: 'node cordoned' };
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
  if (ready === undefined) return { state: 'notReady', reason: 'no Ready condition' };
  if (ready.status !== 'True') {
    return { state: 'notReady', reason: `Ready=${ready.status}${ready.reason ? ` (${ready.reason})` : ''}` };
  }
  const notReadyTaint = taints.find((t) => NOT_READY_TAINTS.has(t.key));
  if (notReadyTaint !== undefined) return { state: 'notReady', reason: `taint ${notReadyTaint.key}` };
  return { state: 'ready' };
}
