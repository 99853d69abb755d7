/**
 * Hierarchical all-reduce over the ring's own links, as pure data (the schedule) plus a simulator
 * for its tests. The ring order keeps each node's workers adjacent (topology.ts), so a world is a
 * sequence of node groups; the last member of each group is its leader. Three phases:
 *   1. reduce within each node: a chain along the ring, first member → … → the leader;
 *   2. ring all-reduce among the leaders (reduce-scatter, all-gather, G chunks); a leader's message
 *      reaches the next leader through the next node's other members, which forward it untouched;
 *   3. broadcast within each node: the leader sends the sum back along the ring's links the other
 *      way (every link is a duplex TCP connection).
 * Only phase 2 crosses nodes: each link between nodes carries 2(G − 1)/G of the buffer, against
 * 2(n − 1)/n on a flat ring of n workers (Horovod's hierarchical all-reduce makes the same trade).
 */
import { chunkRanges } from './ring.ts';

export type Side = 'left' | 'right';

export type HierarchyOp =
  | { readonly op: 'send'; readonly to: Side; readonly chunk: number }
  | { readonly op: 'receive'; readonly from: Side; readonly chunk: number; readonly mode: 'add' | 'copy' }
  /** Receive a message from the left and send it on to the right as it is (a leader's, in phase 2). */
  | { readonly op: 'forward'; readonly chunk: number };

const mod = (a: number, n: number) => ((a % n) + n) % n;

/**
 * The sizes of the node groups of `members` in ring order, or undefined when a node's members are
 * not adjacent (the ring then stays flat) or a node is unknown.
 */
export function nodeGroups(members: readonly { readonly node?: string | undefined }[]): number[] | undefined {
  const sizes: number[] = [];
  const seen = new Set<string>();
  let previous: string | undefined;
  for (const m of members) {
    if (m.node === undefined || m.node === '') return undefined;
    if (m.node !== previous) {
      if (seen.has(m.node)) return undefined;
      seen.add(m.node);
      sizes.push(0);
      previous = m.node;
    }
    sizes[sizes.length - 1] = (sizes.at(-1) as number) + 1;
  }
  return sizes;
}

/** Whether the hierarchy pays: more than one node, and some node with more than one worker. */
export function hierarchyPays(groups: readonly number[] | undefined): groups is number[] {
  return groups !== undefined && groups.length > 1 && groups.some((k) => k > 1);
}

/** Where `rank` sits: its group, its position in it, and the group's size. */
function locate(rank: number, groups: readonly number[]): { group: number; position: number; size: number } {
  let first = 0;
  for (let g = 0; g < groups.length; g++) {
    const size = groups[g] as number;
    if (rank < first + size) return { group: g, position: rank - first, size };
    first += size;
  }
  throw new RangeError(`rank ${rank} outside a world of ${first}`);
}

/** What `rank` does, in order; chunks index chunkRanges(length, groups.length). */
export function hierarchySchedule(rank: number, groups: readonly number[]): HierarchyOp[] {
  const { group, position, size } = locate(rank, groups);
  const count = groups.length;
  const leader = position === size - 1;
  const ops: HierarchyOp[] = [];
  if (size > 1)
    for (let c = 0; c < count; c++) {
      if (position > 0) ops.push({ op: 'receive', from: 'left', chunk: c, mode: 'add' });
      if (!leader) ops.push({ op: 'send', to: 'right', chunk: c });
    }
  for (let s = 0; s < 2 * (count - 1); s++) {
    if (!leader) {
      // The previous group's leader's chunk of this step, on its way to this group's leader.
      ops.push({ op: 'forward', chunk: mod(group - 1 - s, count) });
      continue;
    }
    ops.push({ op: 'send', to: 'right', chunk: mod(group - s, count) });
    ops.push({
      op: 'receive',
      from: 'left',
      chunk: mod(group - s - 1, count),
      mode: s < count - 1 ? 'add' : 'copy',
    });
  }
  if (size > 1)
    for (let c = 0; c < count; c++) {
      if (!leader) ops.push({ op: 'receive', from: 'right', chunk: c, mode: 'copy' });
      if (position > 0) ops.push({ op: 'send', to: 'left', chunk: c });
    }
  return ops;
}

/**
 * Runs every rank's schedule on plain arrays with one FIFO per directed link, for tests: returns the
 * buffers after it and the elements sent over each link (`${from}->${to}`). Throws on a deadlock.
 */
export function simulateHierarchy(
  buffers: readonly Float64Array[],
  groups: readonly number[],
): { buffers: Float64Array[]; sent: Map<string, number> } {
  const n = buffers.length;
  const state = buffers.map((b) => Float64Array.from(b));
  const ranges = chunkRanges(state[0]?.length ?? 0, groups.length);
  const schedules = state.map((_, r) => hierarchySchedule(r, groups));
  const at = new Array<number>(n).fill(0);
  const queues = new Map<string, Float64Array[]>();
  const sent = new Map<string, number>();
  const peer = (r: number, side: Side) => (side === 'right' ? mod(r + 1, n) : mod(r - 1, n));
  const key = (from: number, to: number) => `${from}->${to}`;
  const push = (from: number, to: number, values: Float64Array) => {
    queues.set(key(from, to), [...(queues.get(key(from, to)) ?? []), values]);
    sent.set(key(from, to), (sent.get(key(from, to)) ?? 0) + values.length);
  };
  for (let progress = true; progress; ) {
    progress = false;
    for (let r = 0; r < n; r++) {
      for (;;) {
        const op = schedules[r]?.[at[r] as number];
        if (op === undefined) break;
        const buffer = state[r] as Float64Array;
        const range = ranges[op.chunk] as { start: number; end: number };
        if (op.op === 'send') push(r, peer(r, op.to), buffer.slice(range.start, range.end));
        else {
          const from = peer(r, op.op === 'forward' ? 'left' : op.from);
          const incoming = queues.get(key(from, r))?.shift();
          if (incoming === undefined) break;
          if (op.op === 'forward') push(r, peer(r, 'right'), incoming);
          else
            for (let i = 0; i < incoming.length; i++)
              buffer[range.start + i] =
                op.mode === 'add'
                  ? (buffer[range.start + i] as number) + (incoming[i] as number)
                  : (incoming[i] as number);
        }
        at[r] = (at[r] as number) + 1;
        progress = true;
      }
    }
  }
  const stuck = at.findIndex((i, r) => i < (schedules[r]?.length ?? 0));
  if (stuck >= 0) throw new Error(`hierarchical schedule deadlocks at rank ${stuck}, op ${at[stuck]}`);
  return { buffers: state, sent };
}
