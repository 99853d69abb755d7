/**
 * The one-time conversion of a dataset (idx, csv, jsonl, parquet) into record shards, so that every
 * format streams with bounded memory (stream-store.ts).
 *
 * The shards are cached in `dataset.cache.directory`, in a folder named by a content hash of the
 * source files and of the options that shape the conversion, so a second worker, a restart or a
 * later job on the same data reads them instead of converting again, and changed data is converted
 * anew. A conversion writes into a folder of its own and renames it into place when complete: workers
 * converting at once on one volume each finish, the first rename wins, and nobody reads a half-written
 * cache. Memory while converting: one shard buffer, whatever the size of the source.
 *
 * Layout: `<key>/meta.json`, `<key>/train/shard-NNNNN.bin`, `<key>/test/…` (idx test files); each
 * shard is the records format (one label byte, then the features, uint8 or float32 little-endian).
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { StoredDtype } from './store.ts';

/** Records per shard file (a multiple of any block is not needed: blocks may span shards). */
export const SHARD_RECORDS = 65_536;
const WRITE_BUFFER = 4 << 20;
const CONVERSION_VERSION = 1;

export const ConvertedMetaSchema = z.object({
  version: z.literal(CONVERSION_VERSION),
  key: z.string(),
  featureShape: z.array(z.int().positive()),
  dtype: z.enum(['uint8', 'float32']),
  maxLabel: z.int(),
  train: z.object({ records: z.int().min(0) }),
  test: z.object({ records: z.int().min(0) }).optional(),
});
export type ConvertedMeta = z.infer<typeof ConvertedMetaSchema>;

export class ShardWriteError extends Error {}

/**
 * Writes samples as record shards; starts with uint8 and, at the first value that is not a byte,
 * rewrites what it has written as float32 (once) and goes on in float32.
 */
export class ShardWriter {
  private fd: number | undefined;
  private buffer: Buffer;
  private used = 0;
  private inShard = 0;
  private count = 0;
  private readonly files: string[] = [];
  private dtypeNow: StoredDtype;
  maxLabel = -1;

  constructor(
    private readonly directory: string,
    readonly featureSize: number,
    dtype: StoredDtype | 'auto' = 'auto',
    private readonly shardRecords = SHARD_RECORDS,
  ) {
    mkdirSync(directory, { recursive: true });
    this.dtypeNow = dtype === 'float32' ? 'float32' : 'uint8';
    this.fixed = dtype !== 'auto';
    this.buffer = Buffer.alloc(Math.max(WRITE_BUFFER, this.recordBytes));
  }

  private readonly fixed: boolean;

  get size(): number {
    return this.count;
  }

  get dtype(): StoredDtype {
    return this.dtypeNow;
  }

  private get recordBytes(): number {
    return 1 + this.featureSize * (this.dtypeNow === 'uint8' ? 1 : 4);
  }

  private flush(): void {
    if (this.used === 0) return;
    if (this.fd === undefined) {
      const file = join(this.directory, `shard-${String(this.files.length).padStart(5, '0')}.bin`);
      this.files.push(file);
      this.fd = openSync(file, 'w');
    }
    writeSync(this.fd, this.buffer, 0, this.used);
    this.used = 0;
  }

  private endShard(): void {
    this.flush();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.inShard = 0;
  }

  /** Appends one record whose feature bytes are already in the shard's dtype (idx fast path). */
  addRaw(label: number, bytes: Uint8Array): void {
    this.checkLabel(label);
    if (this.used + 1 + bytes.length > this.buffer.length) this.flush();
    this.buffer[this.used] = label;
    this.buffer.set(bytes, this.used + 1);
    this.used += 1 + bytes.length;
    this.advance();
  }

  add(values: ArrayLike<number>, label: number): void {
    this.checkLabel(label);
    if (this.dtypeNow === 'uint8' && !(values instanceof Uint8Array)) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i] as number;
        if (!(Number.isInteger(v) && v >= 0 && v <= 255)) {
          if (this.fixed) throw new ShardWriteError(`value ${v} does not fit the shards' uint8`);
          this.upgrade();
          break;
        }
      }
    }
    const size = this.recordBytes;
    if (this.used + size > this.buffer.length) this.flush();
    const at = this.used;
    this.buffer[at] = label;
    if (this.dtypeNow === 'uint8')
      for (let j = 0; j < this.featureSize; j++) this.buffer[at + 1 + j] = values[j] as number;
    else
      for (let j = 0; j < this.featureSize; j++)
        this.buffer.writeFloatLE(values[j] as number, at + 1 + 4 * j);
    this.used += size;
    this.advance();
  }

  private checkLabel(label: number): void {
    if (!Number.isInteger(label) || label < 0 || label > 255)
      throw new ShardWriteError(`label ${label}: record shards hold labels 0…255 (at most 256 classes)`);
    if (label > this.maxLabel) this.maxLabel = label;
  }

  private advance(): void {
    this.count++;
    if (++this.inShard === this.shardRecords) this.endShard();
  }

  /** Rewrites the shards written so far (and the buffer) from uint8 to float32. */
  private upgrade(): void {
    const d = this.featureSize;
    const pendingBytes = Buffer.from(this.buffer.subarray(0, this.used));
    this.used = 0;
    // An open descriptor means the last file is the current shard, incomplete.
    const partialOpen = this.fd !== undefined;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    const files = this.files.splice(0);
    this.dtypeNow = 'float32';
    this.buffer = Buffer.alloc(Math.max(WRITE_BUFFER, this.recordBytes));
    const inShard = this.inShard;
    const widen = (bytes: Buffer): void => {
      for (let at = 0; at + 1 + d <= bytes.length; at += 1 + d) {
        if (this.used + this.recordBytes > this.buffer.length) this.flush();
        this.buffer[this.used] = bytes[at] as number;
        for (let j = 0; j < d; j++)
          this.buffer.writeFloatLE(bytes[at + 1 + j] as number, this.used + 1 + 4 * j);
        this.used += this.recordBytes;
      }
    };
    for (const [i, file] of files.entries()) {
      const old = readFileSync(file);
      rmSync(file);
      widen(old);
      if (i < files.length - 1 || !partialOpen) this.endShard();
    }
    widen(pendingBytes);
    this.inShard = inShard;
  }

  finish(): { records: number; dtype: StoredDtype; files: string[] } {
    this.endShard();
    return { records: this.count, dtype: this.dtypeNow, files: [...this.files] };
  }
}

/** sha256 of the files' bytes (as stored, gzip or not) and of `salt`, hex. */
export async function contentHash(files: readonly string[], salt: unknown): Promise<string> {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ version: CONVERSION_VERSION, salt }));
  for (const file of files) {
    hash.update(`\0${statSync(file).size}\0`);
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }))
      hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

export function readConvertedMeta(folder: string): ConvertedMeta | undefined {
  const file = join(folder, 'meta.json');
  if (!existsSync(file)) return undefined;
  const parsed = ConvertedMetaSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  return parsed.success ? parsed.data : undefined;
}

/**
 * The converted shards for `key` in `cacheDirectory`: the cached ones, or those `convert` writes
 * into a fresh folder (then renamed into place). Returns the folder and its meta.
 */
export async function cachedConversion(
  cacheDirectory: string,
  key: string,
  convert: (folder: string) => Promise<Omit<ConvertedMeta, 'version' | 'key'>>,
): Promise<{ folder: string; meta: ConvertedMeta; converted: boolean }> {
  const folder = join(cacheDirectory, key);
  const cached = readConvertedMeta(folder);
  if (cached !== undefined) return { folder, meta: cached, converted: false };
  mkdirSync(cacheDirectory, { recursive: true });
  const scratch = join(cacheDirectory, `.${key}.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    const described = await convert(scratch);
    const meta: ConvertedMeta = { version: CONVERSION_VERSION, key, ...described };
    writeFileSync(join(scratch, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`);
    try {
      renameSync(scratch, folder);
    } catch (error) {
      // Another worker finished first: its shards are the same bytes.
      const winner = readConvertedMeta(folder);
      if (winner === undefined) throw error;
      rmSync(scratch, { recursive: true, force: true });
      return { folder, meta: winner, converted: true };
    }
    return { folder, meta, converted: true };
  } catch (error) {
    rmSync(scratch, { recursive: true, force: true });
    throw error;
  }
}
