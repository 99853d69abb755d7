/**
 * Where the samples live between the reader and the batch: compact, random-access stores.
 *
 * Memory bound (per worker), for N samples of D values:
 * - InMemoryStore (idx, csv, jsonl): N·D bytes while every value is an integer in [0, 255] (kept as
 *   uint8, e.g. all of MNIST-style data), else N·D·4 bytes (float32); plus N·4 bytes of labels. The
 *   readers stream their files (gunzip and lines as they come), so no file is ever held whole, and
 *   chunked storage means growing never copies everything (peak = final size + one chunk).
 * - RecordFileStore (records shards): N bytes of labels; features are read from the shards for each
 *   batch, so the bound does not grow with the data.
 * - Per batch: B·D·4 bytes of float32 features, converted when the batch is made.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import type { Locality } from './stream-store.ts';

/**
 * The shard that holds record `index`, given each shard's first record in ascending order. A binary
 * search because shards may hold different numbers of records.
 */
export function shardContaining(firsts: readonly number[], index: number): number {
  let lo = 0;
  let hi = firsts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((firsts[mid] as number) <= index) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export type StoredDtype = 'uint8' | 'float32';

export interface SampleStore {
  readonly size: number;
  /** Values per sample. */
  readonly featureSize: number;
  readonly dtype: StoredDtype;
  /** Bytes this store keeps in memory. */
  readonly residentBytes: number;
  /** Raw feature values of the samples at `indices` into `features` (row-major), their labels into `labels`. */
  read(indices: ArrayLike<number>, features: Float32Array, labels: Int32Array): void;
  labelAt(index: number): number;
  /** Set by stores that read runs of samples at once (stream-store.ts): the shuffle keeps to them. */
  readonly locality?: Locality;
  /** Asks for the samples at `indices` (those of the coming steps) to be read ahead. */
  prefetch?(indices: ArrayLike<number>): void;
}

/** Calls `visit` with consecutive blocks of raw samples, in order: for statistics passes. */
export function scanStore(
  store: SampleStore,
  blockSize: number,
  visit: (features: Float32Array, labels: Int32Array, count: number, first: number) => void,
): void {
  const features = new Float32Array(blockSize * store.featureSize);
  const labels = new Int32Array(blockSize);
  const indices = new Uint32Array(blockSize);
  for (let first = 0; first < store.size; first += blockSize) {
    const count = Math.min(blockSize, store.size - first);
    for (let i = 0; i < count; i++) indices[i] = first + i;
    store.read(indices.subarray(0, count), features, labels);
    visit(features, labels, count, first);
  }
}

const CHUNK_SAMPLES = 4096;

/** Builds an InMemoryStore sample by sample; keeps uint8 until a value does not fit. */
export class SampleStoreBuilder {
  private chunks: (Uint8Array | Float32Array)[] = [];
  private labelChunks: Int32Array[] = [];
  private count = 0;
  private dtype: StoredDtype;

  constructor(
    readonly featureSize: number,
    preferred: StoredDtype = 'uint8',
  ) {
    this.dtype = preferred;
  }

  get size(): number {
    return this.count;
  }

  private upgrade(): void {
    this.chunks = this.chunks.map((chunk) => Float32Array.from(chunk));
    this.dtype = 'float32';
  }

  private slot(): { chunk: Uint8Array | Float32Array; offset: number; labels: Int32Array; row: number } {
    const row = this.count % CHUNK_SAMPLES;
    if (row === 0) {
      const length = CHUNK_SAMPLES * this.featureSize;
      this.chunks.push(this.dtype === 'uint8' ? new Uint8Array(length) : new Float32Array(length));
      this.labelChunks.push(new Int32Array(CHUNK_SAMPLES));
    }
    const chunk = this.chunks[this.chunks.length - 1] as Uint8Array | Float32Array;
    const labels = this.labelChunks[this.labelChunks.length - 1] as Int32Array;
    return { chunk, offset: row * this.featureSize, labels, row };
  }

  /** Appends one sample; `values` must hold featureSize numbers. */
  add(values: ArrayLike<number>, label: number): void {
    if (this.dtype === 'uint8' && !(values instanceof Uint8Array)) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i] as number;
        if (!(Number.isInteger(v) && v >= 0 && v <= 255)) {
          this.upgrade();
          break;
        }
      }
    }
    const { chunk, offset, labels, row } = this.slot();
    if (values instanceof Uint8Array || values instanceof Float32Array) chunk.set(values, offset);
    else for (let i = 0; i < this.featureSize; i++) chunk[offset + i] = values[i] as number;
    labels[row] = label;
    this.count++;
  }

  finish(): InMemoryStore {
    const chunks = this.chunks;
    const labelChunks = this.labelChunks;
    this.chunks = [];
    this.labelChunks = [];
    return new InMemoryStore(chunks, labelChunks, this.count, this.featureSize, this.dtype, CHUNK_SAMPLES);
  }
}

export class InMemoryStore implements SampleStore {
  /** A store over one contiguous array (idx files are read straight into it, never copied). */
  static of(features: Uint8Array | Float32Array, labels: Int32Array, featureSize: number): InMemoryStore {
    const size = labels.length;
    if (features.length !== size * featureSize)
      throw new RangeError(`${features.length} values for ${size} samples of ${featureSize}`);
    const dtype: StoredDtype = features instanceof Uint8Array ? 'uint8' : 'float32';
    return new InMemoryStore([features], [labels], size, featureSize, dtype, Math.max(1, size));
  }

  readonly residentBytes: number;

  constructor(
    private readonly chunks: readonly (Uint8Array | Float32Array)[],
    private readonly labelChunks: readonly Int32Array[],
    readonly size: number,
    readonly featureSize: number,
    readonly dtype: StoredDtype,
    private readonly chunkSamples: number,
  ) {
    this.residentBytes =
      chunks.reduce((sum, c) => sum + c.byteLength, 0) +
      labelChunks.reduce((sum, c) => sum + c.byteLength, 0);
  }

  read(indices: ArrayLike<number>, features: Float32Array, labels: Int32Array): void {
    const d = this.featureSize;
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i] as number;
      const chunk = this.chunks[Math.floor(index / this.chunkSamples)];
      const labelChunk = this.labelChunks[Math.floor(index / this.chunkSamples)];
      if (chunk === undefined || labelChunk === undefined || index >= this.size)
        throw new RangeError(`sample ${index} out of range (${this.size} samples)`);
      const row = index % this.chunkSamples;
      const from = row * d;
      const out = i * d;
      features.set(chunk.subarray(from, from + d), out);
      labels[i] = labelChunk[row] as number;
    }
  }

  labelAt(index: number): number {
    const chunk = this.labelChunks[Math.floor(index / this.chunkSamples)];
    if (chunk === undefined || index >= this.size) throw new RangeError(`sample ${index} out of range`);
    return chunk[index % this.chunkSamples] as number;
  }
}

/** A view of some samples of another store, renumbered 0..n-1 (splits, maxTrainSamples). */
export class SubsetStore implements SampleStore {
  readonly size: number;
  readonly featureSize: number;
  readonly dtype: StoredDtype;
  readonly residentBytes: number;
  private scratch = new Uint32Array(0);

  constructor(
    private readonly base: SampleStore,
    private readonly members: Uint32Array,
  ) {
    this.size = members.length;
    this.featureSize = base.featureSize;
    this.dtype = base.dtype;
    this.residentBytes = members.byteLength;
    // Members in increasing order (splits, prefixes) keep runs of the base store together.
    if (base.locality !== undefined) this.locality = base.locality;
  }

  readonly locality?: Locality;

  prefetch(indices: ArrayLike<number>): void {
    const base = this.base;
    if (base.prefetch === undefined) return;
    const mapped = new Uint32Array(indices.length);
    for (let i = 0; i < indices.length; i++) mapped[i] = this.members[indices[i] as number] ?? 0;
    base.prefetch(mapped);
  }

  read(indices: ArrayLike<number>, features: Float32Array, labels: Int32Array): void {
    if (this.scratch.length < indices.length) this.scratch = new Uint32Array(indices.length);
    const mapped = this.scratch.subarray(0, indices.length);
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i] as number;
      const member = this.members[index];
      if (member === undefined) throw new RangeError(`sample ${index} out of range (${this.size} samples)`);
      mapped[i] = member;
    }
    this.base.read(mapped, features, labels);
  }

  labelAt(index: number): number {
    const member = this.members[index];
    if (member === undefined) throw new RangeError(`sample ${index} out of range`);
    return this.base.labelAt(member);
  }
}

export interface RecordShard {
  readonly file: string;
  readonly records: number;
}

/**
 * Fixed-size binary records (one label byte, then D values of dtype, float32 little-endian) in
 * shards on disk, read per batch with positioned reads: only the labels stay in memory.
 */
export class RecordFileStore implements SampleStore {
  readonly size: number;
  readonly residentBytes: number;
  private readonly fds: number[];
  private readonly firsts: number[];
  private readonly recordBytes: number;
  private buffer: Buffer;

  constructor(
    readonly shards: readonly RecordShard[],
    readonly featureSize: number,
    readonly dtype: StoredDtype,
    private readonly labels: Uint8Array,
  ) {
    this.recordBytes = 1 + featureSize * (dtype === 'uint8' ? 1 : 4);
    this.buffer = Buffer.alloc(this.recordBytes);
    this.fds = shards.map((s) => openSync(s.file, 'r'));
    this.firsts = [];
    let first = 0;
    for (const shard of shards) {
      this.firsts.push(first);
      first += shard.records;
    }
    this.size = first;
    this.residentBytes = labels.byteLength;
  }

  private locate(index: number): { fd: number; position: number } {
    const lo = shardContaining(this.firsts, index);
    return { fd: this.fds[lo] as number, position: (index - (this.firsts[lo] as number)) * this.recordBytes };
  }

  read(indices: ArrayLike<number>, features: Float32Array, labels: Int32Array): void {
    const d = this.featureSize;
    const buffer = this.buffer;
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i] as number;
      if (index < 0 || index >= this.size) throw new RangeError(`sample ${index} out of range`);
      const { fd, position } = this.locate(index);
      readSync(fd, buffer, 0, this.recordBytes, position);
      labels[i] = buffer[0] as number;
      const out = i * d;
      if (this.dtype === 'uint8') for (let j = 0; j < d; j++) features[out + j] = buffer[1 + j] as number;
      else for (let j = 0; j < d; j++) features[out + j] = buffer.readFloatLE(1 + 4 * j);
    }
  }

  labelAt(index: number): number {
    const label = this.labels[index];
    if (label === undefined) throw new RangeError(`sample ${index} out of range`);
    return label;
  }

  close(): void {
    for (const fd of this.fds) closeSync(fd);
    this.fds.length = 0;
  }
}
