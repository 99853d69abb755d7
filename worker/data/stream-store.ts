/**
 * Record shards read in blocks through a fixed memory budget (`dataset.cache.memoryMiB`), with
 * read-ahead on a thread of its own: the store for data larger than memory.
 *
 * The budget is cut into slots of one block (a run of consecutive records, ~1 MiB), plain
 * ArrayBuffers allocated on first use, and a few staging blocks of shared memory. The read-ahead
 * thread reads a requested block into a staging block and flips its state in an Int32Array beside
 * it; the training thread lands finished blocks into their slots when it next looks (a read or a
 * prefetch), whether or not its event loop turned in between, and waits on a staging block
 * (Atomics.wait) only when it needs one still being read. A block nobody asked for ahead is read
 * synchronously (a miss). Slots are reused least recently used first, never while pending. Memory:
 * the budget, plus N label bytes, whatever the size of the data on disk.
 *
 * The trainer visits the samples in a shard-local order (sampler.ts `shardLocalPermutation`, with
 * `locality` from here): a group of blocks at a time, a third of the slots, so that the group being
 * trained on and the next one being read ahead both fit.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { type RecordShard, type SampleStore, type StoredDtype, shardContaining } from './store.ts';

const EMPTY = 0;
const EMPTY_BYTES: Uint8Array = new Uint8Array(0);
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
  /** Slot buffers, plain ArrayBuffers allocated on first use. */
  private readonly data: (Uint8Array | undefined)[];
  private readonly slotState: Uint8Array;
  private readonly slotStaging: Int32Array;
  /** Where the thread writes: a few blocks of shared memory, landed into slots when done. */
  private readonly staging: Uint8Array;
  private readonly stagingStates: Int32Array;
  private readonly stagingSlot: Int32Array;
  private readonly freeStaging: number[];
  private readonly blockOfSlot: Int32Array;
  private readonly lastUse: Float64Array;
  /** Block → slot (−1: none); an array, as the hot path looks a block up for every sample. */
  private slotOfBlock = new Int32Array(0);
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
    const total = Math.max(4, Math.floor(budgetBytes / this.blockBytes));
    const staging = readAhead ? Math.max(2, Math.ceil(total / 12)) : 0;
    this.slots = Math.max(3, total - staging);
    this.locality = { blockSamples, groupBlocks: Math.max(1, Math.floor(this.slots / 3)) };
    this.data = Array.from({ length: this.slots }, () => undefined);
    this.slotState = new Uint8Array(this.slots);
    this.slotStaging = new Int32Array(this.slots).fill(-1);
    this.blockOfSlot = new Int32Array(this.slots).fill(-1);
    this.lastUse = new Float64Array(this.slots);
    const stagingData = new SharedArrayBuffer(Math.max(1, staging) * this.blockBytes);
    const stagingStates = new SharedArrayBuffer(Math.max(1, staging) * 4);
    this.staging = new Uint8Array(stagingData);
    this.stagingStates = new Int32Array(stagingStates);
    this.stagingSlot = new Int32Array(Math.max(1, staging)).fill(-1);
    this.freeStaging = Array.from({ length: staging }, (_, i) => i);
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
    this.slotOfBlock = new Int32Array(Math.ceil(first / blockSamples)).fill(-1);
    this.residentBytes = labels.byteLength + (this.slots + staging) * this.blockBytes;
    if (readAhead) {
      this.thread = new Worker(THREAD, {
        eval: true,
        name: 'tensile-read-ahead',
        workerData: { data: stagingData, states: stagingStates },
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
    return shardContaining(this.firsts, index);
  }

  /** A slot to reuse: the least recently used that is not pending and not used since `since`. */
  private victim(since: number): number | undefined {
    let best: number | undefined;
    for (let slot = 0; slot < this.slots; slot++) {
      if (this.slotState[slot] === PENDING) continue;
      if ((this.lastUse[slot] as number) >= since) continue;
      if (best === undefined || (this.lastUse[slot] as number) < (this.lastUse[best] as number)) best = slot;
    }
    return best;
  }

  private assign(slot: number, block: number): Uint8Array {
    const previous = this.blockOfSlot[slot] as number;
    if (previous >= 0) this.slotOfBlock[previous] = -1;
    this.blockOfSlot[slot] = block;
    this.slotOfBlock[block] = slot;
    let data = this.data[slot];
    if (data === undefined) {
      data = new Uint8Array(this.blockBytes);
      this.data[slot] = data;
    }
    return data;
  }

  /** Moves a block the thread has read from its staging slot into its slot (or marks it lost). */
  private land(staging: number): void {
    const slot = this.stagingSlot[staging] as number;
    const state = Atomics.load(this.stagingStates, staging);
    if (state === READY) {
      const from = staging * this.blockBytes;
      (this.data[slot] as Uint8Array).set(this.staging.subarray(from, from + this.blockBytes));
      this.slotState[slot] = READY;
    } else {
      this.slotState[slot] = EMPTY;
    }
    this.slotStaging[slot] = -1;
    this.stagingSlot[staging] = -1;
    this.freeStaging.push(staging);
  }

  /** Lands every block the thread has finished since the last look. */
  private drain(): void {
    for (let staging = 0; staging < this.stagingSlot.length; staging++) {
      if ((this.stagingSlot[staging] as number) < 0) continue;
      if (Atomics.load(this.stagingStates, staging) !== PENDING) this.land(staging);
    }
  }

  /** The bytes of `block`: waits for a pending read, reads it here on a miss. */
  private ready(block: number): Uint8Array {
    this.tick++;
    let slot: number | undefined = this.slotOfBlock[block] as number;
    if (slot < 0) slot = undefined;
    if (slot !== undefined) {
      if (this.slotState[slot] === PENDING) {
        const staging = this.slotStaging[slot] as number;
        if (Atomics.load(this.stagingStates, staging) === PENDING) {
          this.stats.waits++;
          const deadline = Date.now() + 60_000;
          while (Atomics.load(this.stagingStates, staging) === PENDING) {
            if (Date.now() > deadline) throw new Error(`read-ahead: block ${block} not read within a minute`);
            Atomics.wait(this.stagingStates, staging, PENDING, 1000);
          }
        } else this.stats.hits++;
        this.land(staging);
      } else if (this.slotState[slot] === READY) this.stats.hits++;
      if (this.slotState[slot] === READY) {
        this.lastUse[slot] = this.tick;
        return this.data[slot] as Uint8Array;
      }
    }
    this.stats.misses++;
    slot ??= this.victim(this.tick);
    if (slot === undefined) throw new Error('read-ahead: every slot is pending');
    const data = this.assign(slot, block);
    for (const [fd, position, length, offset] of this.pieces(block)) {
      const read = readSync(fd, data, offset, length, position);
      if (read !== length) throw new Error(`short read of block ${block}`);
    }
    this.slotState[slot] = READY;
    this.lastUse[slot] = this.tick;
    return data;
  }

  read(indices: ArrayLike<number>, features: Float32Array, labels: Int32Array): void {
    const d = this.featureSize;
    const b = this.locality.blockSamples;
    let block = -1;
    let bytes = EMPTY_BYTES;
    let view = new DataView(bytes.buffer);
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i] as number;
      if (index < 0 || index >= this.size) throw new RangeError(`sample ${index} out of range`);
      const wanted = Math.floor(index / b);
      if (wanted !== block) {
        block = wanted;
        bytes = this.ready(block);
        if (this.dtype === 'float32') view = new DataView(bytes.buffer);
      }
      const at = (index - block * b) * this.recordBytes;
      labels[i] = bytes[at] as number;
      const out = i * d;
      // TypedArray.set converts bytes to floats in native code: several times a JS loop's speed
      // (and why slots are plain ArrayBuffers: from a SharedArrayBuffer it is ~6× slower).
      if (this.dtype === 'uint8') features.set(bytes.subarray(at + 1, at + 1 + d), out);
      else for (let j = 0; j < d; j++) features[out + j] = view.getFloat32(at + 1 + 4 * j, true);
    }
  }

  /**
   * Starts reading the blocks of `indices` (the samples of the coming steps, in order) on the
   * read-ahead thread, as many as there are free staging slots. Blocks used since this call began
   * are never displaced, so the blocks of the current group stay; what does not fit waits for a
   * later call.
   */
  prefetch(indices: ArrayLike<number>): void {
    const thread = this.thread;
    if (thread === undefined) return;
    this.drain();
    const since = ++this.tick;
    const b = this.locality.blockSamples;
    let previous = -1;
    for (let i = 0; i < indices.length; i++) {
      const block = Math.floor((indices[i] as number) / b);
      if (block === previous) continue;
      previous = block;
      const found = this.slotOfBlock[block] as number;
      const held = found < 0 ? undefined : found;
      if (held !== undefined && this.slotState[held] !== EMPTY) {
        this.lastUse[held] = this.tick;
        continue;
      }
      const staging = this.freeStaging.pop();
      if (staging === undefined) return;
      const slot = held ?? this.victim(since);
      if (slot === undefined) {
        this.freeStaging.push(staging);
        return;
      }
      this.assign(slot, block);
      this.lastUse[slot] = this.tick;
      this.slotState[slot] = PENDING;
      this.slotStaging[slot] = staging;
      this.stagingSlot[staging] = slot;
      Atomics.store(this.stagingStates, staging, PENDING);
      this.stats.prefetched++;
      thread.postMessage({ slot: staging, base: staging * this.blockBytes, pieces: this.pieces(block) });
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
