/**
 * One federated round between the site leaders, as a state machine fed by the messages that arrived
 * (the NATS driver in client.ts only carries them). Phases, each closed when every expected site has
 * spoken or the phase's deadline passed:
 *   1. advertise: sample count (and, with secure aggregation, the mask and channel public keys);
 *   2. shares:    each site's mask key, Shamir-split among the advertisers, each share sealed to its holder;
 *   3. input:     [w_k·Δ_k…, w_k] in fixed point (w_k = n_k / Σ advertised n), masked against the
 *                 sites that sent shares;
 *   4. unmask:    the survivors reveal their shares of the keys of sites that sent shares but no input.
 * The result is Σ w_k·Δ_k / Σ w_k over the sites whose input is in the sum: FedAvg weighted by sample
 * counts, and still that when a site drops after phase 1 (its weight leaves the sum with its input).
 */
import {
  decodeFixed,
  encodeFixed,
  type KeyPair,
  maskInput,
  newKeyPair,
  openShare,
  pairwiseSeed,
  publicOf,
  removeDroppedMasks,
  type Share,
  sealShare,
  shamirCombine,
  shamirSplit,
  sumInputs,
} from './secure-aggregation.ts';

export interface Advertise {
  readonly site: number;
  readonly samples: number;
  readonly maskKey?: string;
  readonly channelKey?: string;
}

export interface Shares {
  readonly site: number;
  /** Holder site index → sealed share of `site`'s mask key. */
  readonly sealed: Readonly<Record<string, string>>;
}

export interface Unmask {
  readonly site: number;
  /** Dropped site index → this holder's opened share of its mask key. */
  readonly revealed: Readonly<Record<string, { readonly x: number; readonly y: string }>>;
}

export interface RoundOptions {
  readonly self: number;
  /** Bound into every pairwise seed: masks never repeat across rounds or attempts. */
  readonly roundId: string;
  readonly secure: boolean;
  readonly threshold: number;
  /**
   * A rank that is not its site's leader: it writes nothing and holds no keys, but reads every
   * message and so computes the same aggregate (the sum needs no secret; the revealed shares are public).
   */
  readonly observer?: boolean;
}

export class RoundFailed extends Error {}

export class SecureRound {
  private readonly mask: KeyPair | undefined;
  private readonly channel: KeyPair | undefined;
  readonly advertised = new Map<number, Advertise>();
  /** Sites whose shares arrived, and the share of each addressed to this site. */
  readonly shared = new Map<number, Share>();
  readonly inputs = new Map<number, Uint32Array>();
  readonly revealed = new Map<number, Share[]>();

  constructor(private readonly options: RoundOptions) {
    if (options.secure && options.observer !== true) {
      this.mask = newKeyPair();
      this.channel = newKeyPair();
    }
  }

  advertise(samples: number): Advertise {
    const own: Advertise = {
      site: this.options.self,
      samples,
      ...(this.mask && this.channel
        ? { maskKey: this.mask.public.toString('base64'), channelKey: this.channel.public.toString('base64') }
        : {}),
    };
    this.advertised.set(own.site, own);
    return own;
  }

  onAdvertise(message: Advertise): void {
    if (this.options.secure && (message.maskKey === undefined || message.channelKey === undefined))
      throw new RoundFailed(`site ${message.site} advertised no keys, but secure aggregation is on`);
    this.advertised.set(message.site, message);
  }

  private channelKey(peer: number): Buffer {
    const pub = this.advertised.get(peer)?.channelKey;
    if (this.channel === undefined || pub === undefined)
      throw new RoundFailed(`no channel key of site ${peer}`);
    return pairwiseSeed(this.channel.secret, Buffer.from(pub, 'base64'), this.options.roundId, 'channel');
  }

  /** Phase 2: this site's mask key split among the advertisers (itself included). */
  shares(): Shares {
    if (this.mask === undefined) return { site: this.options.self, sealed: {} };
    const holders = [...this.advertised.keys()].sort((a, b) => a - b);
    if (holders.length < this.options.threshold)
      throw new RoundFailed(
        `${holders.length} sites advertised; secure aggregation needs ${this.options.threshold}`,
      );
    const sealed: Record<string, string> = {};
    for (const share of shamirSplit(
      this.mask.secret,
      holders.map((h) => h + 1),
      this.options.threshold,
    ))
      sealed[String(share.x - 1)] = sealShare(share, this.channelKey(share.x - 1));
    this.onShares({ site: this.options.self, sealed });
    return { site: this.options.self, sealed };
  }

  onShares(message: Shares): void {
    if (!this.options.secure || this.options.observer === true) {
      this.shared.set(message.site, { x: 0, y: 0n });
      return;
    }
    const mine = message.sealed[String(this.options.self)];
    if (mine === undefined)
      throw new RoundFailed(`site ${message.site} sent no share to site ${this.options.self}`);
    this.shared.set(message.site, openShare(mine, this.channelKey(message.site)));
  }

  private totalSamples(): number {
    let n = 0;
    for (const a of this.advertised.values()) n += a.samples;
    return n;
  }

  /** Phase 3: [w·Δ…, w] in fixed point, masked against every site whose shares arrived. */
  input(delta: Float32Array): Uint32Array {
    const own = this.advertised.get(this.options.self);
    if (own === undefined) throw new RoundFailed('input before advertise');
    const weight = own.samples / this.totalSamples();
    const values = new Float32Array(delta.length + 1);
    for (let i = 0; i < delta.length; i++) values[i] = (delta[i] as number) * weight;
    values[delta.length] = weight;
    const words = encodeFixed(values);
    const masked =
      this.mask === undefined
        ? words
        : maskInput(this.options.self, words, this.mask.secret, this.maskPeers(), this.options.roundId);
    this.inputs.set(this.options.self, masked);
    return masked;
  }

  private maskPeers(): Map<number, Buffer> {
    const peers = new Map<number, Buffer>();
    for (const site of this.shared.keys()) {
      const key = this.advertised.get(site)?.maskKey;
      if (key !== undefined) peers.set(site, Buffer.from(key, 'base64'));
    }
    return peers;
  }

  onInput(site: number, words: Uint32Array): void {
    this.inputs.set(site, words);
  }

  /** Sites that shared their key but whose input is missing: their masks are in the others' inputs. */
  dropped(): number[] {
    return [...this.shared.keys()].filter((s) => !this.inputs.has(s)).sort((a, b) => a - b);
  }

  /** Phase 4: this site's shares of the dropped sites' keys. */
  unmask(): Unmask {
    const revealed: Record<string, { x: number; y: string }> = {};
    if (this.options.secure)
      for (const site of this.dropped()) {
        const share = this.shared.get(site);
        if (share !== undefined) revealed[String(site)] = { x: share.x, y: share.y.toString(16) };
      }
    this.onUnmask({ site: this.options.self, revealed });
    return { site: this.options.self, revealed };
  }

  onUnmask(message: Unmask): void {
    if (!this.inputs.has(message.site)) return; // only survivors' shares are trusted to be current
    for (const [site, share] of Object.entries(message.revealed)) {
      const list = this.revealed.get(Number(site)) ?? [];
      if (!list.some((s) => s.x === share.x)) list.push({ x: share.x, y: BigInt(`0x${share.y}`) });
      this.revealed.set(Number(site), list);
    }
  }

  /** The weighted mean delta of the sites whose input is in the sum; RoundFailed when it cannot be had. */
  result(length: number): { mean: Float32Array; sites: number[]; weight: number } {
    const sum = sumInputs(this.inputs.values(), length + 1);
    if (this.options.secure) this.recover(sum);
    const values = decodeFixed(sum);
    const weight = values[length] as number;
    if (!(weight > 0)) throw new RoundFailed('no site’s input is in the sum');
    // Masks that do not cancel (sites that saw different sets of peers) leave a random weight: the
    // summed weights must be the advertised sample counts of the summed sites.
    let expected = 0;
    for (const site of this.inputs.keys()) expected += this.advertised.get(site)?.samples ?? Number.NaN;
    expected /= this.totalSamples();
    if (!(Math.abs(weight - expected) < 1e-4))
      throw new RoundFailed(
        `the aggregate's weight is ${weight}, the summed sites' ${expected}: the masks did not cancel (the sites saw different peers); retry the round`,
      );
    const mean = new Float32Array(length);
    for (let i = 0; i < length; i++) mean[i] = (values[i] as number) / weight;
    return { mean, sites: [...this.inputs.keys()].sort((a, b) => a - b), weight };
  }

  private recover(sum: Uint32Array): void {
    const survivors = new Map<number, Buffer>();
    for (const site of this.inputs.keys()) {
      const key = this.advertised.get(site)?.maskKey;
      if (key !== undefined) survivors.set(site, Buffer.from(key, 'base64'));
    }
    for (const site of this.dropped()) {
      const shares = this.revealed.get(site) ?? [];
      if (shares.length < this.options.threshold)
        throw new RoundFailed(
          `site ${site} dropped and ${shares.length} of the ${this.options.threshold} shares of its key arrived: retry the round`,
        );
      const secret = shamirCombine(shares, this.options.threshold);
      const advertised = this.advertised.get(site)?.maskKey;
      if (advertised === undefined || !publicOf(secret).equals(Buffer.from(advertised, 'base64')))
        throw new RoundFailed(`the rebuilt key of site ${site} does not match the key it advertised`);
      removeDroppedMasks(sum, site, secret, survivors, this.options.roundId);
    }
  }
}
