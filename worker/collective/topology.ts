/**
 * Where a worker runs, and the ring order that follows from it. Bytes in a ring cross every link
 * between neighbours, so the order decides how many links cross a zone (the slow, billed hops) or
 * leave a node: grouping members by zone, then by node, makes a ring of k zones cross zones exactly
 * k times (twice for two), and each node's workers adjacent. Pure: the rendezvous orders a world's
 * members with it when it proposes one.
 */

export interface Placement {
  /** The Kubernetes node (downward API `spec.nodeName`); unknown when absent. */
  readonly node?: string | undefined;
  /** The node's `topology.kubernetes.io/zone`; unknown when absent. */
  readonly zone?: string | undefined;
}

/**
 * The members grouped by zone, then by node; groups appear in the order of their first member and
 * members keep their order inside a node, so a world without placement (or all on one node) keeps
 * the order it was given. Members of unknown zone form one group, as do those of unknown node.
 */
export function ringOrder<M extends Placement>(members: readonly M[]): M[] {
  const zones = new Map<string, Map<string, M[]>>();
  for (const m of members) {
    const zone = zones.get(m.zone ?? '') ?? new Map<string, M[]>();
    zones.set(m.zone ?? '', zone);
    const node = zone.get(m.node ?? '') ?? [];
    zone.set(m.node ?? '', node);
    node.push(m);
  }
  return [...zones.values()].flatMap((nodes) => [...nodes.values()].flat());
}

/** How many links of the ring (member i → member i+1, the last → the first) join two zones. */
export function crossings<M extends Placement>(ring: readonly M[], key: 'zone' | 'node'): number {
  if (ring.length < 2) return 0;
  let n = 0;
  ring.forEach((m, i) => {
    const next = ring[(i + 1) % ring.length] as M;
    if ((m[key] ?? '') !== (next[key] ?? '')) n++;
  });
  return n;
}
