/**
 * The node agent's API plumbing: patch options and watches that survive errors; API errors are the
 * operator's KubeApiError (operator/api/kube-errors.ts), classified once.
 */
import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type winston from 'winston';
import { isAlreadyExists, isNotFound, toKubeError } from '../../operator/api/kube-errors.ts';
import { ResilientInformer } from '../../operator/controller/cache.ts';

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
 * A list+watch cache that restarts itself: the operator's ResilientInformer, restarted sooner (from
 * 200 ms to at most 5 s) since the agent stands in for a kubelet that must notice its pods quickly.
 */
export async function watchResource<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  listFn: () => Promise<KubernetesListObject<T>>,
  handlers: { add?: (obj: T) => void; update?: (obj: T) => void; remove?: (obj: T) => void },
  options: { labelSelector?: string; fieldSelector?: string; log: winston.Logger },
): Promise<ResourceWatch<T>> {
  const informer = new ResilientInformer<T>(kc, path, path, listFn, options.log, options.labelSelector, {
    ...(options.fieldSelector === undefined ? {} : { fieldSelector: options.fieldSelector }),
    firstRestartMs: 200,
    maxRestartMs: 5000,
  });
  informer.onChange((event, object) => {
    if (event === 'add') handlers.add?.(object);
    else if (event === 'update') handlers.update?.(object);
    else handlers.remove?.(object);
  });
  await informer.start();
  return { list: () => informer.list(), stop: () => informer.stop() };
}
