/**
 * The node agent's API plumbing: patch options and watches that survive errors; API errors are the
 * operator's KubeApiError (operator/api/kube-errors.ts), classified once.
 */
import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  Watch,
} from '@kubernetes/client-node';
import type winston from 'winston';
import { exponentialBackoffMs } from '../../operator/api/backoff.ts';
import { isAlreadyExists, isNotFound, toKubeError } from '../../operator/api/kube-errors.ts';

export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** Runs an API call; NotFound (and, when asked, AlreadyExists/Conflict) count as done, not as errors. */
export async function call<T>(
  what: string,
  fn: () => Promise<T>,
  tolerate: { notFound?: boolean; alreadyExists?: boolean; conflict?: boolean } = {},
): Promise<T | undefined> {
  try {
    return await fn();
  } catch (error) {
    const e = toKubeError(error, what);
    if (tolerate.notFound && isNotFound(e)) return undefined;
    if (tolerate.alreadyExists && isAlreadyExists(e)) return undefined;
    if (tolerate.conflict && e.classification === 'conflict') return undefined;
    throw e;
  }
}

/** Timestamps are Date objects in listed (deserialized) objects and strings in watch events. */
export function isoTime(value: Date | string | undefined | null): string | undefined {
  if (value === undefined || value === null) return undefined;
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** metav1.MicroTime wants exactly six fractional digits. */
export function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export interface ResourceWatch<T> {
  list(): readonly T[];
  stop(): Promise<void>;
}

/**
 * A list+watch cache that restarts itself: the client's ListWatch stops for good on any error other
 * than 410 Gone, so it is started again with a capped backoff.
 */
export async function watchResource<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  listFn: () => Promise<KubernetesListObject<T>>,
  handlers: { add?: (obj: T) => void; update?: (obj: T) => void; remove?: (obj: T) => void },
  options: { labelSelector?: string; fieldSelector?: string; log: winston.Logger },
): Promise<ResourceWatch<T>> {
  const informer = new ListWatch<T>(
    path,
    new Watch(kc),
    listFn,
    false,
    options.labelSelector,
    options.fieldSelector,
  );
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  if (handlers.add) informer.on('add', handlers.add);
  if (handlers.update) informer.on('update', handlers.update);
  if (handlers.remove) informer.on('delete', handlers.remove);
  informer.on('connect', () => {
    failures = 0;
  });
  informer.on('error', (error) => {
    if (stopped) return;
    failures++;
    const delay = exponentialBackoffMs(failures, 100, 5000);
    options.log.warn('watch failed; restarting', { path, delay, error: String(error) });
    timer = setTimeout(() => {
      if (!stopped) void informer.start();
    }, delay);
  });
  await informer.start();
  return {
    list: () => informer.list(),
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await informer.stop();
    },
  };
}
