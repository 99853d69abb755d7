/** The rendezvous store on a NATS JetStream key-value bucket (one bucket per job). */
import { setTimeout as sleep } from 'node:timers/promises';
import type { KV, KvEntry, NatsConnection } from 'nats';
import { natsErrorClass } from '../../operator/api/errors.ts';
import {
  type RendezvousStore,
  RendezvousStoreError,
  RevisionConflictError,
  type StoreChange,
  type StoredValue,
  StoreUnavailableError,
} from './store.ts';

/** The store's error for a failed NATS call, from the error's codes (operator/api/errors.ts). */
function storeError(error: unknown, what: string): RendezvousStoreError {
  const message = `${what}: ${error instanceof Error ? error.message : String(error)}`;
  switch (natsErrorClass(error)) {
    case 'conflict':
      return new RevisionConflictError(message, { cause: error });
    case 'retryable':
      return new StoreUnavailableError(message, { cause: error });
    default:
      return new RendezvousStoreError(message, { cause: error });
  }
}

const OPEN_ATTEMPTS = 3;

function createdMeanwhile(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /subjects overlap|stream name already in use/i.test(message);
}

export class NatsKvStore implements RendezvousStore {
  /** Called on every reconnection: a watcher's consumer may not have survived the server. */
  private readonly onReconnect = new Set<() => void>();

  private constructor(
    private readonly kv: KV,
    readonly bucket: string,
    connection: NatsConnection,
  ) {
    void (async () => {
      for await (const status of connection.status()) {
        if (status.type === 'reconnect') for (const restart of this.onReconnect) restart();
      }
    })();
  }

  static async open(connection: NatsConnection, bucket: string): Promise<NatsKvStore> {
    for (let attempt = 1; ; attempt++) {
      try {
        const kv = await connection.jetstream().views.kv(bucket, { history: 1 });
        return new NatsKvStore(kv, bucket, connection);
      } catch (error) {
        // Workers that start together all create the bucket; the one that loses the race sees the
        // winner's stream as an overlap. Opening again binds to it.
        if (attempt < OPEN_ATTEMPTS && createdMeanwhile(error)) continue;
        throw storeError(error, `open key-value bucket ${bucket}`);
      }
    }
  }

  async get(key: string): Promise<StoredValue | undefined> {
    let entry: KvEntry | null;
    try {
      entry = await this.kv.get(key);
    } catch (error) {
      throw storeError(error, `get ${key}`);
    }
    if (entry === null || entry.operation !== 'PUT') return undefined;
    return { key, value: entry.value, revision: entry.revision };
  }

  async create(key: string, value: Uint8Array): Promise<number> {
    try {
      return await this.kv.create(key, value);
    } catch (error) {
      throw storeError(error, `create ${key}`);
    }
  }

  async update(key: string, value: Uint8Array, revision: number): Promise<number> {
    try {
      return await this.kv.update(key, value, revision);
    } catch (error) {
      throw storeError(error, `update ${key}@${revision}`);
    }
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    try {
      return await this.kv.put(key, value);
    } catch (error) {
      throw storeError(error, `put ${key}`);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.kv.delete(key);
    } catch (error) {
      throw storeError(error, `delete ${key}`);
    }
  }

  /**
   * Yields current values, then changes. If the underlying watcher ends, or the connection comes back
   * after an outage (a restarted server forgets the watcher's consumer, and the watcher does not always
   * notice), a new one starts and replays current values, so consumers must treat every change as
   * "the latest value".
   */
  async *watch(signal: AbortSignal): AsyncIterable<StoreChange> {
    while (!signal.aborted) {
      let iterator: Awaited<ReturnType<KV['watch']>>;
      try {
        iterator = await this.kv.watch({ key: '>' });
      } catch {
        await sleep(500);
        continue;
      }
      const stop = () => iterator.stop();
      signal.addEventListener('abort', stop, { once: true });
      this.onReconnect.add(stop);
      try {
        for await (const entry of iterator) {
          yield {
            key: entry.key,
            value: entry.operation === 'PUT' ? entry.value : undefined,
            revision: entry.revision,
          };
        }
      } catch {
        // The watcher broke; start another below.
      } finally {
        signal.removeEventListener('abort', stop);
        this.onReconnect.delete(stop);
      }
      if (!signal.aborted) await sleep(250);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {}
}
