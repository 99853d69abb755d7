/**
 * The rendezvous I/O shell around `decide`: keeps this worker's member record alive with heartbeats,
 * watches the bucket, and whenever something changes (or a timer fires) asks `decide` what to do and
 * does it: propose a world with a compare-and-set on the world key, or hand a new world to the trainer.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'winston';
import {
  AUTOSCALING_KEY,
  type AutoscalingRecord,
  AutoscalingRecordSchema,
  type DecodeFailure,
  decodeMessage,
  MAX_REPORT_BYTES,
} from '../../operator/api/contract.ts';
import type { DropCounter } from '../../operator/api/drops.ts';
import { classify } from '../../operator/api/errors.ts';
import { emit } from '../log.ts';
import { rendezvousRange, type SpecOffer } from './agreement.ts';
import {
  type Decision,
  decide,
  isAlive,
  type MemberRecord,
  MemberRecordSchema,
  type ObservedMember,
  type ProposedWorld,
  type RendezvousConfig,
  type WorldRecord,
  WorldRecordSchema,
} from './decide.ts';
import type { RendezvousStore } from './store.ts';

export const WORLD_KEY = 'world';
export const memberKey = (id: string) => `member.${id}`;

/**
 * Fills in what a world needs beyond its members: batch sizes, learning rate, policy state and the
 * spec agreement, from the previous world and the specs the proposed members offer.
 */
export type WorldShaper = (
  proposal: ProposedWorld,
  previous: WorldRecord | undefined,
  offers: readonly SpecOffer[],
  chosenBatch: number | undefined,
) => Pick<WorldRecord, 'members' | 'globalBatch' | 'learningRate' | 'policy' | 'agreement'>;

export interface AgentOptions {
  readonly store: RendezvousStore;
  readonly id: string;
  /** The job's incarnation: stamped on the worlds this agent proposes; worlds of another are ignored. */
  readonly incarnation?: string;
  readonly address: string;
  /** Where this worker runs, for the ring order of the worlds it is in. */
  readonly placement?: { readonly node?: string | undefined; readonly zone?: string | undefined };
  readonly config: RendezvousConfig;
  readonly heartbeatMs: number;
  readonly shape: WorldShaper;
  /** The spec this worker offers in its member record. */
  readonly spec?: SpecOffer;
  readonly log: Logger;
  /** Where malformed records of the bucket are counted. */
  readonly drops?: DropCounter;
  /** Where liveness, rounds and world stamps read the time (default `Date.now`); tests stop it. */
  readonly now?: () => number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const encode = (value: unknown) => encoder.encode(JSON.stringify(value));

export class RendezvousAgent implements AsyncDisposable {
  private readonly members = new Map<string, ObservedMember & { revision: number }>();
  /** When our own last heartbeat write succeeded: if it is overdue, we are the ones cut off. */
  private lastWriteOk: number;
  private world: WorldRecord | undefined;
  private worldRevision: number | undefined;
  /** The operator's choice of global batch (goodput autoscaling), of this incarnation. */
  private chosenBatch: AutoscalingRecord | undefined;
  private running = 0;
  private roundSince: number | undefined;
  private record: MemberRecord;
  private spec: SpecOffer | undefined;
  private readonly stop = new AbortController();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private decideTimer: NodeJS.Timeout | undefined;
  private deciding = false;
  private again = false;
  private readonly waiters = new Set<() => void>();
  private lastDecision = '';
  private watching: Promise<void> | undefined;
  private readonly worldListeners = new Set<(world: WorldRecord) => void>();

  constructor(private readonly options: AgentOptions) {
    this.spec = options.spec;
    this.lastWriteOk = this.now();
    this.record = {
      id: options.id,
      address: options.address,
      joinedAt: this.now(),
      heartbeat: 0,
      state: 'active',
      hasState: false,
      step: 0,
      generation: 0,
      ...(options.spec === undefined ? {} : { spec: options.spec }),
      ...(options.placement?.node === undefined ? {} : { node: options.placement.node }),
      ...(options.placement?.zone === undefined ? {} : { zone: options.placement.zone }),
    };
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** Publishes this worker's record and starts watching; returns once the current state was read. */
  async start(): Promise<void> {
    await this.options.store.put(memberKey(this.options.id), encode(this.record));
    this.lastWriteOk = this.now();
    let initialized!: () => void;
    const ready = new Promise<void>((resolve) => {
      initialized = resolve;
    });
    this.watching = this.watch(initialized);
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.options.heartbeatMs);
    await Promise.race([ready, sleep(2000)]);
    this.schedule();
  }

  private async watch(initialized: () => void): Promise<void> {
    const { log } = this.options;
    let first = true;
    for await (const change of this.options.store.watch(this.stop.signal)) {
      const now = this.now();
      if (change.key === WORLD_KEY) {
        if (change.value === undefined) {
          this.world = undefined;
          this.worldRevision = undefined;
        } else {
          const parsed = decodeMessage(WorldRecordSchema, change.value);
          if (!parsed.ok) {
            this.drop(parsed, change.key);
            // The world this worker follows stands; the next proposal overwrites the bad record.
            this.worldRevision = change.revision;
          } else if (!this.ours(parsed.value)) {
            // Not ours to follow, but ours to replace: the next proposal overwrites it at its revision.
            log.warn('ignoring the world record of another incarnation', { jobUid: parsed.value.jobUid });
            this.world = undefined;
            this.worldRevision = change.revision;
          } else {
            this.world = parsed.value;
            this.worldRevision = change.revision;
            for (const listener of this.worldListeners) listener(parsed.value);
          }
        }
      } else if (change.key === AUTOSCALING_KEY) {
        this.chosenBatch = this.chosenBatchOf(change);
      } else if (change.key.startsWith('member.')) {
        const id = change.key.slice('member.'.length);
        if (change.value === undefined) this.members.delete(id);
        else {
          const parsed = decodeMessage(MemberRecordSchema, change.value, MAX_REPORT_BYTES);
          if (!parsed.ok) this.drop(parsed, change.key);
          else {
            const previous = this.members.get(id);
            // Liveness is when WE saw the record change, never the writer's clock.
            const same = previous !== undefined && previous.revision === change.revision;
            const observedAt = same ? previous.observedAt : now;
            const confirmed = previous !== undefined && (previous.confirmed === true || !same);
            this.members.set(id, { record: parsed.value, revision: change.revision, observedAt, confirmed });
          }
        }
      }
      if (first) {
        first = false;
        initialized();
      }
      this.schedule();
    }
  }

  private chosenBatchOf(change: {
    key: string;
    value: Uint8Array | undefined;
  }): AutoscalingRecord | undefined {
    if (change.value === undefined) return undefined;
    const parsed = decodeMessage(AutoscalingRecordSchema, change.value, MAX_REPORT_BYTES);
    if (!parsed.ok) {
      this.drop(parsed, change.key);
      return this.chosenBatch;
    }
    if (this.options.incarnation !== undefined && parsed.value.jobUid !== this.options.incarnation)
      return this.chosenBatch;
    return parsed.value;
  }

  private drop(failure: { reason: DecodeFailure; error: string }, key: string): void {
    this.options.drops?.drop({ channel: 'nats', reason: failure.reason, source: key, detail: failure.error });
  }

  private ours(world: WorldRecord): boolean {
    return this.options.incarnation === undefined || world.jobUid === this.options.incarnation;
  }

  private parse(bytes: Uint8Array): unknown {
    try {
      return JSON.parse(decoder.decode(bytes));
    } catch {
      return undefined;
    }
  }

  private async heartbeat(): Promise<void> {
    this.record = { ...this.record, heartbeat: this.record.heartbeat + 1 };
    try {
      await this.options.store.put(memberKey(this.options.id), encode(this.record));
      const now = this.now();
      if (this.cutOff(now)) {
        // While we could not reach the store we could not see anyone's heartbeat either: silence
        // during our own outage is no evidence of death, so everyone gets a fresh timeout.
        for (const [id, member] of this.members)
          if (this.wasAliveWhenCutOff(member)) this.members.set(id, { ...member, observedAt: now });
      }
      this.lastWriteOk = now;
    } catch (error) {
      this.options.log.warn('heartbeat failed', { error: (error as Error).message });
    }
    this.schedule();
  }

  /** Runs `decide` soon; coalesces bursts of changes into one decision. */
  private schedule(): void {
    if (this.stop.signal.aborted) return;
    if (this.deciding) {
      this.again = true;
      return;
    }
    this.deciding = true;
    queueMicrotask(() => void this.step());
  }

  private async step(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.act(this.decideNow());
      } while (this.again && !this.stop.signal.aborted);
    } catch (error) {
      this.options.log.warn('rendezvous step failed', { error: (error as Error).message });
    } finally {
      this.deciding = false;
    }
  }

  /** Only members alive when we lost the store get the benefit of the doubt; the long dead stay dead. */
  private wasAliveWhenCutOff(member: ObservedMember): boolean {
    return member.observedAt >= this.lastWriteOk - this.options.config.timeoutMs;
  }

  private cutOff(now: number): boolean {
    return now - this.lastWriteOk > 2 * this.options.heartbeatMs;
  }

  private decideNow(): Decision {
    const now = this.now();
    const members = new Map<string, ObservedMember>(this.members);
    if (this.cutOff(now))
      for (const [id, m] of members)
        if (this.wasAliveWhenCutOff(m)) members.set(id, { ...m, observedAt: now });
    // Our own record as we know it (the watch may lag behind our last write).
    members.set(this.options.id, { record: this.record, observedAt: now });
    return decide({
      self: this.options.id,
      now,
      config: {
        ...this.options.config,
        ...rendezvousRange(this.options.config, this.spec, this.world?.agreement),
      },
      members,
      world: this.world,
      running: this.running,
      roundSince: this.roundSince,
      chosenBatch: this.chosenBatch,
    });
  }

  private async act(decision: Decision): Promise<void> {
    const summary =
      decision.action === 'wait' || decision.action === 'standby'
        ? `${decision.action}: ${decision.reason}`
        : decision.action;
    if (summary !== this.lastDecision && decision.action !== 'continue')
      emit(this.options.log, 'info', 'rendezvous', {
        event: 'rendezvous-decision',
        decision: summary,
        round: this.world?.generation ?? 0,
      });
    this.lastDecision = summary;
    clearTimeout(this.decideTimer);
    switch (decision.action) {
      case 'wait':
        this.roundSince = decision.roundSince;
        this.decideTimer = setTimeout(
          () => this.schedule(),
          Math.max(10, (decision.until ?? this.now() + this.options.config.timeoutMs / 3) - this.now()),
        );
        break;
      case 'propose':
        await this.propose(decision.world);
        break;
      case 'adopt':
      case 'standby':
      case 'continue':
        this.roundSince = undefined;
        for (const wake of this.waiters) wake();
        // Members go silent without telling anyone; look again when one would count as lost.
        this.decideTimer = setTimeout(() => this.schedule(), this.options.config.timeoutMs / 3);
        break;
    }
  }

  private async propose(proposal: ProposedWorld): Promise<void> {
    const offers = proposal.members.flatMap((m) => {
      const record = m.id === this.options.id ? this.record : this.members.get(m.id)?.record;
      return record?.spec === undefined ? [] : [record.spec];
    });
    const chosen = this.chosenBatch;
    const shaped = this.options.shape(proposal, this.world, offers, chosen?.globalBatch);
    const world: WorldRecord = {
      ...shaped,
      ...(chosen === undefined
        ? {}
        : { chosenBatch: { globalBatch: chosen.globalBatch, revision: chosen.revision } }),
      ...(this.options.incarnation === undefined ? {} : { jobUid: this.options.incarnation }),
      generation: proposal.generation,
      source: proposal.source,
      startStep: proposal.startStep,
      reason: proposal.reason,
      createdAt: this.now(),
      linkToken: randomBytes(32).toString('base64url'),
    };
    const value = encode(world);
    try {
      const revision =
        this.worldRevision === undefined
          ? await this.options.store.create(WORLD_KEY, value)
          : await this.options.store.update(WORLD_KEY, value, this.worldRevision);
      this.world = world;
      this.worldRevision = revision;
      this.roundSince = undefined;
      this.options.log.info('proposed world', {
        generation: world.generation,
        members: world.members.map((m) => m.id),
        reason: world.reason,
      });
    } catch (error) {
      if (classify(error) !== 'conflict') throw error;
      // Another worker's proposal won: read it and decide again.
      const current = await this.options.store.get(WORLD_KEY);
      if (current !== undefined) {
        const parsed = WorldRecordSchema.safeParse(this.parse(current.value));
        if (parsed.success) {
          this.world = this.ours(parsed.data) ? parsed.data : undefined;
          this.worldRevision = current.revision;
        }
      }
    }
    this.again = true;
  }

  /** The newest world that includes this worker and is newer than `after`; waits for one. */
  async nextWorld(after: number, signal?: AbortSignal): Promise<WorldRecord> {
    for (;;) {
      if (signal?.aborted || this.stop.signal.aborted) throw new Error('rendezvous stopped');
      const world = this.world;
      if (
        world !== undefined &&
        world.generation > after &&
        world.members.some((m) => m.id === this.options.id)
      )
        return world;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, 250);
        this.waiters.add(wake);
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Calls `listener` with every world record of this incarnation as it arrives; returns the unsubscribe. */
  onWorld(listener: (world: WorldRecord) => void): () => void {
    this.worldListeners.add(listener);
    return () => this.worldListeners.delete(listener);
  }

  /** The newest world known (whether or not it includes this worker). */
  get latestWorld(): WorldRecord | undefined {
    return this.world;
  }

  /** Records that this worker now runs `generation` at `step` with trained state. */
  async enter(generation: number, step: number, hasState: boolean): Promise<void> {
    this.running = generation;
    this.record = { ...this.record, generation, step, hasState };
    await this.options.store.put(memberKey(this.options.id), encode(this.record)).catch(() => undefined);
  }

  /**
   * Offers a newer spec (the operator's control message): the world re-forms to follow it. An older
   * or equal revision changes nothing.
   */
  async offerSpec(spec: SpecOffer): Promise<boolean> {
    if (this.spec !== undefined && spec.revision <= this.spec.revision) return false;
    this.spec = spec;
    this.record = { ...this.record, spec };
    await this.options.store.put(memberKey(this.options.id), encode(this.record)).catch(() => undefined);
    this.schedule();
    return true;
  }

  /**
   * Whether `id` still heartbeats, as the rendezvous would judge it. While this worker is cut off from
   * the store it cannot tell, and says alive: a worker that cannot see the others must not act alone.
   */
  isMemberAlive(id: string): boolean {
    const now = this.now();
    if (this.cutOff(now)) return true;
    const member = this.members.get(id);
    return member !== undefined && isAlive(member, now, this.options.config.timeoutMs);
  }

  /** Updates the committed step carried by the next heartbeat. */
  progress(step: number): void {
    this.record = { ...this.record, step, hasState: true };
  }

  /**
   * Asks for a new round: this worker could not run `generation`. `lost` names peers found dead (a
   * broken link, a refused probe): the round drops them now instead of after the heartbeat timeout.
   */
  async failed(generation: number, lost: readonly string[] = []): Promise<void> {
    const reports = lost.flatMap((id) => {
      const seen = this.members.get(id);
      return seen === undefined || id === this.options.id
        ? []
        : [{ id, joinedAt: seen.record.joinedAt, heartbeat: seen.record.heartbeat }];
    });
    const kept = (this.record.lost ?? []).filter((r) => !lost.includes(r.id));
    const merged = [...kept, ...reports].slice(-16);
    this.record = {
      ...this.record,
      failedGeneration: generation,
      ...(merged.length === 0 ? {} : { lost: merged }),
    };
    await this.options.store.put(memberKey(this.options.id), encode(this.record)).catch(() => undefined);
    this.schedule();
  }

  /** Graceful leave: the others see it at once and form a world without this worker. */
  async leave(): Promise<void> {
    this.record = { ...this.record, state: 'leaving' };
    await this.options.store.put(memberKey(this.options.id), encode(this.record)).catch(() => undefined);
    await this.options.store.delete(memberKey(this.options.id)).catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.decideTimer);
    this.stop.abort();
    for (const wake of this.waiters) wake();
    await this.watching?.catch(() => undefined);
  }
}
