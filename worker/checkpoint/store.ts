/**
 * Checkpoints on disk (design 4.6): one directory per checkpoint, `ckpt-<step, 10 digits>`, holding
 * the snapshot files (see train/snapshot.ts) and `manifest.json` with the size and SHA-256 of each.
 *
 * A checkpoint is written into `.tmp-…`, every file and the directory fsynced, the manifest last, and
 * then renamed into place (and the parent fsynced): a crash at any point leaves either the complete
 * checkpoint or an ignored temporary. Restore walks the checkpoints newest first and takes the first
 * whose manifest, sizes, checksums and contents are valid, reporting each one it skips. Retention keeps
 * the newest `keep`.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { z } from 'zod';
import { CheckpointError, WorkerError } from '../errors.ts';
import { runsFromSources, siblingModule } from '../module-url.ts';
import {
  decodeSnapshot,
  encodeSnapshot,
  OPTIONAL_SNAPSHOT_FILES,
  SNAPSHOT_FILES,
  type Snapshot,
} from '../train/snapshot.ts';

export const CHECKPOINT_FORMAT = 'tensile-checkpoint/1';
const PREFIX = 'ckpt-';
const TEMPORARY = '.tmp-';
/** A temporary directory older than this is a leftover of a crashed writer. */
const STALE_TEMPORARY_MS = 10 * 60_000;

const ManifestSchema = z.object({
  format: z.literal(CHECKPOINT_FORMAT),
  step: z.int().min(0),
  epoch: z.int().min(0),
  cursor: z.int().min(0),
  time: z.iso.datetime(),
  files: z.record(
    z.string(),
    z.object({ bytes: z.int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  ),
});
export type CheckpointManifest = z.output<typeof ManifestSchema>;

export interface CheckpointRef {
  readonly step: number;
  readonly path: string;
}

export function checkpointName(step: number): string {
  return `${PREFIX}${String(step).padStart(10, '0')}`;
}

export function stepOfName(name: string): number | undefined {
  const match = /^ckpt-(\d+)$/.exec(name);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function writeDurably(path: string, bytes: Uint8Array): void {
  const fd = openSync(path, 'w');
  try {
    let written = 0;
    while (written < bytes.byteLength) written += writeSync(fd, bytes, written, bytes.byteLength - written);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function syncDirectory(path: string): void {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** What a checkpoint write needs: the encoded files and where the step is. Crosses to the writer thread. */
export interface CheckpointFiles {
  readonly step: number;
  readonly epoch: number;
  readonly cursor: number;
  readonly files: readonly (readonly [string, Uint8Array])[];
}

export function checkpointFiles(snapshot: Snapshot): CheckpointFiles {
  return {
    step: snapshot.state.step,
    epoch: snapshot.state.epoch,
    cursor: snapshot.state.cursor,
    files: [...encodeSnapshot(snapshot)],
  };
}

/** One checkpoint's files are unreadable: reading it again will not help (the store skips it). */
export class CorruptCheckpointError extends WorkerError {
  override readonly name = 'CorruptCheckpointError';
  readonly classification = 'terminal';
}

export class CheckpointStore {
  private sequence = 0;

  constructor(
    readonly directory: string,
    /** Checkpoints retained: the world's setting, which a newer spec may change. */
    public keep: number,
  ) {}

  async ensureDirectory(): Promise<void> {
    try {
      await mkdir(this.directory, { recursive: true });
    } catch (error) {
      throw new CheckpointError(
        `cannot create the checkpoint directory ${this.directory}: ${(error as Error).message}`,
        true,
        {
          cause: error,
        },
      );
    }
  }

  /** Checkpoints by step, newest first. */
  async list(): Promise<CheckpointRef[]> {
    let names: string[];
    try {
      names = await readdir(this.directory);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    return names
      .map((name) => ({ name, step: stepOfName(name) }))
      .filter((e): e is { name: string; step: number } => e.step !== undefined)
      .sort((a, b) => b.step - a.step)
      .map((e) => ({ step: e.step, path: join(this.directory, e.name) }));
  }

  /** Writes a snapshot as a checkpoint, synchronously (the writer thread calls commit directly). */
  write(snapshot: Snapshot, beforeCommit?: () => void): CheckpointRef {
    return this.commit(checkpointFiles(snapshot), beforeCommit);
  }

  /**
   * Writes the files into a temporary directory (each fsynced, the manifest last), runs `beforeCommit`
   * (e.g. fsync the audit), renames the directory into place, fsyncs the parent, prunes.
   */
  commit(checkpoint: CheckpointFiles, beforeCommit?: () => void): CheckpointRef {
    const { step } = checkpoint;
    const final = join(this.directory, checkpointName(step));
    const temporary = join(
      this.directory,
      `${TEMPORARY}${checkpointName(step)}-${process.pid}-${this.sequence++}`,
    );
    try {
      mkdirSync(temporary, { recursive: true });
      const manifest: CheckpointManifest = {
        format: CHECKPOINT_FORMAT,
        step,
        epoch: checkpoint.epoch,
        cursor: checkpoint.cursor,
        time: new Date().toISOString(),
        files: {},
      };
      for (const [name, bytes] of checkpoint.files) {
        writeDurably(join(temporary, name), bytes);
        manifest.files[name] = { bytes: bytes.byteLength, sha256: sha256(bytes) };
      }
      writeDurably(
        join(temporary, 'manifest.json'),
        new TextEncoder().encode(`${JSON.stringify(manifest, null, 1)}\n`),
      );
      syncDirectory(temporary);
      beforeCommit?.();
      // Same step again (a resumed run checkpointing where the previous one did): the new one wins.
      rmSync(final, { recursive: true, force: true });
      renameSync(temporary, final);
      syncDirectory(this.directory);
    } catch (error) {
      try {
        rmSync(temporary, { recursive: true, force: true });
      } catch {
        // The original failure is the one to report.
      }
      throw new CheckpointError(
        `writing checkpoint at step ${step} failed: ${(error as Error).message}`,
        false,
        {
          cause: error,
        },
      );
    }
    this.prune(step);
    return { step, path: final };
  }

  /** Deletes all but the newest `keep` checkpoints (never `protectStep`) and stale temporaries. */
  prune(protectStep?: number): void {
    let names: string[];
    try {
      names = readdirSync(this.directory);
    } catch {
      return;
    }
    const checkpoints = names
      .map((name) => ({ name, step: stepOfName(name) }))
      .filter((e): e is { name: string; step: number } => e.step !== undefined)
      .sort((a, b) => b.step - a.step);
    for (const old of checkpoints.slice(this.keep)) {
      if (old.step !== protectStep) rmSync(join(this.directory, old.name), { recursive: true, force: true });
    }
    const now = Date.now();
    for (const name of names.filter((n) => n.startsWith(TEMPORARY))) {
      const path = join(this.directory, name);
      try {
        if (now - statSync(path).mtimeMs > STALE_TEMPORARY_MS) rmSync(path, { recursive: true, force: true });
      } catch {
        // Gone meanwhile: nothing to clean.
      }
    }
  }

  /** Reads and verifies one checkpoint; throws CorruptCheckpointError saying what is wrong. */
  async read(ref: CheckpointRef): Promise<{ snapshot: Snapshot; manifest: CheckpointManifest }> {
    let manifestText: string;
    try {
      manifestText = await readFile(join(ref.path, 'manifest.json'), 'utf8');
    } catch (error) {
      throw new CorruptCheckpointError(
        `manifest.json unreadable (${(error as NodeJS.ErrnoException).code ?? error})`,
      );
    }
    let manifest: CheckpointManifest;
    try {
      manifest = ManifestSchema.parse(JSON.parse(manifestText));
    } catch (error) {
      throw new CorruptCheckpointError(`manifest.json invalid (${(error as Error).message.split('\n')[0]})`);
    }
    if (manifest.step !== ref.step)
      throw new CorruptCheckpointError(`manifest says step ${manifest.step}, directory says ${ref.step}`);
    const files = new Map<string, Uint8Array>();
    const present = OPTIONAL_SNAPSHOT_FILES.filter((name) => manifest.files[name] !== undefined);
    for (const name of [...SNAPSHOT_FILES, ...present]) {
      const expected = manifest.files[name];
      if (expected === undefined) throw new CorruptCheckpointError(`manifest lists no ${name}`);
      let bytes: Uint8Array;
      try {
        bytes = await readFile(join(ref.path, name));
      } catch (error) {
        throw new CorruptCheckpointError(
          `${name} unreadable (${(error as NodeJS.ErrnoException).code ?? error})`,
        );
      }
      if (bytes.byteLength !== expected.bytes)
        throw new CorruptCheckpointError(
          `${name} has ${bytes.byteLength} bytes, the manifest says ${expected.bytes} (truncated?)`,
        );
      if (sha256(bytes) !== expected.sha256)
        throw new CorruptCheckpointError(`${name} fails its SHA-256 checksum`);
      files.set(name, bytes);
    }
    let snapshot: Snapshot;
    try {
      snapshot = decodeSnapshot(files);
    } catch (error) {
      throw new CorruptCheckpointError((error as Error).message);
    }
    if (snapshot.state.step !== manifest.step)
      throw new CorruptCheckpointError(
        `state.json says step ${snapshot.state.step}, the manifest ${manifest.step}`,
      );
    return { snapshot, manifest };
  }

  /** The newest valid checkpoint, reporting every newer one that had to be skipped. */
  async latest(
    onSkip: (ref: CheckpointRef, reason: string) => void,
  ): Promise<{ ref: CheckpointRef; snapshot: Snapshot; manifest: CheckpointManifest } | undefined> {
    for (const ref of await this.list()) {
      try {
        const { snapshot, manifest } = await this.read(ref);
        return { ref, snapshot, manifest };
      } catch (error) {
        if (!(error instanceof CorruptCheckpointError)) throw error;
        onSkip(ref, error.message);
      }
    }
    return undefined;
  }
}

interface WriteRequest {
  readonly id: number;
  readonly directory: string;
  readonly keep: number;
  readonly checkpoint: CheckpointFiles;
  /** A file descriptor to fsync before the commit (the audit log's); descriptors are per process. */
  readonly syncFd: number | undefined;
}

type WriteReply =
  | { readonly id: number; readonly ref: CheckpointRef }
  | { readonly id: number; readonly error: string };

/** The writer thread's work, exported for the thread entry (writer-thread.ts). */
export function serveWriteRequest(request: WriteRequest): WriteReply {
  try {
    const store = new CheckpointStore(request.directory, request.keep);
    const ref = store.commit(request.checkpoint, () => {
      if (request.syncFd !== undefined) fsyncSync(request.syncFd);
    });
    return { id: request.id, ref };
  } catch (error) {
    return { id: request.id, error: (error as Error).message };
  }
}

function startWriterThread(): Worker {
  const name = 'tensile-checkpoint-writer';
  const entry = siblingModule('./writer-thread', import.meta.url);
  let worker: Worker;
  if (runsFromSources(entry)) {
    // The thread runs TypeScript through tsx, like the main thread, whatever started the process.
    const api = import.meta.resolve('tsx/esm/api');
    const bootstrap = `import(${JSON.stringify(api)}).then(({ register }) => { register(); return import(${JSON.stringify(entry.href)}); });`;
    worker = new Worker(bootstrap, { eval: true, name });
  } else {
    // Compiled (the images): plain JavaScript, and no tsx to register (its esbuild is not installed).
    worker = new Worker(entry, { name });
  }
  worker.unref();
  return worker;
}

/**
 * Writes checkpoints in the background, one at a time, on a thread of its own: training hands over
 * a snapshot already in host memory (its buffers are transferred, not copied) and goes on; a
 * checkpoint that comes due while one is being written waits for the next step boundary after it.
 */
export class BackgroundCheckpointer {
  private worker: Worker | undefined;
  private current: Promise<void> | undefined;
  private lastRef: CheckpointRef | undefined;
  private nextId = 0;
  private readonly replies = new Map<number, (reply: WriteReply) => void>();

  constructor(
    private readonly store: CheckpointStore,
    private readonly events: {
      written(ref: CheckpointRef, millis: number): void;
      failed(step: number, error: unknown): void;
    },
    /** A descriptor to fsync before each commit (the audit log). */
    private readonly syncFd?: () => number | undefined,
  ) {
    // Started now, so that its start-up (a second or two) does not delay the first checkpoint.
    this.thread();
  }

  get busy(): boolean {
    return this.current !== undefined;
  }

  get last(): CheckpointRef | undefined {
    return this.lastRef;
  }

  set last(ref: CheckpointRef | undefined) {
    this.lastRef = ref;
  }

  private thread(): Worker {
    if (this.worker === undefined) {
      const worker = startWriterThread();
      worker.on('message', (reply: WriteReply) => {
        this.replies.get(reply.id)?.(reply);
        this.replies.delete(reply.id);
      });
      const fail = (why: string) => {
        for (const [id, resolve] of this.replies) resolve({ id, error: `checkpoint writer thread ${why}` });
        this.replies.clear();
        if (this.worker === worker) this.worker = undefined;
      };
      worker.on('error', (error) => fail(`failed: ${error.message}`));
      worker.on('exit', (code) => fail(`exited (code ${code})`));
      this.worker = worker;
    }
    return this.worker;
  }

  private send(snapshot: Snapshot): Promise<WriteReply> {
    const checkpoint = checkpointFiles(snapshot);
    const id = this.nextId++;
    let syncFd: number | undefined;
    try {
      syncFd = this.syncFd?.();
    } catch (error) {
      // The audit cannot be made durable now (a full volume): this checkpoint fails, training goes on.
      return Promise.resolve({ id, error: (error as Error).message });
    }
    const request: WriteRequest = {
      id,
      directory: this.store.directory,
      keep: this.store.keep,
      checkpoint,
      syncFd,
    };
    const buffers = [...new Set(checkpoint.files.map(([, bytes]) => bytes.buffer as ArrayBuffer))];
    return new Promise((resolve) => {
      this.replies.set(id, resolve);
      this.thread().postMessage(request, buffers);
    });
  }

  /**
   * Starts writing `snapshot` unless a write is in progress; returns whether it started. The
   * snapshot's buffers move to the writer thread: do not use the snapshot afterwards.
   */
  start(snapshot: Snapshot): boolean {
    if (this.current !== undefined) return false;
    const started = performance.now();
    const step = snapshot.state.step;
    this.current = this.send(snapshot)
      .then((reply) => {
        if ('error' in reply) this.events.failed(step, new CheckpointError(reply.error, false));
        else {
          this.lastRef = reply.ref;
          this.events.written(reply.ref, performance.now() - started);
        }
      })
      .finally(() => {
        this.current = undefined;
      });
    return true;
  }

  /** Resolves when no write is in progress. */
  async idle(): Promise<void> {
    while (this.current !== undefined) await this.current;
  }

  /** Writes `snapshot` now (after any write in progress) and waits for it; throws if it fails. */
  async writeNow(snapshot: Snapshot): Promise<CheckpointRef> {
    await this.idle();
    const started = performance.now();
    const reply = await this.send(snapshot);
    if ('error' in reply) throw new CheckpointError(reply.error, false);
    this.lastRef = reply.ref;
    this.events.written(reply.ref, performance.now() - started);
    return reply.ref;
  }

  async close(): Promise<void> {
    await this.idle();
    await this.worker?.terminate();
    this.worker = undefined;
  }
}
