/**
 * The operator's NATS connection: publishes control requests to workers (leave, checkpoint, stop),
 * and deletes the rendezvous state of jobs that are gone. NATS being down never blocks reconciling:
 * messages published while disconnected are buffered by the client and sent on reconnect; with no
 * URL configured, publishing is off and says so once.
 */
import { connect, type NatsConnection, type NatsError } from 'nats';
import type { Logger } from 'winston';
import { type ControlMessage, encodeMessage, jobSubjects } from '../api/contract.ts';
import { type NatsSecurity, natsSecurityOptions } from '../api/nats-connection.ts';
import { OPERATOR_INBOX_PREFIX } from '../api/nats-permissions.ts';

export interface ControlPublisher {
  /** Publishes to the workers of one incarnation of a job (`uid`): those of another ignore it. */
  publish(namespace: string, job: string, uid: string, message: ControlMessage): void;
}

/** Where the workers keep a job's rendezvous state: JetStream KV buckets. */
export interface JobStateStore {
  /** Every KV bucket's name. */
  buckets(): Promise<string[]>;
  /** Deletes a bucket; one that does not exist is no error. */
  deleteBucket(name: string): Promise<void>;
  /** Writes one key of a bucket (creating the bucket as the workers do, if they have not yet). */
  putRecord(bucket: string, key: string, value: Uint8Array): Promise<void>;
  /** The value of one key; undefined when the key or the bucket does not exist (neither is created). */
  getRecord(bucket: string, key: string): Promise<Uint8Array | undefined>;
}

export class JobStateUnavailableError extends Error {
  override readonly name = 'JobStateUnavailableError';
}

/** JetStream's "stream not found". */
const STREAM_NOT_FOUND = 10059;

function apiErrorCode(error: unknown): number | undefined {
  return (error as Partial<NatsError> & { api_error?: { err_code?: number } }).api_error?.err_code;
}

export class NatsLink implements ControlPublisher, JobStateStore, AsyncDisposable {
  private connection: NatsConnection | undefined;
  private connecting: Promise<void> | undefined;
  private warned = false;

  constructor(
    private readonly url: string | undefined,
    private readonly log: Logger,
    /** The operator's NATS identity and TLS; without credentials the server must take anonymous clients. */
    private readonly security: NatsSecurity = {},
  ) {}

  /** Starts connecting in the background; resolves once connected (or immediately without a URL). */
  start(): Promise<void> {
    if (this.url === undefined) return Promise.resolve();
    this.connecting ??= (async () => {
      const url = this.url as string;
      this.connection = await connect({
        servers: url,
        name: 'tensile-operator',
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1000,
        waitOnFirstConnect: true,
        // Its replies come back on a prefix of its own: what its identity may subscribe to.
        inboxPrefix: OPERATOR_INBOX_PREFIX,
        ...natsSecurityOptions(this.security),
      });
      this.log.info('connected to NATS', { url });
      void (async () => {
        const connection = this.connection;
        if (connection === undefined) return;
        for await (const status of connection.status()) {
          if (status.type === 'disconnect' || status.type === 'reconnect')
            this.log.warn(`NATS ${status.type}`, { url });
        }
      })();
    })();
    return this.connecting;
  }

  get nats(): NatsConnection | undefined {
    return this.connection;
  }

  publish(namespace: string, job: string, uid: string, message: ControlMessage): void {
    const subject = jobSubjects(namespace, job).control;
    if (this.connection === undefined || this.connection.isClosed()) {
      if (!this.warned) {
        this.log.warn('no NATS connection: control messages to workers are dropped', {
          subject,
          url: this.url ?? '(none)',
        });
        this.warned = true;
      }
      return;
    }
    this.connection.publish(subject, encodeMessage({ ...message, jobUid: uid }));
    this.log.info('published control message', { namespace, job, subject, type: message.type });
  }

  private async manager() {
    const connection = this.connection;
    if (connection === undefined || connection.isClosed())
      throw new JobStateUnavailableError(`no NATS connection (${this.url ?? 'no URL configured'})`);
    try {
      return await connection.jetstreamManager();
    } catch (error) {
      throw new JobStateUnavailableError(`JetStream unavailable: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  async buckets(): Promise<string[]> {
    const jsm = await this.manager();
    const names: string[] = [];
    try {
      for await (const stream of jsm.streams.names())
        if (stream.startsWith('KV_')) names.push(stream.slice('KV_'.length));
    } catch (error) {
      throw new JobStateUnavailableError(`listing KV buckets: ${(error as Error).message}`, { cause: error });
    }
    return names;
  }

  async deleteBucket(name: string): Promise<void> {
    const jsm = await this.manager();
    try {
      await jsm.streams.delete(`KV_${name}`);
      this.log.info('deleted rendezvous bucket', { bucket: name });
    } catch (error) {
      if (apiErrorCode(error) === STREAM_NOT_FOUND) return;
      throw new JobStateUnavailableError(`deleting KV bucket ${name}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  async putRecord(bucket: string, key: string, value: Uint8Array): Promise<void> {
    const connection = this.connection;
    if (connection === undefined || connection.isClosed())
      throw new JobStateUnavailableError(`no NATS connection (${this.url ?? 'no URL configured'})`);
    try {
      // The workers' options (nats-kv-store.ts), so whoever creates the bucket first creates the same.
      const kv = await connection.jetstream().views.kv(bucket, { history: 1 });
      await kv.put(key, value);
    } catch (error) {
      throw new JobStateUnavailableError(
        `writing ${key} of KV bucket ${bucket}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  async getRecord(bucket: string, key: string): Promise<Uint8Array | undefined> {
    const connection = this.connection;
    if (connection === undefined || connection.isClosed())
      throw new JobStateUnavailableError(`no NATS connection (${this.url ?? 'no URL configured'})`);
    try {
      // Bound, not created: a bucket deleted with its job must not come back because we looked.
      const kv = await connection.jetstream().views.kv(bucket, { bindOnly: true });
      const entry = await kv.get(key);
      return entry === null || entry.operation !== 'PUT' ? undefined : entry.value;
    } catch (error) {
      if (apiErrorCode(error) === STREAM_NOT_FOUND) return undefined;
      throw new JobStateUnavailableError(
        `reading ${key} of KV bucket ${bucket}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.connection !== undefined && !this.connection.isClosed()) await this.connection.drain();
  }
}
