/**
 * The operator's NATS connection: publishes control requests to workers (leave, checkpoint, stop).
 * NATS being down never blocks reconciling: messages published while disconnected are buffered by
 * the client and sent on reconnect; with no URL configured, publishing is off and says so once.
 */
import { connect, type NatsConnection } from 'nats';
import type { Logger } from 'winston';
import { type ControlMessage, encodeMessage, jobSubjects } from '../api/contract.ts';

export interface ControlPublisher {
  publish(namespace: string, job: string, message: ControlMessage): void;
}

export class NatsLink implements ControlPublisher, AsyncDisposable {
  private connection: NatsConnection | undefined;
  private connecting: Promise<void> | undefined;
  private warned = false;

  constructor(
    private readonly url: string | undefined,
    private readonly log: Logger,
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

  publish(namespace: string, job: string, message: ControlMessage): void {
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
    this.connection.publish(subject, encodeMessage(message));
    this.log.info('published control message', { namespace, job, subject, type: message.type });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.connection !== undefined && !this.connection.isClosed()) await this.connection.drain();
  }
}
