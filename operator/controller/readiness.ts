/**
 * Readiness of an operator replica, as controller-runtime's manager judges it: named checks, all of
 * which must pass, whether this replica leads or stands by (a standby keeps its caches synced so that
 * it can take over at once). A replica is ready when its informer caches have synced and it has heard
 * from the API server recently; `/readyz` answers like controller-runtime's healthz handler.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

export interface ReadinessInput {
  /** Each informer and whether its first list is in the cache. */
  readonly informers: readonly { readonly name: string; readonly synced: boolean }[];
  /** When the API server last answered (ms since the epoch); undefined when it never did. */
  readonly lastContactMs: number | undefined;
  readonly nowMs: number;
  /** How long without an answer still counts as reachable (the lease's renew deadline). */
  readonly contactWindowMs: number;
}

export interface ReadinessCheck {
  readonly name: string;
  readonly ok: boolean;
  /** Why it failed (empty when it passed). */
  readonly detail: string;
}

export const CHECK_INFORMERS = 'informer-sync';
export const CHECK_API_SERVER = 'apiserver';

export function readinessChecks(input: ReadinessInput): ReadinessCheck[] {
  const unsynced = input.informers.filter((i) => !i.synced).map((i) => i.name);
  const informers: ReadinessCheck = {
    name: CHECK_INFORMERS,
    ok: unsynced.length === 0,
    detail: unsynced.length === 0 ? '' : `caches not synced: ${unsynced.join(', ')}`,
  };
  let api: ReadinessCheck;
  if (input.lastContactMs === undefined) {
    api = { name: CHECK_API_SERVER, ok: false, detail: 'the API server has not answered yet' };
  } else {
    const silentMs = input.nowMs - input.lastContactMs;
    api =
      silentMs <= input.contactWindowMs
        ? { name: CHECK_API_SERVER, ok: true, detail: '' }
        : {
            name: CHECK_API_SERVER,
            ok: false,
            detail: `no answer from the API server for ${(silentMs / 1000).toFixed(1)} s`,
          };
  }
  return [informers, api];
}

export interface ReadinessResponse {
  readonly status: 200 | 404 | 500;
  readonly body: string;
}

/**
 * The answer to GET /readyz[/<check>][?verbose][&exclude=<check>], as controller-runtime writes it:
 * "ok" when every check passes, else one `[+]name ok` / `[-]name failed: why` line per check and
 * "readyz check failed" with status 500. `/readyz/<check>` runs that one check.
 */
export function readinessResponse(checks: readonly ReadinessCheck[], url: string): ReadinessResponse {
  const parsed = new URL(url, 'http://localhost');
  const sub = parsed.pathname.replace(/^\/readyz\/?/, '');
  const excluded = new Set(parsed.searchParams.getAll('exclude'));
  let selected = checks.filter((c) => !excluded.has(c.name));
  if (sub !== '') {
    selected = checks.filter((c) => c.name === sub);
    if (selected.length === 0) return { status: 404, body: `no readiness check named ${sub}\n` };
  }
  const ok = selected.every((c) => c.ok);
  const verbose = parsed.searchParams.has('verbose');
  if (ok && !verbose) return { status: 200, body: 'ok' };
  const lines = selected.map((c) => (c.ok ? `[+]${c.name} ok` : `[-]${c.name} failed: ${c.detail}`));
  for (const name of excluded) lines.push(`[+]${name} excluded: ok`);
  lines.push(ok ? 'readyz check passed' : 'readyz check failed');
  return { status: ok ? 200 : 500, body: `${lines.join('\n')}\n` };
}

/**
 * Asks the API server every `periodMs` whether it is there (GET /api, which every authenticated
 * client may read) and remembers when it last answered. Each probe gives up after `timeoutMs`, so a
 * connection that went silent (no reset) cannot hold probes back or pile them up.
 */
export class ApiServerContact {
  private last: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly periodMs: number,
    private readonly timeoutMs = Math.max(1000, 2 * periodMs),
    private readonly now: () => number = Date.now,
  ) {}

  /** When the API server last answered (ms since the epoch). */
  get lastContactMs(): number | undefined {
    return this.last;
  }

  start(): void {
    if (this.timer !== undefined) return;
    void this.probe();
    this.timer = setInterval(() => void this.probe(), this.periodMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One GET /api; resolves true when the API server answered 2xx in time. Never rejects. */
  async probe(): Promise<boolean> {
    const server = this.kubeConfig.getCurrentCluster()?.server;
    if (server === undefined) return false;
    const options: https.RequestOptions = {};
    try {
      await this.kubeConfig.applyToHTTPSOptions(options);
    } catch {
      return false;
    }
    const url = new URL('/api', server);
    const get = url.protocol === 'http:' ? http.get : https.get;
    const ok = await new Promise<boolean>((resolve) => {
      const request = get(url, { ...options, timeout: this.timeoutMs }, (response) => {
        response.resume();
        const code = response.statusCode ?? 0;
        resolve(code >= 200 && code < 300);
      });
      request.on('timeout', () => request.destroy(new Error('timed out')));
      request.on('error', () => resolve(false));
    });
    if (ok) this.last = this.now();
    return ok;
  }
}
