/**
 * The federated round over NATS. Every message of a round is a key of one JetStream key-value bucket
 * per federated job (`r<round>.a<attempt>.<phase>.<site>`): a put is kept, so a site that starts or
 * reaches the round late still reads what the others wrote before it (core NATS would have lost it).
 * Site leaders (rank 0 of the site's world) write; every rank of every site reads the same keys and
 * computes the same aggregate itself, so nothing has to be broadcast inside a site afterwards and no
 * ring waits on a slow site. No message holds a sample: advertise (sample count, public keys), sealed
 * key shares, masked fixed-point deltas, revealed shares of dropped sites' keys.
 */
import type { KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, type KV, type NatsConnection } from 'nats';
import { federationBucket } from '../../operator/api/federation.ts';
import type { FederationSpec } from '../../operator/api/training-job.ts';
import { secureThreshold } from '../../operator/api/training-job.ts';
import type { WorkerConfig } from '../config.ts';
import { workerNatsOptions } from '../nats-options.ts';
import {
  type Advertise,
  FederationKeyRejected,
  RoundFailed,
  SecureRound,
  type Shares,
  type Unmask,
} from './round.ts';
import { signingPublicKey, signingPublicOf } from './secure-aggregation.ts';

/** Words per input chunk: 768 KiB, under NATS's default 1 MiB payload. */
const CHUNK_WORDS = 196_608;
const ATTEMPTS = 3;
const OPEN_ATTEMPTS = 5;
const FIRST_ROUND_PATIENCE = 10;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const json = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value));

export interface RoundOutcome {
  readonly mean: Float32Array;
  /** Site indices whose delta is in the mean. */
  readonly sites: readonly number[];
  readonly dropped: readonly number[];
  readonly attempt: number;
  /** Bytes this rank wrote to NATS in the round (leaders only). */
  readonly bytesSent: number;
}

export { federationBucket } from '../../operator/api/federation.ts';

/** A site leader's signing key and every site's public key, checked once when the client opens. */
export interface FederationIdentity {
  readonly signingKey: string | undefined;
  readonly siteKeys: ReadonlyMap<number, KeyObject>;
}

/**
 * The keys secure aggregation signs and verifies by: every site's public key from the spec's pin or
 * the launcher's list (both, and they must agree), this site's private key from its key file (and it
 * must be the key the others know). Any gap is an error naming the site, before a round starts.
 */
export function federationIdentity(
  federation: FederationSpec,
  self: number,
  signingKeyPem: string | undefined,
  launcherKeys: Readonly<Record<string, string>> | undefined,
): FederationIdentity {
  const siteKeys = new Map<number, KeyObject>();
  if (!federation.secureAggregation.enabled) return { signingKey: undefined, siteKeys };
  federation.sites.forEach((site, i) => {
    const pinned = site.signingKey;
    const given = launcherKeys?.[site.name];
    if (pinned !== undefined && given !== undefined && !samePublicKey(pinned, given))
      throw new FederationKeyRejected(
        `site "${site.name}": the launcher's signing key is not the one pinned in spec.federation.sites[${i}].signingKey`,
      );
    const text = pinned ?? given;
    const key = text === undefined ? undefined : signingPublicKey(text);
    if (key === undefined)
      throw new FederationKeyRejected(
        `site "${site.name}" has no ${text === undefined ? '' : 'valid '}signing public key: pin it in spec.federation.sites[${i}].signingKey or let the launcher hand it out (TENSILE_FEDERATION_SITE_KEYS)`,
      );
    siteKeys.set(i, key);
  });
  const own = federation.sites[self];
  if (signingKeyPem === undefined)
    throw new FederationKeyRejected(
      `site "${own?.name}" has no signing key (TENSILE_FEDERATION_SIGNING_KEY): secure aggregation signs every site's keys`,
    );
  const ownPublic = siteKeys.get(self)?.export({ format: 'der', type: 'spki' });
  if (ownPublic === undefined || !samePublicKey(ownPublic.toString('base64'), signingPublicOf(signingKeyPem)))
    throw new FederationKeyRejected(
      `site "${own?.name}": its signing key file does not hold the key the other sites know for it`,
    );
  return { signingKey: signingKeyPem, siteKeys };
}

const samePublicKey = (a: string, b: string): boolean => {
  const ka = signingPublicKey(a)?.export({ format: 'der', type: 'spki' });
  const kb = signingPublicKey(b)?.export({ format: 'der', type: 'spki' });
  return ka !== undefined && kb !== undefined && ka.equals(kb);
};

export class FederationClient implements AsyncDisposable {
  /** The sites of the last completed round: the next one waits for these only. */
  private expected: Set<number> | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly federation: FederationSpec,
    private readonly self: number,
    private readonly identity: FederationIdentity,
  ) {}

  static async open(
    config: WorkerConfig,
    job: string,
    federation: FederationSpec,
    self: number,
  ): Promise<FederationClient> {
    const url = config.natsUrl;
    if (url === undefined)
      throw new Error('federated training needs NATS (TENSILE_NATS_URL) between its sites');
    const identity = federationIdentity(
      federation,
      self,
      config.federationSigningKey === undefined
        ? undefined
        : readFileSync(config.federationSigningKey, 'utf8'),
      config.federationSiteKeys,
    );
    const nc = await connect(workerNatsOptions(config, url, `${config.workerId}-federation`));
    const bucket = federationBucket(config.namespace, job);
    for (let attempt = 1; ; attempt++) {
      try {
        const kv = await nc.jetstream().views.kv(bucket, { history: 1 });
        return new FederationClient(nc, kv, federation, self, identity);
      } catch (error) {
        // Sites that start together all create the bucket; the losers of the race open it again.
        if (attempt < OPEN_ATTEMPTS && /subjects overlap|already in use/i.test(String(error))) continue;
        await nc.close();
        throw error;
      }
    }
  }

  /**
   * One round: the leader writes its site's messages, every rank reads everyone's and returns the
   * sample-weighted mean delta. A round that cannot complete (too many sites dropped to rebuild
   * their masks) is attempted again, at most ATTEMPTS times, with new keys.
   */
  async round(
    round: number,
    leader: boolean,
    delta: Float32Array,
    samples: number,
    signal?: AbortSignal,
  ): Promise<RoundOutcome> {
    let last: unknown;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      try {
        return await this.attempt(round, attempt, leader, delta, samples, signal);
      } catch (error) {
        if (!(error instanceof RoundFailed)) throw error;
        last = error;
      }
    }
    throw new RoundFailed(`round ${round} failed ${ATTEMPTS} times: ${(last as Error).message}`);
  }

  private async attempt(
    round: number,
    attempt: number,
    leader: boolean,
    delta: Float32Array,
    samples: number,
    signal: AbortSignal | undefined,
  ): Promise<RoundOutcome> {
    const f = this.federation;
    const n = f.sites.length;
    const prefix = `r${round}.a${attempt}`;
    const state = new SecureRound({
      self: this.self,
      roundId: `${prefix}`,
      secure: f.secureAggregation.enabled,
      threshold: secureThreshold(f),
      observer: !leader,
      siteKeys: this.identity.siteKeys,
      siteNames: f.sites.map((s) => s.name),
      ...(leader && this.identity.signingKey !== undefined ? { signingKey: this.identity.signingKey } : {}),
    });
    const timeout = f.roundTimeoutMillis;
    let bytesSent = 0;
    const put = async (key: string, value: Uint8Array) => {
      bytesSent += value.byteLength;
      await this.kv.put(`${prefix}.${key}`, value);
    };
    // Sites that dropped out of an earlier round are not waited for again (each would cost a timeout).
    const everyone = this.expected ?? new Set(Array.from({ length: n }, (_, i) => i));

    if (leader) await put(`advertise.${this.self}`, json(state.advertise(samples)));
    // Sites start at different times (backend, data, model): before a first round has completed,
    // the advertise phase waits for them FIRST_ROUND_PATIENCE times as long.
    const patience = this.expected === undefined ? FIRST_ROUND_PATIENCE : 1;
    const ads = await this.collect(`${prefix}.advertise`, everyone, timeout * patience, signal);
    for (const [site, value] of ads)
      if (site !== this.self || !leader) state.onAdvertise(JSON.parse(decoder.decode(value)) as Advertise);

    const advertised = new Set(ads.keys());
    if (leader) await put(`shares.${this.self}`, json(state.shares()));
    const shares = await this.collect(`${prefix}.shares`, advertised, timeout, signal);
    for (const [site, value] of shares)
      if (site !== this.self || !leader) state.onShares(JSON.parse(decoder.decode(value)) as Shares);

    const length = delta.length + 1;
    if (leader) {
      const words = state.input(delta);
      for (let c = 0, at = 0; at < length; c++, at += CHUNK_WORDS) {
        const part = words.subarray(at, Math.min(length, at + CHUNK_WORDS));
        await put(`input.${this.self}.${c}`, new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
      }
    }
    const inputs = await this.collectInputs(prefix, new Set(shares.keys()), length, timeout, signal);
    for (const [site, words] of inputs) if (site !== this.self || !leader) state.onInput(site, words);

    if (leader) await put(`unmask.${this.self}`, json(state.unmask()));
    const unmasks = await this.collect(`${prefix}.unmask`, new Set(inputs.keys()), timeout, signal);
    for (const [site, value] of unmasks)
      if (site !== this.self || !leader) state.onUnmask(JSON.parse(decoder.decode(value)) as Unmask);
    const result = state.result(delta.length);
    this.expected = new Set([...result.sites, this.self]);
    return { mean: result.mean, sites: result.sites, dropped: state.dropped(), attempt, bytesSent };
  }

  /** The values of `<prefix>.<site>` for the expected sites, once all are there or the time is up. */
  private async collect(
    prefix: string,
    expected: ReadonlySet<number>,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<Map<number, Uint8Array>> {
    const found = new Map<number, Uint8Array>();
    await this.watch(`${prefix}.*`, timeoutMs, signal, (key, value) => {
      const site = Number(key.slice(prefix.length + 1));
      if (expected.has(site)) found.set(site, value);
      return [...expected].every((s) => found.has(s));
    });
    return found;
  }

  private async collectInputs(
    prefix: string,
    expected: ReadonlySet<number>,
    length: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<Map<number, Uint32Array>> {
    const chunks = Math.ceil(length / CHUNK_WORDS);
    const parts = new Map<number, Map<number, Uint8Array>>();
    const complete = (site: number) => (parts.get(site)?.size ?? 0) === chunks;
    await this.watch(`${prefix}.input.>`, timeoutMs, signal, (key, value) => {
      const [site, chunk] = key
        .slice(prefix.length + 7)
        .split('.')
        .map(Number);
      if (site === undefined || chunk === undefined || !expected.has(site)) return false;
      const map = parts.get(site) ?? new Map<number, Uint8Array>();
      map.set(chunk, value);
      parts.set(site, map);
      return [...expected].every(complete);
    });
    const inputs = new Map<number, Uint32Array>();
    for (const [site, map] of parts) {
      if (!complete(site)) continue;
      const words = new Uint32Array(length);
      for (let c = 0; c < chunks; c++) {
        const bytes = map.get(c) as Uint8Array;
        words.set(new Uint32Array(bytes.slice().buffer), c * CHUNK_WORDS);
      }
      inputs.set(site, words);
    }
    return inputs;
  }

  /** Feeds the current and coming values of `pattern` to `visit` until it says done, or the time is up. */
  private async watch(
    pattern: string,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    visit: (key: string, value: Uint8Array) => boolean,
  ): Promise<void> {
    signal?.throwIfAborted();
    const watcher = await this.kv.watch({ key: pattern });
    const stop = () => watcher.stop();
    const timer = setTimeout(stop, timeoutMs);
    signal?.addEventListener('abort', stop, { once: true });
    try {
      for await (const entry of watcher) {
        if (entry.operation !== 'PUT') continue;
        if (visit(entry.key, entry.value)) break;
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', stop);
      watcher.stop();
    }
    signal?.throwIfAborted();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }
}
