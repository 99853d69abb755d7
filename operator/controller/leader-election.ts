/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go does it: acquire when the lease is
 * free or expired, renew every retry period, give up leadership when a renewal cannot succeed before
 * the renew deadline. Expiry is judged by when THIS process last saw the record change, so clock skew
 * between replicas does not matter. Every write carries the resourceVersion it read (optimistic lock).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { CoordinationV1Api, type KubeConfig, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import type { Logger } from 'winston';
import { classify } from '../api/errors.ts';
import { isNotFound, toKubeError } from '../api/kube-errors.ts';

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
}

export interface LeaderCallbacks {
  /** Runs while leading; `signal` aborts when leadership is lost or the elector stops. */
  onStartedLeading(signal: AbortSignal): void | Promise<void>;
  onStoppedLeading(): void;
}

export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private observedRecord = '';
  private observedAt = 0;
  private leading = false;

  constructor(
    kubeConfig: KubeConfig,
    private readonly options: LeaderElectionOptions,
    private readonly log: Logger,
  ) {
    this.api = kubeConfig.makeApiClient(CoordinationV1Api);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Waits `ms`, or less when `signal` aborts: stopping is never an error here. */
  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    return delay(ms, undefined, { signal }).catch(() => undefined);
  }

  /** One attempt to acquire or renew; true when we hold the lease afterwards. */
  async tryAcquireOrRenew(now = Date.now()): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const durationSeconds = Math.max(1, Math.round(this.options.leaseDurationMs / 1000));
    let lease: V1Lease | undefined;
    try {
      lease = await this.api.readNamespacedLease({ namespace, name });
    } catch (error) {
      const e = toKubeError(error, `read lease ${namespace}/${name}`);
      if (!isNotFound(e)) throw e;
    }
    const microNow = new V1MicroTime(now);
    if (lease === undefined) {
      try {
        await this.api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds: durationSeconds,
              acquireTime: microNow,
              renewTime: microNow,
              leaseTransitions: 0,
            },
          },
        });
        this.observe(`${identity}@${now}`, now);
        return true;
      } catch (error) {
        // Another replica created it first (AlreadyExists).
        const e = toKubeError(error, `create lease ${namespace}/${name}`);
        if (classify(e) === 'conflict') return false;
        throw e;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const record = `${holder}@${String(spec.renewTime)}@${spec.leaseDurationSeconds}`;
    if (record !== this.observedRecord) this.observe(record, now);
    const heldByOther = holder !== '' && holder !== identity;
    const expired = this.observedAt + (spec.leaseDurationSeconds ?? durationSeconds) * 1000 < now;
    if (heldByOther && !expired) return false;
    const body: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: durationSeconds,
        renewTime: microNow,
        ...(holder === identity
          ? {}
          : { acquireTime: microNow, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
      },
    };
    try {
      const updated = await this.api.replaceNamespacedLease({ namespace, name, body });
      this.observe(`${identity}@${String(updated.spec?.renewTime)}@${durationSeconds}`, now);
      return true;
    } catch (error) {
      // Another replica renewed or took it since we read it.
      const e = toKubeError(error, `update lease ${namespace}/${name}`);
      if (classify(e) === 'conflict') return false;
      throw e;
    }
  }

  private observe(record: string, now: number): void {
    this.observedRecord = record;
    this.observedAt = now;
  }

  /** Campaigns until `signal` aborts; runs `onStartedLeading` each time leadership is won. */
  async run(signal: AbortSignal, callbacks: LeaderCallbacks): Promise<void> {
    const { retryPeriodMs, renewDeadlineMs } = this.options;
    const log = this.log.child({
      lease: `${this.options.namespace}/${this.options.name}`,
      identity: this.options.identity,
    });
    while (!signal.aborted) {
      let acquired = false;
      try {
        acquired = await this.tryAcquireOrRenew();
      } catch (error) {
        log.warn('lease acquisition failed', { error: (error as Error).message });
      }
      if (!acquired) {
        await this.sleep(retryPeriodMs, signal);
        continue;
      }
      log.info('became leader');
      this.leading = true;
      const leadership = new AbortController();
      const stop = () => leadership.abort();
      signal.addEventListener('abort', stop, { once: true });
      void Promise.resolve(callbacks.onStartedLeading(leadership.signal)).catch((error: unknown) => {
        log.error('leader work failed', { error: (error as Error).message });
        leadership.abort();
      });
      let lastRenew = Date.now();
      while (!leadership.signal.aborted) {
        await this.sleep(retryPeriodMs, leadership.signal);
        if (leadership.signal.aborted) break;
        try {
          if (await this.tryAcquireOrRenew()) {
            lastRenew = Date.now();
            continue;
          }
          log.warn('lease taken by another replica');
          break;
        } catch (error) {
          log.warn('lease renewal failed', { error: (error as Error).message });
          if (Date.now() - lastRenew > renewDeadlineMs) break;
        }
      }
      signal.removeEventListener('abort', stop);
      leadership.abort();
      this.leading = false;
      log.warn('stopped leading');
      callbacks.onStoppedLeading();
      if (signal.aborted) await this.release().catch(() => undefined);
      return;
    }
  }

  /** Hands the lease back on a clean shutdown so another replica takes over at once. */
  async release(): Promise<void> {
    const { namespace, name, identity } = this.options;
    const lease = await this.api.readNamespacedLease({ namespace, name });
    if (lease.spec?.holderIdentity !== identity) return;
    await this.api.replaceNamespacedLease({
      namespace,
      name,
      body: {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: '',
          leaseDurationSeconds: 1,
          renewTime: new V1MicroTime(Date.now()),
        },
      },
    });
  }
}
