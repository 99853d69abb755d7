/** The node agent's API plumbing: error classification, patch options and watches that survive errors. */
import {
  ApiException,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  Watch,
} from '@kubernetes/client-node';
import type winston from 'winston';

export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export class AgentApiError extends Error {
  override readonly name = 'AgentApiError';
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export function toApiError(error: unknown, what: string): AgentApiError {
  if (error instanceof AgentApiError) return error;
  if (error instanceof ApiException) {
    let reason = '';
    let detail = '';
    try {
      const body = (typeof error.body === 'string' ? JSON.parse(error.body) : error.body) as
        | { reason?: string; message?: string }
        | undefined;
      reason = body?.reason ?? '';
      detail = body?.message ?? '';
    } catch {
      detail = String(error.body).slice(0, 300);
    }
    return new AgentApiError(`${what}: ${error.code} ${reason} ${detail}`.trim(), error.code, reason, {
      cause: error,
    });
  }
  return new AgentApiError(
    `${what}: ${error instanceof Error ? error.message : String(error)}`,
    0,
    'NetworkError',
    {
      cause: error,
    },
  );
}

/** Runs an API call; NotFound (and, when asked, AlreadyExists/Conflict) count as done, not as errors. */
export async function call<T>(
  what: string,
  fn: () => Promise<T>,
  tolerate: { notFound?: boolean; alreadyExists?: boolean; conflict?: boolean } = {},
): Promise<T | undefined> {
  try {
    return await fn();
  } catch (error) {
    const e = toApiError(error, what);
    if (tolerate.notFound && e.status === 404) return undefined;
    if (tolerate.alreadyExists && e.status === 409 && e.reason === 'AlreadyExists') return undefined;
    if (tolerate.conflict && e.status === 409) return undefined;
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
    const delay = Math.min(5000, 100 * 2 ** failures);
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
