/**
 * Informers that keep running: client-node's informer re-watches on a normal end and relists on 410,
 * but any other error stops it for good, so this wrapper restarts it with backoff. The operator's
 * caches and the node agent's watches (hack/node-agent/kube.ts) are both this one.
 */
import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  Watch,
} from '@kubernetes/client-node';
import type { Logger } from 'winston';
import { exponentialBackoffMs } from '../api/backoff.ts';

export type CacheEvent = 'add' | 'update' | 'delete';

export interface InformerOptions {
  readonly fieldSelector?: string;
  /** The wait before the first restart, doubled for each failure in a row, at most `maxRestartMs`. */
  readonly firstRestartMs?: number;
  readonly maxRestartMs?: number;
}

export class ResilientInformer<T extends KubernetesObject> {
  private readonly informer;
  private readonly listeners: ((event: CacheEvent, object: T) => void)[] = [];
  private stopped = false;
  private failures = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private listed = false;
  private synced = false;
  private live = false;
  private readonly syncWaiters = new Set<() => void>();

  constructor(
    kubeConfig: KubeConfig,
    readonly name: string,
    path: string,
    list: () => Promise<KubernetesListObject<T>>,
    private readonly log: Logger,
    labelSelector?: string,
    private readonly options: InformerOptions = {},
  ) {
    const listOnce = async () => {
      const result = await list();
      this.listed = true;
      return result;
    };
    this.informer = new ListWatch<T>(
      path,
      new Watch(kubeConfig),
      listOnce,
      false,
      labelSelector,
      options.fieldSelector,
    );
    this.informer.on('add', (o) => this.emit('add', o));
    this.informer.on('update', (o) => this.emit('update', o));
    this.informer.on('delete', (o) => this.emit('delete', o));
    this.informer.on('connect', () => {
      this.failures = 0;
      this.live = true;
    });
    this.informer.on('error', (error: unknown) => {
      this.live = false;
      this.restart(error);
    });
  }

  private emit(event: CacheEvent, object: T): void {
    for (const listener of this.listeners) listener(event, object);
  }

  private restart(error: unknown): void {
    if (this.stopped) return;
    const delay = exponentialBackoffMs(
      this.failures,
      this.options.firstRestartMs ?? 500,
      this.options.maxRestartMs ?? 30_000,
    );
    this.failures++;
    this.log.warn('informer stopped; restarting', {
      informer: this.name,
      error: error instanceof Error ? error.message : String(error),
      retryInMs: delay,
    });
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      if (!this.stopped) void this.begin().catch((e: unknown) => this.restart(e));
    }, delay);
  }

  /**
   * One start of the underlying informer. It resolves after the list's objects are in the cache (or
   * after the list failed), so the cache counts as synced only once a list has got through.
   */
  private async begin(): Promise<void> {
    try {
      await this.informer.start();
    } finally {
      if (this.listed && !this.synced) {
        this.synced = true;
        for (const wake of this.syncWaiters) wake();
        this.syncWaiters.clear();
      }
    }
  }

  /** Whether the first list is in the cache; it stays true through later re-lists and outages. */
  get hasSynced(): boolean {
    return this.synced;
  }

  /** Whether changes arrive now: synced, and the watch is up (not between a failure and its restart). */
  get watching(): boolean {
    return this.synced && this.live && !this.stopped;
  }

  /** Resolves once the cache has synced, or when `signal` aborts. */
  waitForSync(signal: AbortSignal): Promise<void> {
    if (this.synced || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        this.syncWaiters.delete(wake);
        signal.removeEventListener('abort', wake);
        resolve();
      };
      this.syncWaiters.add(wake);
      signal.addEventListener('abort', wake, { once: true });
    });
  }

  onChange(listener: (event: CacheEvent, object: T) => void): void {
    this.listeners.push(listener);
  }

  /** Resolves once the first list is in the cache (or the first attempt failed and a retry is scheduled). */
  async start(): Promise<void> {
    this.stopped = false;
    await this.begin();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    await this.informer.stop();
  }

  get(name: string, namespace?: string): T | undefined {
    return this.informer.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.informer.list(namespace);
  }
}

/** Keeps, per key, the names of the objects that map to it (e.g. job → its pods, node → its pods). */
export class Index<T extends KubernetesObject> {
  private readonly byKey = new Map<string, Map<string, T>>();
  private readonly keyOf = new Map<string, string>();

  constructor(private readonly key: (object: T) => string | undefined) {}

  private static id(object: KubernetesObject): string {
    return `${object.metadata?.namespace ?? ''}/${object.metadata?.name ?? ''}`;
  }

  /** Applies an informer event; returns the keys whose members changed (old and new). */
  apply(event: CacheEvent, object: T): string[] {
    const id = Index.id(object);
    const before = this.keyOf.get(id);
    const after = event === 'delete' ? undefined : this.key(object);
    if (before !== undefined && before !== after) {
      this.byKey.get(before)?.delete(id);
      if (this.byKey.get(before)?.size === 0) this.byKey.delete(before);
      this.keyOf.delete(id);
    }
    if (after !== undefined) {
      let members = this.byKey.get(after);
      if (members === undefined) {
        members = new Map();
        this.byKey.set(after, members);
      }
      members.set(id, object);
      this.keyOf.set(id, after);
    }
    return [before, after].filter((k): k is string => k !== undefined);
  }

  members(key: string): T[] {
    return [...(this.byKey.get(key)?.values() ?? [])];
  }
}
