/**
 * Decisions of the simulated cluster autoscaler and spot reclaimer, as pure functions of the pods,
 * the nodes and the clock. The I/O shells (autoscaler.ts, reclaimer.ts) watch the API server and act.
 */
import type { V1Node, V1Pod } from '@kubernetes/client-node';

export const GPU = 'nvidia.com/gpu';
/** Set on nodes the simulated autoscaler created, so it only ever removes its own. */
export const LABEL_SIMULATED = 'tensile.dev/simulated-by';

export interface AutoscalerConfig {
  /** Time from a pod turning unschedulable to its node being Ready-able (a cloud's boot time). */
  readonly provisionDelayMs: number;
  /** An empty node of ours is removed after this long. */
  readonly scaleDownAfterMs: number;
  readonly maxNodes: number;
  readonly gpusPerNode: number;
  readonly podsPerNode: number;
}

export interface AutoscalerMemory {
  /** When each unschedulable pod (namespace/name) was first seen. */
  readonly unschedulableSince: Map<string, number>;
  /** When each node of ours was first seen empty. */
  readonly emptySince: Map<string, number>;
}

export interface AutoscalerDecision {
  readonly addNodes: number;
  readonly removeNodes: readonly string[];
  /** When something will be due, if nothing changes before. */
  readonly wakeInMs: number | undefined;
}

const key = (pod: V1Pod) => `${pod.metadata?.namespace}/${pod.metadata?.name}`;

export function isUnschedulable(pod: V1Pod): boolean {
  if (pod.spec?.nodeName || pod.metadata?.deletionTimestamp !== undefined || pod.status?.phase !== 'Pending')
    return false;
  return (
    pod.status?.conditions?.some(
      (c) => c.type === 'PodScheduled' && c.status === 'False' && c.reason === 'Unschedulable',
    ) ?? false
  );
}

export function gpuRequest(pod: V1Pod): number {
  let total = 0;
  for (const c of pod.spec?.containers ?? []) {
    const q = c.resources?.limits?.[GPU] ?? c.resources?.requests?.[GPU];
    if (q !== undefined) total += Number(q);
  }
  return Number.isFinite(total) ? total : 0;
}

function isActive(pod: V1Pod): boolean {
  return pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed';
}

export function decideAutoscale(
  pods: readonly V1Pod[],
  nodes: readonly V1Node[],
  ours: (node: V1Node) => boolean,
  provisioning: number,
  now: number,
  config: AutoscalerConfig,
  memory: AutoscalerMemory,
): AutoscalerDecision {
  const wake: number[] = [];
  // Scale up: pods that have waited for the provision delay, packed onto new nodes.
  const unschedulable = pods.filter(isUnschedulable);
  const seen = new Set(unschedulable.map(key));
  for (const k of [...memory.unschedulableSince.keys()])
    if (!seen.has(k)) memory.unschedulableSince.delete(k);
  const due: V1Pod[] = [];
  for (const pod of unschedulable) {
    const since = memory.unschedulableSince.get(key(pod)) ?? now;
    memory.unschedulableSince.set(key(pod), since);
    // A pod no new node could ever hold does not make the simulated cloud buy one.
    if (gpuRequest(pod) > config.gpusPerNode) continue;
    if (now - since >= config.provisionDelayMs) due.push(pod);
    else wake.push(since + config.provisionDelayMs);
  }
  const gpus = due.reduce((sum, pod) => sum + gpuRequest(pod), 0);
  const needed = Math.max(
    gpus > 0 ? Math.ceil(gpus / config.gpusPerNode) : 0,
    Math.ceil(due.length / config.podsPerNode),
  );
  const owned = nodes.filter(ours);
  const addNodes = Math.max(
    0,
    Math.min(needed - provisioning, config.maxNodes - owned.length - provisioning),
  );
  // Scale down: our nodes with no active pod for scaleDownAfterMs.
  const busy = new Set(pods.filter((p) => p.spec?.nodeName && isActive(p)).map((p) => p.spec?.nodeName));
  const removeNodes: string[] = [];
  for (const node of owned) {
    const name = node.metadata?.name ?? '';
    if (busy.has(name) || addNodes > 0 || due.length > 0) {
      memory.emptySince.delete(name);
      continue;
    }
    const since = memory.emptySince.get(name) ?? now;
    memory.emptySince.set(name, since);
    if (now - since >= config.scaleDownAfterMs) removeNodes.push(name);
    else wake.push(since + config.scaleDownAfterMs);
  }
  const future = wake.filter((t) => t > now);
  return { addNodes, removeNodes, wakeInMs: future.length > 0 ? Math.min(...future) - now : undefined };
}

export type ReclaimKind = 'notice' | 'abrupt';

export interface ReclaimTarget {
  readonly node: string;
  readonly kind: ReclaimKind;
}

/**
 * Which node a reclaim hits: a spot node running a worker of `job` (the reclaim that matters), the
 * one with the lowest name among equals so a scripted run is repeatable; `pick` breaks the tie when
 * randomness is wanted.
 */
export function chooseReclaimVictim(
  pods: readonly V1Pod[],
  nodes: readonly V1Node[],
  exclude: ReadonlySet<string>,
  pick: (candidates: readonly string[]) => string | undefined = (c) => c[0],
): string | undefined {
  const spot = new Set(
    nodes
      .filter(
        (n) =>
          n.metadata?.labels?.['karpenter.sh/capacity-type'] === 'spot' &&
          n.metadata?.deletionTimestamp === undefined,
      )
      .map((n) => n.metadata?.name ?? ''),
  );
  const candidates = [
    ...new Set(
      pods
        .filter(
          (p) =>
            p.status?.phase === 'Running' &&
            p.metadata?.deletionTimestamp === undefined &&
            p.metadata?.labels?.['tensile.dev/role'] === 'worker',
        )
        .map((p) => p.spec?.nodeName ?? '')
        .filter((n) => spot.has(n) && !exclude.has(n)),
    ),
  ].sort();
  return pick(candidates);
}
