/**
 * One federated round between the site leaders, as a state machine fed by the messages that arrived
 * (the NATS driver in client.ts only carries them). Phases, each closed when every expected site has
 * spoken or the phase's deadline passed:
 *   1. advertise: sample count (and, with secure aggregation, the mask and channel public keys and a
 *                 commitment to the self-mask seed, signed with the site's Ed25519 identity key);
 *   2. shares:    each site's mask key and self-mask seed, Shamir-split among the advertisers, each
 *                 holder's pair of shares sealed to it;
 *   3. input:     [w_k·Δ_k…, w_k] in fixed point (w_k = n_k / Σ advertised n), plus the site's
 *                 self-mask and its pairwise masks against the sites that sent shares;
 *   4. unmask:    for every site that sent shares, each survivor reveals one share: of its seed when its
 *                 input arrived, of its mask key when it did not — never both for one site.
 * The result is Σ w_k·Δ_k / Σ w_k over the sites whose input is in the sum: FedAvg weighted by sample
 * counts, and still that when a site drops after phase 1 (its weight leaves the sum with its input).
 */
import type { KeyObject } from 'node:crypto';
import { TensileError } from '../../operator/api/errors.ts';
import {
  addSelfMask,
  commitSeed,
  decodeFixed,
  encodeFixed,
  type KeyPair,
  maskInput,
  newKeyPair,
  newSelfSeed,
  openShare,
  pairwiseSeed,
  publicOf,
  removeDroppedMasks,
  type Share,
  type SharePair,
  sealShare,
  shamirCombine,
  shamirSplit,
  signMessage,
  sumInputs,
  verifyMessage,
} from './secure-aggregation.ts';

export interface Advertise {
  readonly site: number;
  readonly samples: number;
  readonly maskKey?: string;
  readonly channelKey?: string;
  /** SHA-256 of the self-mask seed: a rebuilt seed is checked against it. */
  readonly seedCommitment?: string;
  /** Ed25519 over the round, site, samples, keys and commitment (see advertisedText). */
  readonly signature?: string;
}

export interface Shares {
  readonly site: number;
  /** Holder site index → sealed pair of shares of `site`'s mask key and self-mask seed. */
  readonly sealed: Readonly<Record<string, string>>;
}

type RevealedShare = { readonly x: number; readonly y: string };

export interface Unmask {
  readonly site: number;
  /** Surviving site index → this holder's share of its self-mask seed. */
  readonly seeds: Readonly<Record<string, RevealedShare>>;
  /** Dropped site index → this holder's share of its mask key. */
  readonly keys: Readonly<Record<string, RevealedShare>>;
}

export interface RoundOptions {
  readonly self: number;
  /** Bound into every pairwise seed, seal and signature: nothing carries over across rounds or attempts. */
  readonly roundId: string;
  readonly secure: boolean;
  /** Shamir t; more than half the sites, so a site's seed and key can never both be rebuilt. */
  readonly threshold: number;
  /**
   * A rank that is not its site's leader: it writes nothing and holds no keys, but reads every
   * message and so computes the same aggregate (the sum needs no secret; the revealed shares are public).
   */
  readonly observer?: boolean;
  /** Secure aggregation: this site's Ed25519 identity key (PKCS8 PEM; leaders only). */
  readonly signingKey?: string;
  /** Secure aggregation: every site's Ed25519 public key, from outside the relay. */
  readonly siteKeys?: ReadonlyMap<number, KeyObject>;
  /** Site names by index, for errors. */
  readonly siteNames?: readonly string[];
}

/** A round that cannot complete as it went (too few shares, masks that did not cancel): retry it. */
export class RoundFailed extends Error {}

/**
 * A site's advertised keys do not carry its signature: someone between the sites changed them.
 * Terminal: a retry through the same relay would be refused the same way, and must not go ahead.
 */
export class FederationKeyRejected extends TensileError {
  readonly classification = 'terminal' as const;
}

/** What a site signs: everything of its advertisement, bound to the round. */
export const advertisedText = (roundId: string, a: Advertise): string =>
  [
    'tensile-federation-advertise',
    roundId,
    a.site,
    a.samples,
    a.maskKey ?? '',
    a.channelKey ?? '',
    a.seedCommitment ?? '',
  ].join('\n');

const parseShare = (s: RevealedShare): Share => ({ x: s.x, y: BigInt(`0x${s.y}`) });
const revealShare = (s: Share): RevealedShare => ({ x: s.x, y: s.y.toString(16) });

function addRevealed(into: Map<number, Share[]>, from: Readonly<Record<string, RevealedShare>>): void {
  for (const [site, share] of Object.entries(from)) {
    const list = into.get(Number(site)) ?? [];
    if (!list.some((s) => s.x === share.x)) list.push(parseShare(share));
    into.set(Number(site), list);
  }
}

export class SecureRound {
  private readonly mask: KeyPair | undefined;
  private readonly channel: KeyPair | undefined;
  private readonly seed: Buffer | undefined;
  readonly advertised = new Map<number, Advertise>();
  /** Sites whose shares arrived, and the pair of shares of each addressed to this site (null: observer). */
  readonly shared = new Map<number, SharePair | null>();
  readonly inputs = new Map<number, Uint32Array>();
  /** Inputs that arrived after this site unmasked: never in its sum, never unmasked by it. */
  readonly late = new Map<number, Uint32Array>();
  readonly revealedSeeds = new Map<number, Share[]>();
  readonly revealedKeys = new Map<number, Share[]>();
  private unmasked: Unmask | undefined;

  constructor(private readonly options: RoundOptions) {
    if (options.secure && options.observer !== true) {
      this.mask = newKeyPair();
      this.channel = newKeyPair();
      this.seed = newSelfSeed();
    }
  }

  private siteName(site: number): string {
    const name = this.options.siteNames?.[site];
    return name === undefined ? `site ${site}` : `site "${name}" (index ${site})`;
  }

  advertise(samples: number): Advertise {
    let own: Advertise = {
      site: this.options.self,
      samples,
      ...(this.mask && this.channel && this.seed
        ? {
            maskKey: this.mask.public.toString('base64'),
            channelKey: this.channel.public.toString('base64'),
            seedCommitment: commitSeed(this.seed),
          }
        : {}),
    };
    if (this.mask !== undefined) {
      if (this.options.signingKey === undefined)
        throw new FederationKeyRejected(
          `${this.siteName(this.options.self)} has no signing key: secure aggregation signs every site's keys`,
        );
      own = {
        ...own,
        signature: signMessage(advertisedText(this.options.roundId, own), this.options.signingKey),
      };
    }
    this.advertised.set(own.site, own);
    return own;
  }

  onAdvertise(message: Advertise): void {
    if (this.options.secure) {
      if (
        message.maskKey === undefined ||
        message.channelKey === undefined ||
        message.seedCommitment === undefined
      )
        throw new RoundFailed(
          `${this.siteName(message.site)} advertised no keys, but secure aggregation is on`,
        );
      this.verify(message);
    }
    this.advertised.set(message.site, message);
  }

  private verify(message: Advertise): void {
    const key = this.options.siteKeys?.get(message.site);
    if (key === undefined)
      throw new FederationKeyRejected(
        `${this.siteName(message.site)} has no known signing key: secure aggregation needs every site's public key (spec.federation.sites[].signingKey or the launcher's)`,
      );
    const text = advertisedText(this.options.roundId, message);
    if (message.signature === undefined || !verifyMessage(text, message.signature, key))
      throw new FederationKeyRejected(
        `${this.siteName(message.site)}: its advertised keys in round ${this.options.roundId} carry ${message.signature === undefined ? 'no' : 'a bad'} signature; they were changed between the sites (or the site's signing key is not the one configured), so the round is refused`,
      );
  }

  private channelKey(peer: number): Buffer {
    const pub = this.advertised.get(peer)?.channelKey;
    if (this.channel === undefined || pub === undefined)
      throw new RoundFailed(`no channel key of ${this.siteName(peer)}`);
    return pairwiseSeed(this.channel.secret, Buffer.from(pub, 'base64'), this.options.roundId, 'channel');
  }

  private binding = (from: number, to: number): string => `${this.options.roundId}|${from}|${to}`;

  /** Phase 2: this site's mask key and self-mask seed split among the advertisers (itself included). */
  shares(): Shares {
    if (this.mask === undefined || this.seed === undefined) {
      const empty = { site: this.options.self, sealed: {} };
      if (this.options.observer !== true) this.onShares(empty);
      return empty;
    }
    const holders = [...this.advertised.keys()].sort((a, b) => a - b);
    if (holders.length < this.options.threshold)
      throw new RoundFailed(
        `${holders.length} sites advertised; secure aggregation needs ${this.options.threshold}`,
      );
    const xs = holders.map((h) => h + 1);
    const keys = shamirSplit(this.mask.secret, xs, this.options.threshold);
    const seeds = shamirSplit(this.seed, xs, this.options.threshold);
    const sealed: Record<string, string> = {};
    keys.forEach((key, i) => {
      const holder = key.x - 1;
      const pair = { key, seed: seeds[i] as Share };
      sealed[String(holder)] = sealShare(
        pair,
        this.channelKey(holder),
        this.binding(this.options.self, holder),
      );
    });
    this.onShares({ site: this.options.self, sealed });
    return { site: this.options.self, sealed };
  }

  onShares(message: Shares): void {
    if (!this.options.secure || this.options.observer === true) {
      this.shared.set(message.site, null);
      return;
    }
    const mine = message.sealed[String(this.options.self)];
    if (mine === undefined)
      throw new RoundFailed(`${this.siteName(message.site)} sent no share to site ${this.options.self}`);
    const binding = this.binding(message.site, this.options.self);
    this.shared.set(message.site, openShare(mine, this.channelKey(message.site), binding));
  }

  private totalSamples(): number {
    let n = 0;
    for (const a of this.advertised.values()) n += a.samples;
    return n;
  }

  /** Phase 3: [w·Δ…, w] in fixed point, self-masked and masked against every site whose shares arrived. */
  input(delta: Float32Array): Uint32Array {
    const own = this.advertised.get(this.options.self);
    if (own === undefined) throw new RoundFailed('input before advertise');
    const weight = own.samples / this.totalSamples();
    const values = new Float32Array(delta.length + 1);
    for (let i = 0; i < delta.length; i++) values[i] = (delta[i] as number) * weight;
    values[delta.length] = weight;
    const words = encodeFixed(values);
    let masked = words;
    if (this.mask !== undefined && this.seed !== undefined) {
      masked = maskInput(this.options.self, words, this.mask.secret, this.maskPeers(), this.options.roundId);
      addSelfMask(masked, this.seed, 1);
    }
    this.inputs.set(this.options.self, masked);
    return masked;
  }

  private maskKeys(sites: Iterable<number>): Map<number, Buffer> {
    const keys = new Map<number, Buffer>();
    for (const site of sites) {
      const key = this.advertised.get(site)?.maskKey;
      if (key !== undefined) keys.set(site, Buffer.from(key, 'base64'));
    }
    return keys;
  }

  private maskPeers(): Map<number, Buffer> {
    return this.maskKeys(this.shared.keys());
  }

  /** An input; one that arrives after this site unmasked is kept apart as late. */
  onInput(site: number, words: Uint32Array): void {
    if (this.unmasked !== undefined && !this.inputs.has(site)) this.late.set(site, words);
    else this.inputs.set(site, words);
  }

  /** Sites that shared their key but whose input is missing: their masks are in the others' inputs. */
  dropped(): number[] {
    return [...this.shared.keys()].filter((s) => !this.inputs.has(s)).sort((a, b) => a - b);
  }

  /**
   * Phase 4: for each site that sent shares, this holder's share of its seed (its input is here) or
   * of its mask key (it is not) — decided once: asked again, a holder says the same.
   */
  unmask(): Unmask {
    if (this.unmasked !== undefined) return this.unmasked;
    const seeds: Record<string, RevealedShare> = {};
    const keys: Record<string, RevealedShare> = {};
    if (this.options.secure)
      for (const [site, pair] of this.shared) {
        if (pair === null) continue;
        if (this.inputs.has(site)) seeds[String(site)] = revealShare(pair.seed);
        else keys[String(site)] = revealShare(pair.key);
      }
    this.unmasked = { site: this.options.self, seeds, keys };
    this.onUnmask(this.unmasked);
    return this.unmasked;
  }

  onUnmask(message: Unmask): void {
    if (!this.inputs.has(message.site)) return; // only survivors' shares are trusted to be current
    addRevealed(this.revealedSeeds, message.seeds);
    addRevealed(this.revealedKeys, message.keys);
  }

  /** The weighted mean delta of the sites whose input is in the sum; RoundFailed when it cannot be had. */
  result(length: number): { mean: Float32Array; sites: number[]; weight: number } {
    const survivors = this.options.secure ? this.survivors() : [...this.inputs.keys()];
    const sum = sumInputs(
      survivors.map((s) => this.inputs.get(s) as Uint32Array),
      length + 1,
    );
    if (this.options.secure) this.recover(sum, survivors);
    const values = decodeFixed(sum);
    const weight = values[length] as number;
    if (!(weight > 0)) throw new RoundFailed('no site’s input is in the sum');
    // Masks that do not cancel (sites that saw different sets of peers) leave a random weight: the
    // summed weights must be the advertised sample counts of the summed sites.
    let expected = 0;
    for (const site of survivors) expected += this.advertised.get(site)?.samples ?? Number.NaN;
    expected /= this.totalSamples();
    if (!(Math.abs(weight - expected) < 1e-4))
      throw new RoundFailed(
        `the aggregate's weight is ${weight}, the summed sites' ${expected}: the masks did not cancel (the sites saw different peers); retry the round`,
      );
    const mean = new Float32Array(length);
    for (let i = 0; i < length; i++) mean[i] = (values[i] as number) / weight;
    return { mean, sites: survivors.sort((a, b) => a - b), weight };
  }

  /**
   * The sites whose input is in the sum, as the survivors' reveals decided: an input here whose seed
   * shares did not reach t (the others took it for dropped) is left out, as the others leave it out.
   */
  private survivors(): number[] {
    const t = this.options.threshold;
    return [...this.inputs.keys()].filter(
      (s) => (this.revealedSeeds.get(s)?.length ?? 0) >= t && (this.revealedKeys.get(s)?.length ?? 0) < t,
    );
  }

  private recover(sum: Uint32Array, survivors: readonly number[]): void {
    const t = this.options.threshold;
    for (const site of survivors) {
      const seed = shamirCombine(this.revealedSeeds.get(site) ?? [], t);
      if (commitSeed(seed) !== this.advertised.get(site)?.seedCommitment)
        throw new RoundFailed(
          `the rebuilt self-mask seed of ${this.siteName(site)} does not match its commitment`,
        );
      addSelfMask(sum, seed, -1);
    }
    const keys = this.maskKeys(survivors);
    for (const site of this.shared.keys()) {
      if (survivors.includes(site)) continue;
      const shares = this.revealedKeys.get(site) ?? [];
      if (shares.length < t)
        throw new RoundFailed(
          `${this.siteName(site)} dropped and ${shares.length} of the ${t} shares of its key arrived: retry the round`,
        );
      const secret = shamirCombine(shares, t);
      const advertised = this.advertised.get(site)?.maskKey;
      if (advertised === undefined || !publicOf(secret).equals(Buffer.from(advertised, 'base64')))
        throw new RoundFailed(
          `the rebuilt key of ${this.siteName(site)} does not match the key it advertised`,
        );
      removeDroppedMasks(sum, site, secret, keys, this.options.roundId);
    }
  }
}
