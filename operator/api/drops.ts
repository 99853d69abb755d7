/**
 * Counts what a receiver threw away: a NATS message that failed its schema or was too large, a frame
 * on a collective link that broke the protocol, a connection that failed the handshake. Dropping is
 * the answer to bad input (never a crash); counting is what makes it visible. The first drop of each
 * (channel, reason) is reported, then every power of two, so a flood costs a few log lines.
 */

export type DropChannel = 'nats' | 'collective';

export interface Drop {
  readonly channel: DropChannel;
  /** A short, stable reason ("bad token", "schema", "oversized"): the counter's key. */
  readonly reason: string;
  /** Where it came from or was sent to: a subject, a peer address. */
  readonly source?: string;
  /** A human detail (the schema error, the length); never the payload itself. */
  readonly detail?: string;
}

export interface DropReport extends Drop {
  /** Drops of this (channel, reason) so far, this one included. */
  readonly total: number;
}

export class DropCounter {
  private readonly counts = new Map<string, number>();

  constructor(private readonly report: (drop: DropReport) => void = () => undefined) {}

  drop(drop: Drop): void {
    const key = `${drop.channel}:${drop.reason}`;
    const total = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, total);
    // Powers of two: 1, 2, 4, 8, …
    if ((total & (total - 1)) === 0) this.report({ ...drop, total });
  }

  /** Drops so far by "channel:reason". */
  totals(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  get total(): number {
    let sum = 0;
    for (const n of this.counts.values()) sum += n;
    return sum;
  }
}
