import type { GradientReducer } from '../../worker/train/reducer.ts';

/**
 * A world of `ranks` trainers in one process: `forRank(r)` is rank r's collective. allReduce sums the
 * buffers of the ranks' concurrent calls; allGather hands every rank all payloads in rank order.
 */
export class InProcessWorld {
  private sums: { rank: number; buffer: Float32Array; resolve: (sum: Float32Array) => void }[] = [];
  private gathers: { rank: number; bytes: Uint8Array; resolve: (all: Uint8Array[]) => void }[] = [];
  constructor(readonly ranks: number) {}

  forRank(rank: number): GradientReducer {
    return {
      allReduce: (buffer) =>
        new Promise((resolve) => {
          this.sums.push({ rank, buffer, resolve });
          if (this.sums.length < this.ranks) return;
          // Summed in rank order, as every rank of a ring ends with the same bits.
          const ordered = [...this.sums].sort((a, b) => a.rank - b.rank);
          const sum = new Float32Array(buffer.length);
          for (const p of ordered)
            for (let i = 0; i < sum.length; i++) sum[i] = (sum[i] as number) + (p.buffer[i] as number);
          for (const p of this.sums) p.resolve(sum.slice());
          this.sums = [];
        }),
      allGather: (bytes) =>
        new Promise((resolve) => {
          this.gathers.push({ rank, bytes: bytes.slice(), resolve });
          if (this.gathers.length < this.ranks) return;
          const all = [...this.gathers].sort((a, b) => a.rank - b.rank).map((g) => g.bytes);
          for (const g of this.gathers) g.resolve(all.map((b) => b.slice()));
          this.gathers = [];
        }),
    };
  }
}

/** Sums the buffers of `ranks` concurrent allReduce calls (ranks call in rank order). */
export class InProcessReducer implements GradientReducer {
  private readonly world: InProcessWorld;
  private calls = 0;
  private gathers = 0;
  private readonly handles: GradientReducer[];
  constructor(ranks: number) {
    this.world = new InProcessWorld(ranks);
    this.handles = Array.from({ length: ranks }, (_, r) => this.world.forRank(r));
  }
  allReduce(buffer: Float32Array): Promise<Float32Array> {
    const handle = this.handles[this.calls++ % this.world.ranks] as GradientReducer;
    return handle.allReduce(buffer);
  }
  allGather(bytes: Uint8Array): Promise<Uint8Array[]> {
    const handle = this.handles[this.gathers++ % this.world.ranks] as GradientReducer;
    return handle.allGather(bytes);
  }
}
