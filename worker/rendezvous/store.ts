/**
 * The rendezvous backend: a key-value store that only gets and sets, every conditional write fenced by
 * the key's revision. The NATS JetStream KV implementation is in nats-kv-store.ts; the contract suite
 * (test/integration/rendezvous-store.test.ts) runs against a real nats-server.
 */
import type { ErrorClass } from '../../operator/api/errors.ts';
import { WorkerError } from '../errors.ts';

export interface StoredValue {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
}

export interface StoreChange {
  readonly key: string;
  /** Undefined when the key was deleted or purged. */
  readonly value: Uint8Array | undefined;
  readonly revision: number;
}

/**
 * A store operation failed. The store is the outside world: whatever its cause, the rendezvous tries
 * again (retryable), unless a compare-and-set lost (conflict).
 */
export class RendezvousStoreError extends WorkerError {
  override readonly name: string = 'RendezvousStoreError';
  readonly classification: ErrorClass = 'retryable';
}

/** A compare-and-set lost: someone wrote the key since it was read. Read again and decide again. */
export class RevisionConflictError extends RendezvousStoreError {
  override readonly name = 'RevisionConflictError';
  override readonly classification = 'conflict';
}

/** The store cannot be reached (NATS down or reconnecting); retry later. */
export class StoreUnavailableError extends RendezvousStoreError {
  override readonly name = 'StoreUnavailableError';
}

export interface RendezvousStore extends AsyncDisposable {
  get(key: string): Promise<StoredValue | undefined>;
  /** Writes only if the key does not exist; RevisionConflictError otherwise. */
  create(key: string, value: Uint8Array): Promise<number>;
  /** Writes only if the key is still at `revision`; RevisionConflictError otherwise. */
  update(key: string, value: Uint8Array, revision: number): Promise<number>;
  /** Unconditional write (heartbeats of one's own key). */
  put(key: string, value: Uint8Array): Promise<number>;
  delete(key: string): Promise<void>;
  /** Current values first, then every change, until `signal` aborts. */
  watch(signal: AbortSignal): AsyncIterable<StoreChange>;
}
