/**
 * The training audit: every sample index each worker trained on, per step, with its epoch, so that a
 * run can prove what it trained on (seen / duplicated / missing per epoch) across kills and rescales.
 *
 * One append-only file per worker: little-endian uint32 records [generation, epoch, step, count,
 * ...indices]. A record is written (not fsynced) after every step, so a worker killed with -9 still
 * accounts for the steps its gradients went into; the checkpoint writer fsyncs before it commits.
 *
 * Several workers can record the same step: a survivor of generation g finished step s while its peers
 * did not, and generation g+1 redid s from the source's state. `committedRecords` keeps, for each
 * step, only the records of the generation that the final history says owns it.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';

export interface AuditRecord {
  readonly generation: number;
  readonly epoch: number;
  readonly step: number;
  readonly indices: Uint32Array;
}

const HEADER = 4;

/** Parses an audit file; a torn record at the end (a crash mid-write) is ignored. */
export function parseAudit(bytes: Uint8Array): AuditRecord[] {
  const aligned = bytes.byteLength - (bytes.byteLength % 4);
  const words = new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + aligned));
  const records: AuditRecord[] = [];
  let at = 0;
  while (at + HEADER <= words.length) {
    const generation = words[at] as number;
    const epoch = words[at + 1] as number;
    const step = words[at + 2] as number;
    const count = words[at + 3] as number;
    if (at + HEADER + count > words.length) break;
    records.push({ generation, epoch, step, indices: words.subarray(at + HEADER, at + HEADER + count) });
    at += HEADER + count;
  }
  return records;
}

export function readAuditFile(file: string): AuditRecord[] {
  if (!existsSync(file)) return [];
  return parseAudit(readFileSync(file));
}

function encode(records: readonly AuditRecord[]): Buffer {
  const words = records.reduce((sum, r) => sum + HEADER + r.indices.length, 0);
  const out = new Uint32Array(words);
  let at = 0;
  for (const r of records) {
    out[at] = r.generation;
    out[at + 1] = r.epoch;
    out[at + 2] = r.step;
    out[at + 3] = r.indices.length;
    out.set(r.indices, at + HEADER);
    at += HEADER + r.indices.length;
  }
  return Buffer.from(out.buffer);
}

/** The volume is full (or over quota): a write that may succeed later. */
function isFull(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export class AuditLog {
  private fd: number;
  private pending: AuditRecord[] = [];
  /**
   * Encoded bytes a full volume refused, written before anything newer: a step's record is never
   * lost to a full disk while the worker lives, and never reordered.
   */
  private backlog: Buffer | undefined;

  constructor(readonly file: string) {
    this.fd = openSync(file, 'a');
  }

  /**
   * The open descriptor, for the checkpoint writer to fsync before it commits. Throws while records
   * are still held back by a full volume: a checkpoint must not commit steps the audit does not have.
   */
  get descriptor(): number {
    this.flush();
    if (this.backlog !== undefined)
      throw new Error(
        `the audit log ${this.file} is ${this.backlog.length} bytes behind (its volume is full); the checkpoint waits for it`,
      );
    return this.fd;
  }

  /** Bytes of records a full volume has refused so far (written by the next flush that can). */
  get behind(): number {
    return this.backlog?.length ?? 0;
  }

  /** Appends a step's record and writes it out (one small write; fsync is the checkpoint's job). */
  record(generation: number, epoch: number, step: number, indices: Uint32Array): void {
    // The caller's array is a view of the epoch permutation: copy it.
    this.pending.push({ generation, epoch, step, indices: Uint32Array.from(indices) });
    this.flush();
  }

  /** Writes the buffered records; a full volume keeps them for the next flush instead of failing the step. */
  flush(): void {
    if (this.pending.length > 0) {
      const bytes = encode(this.pending);
      this.pending = [];
      this.backlog = this.backlog === undefined ? bytes : Buffer.concat([this.backlog, bytes]);
    }
    const bytes = this.backlog;
    if (bytes === undefined) return;
    let written = 0;
    try {
      while (written < bytes.length) written += writeSync(this.fd, bytes, written, bytes.length - written);
      this.backlog = undefined;
    } catch (error) {
      // What was written stays; the rest follows it, so the file stays one sequence of records.
      this.backlog = bytes.subarray(written);
      if (!isFull(error)) throw error;
    }
  }

  /** Makes the flushed records durable (called in the background before a checkpoint commits). */
  sync(): void {
    fsyncSync(this.fd);
  }

  /** Drops the records of steps ≥ `step`: they are about to be trained again. */
  truncateFrom(step: number): { kept: number; dropped: number } {
    this.flush();
    const onDisk = existsSync(this.file) ? readFileSync(this.file) : Buffer.alloc(0);
    const records = parseAudit(this.backlog === undefined ? onDisk : Buffer.concat([onDisk, this.backlog]));
    const kept = records.filter((r) => r.step < step);
    const temporary = `${this.file}.tmp-${process.pid}`;
    try {
      writeFileSync(temporary, encode(kept));
      const fd = openSync(temporary, 'r+');
      fsyncSync(fd);
      closeSync(fd);
      renameSync(temporary, this.file);
    } catch (error) {
      rmSync(temporary, { force: true });
      if (!isFull(error)) throw error;
      // A full volume: the file and the held-back records stay as they are, and so does the open
      // descriptor (closed first, it failed every later fsync with EBADF: chaos seed 2, 20 minutes).
      // The records of the steps redone are dropped by committedRecords (a later generation redid them).
      return { kept: records.length, dropped: 0 };
    }
    closeSync(this.fd);
    this.backlog = undefined;
    this.fd = openSync(this.file, 'a');
    return { kept: kept.length, dropped: records.length - kept.length };
  }

  close(): void {
    this.flush();
    fsyncSync(this.fd);
    closeSync(this.fd);
  }
}

/**
 * The records of the steps that count: a record of generation g at step s is dropped when a later
 * generation of `history` started at or before s (it redid that step from another worker's state).
 */
export function committedRecords(
  records: readonly AuditRecord[],
  history: readonly { generation: number; firstStep: number }[],
): AuditRecord[] {
  // For each generation, the first step of any later one: its records from that step on were redone.
  const redoneFrom = new Map<number, number>();
  for (const g of history) {
    let cut = Number.POSITIVE_INFINITY;
    for (const later of history) if (later.generation > g.generation) cut = Math.min(cut, later.firstStep);
    redoneFrom.set(g.generation, cut);
  }
  return records.filter((r) => {
    const cut = redoneFrom.get(r.generation);
    // A generation missing from the history never completed a step that counts (its state was lost).
    return cut !== undefined && r.step < cut;
  });
}

export interface EpochAudit {
  readonly epoch: number;
  /** Distinct samples trained on. */
  readonly seen: number;
  /** Extra trainings of samples already seen this epoch. */
  readonly duplicated: number;
  /** Samples of the training set not trained on this epoch. */
  readonly missing: number;
}

/** Per-epoch counts over the records of every worker. */
export function auditEpochs(records: Iterable<AuditRecord>, datasetSize: number): EpochAudit[] {
  const counts = new Map<number, Uint16Array>();
  const out = new Map<number, { seen: number; duplicated: number }>();
  for (const record of records) {
    let seen = counts.get(record.epoch);
    let tally = out.get(record.epoch);
    if (seen === undefined || tally === undefined) {
      seen = new Uint16Array(datasetSize);
      tally = { seen: 0, duplicated: 0 };
      counts.set(record.epoch, seen);
      out.set(record.epoch, tally);
    }
    for (const index of record.indices) {
      if (index >= datasetSize)
        throw new RangeError(`audit holds sample ${index} of a ${datasetSize}-sample set`);
      const before = seen[index] as number;
      if (before === 0) tally.seen++;
      else tally.duplicated++;
      if (before < 0xffff) seen[index] = before + 1;
    }
  }
  return [...out.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([epoch, t]) => ({ epoch, seen: t.seen, duplicated: t.duplicated, missing: datasetSize - t.seen }));
}
