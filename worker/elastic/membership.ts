/**
 * How a worker finds the world it trains in, and how the world's state reaches it.
 *
 * `LocalMembership`: a world of one, no communication (`tensile run --workers 1`).
 * `ElasticMembership`: rendezvous over NATS JetStream KV (RendezvousAgent), a ring of TCP links per
 * generation (RingGroup), and the state broadcast that makes a new world consistent: the member with
 * the most advanced state (the world's `source`) sends weights, optimizer state, step, cursor and
 * policy state to everyone; when nobody has state, rank 0 restores the newest valid checkpoint first.
 *
 * A joined world carries an AbortSignal that fires when the world is over (a newer generation
 * appeared): the step in flight fails with a CollectiveError and is not applied.
 */
import { once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { connect, type NatsConnection, type Subscription } from 'nats';
import {
  COMPLETED_KEY,
  CompletionMarkerSchema,
  type CompletionRecord,
  type ControlMessage,
  ControlMessageSchema,
  decodeMessage,
  encodeMessage,
  jobSubjects,
  rendezvousBucket,
} from '../../operator/api/contract.ts';
import { DropCounter } from '../../operator/api/drops.ts';
import { elasticRange, type TrainingJobSpec } from '../../operator/api/training-job.ts';
import { RingGroup } from '../collective/group.ts';
import { CollectiveError, CollectiveServer, type PeerLostError, probe } from '../collective/transport.ts';
import { type WorkerConfig, WorkerConfigError } from '../config.ts';
import { SpecMismatchError } from '../errors.ts';
import { emit, errorMessage, type WorkerLogger } from '../log.ts';
import { workerNatsOptions } from '../nats-options.ts';
import { RendezvousAgent } from '../rendezvous/agent.ts';
import {
  type Agreement,
  immutableMismatch,
  type SpecOffer,
  shapeWorld,
  specOffer,
} from '../rendezvous/agreement.ts';
import type { WorldRecord } from '../rendezvous/decide.ts';
import { NatsKvStore } from '../rendezvous/nats-kv-store.ts';
import { type GradientReducer, LocalReducer } from '../train/reducer.ts';
import type { Snapshot } from '../train/snapshot.ts';
import { ringReducer } from './ring-reducer.ts';
import { packSnapshot, unpackSnapshot } from './wire.ts';

/** What a membership needs from the trainer to make the world's state consistent. */
export interface StateHolder {
  snapshot(): Snapshot;
  restore(snapshot: Snapshot): void;
  readonly hasTrained: boolean;
  readonly step: number;
}

export interface JoinedWorld {
  /** The rendezvous round (0 for a local world). */
  readonly round: number;
  readonly rank: number;
  readonly size: number;
  readonly members: readonly string[];
  readonly reason: string;
  /**
   * The spec settings and per-rank batches the world decided; every rank uses these, never its own
   * spec's. Undefined for a local world (its own spec is the world's) and for worlds proposed by
   * workers that decide none.
   */
  readonly agreement?: Agreement;
  readonly batches?: readonly number[];
  readonly reducer: GradientReducer;
  /** Aborts when this world is over: a newer one exists. */
  readonly changed: AbortSignal;
  /** Where the state came from: this worker's own, a peer's broadcast, or a checkpoint. */
  readonly stateFrom: 'own' | 'peer' | 'checkpoint' | 'fresh';
  /** Ends this world for this worker now: a collective in flight fails. */
  abort(): void;
  end(): Promise<void>;
}

export type JoinOutcome =
  | { readonly kind: 'joined'; readonly world: JoinedWorld }
  | { readonly kind: 'stopped' }
  | { readonly kind: 'completed'; readonly step: number; readonly reason: string };

export interface Membership extends AsyncDisposable {
  /**
   * Waits for the next world this worker belongs to and makes the holder's state that world's state.
   * `restore` loads the newest valid checkpoint into the holder (false when there is none).
   */
  join(holder: StateHolder, restore: () => Promise<boolean>, stop: AbortSignal): Promise<JoinOutcome>;
  /** The committed step, carried by the next heartbeat (the rendezvous picks the most advanced source). */
  progress(step: number): void;
  /** This world could not go on (a peer failed): ask for a new round. */
  failed(round: number): Promise<void>;
  /** Leaves for good: the others re-form without this worker at once. */
  leave(): Promise<void>;
  /**
   * Records that training is finished, so that late or standby workers end too, with the final
   * figures, so that an operator that missed the `completed` message still learns them.
   */
  complete(record: CompletionRecord): Promise<void>;
  /**
   * After the last step, a rank that does not write: waits for `writer` to record the completion
   * (its final checkpoint and model are then written) or to be lost before it did.
   */
  awaitCompletion(writer: string, stop: AbortSignal): Promise<'completed' | 'writer-lost' | 'stopped'>;
  publish(channel: 'metrics' | 'events', message: unknown): void;
  /** Control messages addressed to this worker (leave, checkpoint, stop). */
  onControl(listener: (message: ControlMessage) => void): void;
}

export class LocalMembership implements Membership {
  private joined = false;

  async join(_holder: StateHolder, restore: () => Promise<boolean>): Promise<JoinOutcome> {
    if (this.joined) return { kind: 'stopped' };
    this.joined = true;
    const restored = await restore();
    const changed = new AbortController();
    return {
      kind: 'joined',
      world: {
        round: 0,
        rank: 0,
        size: 1,
        members: ['self'],
        reason: restored ? 'restarted from a checkpoint' : 'first world',
        reducer: new LocalReducer(),
        changed: changed.signal,
        stateFrom: restored ? 'checkpoint' : 'fresh',
        // Alone, a step never waits for anyone: nothing to give up.
        abort: () => undefined,
        end: async () => undefined,
      },
    };
  }
  progress(): void {}
  async failed(): Promise<void> {}
  async leave(): Promise<void> {}
  async complete(): Promise<void> {}
  async awaitCompletion(): Promise<'completed'> {
    return 'completed';
  }
  publish(): void {}
  onControl(): void {}
  async [Symbol.asyncDispose](): Promise<void> {}
}

/** How often a rank that does not write looks for the writer's completion record. */
const COMPLETION_POLL_MS = 250;

/** How often a worker in a world looks for a newer one (the rendezvous watch updates it). */
const WORLD_POLL_MS = 50;

/**
 * How long a probe of a peer whose link broke may take. A refusal comes back in a round trip; a
 * silent host gives none, and then the heartbeat timeout decides as before.
 */
const PROBE_MS = 500;

/** A ring that does not connect or deliver within this long has a dead member. */
function collectiveTimeoutMs(config: WorkerConfig): number {
  const r = config.spec.rendezvous;
  return Math.max(5000, 2 * (r.timeoutMillis + r.lastCallMillis));
}

export class ElasticMembership implements Membership {
  private lastRound = 0;
  private readonly listeners: ((message: ControlMessage) => void)[] = [];
  private readonly subjects: ReturnType<typeof jobSubjects>;
  private control: Subscription | undefined;
  private completed: { step: number; reason: string } | undefined;
  private foreignCompletionSeen = false;
  /** Probes of peers whose links broke, by round: a failure report of that round waits for them. */
  private readonly probes = new Map<number, Promise<void>[]>();
  /** Each joined round's `changed` signal: a failure report stops waiting once a newer world exists. */
  private readonly worlds = new Map<number, AbortSignal>();

  private constructor(
    private offer: SpecOffer,
    private readonly config: WorkerConfig,
    private readonly log: WorkerLogger,
    private readonly nc: NatsConnection,
    private readonly store: NatsKvStore,
    private readonly server: CollectiveServer,
    private readonly agent: RendezvousAgent,
  ) {
    this.subjects = jobSubjects(config.namespace, config.jobName);
  }

  /** What this worker dropped (NATS messages, collective frames and handshakes), by reason. */
  get drops(): DropCounter {
    return this.server.drops;
  }

  static async open(config: WorkerConfig, log: WorkerLogger): Promise<ElasticMembership> {
    const url = config.natsUrl;
    if (url === undefined) throw new Error('the elastic runtime needs TENSILE_NATS_URL');
    const nc = await connect(workerNatsOptions(config, url, config.workerId));
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === 'disconnect' || status.type === 'reconnect')
          emit(log, 'warn', `nats ${status.type}`, {
            event: `nats-${status.type}`,
            server: String(status.data),
          });
      }
    })();
    const uid = config.jobUid;
    if (uid === undefined)
      throw new WorkerConfigError(['TENSILE_JOB_UID: the elastic runtime needs the job uid']);
    const store = await NatsKvStore.open(nc, rendezvousBucket(config.namespace, config.jobName, uid));
    const drops = new DropCounter((drop) =>
      emit(log, 'warn', `dropped ${drop.channel} input: ${drop.reason}`, { event: 'dropped', ...drop }),
    );
    const server = await CollectiveServer.listen(config.jobName, config.podIp, 0, { drops });
    const spec = config.spec;
    const range = elasticRange(spec);
    const offer = specOffer(spec, config.specRevision);
    const agent = new RendezvousAgent({
      store,
      id: config.workerId,
      incarnation: uid,
      address: server.address,
      placement: { node: config.nodeName, zone: config.zone },
      heartbeatMs: spec.rendezvous.heartbeatMillis,
      config: {
        minReplicas: range.min,
        maxReplicas: range.max,
        timeoutMs: spec.rendezvous.timeoutMillis,
        lastCallMs: spec.rendezvous.lastCallMillis,
      },
      log,
      drops,
      spec: offer,
      shape: (proposal, previous, offers, chosenBatch) =>
        shapeWorld(proposal, previous, offers, offer, spec.optimizer.learningRate, chosenBatch),
    });
    const membership = new ElasticMembership(offer, config, log, nc, store, server, agent);
    membership.subscribeControl();
    await agent.start();
    emit(log, 'info', 'rendezvous joined', {
      event: 'rendezvous',
      address: server.address,
      bucket: store.bucket,
    });
    return membership;
  }

  private subscribeControl(): void {
    this.control = this.nc.subscribe(this.subjects.control, {
      callback: (error, message) => {
        if (error !== null) return;
        const decoded = decodeMessage(ControlMessageSchema, message.data);
        if (!decoded.ok) {
          this.drops.drop({
            channel: 'nats',
            reason: decoded.reason,
            source: message.subject,
            detail: decoded.error,
          });
          return;
        }
        const value = decoded.value;
        if (value.jobUid !== this.config.jobUid) {
          // Addressed to another incarnation of this job (one deleted, or its successor).
          this.drops.drop({
            channel: 'nats',
            reason: 'another incarnation',
            source: message.subject,
            detail: `job uid ${value.jobUid ?? '(none)'}`,
          });
          return;
        }
        if (value.type === 'spec') {
          void this.offerSpec(value.revision, value.spec);
          return;
        }
        if (
          value.type === 'leave' &&
          value.workers.length > 0 &&
          !value.workers.includes(this.config.workerId)
        )
          return;
        emit(this.log, 'info', 'control message', {
          event: 'control',
          type: value.type,
          reason: value.reason,
        });
        for (const listener of this.listeners) listener(value);
      },
    });
  }

  /** A newer spec from the operator: offered to the rendezvous, whose next world follows it. */
  private async offerSpec(revision: number, spec: TrainingJobSpec): Promise<void> {
    const offer = specOffer(spec, revision);
    const mismatch = immutableMismatch({ ...offer, batchReplicas: 1 }, this.offer);
    if (mismatch.length > 0) {
      emit(this.log, 'warn', 'ignoring a spec that changes immutable fields', {
        event: 'spec-rejected',
        revision,
        fields: mismatch,
      });
      return;
    }
    const from = this.offer.revision;
    if (!(await this.agent.offerSpec(offer))) return;
    this.offer = offer;
    emit(this.log, 'info', 'newer spec offered', { event: 'spec-offered', revision, from });
  }

  onControl(listener: (message: ControlMessage) => void): void {
    this.listeners.push(listener);
  }

  publish(channel: 'metrics' | 'events', message: unknown): void {
    try {
      const stamped =
        typeof message === 'object' && message !== null
          ? { ...message, jobUid: this.config.jobUid }
          : message;
      this.nc.publish(this.subjects[channel], encodeMessage(stamped));
    } catch (error) {
      // Progress is best effort; training never waits for NATS.
      this.log.debug('publish failed', { error: errorMessage(error) });
    }
  }

  private async readCompleted(): Promise<{ step: number; reason: string } | undefined> {
    if (this.completed !== undefined) return this.completed;
    const stored = await this.store.get(COMPLETED_KEY).catch(() => undefined);
    if (stored === undefined) return undefined;
    const decoded = decodeMessage(CompletionMarkerSchema, stored.value);
    if (!decoded.ok) {
      // A malformed marker is not a completion.
      this.drops.drop({
        channel: 'nats',
        reason: decoded.reason,
        source: COMPLETED_KEY,
        detail: decoded.error,
      });
      return undefined;
    }
    const value = decoded.value;
    if (value.jobUid !== this.config.jobUid) {
      // Another incarnation's completion says nothing about this one.
      if (!this.foreignCompletionSeen)
        emit(this.log, 'warn', 'ignoring the completion record of another incarnation', {
          event: 'completion-ignored',
          jobUid: value.jobUid ?? '(none)',
        });
      this.foreignCompletionSeen = true;
      return undefined;
    }
    this.completed = { step: value.step, reason: value.reason };
    return this.completed;
  }

  /** The next world that includes this worker, unless the job completed or `stop` fired first. */
  private async nextRecord(
    stop: AbortSignal,
  ): Promise<WorldRecord | { completed: { step: number; reason: string } } | undefined> {
    const waiting = new AbortController();
    const onStop = () => waiting.abort();
    stop.addEventListener('abort', onStop, { once: true });
    let poll: NodeJS.Timeout | undefined;
    try {
      const completed = new Promise<{ completed: { step: number; reason: string } }>((resolve) => {
        const check = async () => {
          const done = await this.readCompleted();
          if (done !== undefined) resolve({ completed: done });
          else if (!waiting.signal.aborted) poll = setTimeout(check, 500);
        };
        void check();
      });
      const world = this.agent.nextWorld(this.lastRound, waiting.signal).catch(() => undefined);
      return await Promise.race([world, completed]);
    } finally {
      clearTimeout(poll);
      waiting.abort();
      stop.removeEventListener('abort', onStop);
    }
  }

  async join(holder: StateHolder, restore: () => Promise<boolean>, stop: AbortSignal): Promise<JoinOutcome> {
    for (;;) {
      if (stop.aborted) return { kind: 'stopped' };
      const next = await this.nextRecord(stop);
      if (next === undefined) return { kind: 'stopped' };
      if ('completed' in next) return { kind: 'completed', ...next.completed };
      const record = next;
      await this.refuseIfIncompatible(record);
      this.lastRound = record.generation;
      const ids = record.members.map((m) => m.id);
      const rank = ids.indexOf(this.config.workerId);
      const changed = new AbortController();
      // What fails a collective in flight. While the world forms, any newer world does (its members
      // may never come). Once joined, only a newer world without one of this world's members does:
      // a join or a spec change lets the step in flight finish on every rank, because cutting it
      // could leave one rank past the step and its peer not (each then trains a different state).
      const cut = new AbortController();
      let joinedRing = false;
      const check = () => {
        const latest = this.agent.latestWorld;
        if (latest === undefined || latest.generation <= record.generation) return;
        changed.abort();
        const kept = new Set(latest.members.map((m) => m.id));
        if (!joinedRing || !ids.every((id) => kept.has(id))) cut.abort();
      };
      // At once when the record arrives; the poll is a backstop for a world adopted before the
      // listener was there.
      const unsubscribe = this.agent.onWorld(check);
      const poll = setInterval(check, WORLD_POLL_MS);
      const watcher = {
        [Symbol.dispose]: () => {
          unsubscribe();
          clearInterval(poll);
        },
      };
      this.worlds.set(record.generation, changed.signal);
      let group: RingGroup | undefined;
      const settings = record.agreement?.settings.communication ?? this.config.spec.communication;
      try {
        group = await RingGroup.connect({
          job: this.config.jobName,
          generation: record.generation,
          rank,
          members: record.members,
          server: this.server,
          token: record.linkToken,
          timeoutMs: collectiveTimeoutMs(this.config),
          // The world's settings, the same on every member (each one's own spec may be another revision).
          hierarchical: settings.hierarchical === true,
          signal: cut.signal,
          onPeerLost: (peer, error) => {
            const probing = this.peerLost(record, peer, error, changed.signal).catch(() => undefined);
            this.probes.set(record.generation, [...(this.probes.get(record.generation) ?? []), probing]);
          },
        });
        const root = record.source === undefined ? 0 : Math.max(0, ids.indexOf(record.source));
        let stateFrom: JoinedWorld['stateFrom'] = 'peer';
        let bytes: Uint8Array | undefined;
        if (rank === root) {
          if (record.source === undefined) stateFrom = (await restore()) ? 'checkpoint' : 'fresh';
          else stateFrom = holder.hasTrained ? 'own' : 'fresh';
          bytes = packSnapshot(holder.snapshot());
        }
        const received = await group.broadcast(bytes, root);
        if (rank !== root) holder.restore(unpackSnapshot(received));
        await this.agent.enter(record.generation, holder.step, true);
        joinedRing = true;
        const ring = group;
        const reducer = ringReducer(ring);
        return {
          kind: 'joined',
          world: {
            round: record.generation,
            rank,
            size: ids.length,
            members: ids,
            reason: record.reason,
            ...(record.agreement === undefined
              ? {}
              : { agreement: record.agreement, batches: record.members.map((m) => m.batch) }),
            reducer,
            changed: changed.signal,
            stateFrom,
            abort: () => {
              changed.abort();
              cut.abort();
            },
            end: async () => {
              watcher[Symbol.dispose]();
              changed.abort();
              cut.abort();
              await ring[Symbol.asyncDispose]();
            },
          },
        };
      } catch (error) {
        watcher[Symbol.dispose]();
        await group?.[Symbol.asyncDispose]().catch(() => undefined);
        if (!(error instanceof CollectiveError)) throw error;
        emit(this.log, 'warn', 'could not start the world; asking for a new round', {
          event: 'world-failed',
          round: record.generation,
          error: errorMessage(error),
        });
        if (!changed.signal.aborted) await this.failed(record.generation);
      }
    }
  }

  /**
   * A neighbour's link broke under `record`'s world: probe its collective port, and when the port
   * refuses (its process is gone) report it lost, so the round drops it at once instead of after
   * the heartbeat timeout. A peer that answers moved on to a newer world or is merely slow.
   */
  private async peerLost(
    record: WorldRecord,
    rank: number,
    error: PeerLostError,
    changed: AbortSignal,
  ): Promise<void> {
    const member = record.members[rank];
    if (member === undefined || changed.aborted) return;
    const started = performance.now();
    const result = await probe(member.address, PROBE_MS);
    emit(this.log, 'warn', 'link to a peer broke', {
      event: 'peer-lost',
      peer: member.id,
      round: record.generation,
      cause: 'link',
      probe: result,
      probeMs: Math.round((performance.now() - started) * 10) / 10,
      error: error.message,
    });
    if (result !== 'refused' || changed.aborted) return;
    await this.agent.failed(record.generation, [member.id]);
  }

  /**
   * A world whose model, dataset or optimizer is not this worker's cannot be joined: leave at once
   * (so that the others re-form without waiting for this worker) and fail with the reason.
   */
  private async refuseIfIncompatible(record: WorldRecord): Promise<void> {
    const agreement = record.agreement;
    if (agreement === undefined) return;
    const fields = immutableMismatch(agreement, this.offer);
    if (fields.length === 0) return;
    await this.agent.leave();
    throw new SpecMismatchError(
      `refusing to join generation ${record.generation}: spec.${fields.join(', spec.')} of this worker (spec revision ${this.offer.revision}) differ from the world's (spec revision ${agreement.revision}); these fields are immutable, so this worker was started with another TrainingJob or another worker version`,
    );
  }

  progress(step: number): void {
    this.agent.progress(step);
  }

  async failed(round: number): Promise<void> {
    // A step fails because a link broke; the probe that can name the dead peer is already under way,
    // and a report without it would ask for a world that still includes the dead.
    const newer = this.worlds.get(round);
    if (newer?.aborted) return;
    const probes = Promise.all(this.probes.get(round) ?? []);
    await (newer === undefined
      ? probes
      : Promise.race([probes, once(newer, 'abort', { signal: AbortSignal.timeout(PROBE_MS * 2) })]).catch(
          () => undefined,
        ));
    for (const r of this.probes.keys()) if (r <= round) this.probes.delete(r);
    for (const r of this.worlds.keys()) if (r < round) this.worlds.delete(r);
    // A newer world formed meanwhile: this one's failure is news to nobody.
    if (newer?.aborted) return;
    await this.agent.failed(round);
  }

  async leave(): Promise<void> {
    await this.agent.leave();
  }

  async complete(record: CompletionRecord): Promise<void> {
    this.completed = { step: record.step, reason: record.reason };
    await this.store
      .put(COMPLETED_KEY, encodeMessage({ ...record, jobUid: this.config.jobUid }))
      .catch((error) => this.log.warn('could not record the completion', { error: errorMessage(error) }));
  }

  async awaitCompletion(writer: string, stop: AbortSignal): Promise<'completed' | 'writer-lost' | 'stopped'> {
    for (;;) {
      if (stop.aborted) return 'stopped';
      if ((await this.readCompleted()) !== undefined) return 'completed';
      if (!this.agent.isMemberAlive(writer)) return 'writer-lost';
      await delay(COMPLETION_POLL_MS, undefined, { signal: stop }).catch(() => undefined);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.agent[Symbol.asyncDispose]();
    this.control?.unsubscribe();
    await this.server[Symbol.asyncDispose]();
    await this.nc.drain().catch(() => this.nc.close());
  }
}
