/**
 * `s3://bucket/key` dataset paths (AWS SDK for JavaScript v3; any S3-compatible server through
 * `dataset.s3.endpoint`). The objects a format needs are downloaded once into the local disk cache
 * (`<cache directory>/remote/`), into a folder named by a hash of their keys, sizes and ETags, so a
 * restart or another worker on the same volume reads the local copy, and a changed object is
 * downloaded anew. Then the dataset is read as a local one (and, with `dataset.cache`, converted and
 * streamed like any other). Credentials come from the SDK's usual chain (AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY from a Secret, a web identity, …): never from the spec.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { type DatasetSpec, datasetOptions, type S3Options } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { globToRegExp } from './records.ts';

export function isS3(path: string): boolean {
  return path.startsWith('s3://');
}

export function parseS3(path: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(path);
  if (match === null || match[1] === undefined)
    throw new DatasetError(path, 'not an s3:// path; write s3://bucket/key');
  return { bucket: match[1], key: (match[2] ?? '').replace(/\/+$/, '') };
}

export function s3Client(o: S3Options | undefined): S3Client {
  return new S3Client({
    region: o?.region ?? process.env.AWS_REGION ?? 'us-east-1',
    ...(o?.endpoint === undefined ? {} : { endpoint: o.endpoint }),
    forcePathStyle: o?.forcePathStyle ?? o?.endpoint !== undefined,
  });
}

interface RemoteObject {
  key: string;
  name: string;
  size: number;
  etag: string;
}

/** The objects the spec's format reads: one for file formats, the needed names under a prefix for folders. */
async function objectsOf(
  client: S3Client,
  spec: DatasetSpec,
  bucket: string,
  key: string,
): Promise<RemoteObject[]> {
  const where = `s3://${bucket}/${key}`;
  if (spec.format !== 'idx' && spec.format !== 'records') {
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return [
      { key, name: key.split('/').pop() ?? 'data', size: head.ContentLength ?? 0, etag: head.ETag ?? '' },
    ];
  }
  const prefix = key === '' ? '' : `${key}/`;
  const found: RemoteObject[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const item of page.Contents ?? []) {
      const name = (item.Key ?? '').slice(prefix.length);
      if (name === '' || name.includes('/')) continue;
      found.push({ key: item.Key ?? '', name, size: item.Size ?? 0, etag: item.ETag ?? '' });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  const options = datasetOptions(spec);
  const wanted =
    spec.format === 'idx'
      ? (name: string) =>
          [
            options.idx.trainImages,
            options.idx.trainLabels,
            options.idx.testImages,
            options.idx.testLabels,
          ].includes(name)
      : (name: string) => globToRegExp(options.records.shardPattern).test(name);
  const picked = found.filter((o) => wanted(o.name));
  if (picked.length === 0)
    throw new DatasetError(where, `no object the ${spec.format} format needs under this prefix`);
  return picked;
}

async function download(client: S3Client, bucket: string, object: RemoteObject, file: string): Promise<void> {
  const reply = await client.send(new GetObjectCommand({ Bucket: bucket, Key: object.key }));
  const scratch = `${file}.${randomBytes(4).toString('hex')}.part`;
  try {
    await pipeline(reply.Body as Readable, createWriteStream(scratch));
    renameSync(scratch, file);
  } catch (error) {
    rmSync(scratch, { force: true });
    throw error;
  }
}

/**
 * The local path standing for the spec's s3:// path: its objects downloaded (or found) in the disk
 * cache under `cacheDirectory`.
 */
export async function localCopy(
  spec: DatasetSpec,
  cacheDirectory: string,
  progress: (message: string, fields?: object) => void,
): Promise<string> {
  const { bucket, key } = parseS3(spec.path);
  const client = s3Client(spec.s3);
  try {
    let objects: RemoteObject[];
    try {
      objects = await objectsOf(client, spec, bucket, key);
    } catch (error) {
      if (error instanceof DatasetError) throw error;
      throw new DatasetError(
        spec.path,
        `cannot list or read: ${(error as Error).message}; check the path, dataset.s3 and the credentials`,
      );
    }
    const id = createHash('sha256')
      .update(JSON.stringify({ bucket, objects: objects.map((o) => [o.key, o.size, o.etag]) }))
      .digest('hex')
      .slice(0, 32);
    const folder = join(cacheDirectory, 'remote', id);
    mkdirSync(folder, { recursive: true });
    const missing = objects.filter((o) => !existsSync(join(folder, o.name)));
    if (missing.length > 0)
      progress('downloading dataset', {
        path: spec.path,
        objects: missing.length,
        bytes: missing.reduce((s, o) => s + o.size, 0),
      });
    for (const object of missing) await download(client, bucket, object, join(folder, object.name));
    progress('dataset in the local cache', { path: spec.path, folder, downloaded: missing.length });
    return spec.format === 'idx' || spec.format === 'records'
      ? folder
      : join(folder, (objects[0] as RemoteObject).name);
  } finally {
    client.destroy();
  }
}
