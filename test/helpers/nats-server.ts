/**
 * A nats-server with JetStream for a test file: started before the first test, stopped after the last,
 * with one client connection that reconnects for as long as it takes (tests restart the server).
 */
import { connect, type NatsConnection } from 'nats';
import type { Test } from 'uvu';
import { type NatsServer, startNatsServer } from '../../operator/local-run/nats-server.ts';

export interface NatsFixture {
  readonly server: NatsServer;
  readonly nc: NatsConnection;
}

/** Registers the `before` and `after` hooks on `suite`; read `server` and `nc` inside tests. */
export function natsServerFixture(suite: Test): NatsFixture {
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  suite.before(async () => {
    try {
      server = await startNatsServer();
      nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    } catch (error) {
      // uvu swallows errors thrown by hooks; fail loudly instead.
      console.error(error);
      process.exit(1);
    }
  });
  suite.after(async () => {
    await nc?.close();
    await server?.[Symbol.asyncDispose]();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the nats-server fixture is used outside a test');
    return value;
  };
  return {
    get server() {
      return started(server);
    },
    get nc() {
      return started(nc);
    },
  };
}
