/**
 * Record shards read in blocks through a fixed memory budget (`dataset.cache.memoryMiB`), with
 * read-ahead on a thread of its own: the store for data larger than memory.
 *
 * The budget is one SharedArrayBuffer cut into slots of one block (a run of consecutive records,
 * ~1 MiB). A slot is empty, pending (the read-ahead thread is filling it), ready or failed; the
 * state lives in an Int32Array beside it, so the training thread sees a prefetched block as soon as
 * the thread has read it — whether or not its own event loop turns between steps — and waits on
 * the slot (Atomics.wait) only when it needs a block that is still being read. A block nobody
 * asked for ahead is read synchronously (a miss). Slots are reused least recently used first, never
 * while pending. Memory: the budget, plus N label bytes, whatever the size of the data on disk.
 *
 * The trainer visits the samples in a shard-local order (sampler.ts `shardLocalPermutation`, with
 * `locality` from here): a group of blocks at a time, a third of the slots, so that the group being
 * trained on and the next one being read ahead both fit.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { RecordShard, SampleStore, StoredDtype } from './store.ts';

// A slot's state: 0 empty (as allocated), then pending, ready or failed.
const PENDING = 1;
const READY = 2;
const FAILED = 3;

/** Target bytes of one block: large sequential reads, small enough to shuffle well. */
export const BLOCK_BYTES = 1 << 20;

/** Runs of samples a store reads at once, and how many of them the shuffle may mix (sampler.ts). */
export interface Locality {
  readonly blockSamples: number;
  readonly groupBlocks: number;
}

export interface StreamStats {
  /** Blocks found ready (read ahead, or still cached). */
  hits: number;
  /** Blocks read on the training thread because nobody asked for them ahead. */
  misses: number;
  /** Blocks that were still being read when needed (the training thread waited). */
  waits: number;
  /** Blocks handed to the read-ahead thread. */
  prefetched: number;
}

// The read-ahead thread: plain JavaScript (no TypeScript loader to start), reads blocks into slots.
const THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const { readSync } = require('node:fs');
const bytes = new Uint8Array(workerData.data);
const states = new Int32Array(workerData.states);
parentPort.on('message', (m) => {
  let state = ${READY};
  try {
    for (const [fd, position, length, offset] of m.pieces) {
      let done = 0;
      while (done < length) {
        const n = readSync(fd, bytes, m.base + offset + done, length - done, position + done);
        if (n === 0) throw new Error('short read');
        done += n;
      }
    }
  } catch {
    state = ${FAILED};
  }
  Atomics.store(states, m.slot, state);
  Atomics.notify(states, m.slot);
});
`;

type Piece = [fd: number, position: number, length: number, offset: number];

export class ShardStreamStore implements SampleStore {
  readonly size: number;
  readonly residentBytes: number;
  readonly locality: Locality;
  readonly stats: StreamStats = { hits: 0, misses: 0, waits: 0, prefetched: 0 };
  private readonly recordBytes: number;
  private readonly blockBytes: number;
  private readonly slots: number;
  private readonly bytes: Uint8Array;
  private readonly states: Int32Array;
  private readonly blockOfSlot: Int32Array;
  private readonly lastUse: Float64Array;
  private readonly slotOfBlock = new Map<number, number>();
  private readonly fds: number[];
  private readonly firsts: number[];
  private thread: Worker | undefined;
  private tick = 0;

  constructor(
    readonly shards: readonly RecordShard[],
    readonly featureSize: number,
    readonly dtype: StoredDtype,
    private readonly labels: Uint8Array,
    budgetBytes: number,
    readAhead = true,
  ) {
    this.recordBytes = 1 + featureSize * (dtype === 'uint8' ? 1 : 4);
    const target = Math.min(BLOCK_BYTES, Math.floor(budgetBytes / 8));
    const blockSamples = Math.max(1, Math.floor(target / this.recordBytes));
    this.blockBytes = blockSamples * this.recordBytes;
    this.slots = Math.max(3, Math.floor(budgetBytes / this.blockBytes));
    this.locality = { blockSamples, groupBlocks: Math.max(1, Math.floor(this.slots / 3)) };
    const data = new SharedArrayBuffer(this.slots * this.blockBytes);
    const states = new SharedArrayBuffer(this.slots * 4);
    this.bytes = new Uint8Array(data);
    this.states = new Int32Array(states);
    this.blockOfSlot = new Int32Array(this.slots).fill(-1);
    this.lastUse = new Float64Array(this.slots);
    this.fds = [];
    this.firsts = [];
    let first = 0;
    try {
      for (const shard of shards) {
        this.fds.push(openSync(shard.file, 'r'));
        this.firsts.push(first);
        first += shard.records;
      }
    } catch (error) {
      this.close();
      throw error;
    }
    this.size = first;
    this.residentBytes = labels.byteLength + data.byteLength;
    if (readAhead) {
      this.thread = new Worker(THREAD, {
        eval: true,
        name: 'tensile-read-ahead',
        workerData: { data, states },
      });
      this.thread.unref();
    }
  }

  /** The positioned reads that fill block `block`: [fd, file position, length, offset in the block]. */
  private pieces(block: number): Piece[] {
    const first = block * this.locality.blockSamples;
    const last = Math.min(this.size, first + this.locality.blockSamples);
    const out: Piece[] = [];
    let shard = this.shardOf(first);
    let index = first;
    while (index < last) {
      const start = this.firsts[shard] as number;
      const end = start + (this.shards[shard] as RecordShard).records;
      const count = Math.min(last, end) - index;
      out.push([
        this.fds[shard] as number,
        (index - start) * this.recordBytes,
        count * this.recordBytes,
        (index - first) * this.recordBytes,
      ]);
      index += count;
      shard++;
    }
    return out;
  }

  private shardOf(index: number): number {
    let lo = 0;
    let hi = this.firsts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.firsts[mid] as number) <= index) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** A slot to reuse: the least recently used that is not pending and not used since `since`. */
  private victim(since: number): number | undefined {
    let best: number | undefined;
    for (let slot = 0; slot < this.slots; slot++) {
      if (Atomics.load(this.states, slot) === PENDING) continue;
      if ((this.lastUse[slot] as number) >= since) continue;
      if (best === undefined || (this.lastUse[slot] as number) < (this.lastUse[best] as number)) best = slot;
    }
    return best;
  }

  private assign(slot: number, block: number): void {
    const previous = this.blockOfSlot[slot] as number;
    if (previous >= 0) this.slotOfBlock.delete(previous);
    this.blockOfSlot[slot] = block;
    this.slotOfBlock.set(block, slot);
  }

  /** The slot holding `block`, ready: waits for a pending read, reads it here on a miss. */
  private ready(block: number): number {
    this.tick++;
    let slot = this.slotOfBlock.get(block);
    if (slot !== undefined) {
      let state = Atomics.load(this.states, slot);
      if (state === PENDING) {
        this.stats.waits++;
        const deadline = Date.now() + 60_000;
        while (state === PENDING) {
          if (Date.now() > deadline) throw new Error(`read-ahead: block ${block} not read within a minute`);
          Atomics.wait(this.states, slot, PENDING, 1000);
          state = Atomics.load(this.states, slot);
        }
      } else if (state === READY) this.stats.hits++;
      if (state === READY) {
        this.lastUse[slot] = this.tick;
        return slot;
      }
    }
    this.stats.misses++;
    slot ??= this.victim(this.tick);
    if (slot === undefined) throw new Error('read-ahead: every slot is pending');
    this.assign(slot, block);
    const base = slot * this.blockBytes;
    for (const [fd, position, length, offset] of this.pieces(block)) {
      const read = readSync(fd, this.bytes, base + offset, length, position);
      if (read !== length) throw new Error(`short read of block ${block}`);
    }
    Atomics.store(this.states, slot, READY);
    this.lastUse[slot] = this.tick;
    return slot;
  }

  read(indices: ArrayLike<number>, features: Float32Array, labels: Int32Array): void {
    const d = this.featureSize;
    const b = this.locality.blockSamples;
    const view = new DataView(this.bytes.buffer);
    let block = -1;
    let base = 0;
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i] as number;
      if (index < 0 || index >= this.size) throw new RangeError(`sample ${index} out of range`);
      const wanted = Math.floor(index / b);
      if (wanted !== block) {
        block = wanted;
        base = this.ready(block) * this.blockBytes;
      }
      const at = base + (index - block * b) * this.recordBytes;
      labels[i] = this.bytes[at] as number;
      const out = i * d;
      // TypedArray.set converts bytes to floats in native code: several times a JS loop's speed.
      if (this.dtype === 'uint8') features.set(this.bytes.subarray(at + 1, at + 1 + d), out);
      else for (let j = 0; j < d; j++) features[out + j] = view.getFloat32(at + 1 + 4 * j, true);
    }
  }

  /**
   * Starts reading the blocks of `indices` (the samples of the coming steps, in order) on the
   * read-ahead thread. Blocks used since this call began are never displaced, so the blocks of the
   * current group stay; what does not fit waits for a later call.
   */
  prefetch(indices: ArrayLike<number>): void {
    const thread = this.thread;
    if (thread === undefined) return;
    const since = ++this.tick;
    const b = this.locality.blockSamples;
    let previous = -1;
    for (let i = 0; i < indices.length; i++) {
      const block = Math.floor((indices[i] as number) / b);
      if (block === previous) continue;
      previous = block;
      const held = this.slotOfBlock.get(block);
      if (held !== undefined && Atomics.load(this.states, held) !== FAILED) {
        this.lastUse[held] = this.tick;
        continue;
      }
      const slot = held ?? this.victim(since);
      if (slot === undefined) return;
      this.assign(slot, block);
      this.lastUse[slot] = this.tick;
      Atomics.store(this.states, slot, PENDING);
      this.stats.prefetched++;
      thread.postMessage({ slot, base: slot * this.blockBytes, pieces: this.pieces(block) });
    }
  }

  labelAt(index: number): number {
    const label = this.labels[index];
    if (label === undefined) throw new RangeError(`sample ${index} out of range`);
    return label;
  }

  close(): void {
    const fds = this.fds.splice(0);
    const closeAll = () => {
      for (const fd of fds) closeSync(fd);
    };
    // The thread may be reading from them: the descriptors close once it has stopped.
    if (this.thread === undefined) closeAll();
    else void this.thread.terminate().finally(closeAll);
    this.thread = undefined;
  }
}
