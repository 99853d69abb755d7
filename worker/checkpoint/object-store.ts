/**
 * Checkpoints mirrored to object storage (`checkpoint.objectStore`, any S3-compatible server).
 *
 * The volume stays the place a checkpoint is written and read: the writer thread commits it there as
 * always, then this mirror uploads the checkpoint's files, `manifest.json` last, under
 * `<prefix>/ckpt-<step>/`. S3 has no rename, so the manifest is the commit: a checkpoint whose upload
 * stopped half-way has no manifest and is never taken. Before a restore, a checkpoint in the store
 * newer than the volume's newest is downloaded into the volume (into a temporary folder, renamed into
 * place), and the ordinary restore then verifies its sizes and SHA-256 sums like any other: a corrupt
 * object is skipped with the reason, never loaded. Uploads run one at a time, newest first; one that
 * fails is reported and the next checkpoint is uploaded as usual.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { S3Options } from '../../operator/api/training-job.ts';
import { s3Client } from '../data/remote.ts';
import { CheckpointError } from '../errors.ts';
import { type CheckpointRef, checkpointName, stepOfName } from './store.ts';

export interface ObjectStoreSpec extends S3Options {
  readonly url: string;
}

export interface MirrorEvents {
  uploaded(step: number, url: string, millis: number): void;
  uploadFailed(step: number, error: unknown): void;
}

function parseUrl(url: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (match?.[1] === undefined)
    throw new CheckpointError(`checkpoint.objectStore.url ${url}: expected s3://bucket/prefix`, true);
  const prefix = (match[2] ?? '').replace(/\/+$/, '');
  return { bucket: match[1], prefix: prefix === '' ? '' : `${prefix}/` };
}

function committedSteps(folders: ReadonlyMap<number, boolean>): number[] {
  return [...folders]
    .filter(([, committed]) => committed)
    .map(([step]) => step)
    .sort((a, b) => b - a);
}

export class CheckpointMirror implements AsyncDisposable {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private pending: { ref: CheckpointRef; keep: number } | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly spec: ObjectStoreSpec,
    private readonly events: MirrorEvents,
  ) {
    ({ bucket: this.bucket, prefix: this.prefix } = parseUrl(spec.url));
    this.client = s3Client(spec);
  }

  private urlOf(step: number): string {
    return `s3://${this.bucket}/${this.prefix}${checkpointName(step)}`;
  }

  /** Queues `ref` for upload; a checkpoint still waiting is replaced by this newer one. */
  push(ref: CheckpointRef, keep: number): void {
    this.pending = { ref, keep };
    if (this.running === undefined) this.running = this.drain();
  }

  private async drain(): Promise<void> {
    try {
      for (let next = this.pending; next !== undefined; next = this.pending) {
        this.pending = undefined;
        const started = performance.now();
        try {
          await this.upload(next.ref);
          this.events.uploaded(next.ref.step, this.urlOf(next.ref.step), performance.now() - started);
          await this.prune(next.keep, next.ref.step);
        } catch (error) {
          this.events.uploadFailed(next.ref.step, error);
        }
      }
    } finally {
      this.running = undefined;
    }
  }

  private async upload(ref: CheckpointRef): Promise<void> {
    const key = `${this.prefix}${checkpointName(ref.step)}/`;
    const names = readdirSync(ref.path).filter((n) => n !== 'manifest.json');
    for (const name of [...names, 'manifest.json'])
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key + name,
          Body: readFileSync(join(ref.path, name)),
        }),
      );
  }

  /** Every checkpoint folder in the store by step: committed (with its manifest) or a partial upload. */
  private async folders(): Promise<Map<number, boolean>> {
    const folders = new Map<number, boolean>();
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, ContinuationToken: token }),
      );
      for (const item of page.Contents ?? []) {
        const [folder, file] = (item.Key ?? '').slice(this.prefix.length).split('/');
        const step = folder === undefined ? undefined : stepOfName(folder);
        if (step !== undefined) folders.set(step, folders.get(step) === true || file === 'manifest.json');
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return folders;
  }

  /** Steps of the committed checkpoints in the store (those with a manifest), newest first. */
  async steps(): Promise<number[]> {
    return committedSteps(await this.folders());
  }

  private async keysOf(step: number): Promise<string[]> {
    const page = await this.client.send(
      new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}${checkpointName(step)}/` }),
    );
    return (page.Contents ?? []).map((o) => o.Key ?? '').filter((k) => k !== '');
  }

  /**
   * Deletes all but the newest `keep` committed checkpoints, never `protectStep`, and the partial
   * uploads older than it: an upload cut short (its local copy pruned meanwhile, a killed worker)
   * never completes, and its objects would stay forever.
   */
  private async prune(keep: number, protectStep: number): Promise<void> {
    const folders = await this.folders();
    const kept = new Set([...committedSteps(folders).slice(0, keep), protectStep]);
    for (const [step, committed] of folders) {
      if (kept.has(step) || (!committed && step > protectStep)) continue;
      const keys = await this.keysOf(step);
      if (keys.length > 0)
        await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: keys.map((Key) => ({ Key })) },
          }),
        );
    }
  }

  /**
   * Downloads every checkpoint in the store newer than `localNewest` into `directory` (the restore
   * then takes the newest that verifies, so a corrupt object falls back to the one before it);
   * returns the steps downloaded, newest first.
   */
  async pullNewer(directory: string, localNewest: number | undefined): Promise<number[]> {
    let steps: number[];
    try {
      steps = await this.steps();
    } catch (error) {
      throw new CheckpointError(
        `cannot list ${this.spec.url}: ${(error as Error).message}; check checkpoint.objectStore and the credentials`,
        false,
        { cause: error },
      );
    }
    const newer = steps.filter((step) => localNewest === undefined || step > localNewest);
    for (const step of newer) await this.download(directory, step);
    return newer;
  }

  private async download(directory: string, step: number): Promise<void> {
    const final = join(directory, checkpointName(step));
    const temporary = join(directory, `.tmp-${checkpointName(step)}-pull-${randomBytes(4).toString('hex')}`);
    mkdirSync(temporary, { recursive: true });
    try {
      const folder = `${this.prefix}${checkpointName(step)}/`;
      for (const key of await this.keysOf(step)) {
        const reply = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
        await pipeline(reply.Body as Readable, createWriteStream(join(temporary, key.slice(folder.length))));
      }
      try {
        renameSync(temporary, final);
      } catch (error) {
        // Another worker on the same volume pulled it first.
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
      }
    } finally {
      rmSync(temporary, { recursive: true, force: true });
    }
  }

  /** Resolves when every queued upload has been tried. */
  async idle(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.idle();
    this.client.destroy();
  }
}
