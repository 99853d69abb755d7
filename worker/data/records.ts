/**
 * Binary record shards: files in `dataset.path` matching `records.shardPattern` (sorted by name), each
 * a sequence of fixed-size records — one label byte, then the featureShape values as uint8 or
 * little-endian float32. Opening checks every shard's size and reads the labels in one sequential
 * pass; features stay on disk and are read per batch (RecordFileStore).
 */
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { RecordsOptions } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { fileError } from './files.ts';
import { RecordFileStore, type RecordShard } from './store.ts';

/** A shell-style pattern (`*`, `?`) as a regular expression over a whole file name. */
export function globToRegExp(pattern: string): RegExp {
  const escaped = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

export function recordBytes(featureSize: number, dtype: RecordsOptions['dtype']): number {
  return 1 + featureSize * (dtype === 'uint8' ? 1 : 4);
}

export function openRecordShards(
  directory: string,
  options: RecordsOptions,
  featureShape: readonly number[],
  classes: number,
): { store: RecordFileStore; maxLabel: number } {
  const { shards, labels, maxLabel, featureSize } = scanRecordShards(
    directory,
    options,
    featureShape,
    classes,
  );
  return { store: new RecordFileStore(shards, featureSize, options.dtype, labels), maxLabel };
}

/** The shards of `directory`, their sizes checked, and every label (one sequential pass). */
export function scanRecordShards(
  directory: string,
  options: RecordsOptions,
  featureShape: readonly number[],
  classes: number,
): { shards: RecordShard[]; labels: Uint8Array; maxLabel: number; featureSize: number } {
  let names: string[];
  try {
    names = readdirSync(directory);
  } catch (error) {
    throw fileError(directory, error);
  }
  const pattern = globToRegExp(options.shardPattern);
  const files = names
    .filter((name) => pattern.test(name))
    .sort()
    .map((name) => join(directory, name));
  if (files.length === 0) {
    throw new DatasetError(
      directory,
      `no shard matches dataset.records.shardPattern "${options.shardPattern}"`,
    );
  }
  const featureSize = featureShape.reduce((a, b) => a * b, 1);
  const size = recordBytes(featureSize, options.dtype);
  const shards: RecordShard[] = [];
  for (const file of files) {
    const bytes = statSync(file).size;
    if (bytes === 0) throw new DatasetError(file, 'empty shard');
    if (bytes % size !== 0) {
      throw new DatasetError(
        file,
        `size ${bytes} is not a multiple of the record size ${size} (1 label byte + ${featureSize} ${options.dtype} values for featureShape [${featureShape.join(', ')}]); truncated, or wrong featureShape/dtype?`,
      );
    }
    shards.push({ file, records: bytes / size });
  }
  const total = shards.reduce((sum, s) => sum + s.records, 0);
  const labels = new Uint8Array(total);
  let maxLabel = -1;
  let next = 0;
  const perRead = Math.max(1, Math.floor((4 << 20) / size));
  const buffer = Buffer.alloc(perRead * size);
  for (const shard of shards) {
    let fd: number;
    try {
      fd = openSync(shard.file, 'r');
    } catch (error) {
      throw fileError(shard.file, error);
    }
    try {
      for (let first = 0; first < shard.records; first += perRead) {
        const count = Math.min(perRead, shard.records - first);
        const read = readSync(fd, buffer, 0, count * size, first * size);
        if (read !== count * size)
          throw new DatasetError(shard.file, `truncated while reading record ${first}`);
        for (let r = 0; r < count; r++) {
          const label = buffer[r * size] as number;
          if (label >= classes) {
            throw new DatasetError(
              shard.file,
              `record ${first + r}: label ${label} is not below dataset.classes (${classes})`,
            );
          }
          if (label > maxLabel) maxLabel = label;
          labels[next++] = label;
        }
      }
    } finally {
      closeSync(fd);
    }
  }
  return { shards, labels, maxLabel, featureSize };
}
