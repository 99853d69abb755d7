/**
 * Streaming access to dataset files, gzip or not (detected by the magic bytes, not the name), with
 * failures turned into DatasetErrors that name the file and say what is wrong with it.
 */
import { closeSync, createReadStream, openSync, readSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DatasetError } from '../errors.ts';

export function isGzip(file: string): boolean {
  const fd = openFile(file);
  try {
    const head = Buffer.alloc(2);
    const read = readSync(fd, head, 0, 2, 0);
    return read === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    closeSync(fd);
  }
}

function openFile(file: string): number {
  try {
    return openSync(file, 'r');
  } catch (error) {
    throw fileError(file, error);
  }
}

/** A DatasetError for a failure reading `file`, in words a user can act on. */
export function fileError(file: string, error: unknown): DatasetError {
  if (error instanceof DatasetError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case 'ENOENT':
      return new DatasetError(file, 'no such file; check dataset.path and the file names', { cause: error });
    case 'EACCES':
      return new DatasetError(file, 'permission denied', { cause: error });
    case 'EISDIR':
      return new DatasetError(file, 'is a directory, expected a file', { cause: error });
    case 'Z_BUF_ERROR':
      return new DatasetError(file, 'truncated: the gzip stream ends early', { cause: error });
    case 'Z_DATA_ERROR':
      return new DatasetError(file, `corrupt gzip data (${message})`, { cause: error });
    default:
      return new DatasetError(file, `cannot read: ${message}`, { cause: error });
  }
}

/** The decompressed bytes of a file, chunk by chunk. */
export function openByteStream(file: string): Readable {
  const gzip = isGzip(file);
  const raw = createReadStream(file, { highWaterMark: 1 << 20 });
  if (!gzip) return raw;
  const gunzip = createGunzip();
  raw.on('error', (error) => gunzip.destroy(error));
  return raw.pipe(gunzip);
}

export async function* byteChunks(file: string): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of openByteStream(file)) yield chunk as Buffer;
  } catch (error) {
    throw fileError(file, error);
  }
}

/** The lines of a text file (gzip or not), numbered from 1. */
export async function* textLines(file: string): AsyncGenerator<{ line: string; number: number }> {
  const stream = openByteStream(file);
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  let number = 0;
  try {
    for await (const line of lines) {
      number++;
      yield { line, number };
    }
  } catch (error) {
    throw fileError(file, error);
  } finally {
    lines.close();
    stream.destroy();
  }
}
