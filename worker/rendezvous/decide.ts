/**
 * The rendezvous decision as a pure function: given what this worker knows of the members and the
 * current world, and the clock, what does it do? Liveness is judged by when THIS worker last saw a
 * member's record change (its heartbeat), so clocks of different machines never need to agree.
 *
 * A round (a new world) is needed when there is no world, a member of the world is gone or leaving,
 * a member reports that the world failed, or workers are waiting while the world has room. It closes
 * when `maxReplicas` are there, or when at least `minReplicas` are and the last-call window has passed,
 * or at once when the world only shrinks (survivors, no newcomer).
 */
import { z } from 'zod';
import { ringOrder } from '../collective/topology.ts';
import { AgreementSchema, immutableMismatch, SpecOfferSchema } from './agreement.ts';

export const MemberRecordSchema = z.object({
  id: z.string().min(1),
  /** host:port of this worker's collective server. */
  address: z.string().min(1),
  joinedAt: z.number(),
  heartbeat: z.int().min(0),
  state: z.enum(['active', 'leaving']),
  /** Whether this worker holds trained state (a survivor), and the last step it committed. */
  hasState: z.boolean(),
  step: z.int().min(0),
  /** The generation this worker runs (0 before its first world). */
  generation: z.int().min(0),
  /** Set when this worker could not run that generation (a peer never connected, say). */
  failedGeneration: z.int().min(0).optional(),
  /** The spec this worker was started with (agreement.ts); absent from workers that offer none. */
  spec: SpecOfferSchema.optional(),
  /** Where it runs (worker/collective/topology.ts); absent when unknown. */
  node: z.string().optional(),
  zone: z.string().optional(),
  /**
   * Peers this worker found dead at the speed of the link: their TCP link broke and their collective
   * port refused a connection. Each names the peer's record as last seen (its start and heartbeat
   * count): the report holds while the peer's record shows no newer heartbeat than one that may
   * have been in flight, so a peer that heartbeats on (or comes back as a new process) is alive
   * whatever was reported.
   */
  lost: z
    .array(z.object({ id: z.string(), joinedAt: z.number(), heartbeat: z.int().min(0) }))
    .max(16)
    .optional(),
});
export type MemberRecord = z.output<typeof MemberRecordSchema>;

export const WorldMemberSchema = z.object({
  id: z.string(),
  address: z.string(),
  batch: z.int().min(1),
  node: z.string().optional(),
  zone: z.string().optional(),
});

export const WorldRecordSchema = z.object({
  /** The incarnation of the job (its uid) this world belongs to. */
  jobUid: z.string().optional(),
  generation: z.int().min(1),
  members: z.array(WorldMemberSchema).min(1),
  /** The member whose state everyone adopts; undefined when nobody has any (restore from a checkpoint). */
  source: z.string().optional(),
  startStep: z.int().min(0),
  /**
   * The sum of the members' batches. Ranks take their batches from `members` (generation-plan.ts),
   * hence this same global batch; it is written for people and tools reading the bucket.
   */
  globalBatch: z.int().min(1),
  /**
   * lr_base × the policy's target scale: where the world's schedule is headed. A rank's rate at a step
   * follows the schedule from the world's policy state (train/policy.ts `learningRateAt`), so no rank
   * reads this field; it is written for people and tools reading the bucket.
   */
  learningRate: z.number().positive(),
  /** Opaque state of the rescale policy (warm-up origin, AdaScale progress, ...). */
  policy: z.record(z.string(), z.unknown()).default({}),
  /** The spec settings every rank of this world uses (agreement.ts). */
  agreement: AgreementSchema.optional(),
  /** The operator's chosen global batch this world was formed with (its revision), if any. */
  chosenBatch: z.object({ globalBatch: z.int().min(1), revision: z.int().min(1) }).optional(),
  reason: z.string(),
  createdAt: z.number(),
  /**
   * A secret drawn afresh for every world: its members prove they hold it when they connect their
   * collective links (collective/transport.ts), so nobody outside the world can join its ring. Only
   * those who can read the job's bucket see it.
   */
  linkToken: z.string().min(16).max(256),
});
export type WorldRecord = z.output<typeof WorldRecordSchema>;
export type WorldMember = z.output<typeof WorldMemberSchema>;

export interface ObservedMember {
  readonly record: MemberRecord;
  /** Local time (ms) when this worker saw the record's revision change last. */
  readonly observedAt: number;
  /**
   * Whether this worker has seen the record change at least once. A record seen only as it was when
   * first read may be a dead worker's leftover (kill -9 leaves its key behind): such a member is not
   * invited into a new world (other than the first) until it heartbeats. Undefined counts as confirmed.
   */
  readonly confirmed?: boolean;
}

export interface RendezvousConfig {
  readonly minReplicas: number;
  readonly maxReplicas: number;
  readonly timeoutMs: number;
  readonly lastCallMs: number;
}

export interface RendezvousView {
  readonly self: string;
  readonly now: number;
  readonly config: RendezvousConfig;
  readonly members: ReadonlyMap<string, ObservedMember>;
  readonly world: WorldRecord | undefined;
  /** The generation this worker currently runs (0 for none). */
  readonly running: number;
  /** When this worker first saw that a round is needed (undefined when none was). */
  readonly roundSince: number | undefined;
  /** The global batch the operator chose (rendezvous key `autoscaling`), if it chose one. */
  readonly chosenBatch?:
    | { readonly globalBatch: number; readonly revision: number; readonly replicas?: number | undefined }
    | undefined;
}

/** A world to propose, without its policy fields (batch sizes, learning rate), which the caller adds. */
export interface ProposedWorld {
  readonly generation: number;
  readonly members: readonly { id: string; address: string; node?: string; zone?: string }[];
  readonly source: string | undefined;
  readonly startStep: number;
  readonly reason: string;
}

export type Decision =
  /** Nothing to do; decide again on the next change or at `until`. */
  | {
      readonly action: 'wait';
      readonly reason: string;
      readonly until?: number;
      readonly roundSince?: number;
    }
  /** Write this world (compare-and-set on the world key's revision). */
  | { readonly action: 'propose'; readonly world: ProposedWorld }
  /** Switch to the current world: it includes this worker and is newer than what it runs. */
  | { readonly action: 'adopt'; readonly world: WorldRecord }
  /** Keep training in the world this worker runs. */
  | { readonly action: 'continue' }
  /** The world is full without this worker: stand by. */
  | { readonly action: 'standby'; readonly reason: string };

export function isAlive(member: ObservedMember, now: number, timeoutMs: number): boolean {
  return member.record.state === 'active' && now - member.observedAt <= timeoutMs;
}

/**
 * Members a live peer found dead through a broken link and a refused probe, and which have not
 * heartbeaten since: they count as gone now, not after the heartbeat timeout.
 */
export function reportedDead(
  members: ReadonlyMap<string, ObservedMember>,
  reporters: ReadonlySet<string>,
): Set<string> {
  const dead = new Set<string>();
  for (const reporter of reporters) {
    for (const report of members.get(reporter)?.record.lost ?? []) {
      const peer = members.get(report.id);
      if (
        report.id !== reporter &&
        peer !== undefined &&
        peer.record.joinedAt === report.joinedAt &&
        peer.record.heartbeat <= report.heartbeat + 1
      )
        dead.add(report.id);
    }
  }
  return dead;
}

function joinOrder(a: MemberRecord, b: MemberRecord): number {
  return a.joinedAt - b.joinedAt || a.id.localeCompare(b.id);
}

/** Why the current world cannot go on (or room for joiners), or undefined when it is fine. */
export function roundReason(view: RendezvousView, alive: ReadonlySet<string>): string | undefined {
  const { world, members, config } = view;
  if (world === undefined) return 'first world';
  // First, so that the cause a world records is the death, not a survivor's failed step after it.
  for (const m of world.members) {
    const observed = members.get(m.id);
    if (observed !== undefined && !alive.has(m.id) && isAlive(observed, view.now, config.timeoutMs))
      return `${m.id} lost (its link broke and its port refused a probe)`;
  }
  for (const m of world.members) {
    const observed = members.get(m.id);
    if (observed === undefined) return `${m.id} left`;
    if (observed.record.state === 'leaving') return `${m.id} is leaving`;
    if (!alive.has(m.id)) return `${m.id} lost (no heartbeat for ${config.timeoutMs} ms)`;
    if (observed.record.failedGeneration === world.generation)
      return `${m.id} could not run generation ${world.generation}`;
  }
  const agreed = world.agreement;
  if (agreed !== undefined) {
    for (const m of world.members) {
      const offer = members.get(m.id)?.record.spec;
      // Offers of another model are never taken up: they must not ask for world after world.
      if (
        offer !== undefined &&
        offer.revision > agreed.revision &&
        immutableMismatch(agreed, offer).length === 0
      )
        return `${m.id} brings spec revision ${offer.revision}`;
    }
  }
  const chosen = view.chosenBatch;
  if (
    chosen !== undefined &&
    chosen.revision > (world.chosenBatch?.revision ?? 0) &&
    (chosen.replicas === undefined || chosen.replicas === world.members.length)
  )
    return `the operator chose global batch ${chosen.globalBatch} (revision ${chosen.revision})`;
  const inWorld = new Set(world.members.map((m) => m.id));
  // A worker knows it is alive: its own record needs no confirmation (else a joiner would stand by,
  // "world N is full", until its second heartbeat, as if it had nowhere to go).
  const joiners = [...alive].filter(
    (id) => !inWorld.has(id) && (id === view.self || members.get(id)?.confirmed !== false),
  );
  if (joiners.length > 0 && world.members.length < config.maxReplicas)
    return `${joiners.sort().join(', ')} joining`;
  return undefined;
}

export function decide(view: RendezvousView): Decision {
  const { self, now, config, members, world } = view;
  const alive = new Set<string>();
  for (const [id, m] of members)
    if (id === self ? m.record.state === 'active' : isAlive(m, now, config.timeoutMs)) alive.add(id);
  for (const id of reportedDead(members, alive)) if (id !== self) alive.delete(id);
  const reason = roundReason(view, alive);
  if (reason === undefined) {
    if (world === undefined) return { action: 'wait', reason: 'no world yet' };
    if (!world.members.some((m) => m.id === self))
      return { action: 'standby', reason: `world ${world.generation} is full` };
    return world.generation > view.running ? { action: 'adopt', world } : { action: 'continue' };
  }
  const roundSince = view.roundSince ?? now;
  // Keep the survivors' order (their ranks barely move), then newcomers in the order they joined.
  const previous = world?.members.map((m) => m.id).filter((id) => alive.has(id)) ?? [];
  const newcomers = [...alive]
    // Leftover records matter once there has been a world; the very first one takes everyone.
    .filter(
      (id) =>
        !previous.includes(id) &&
        (world === undefined || id === self || members.get(id)?.confirmed !== false),
    )
    .map((id) => (members.get(id) as ObservedMember).record)
    .sort(joinOrder)
    .map((r) => r.id);
  const candidates = [...previous, ...newcomers].slice(0, config.maxReplicas);
  if (candidates.length < config.minReplicas) {
    return {
      action: 'wait',
      reason: `${reason}; ${candidates.length} of at least ${config.minReplicas} workers`,
      roundSince,
    };
  }
  // A full world of the same members after a failed one gathers nobody, but it is what a survivor
  // asks for when its step failed before it heard that a peer died: the last call gives that report
  // time to come (a spec change with the same members still re-forms at once).
  const failedSameWorld =
    world !== undefined &&
    newcomers.length === 0 &&
    candidates.length === world.members.length &&
    world.members.some((m) => members.get(m.id)?.record.failedGeneration === world.generation);
  const full = candidates.length >= config.maxReplicas && !failedSameWorld;
  // The last call gathers joiners that arrive close together. When the world only lost members and
  // nobody new is there, waiting gains nothing and stalls every survivor. A round with the same
  // members (a failed generation) still waits: a peer that died silently is then dropped by its
  // heartbeat instead of failing world after world.
  const shrinkOnly =
    world !== undefined && newcomers.length === 0 && candidates.length < world.members.length;
  const closesAt = roundSince + config.lastCallMs;
  if (!full && !shrinkOnly && now < closesAt)
    return { action: 'wait', reason: `${reason}; last call`, until: closesAt, roundSince };
  if (!candidates.includes(self)) return { action: 'standby', reason: 'not in the next world' };
  // Ring neighbours by placement: same node, then same zone, adjacent (the fewest slow hops).
  const records = ringOrder(candidates.map((id) => (members.get(id) as ObservedMember).record));
  let source: MemberRecord | undefined;
  for (const r of records) if (r.hasState && (source === undefined || r.step > source.step)) source = r;
  return {
    action: 'propose',
    world: {
      generation: (world?.generation ?? 0) + 1,
      members: records.map((r) => ({
        id: r.id,
        address: r.address,
        ...(r.node === undefined ? {} : { node: r.node }),
        ...(r.zone === undefined ? {} : { zone: r.zone }),
      })),
      source: source?.id,
      startStep: source?.step ?? 0,
      reason,
    },
  };
}
