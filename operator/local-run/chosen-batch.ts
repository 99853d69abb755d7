/**
 * `tensile run`'s side of a goodput-chosen global batch: as the operator does (reconciler.ts), the
 * choice goes into the run's rendezvous bucket (key `autoscaling`), where the workers read it and
 * their next world trains at it. One connection to the local nats-server, opened on first use.
 */
import { connect, type NatsConnection } from 'nats';
import { AUTOSCALING_KEY, type AutoscalingRecord, encodeMessage, rendezvousBucket } from '../api/contract.ts';

export class ChosenBatchWriter implements AsyncDisposable {
  private connection: Promise<NatsConnection> | undefined;
  private written = 0;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly url: string,
    private readonly bucket: { readonly namespace: string; readonly job: string; readonly uid: string },
    private readonly onError: (message: string) => void,
  ) {}

  /** Writes the record once per revision; writes happen in order, a failed one is reported. */
  write(record: Omit<AutoscalingRecord, 'jobUid'>): void {
    if (record.revision <= this.written) return;
    this.written = record.revision;
    this.chain = this.chain.then(async () => {
      try {
        this.connection ??= connect({ servers: this.url, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
        const kv = await (await this.connection)
          .jetstream()
          .views.kv(rendezvousBucket(this.bucket.namespace, this.bucket.job, this.bucket.uid), {
            history: 1,
          });
        await kv.put(AUTOSCALING_KEY, encodeMessage({ ...record, jobUid: this.bucket.uid }));
      } catch (error) {
        this.onError(
          `goodput autoscaling: could not publish global batch ${record.globalBatch}: ${(error as Error).message}`,
        );
      }
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.chain;
    const connection = await this.connection?.catch(() => undefined);
    if (connection !== undefined && !connection.isClosed()) await connection.close();
  }
}
