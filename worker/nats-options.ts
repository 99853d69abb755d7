/**
 * How a worker connects to NATS, for every connection it makes (membership and, in a federated job,
 * the federation client): reconnects for ever, replies on the job's own inbox prefix (what a per-job
 * or per-site identity may subscribe to), and the job's credentials and TLS.
 */
import type { ConnectionOptions } from 'nats';
import { natsSecurityOptions } from '../operator/api/nats-connection.ts';
import { jobInboxPrefix } from '../operator/api/nats-permissions.ts';
import type { WorkerConfig } from './config.ts';

export function workerNatsOptions(config: WorkerConfig, servers: string, name: string): ConnectionOptions {
  return {
    servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
    inboxPrefix: jobInboxPrefix(config.namespace, config.jobName),
    ...natsSecurityOptions({
      ...(config.natsCreds === undefined ? {} : { credsFile: config.natsCreds }),
      ...(config.natsTlsCa === undefined ? {} : { tlsCaFile: config.natsTlsCa }),
      ...(config.natsTlsCert === undefined ? {} : { tlsCertFile: config.natsTlsCert }),
      ...(config.natsTlsKey === undefined ? {} : { tlsKeyFile: config.natsTlsKey }),
    }),
  };
}
