/**
 * How a Tensile process authenticates to NATS and secures the connection: a credentials file (the
 * JWT and seed of its user) and TLS (the CA that signed the server's certificate, and a client
 * certificate when the server verifies clients). One place for the operator and the workers.
 */
import { readFileSync } from 'node:fs';
import { type ConnectionOptions, credsAuthenticator } from 'nats';

export interface NatsSecurity {
  /** A `.creds` file. */
  readonly credsFile?: string;
  /** Or its contents. */
  readonly creds?: Uint8Array;
  /** PEM: the CA that signed the server's certificate; given, the connection is TLS. */
  readonly tlsCaFile?: string;
  /** PEM: the client certificate and key, for a server that verifies clients (`verify: true`). */
  readonly tlsCertFile?: string;
  readonly tlsKeyFile?: string;
}

/** The nats.js options for `security`: nothing for nothing. */
export function natsSecurityOptions(security: NatsSecurity): Partial<ConnectionOptions> {
  const creds =
    security.creds ?? (security.credsFile === undefined ? undefined : readFileSync(security.credsFile));
  const tls =
    security.tlsCaFile === undefined && security.tlsCertFile === undefined
      ? undefined
      : {
          ...(security.tlsCaFile === undefined ? {} : { caFile: security.tlsCaFile }),
          ...(security.tlsCertFile === undefined ? {} : { certFile: security.tlsCertFile }),
          ...(security.tlsKeyFile === undefined ? {} : { keyFile: security.tlsKeyFile }),
        };
  return {
    ...(creds === undefined ? {} : { authenticator: credsAuthenticator(creds) }),
    ...(tls === undefined ? {} : { tls }),
  };
}
