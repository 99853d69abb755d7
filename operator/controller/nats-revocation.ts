/**
 * Takes a job's NATS identity away when the job ends: the account JWT, re-signed with the job's user
 * in its revocation list, is pushed to the server (`$SYS.REQ.CLAIMS.UPDATE`, which a nats-server with
 * the `full` resolver takes from system-account users and stores). The server then closes that user's
 * connections at once ("authentication revoked") and refuses new ones, so a worker of a deleted job
 * still running somewhere, or anyone who copied its Secret, is cut off.
 *
 * The server's copy of the account is the record: each push starts from it (looked up over the same
 * connection), so revocations made before an operator restart are kept without bookkeeping of ours.
 */
import { type Account, createUser, decode, encodeAccount, encodeUser, fmtCreds } from '@nats-io/jwt';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import type { Logger } from 'winston';
import { TensileError } from '../api/errors.ts';
import { type NatsSecurity, natsSecurityOptions } from '../api/nats-connection.ts';
import type { TrustKeys } from './nats-credentials.ts';

export class RevocationError extends TensileError {
  override readonly name = 'RevocationError';
  readonly classification = 'retryable';
}

/**
 * The revocation list with `keys` added at `nowSeconds` (a user key revoked at T refuses every JWT of
 * that key issued up to T); undefined when every key is in it already. Pure.
 */
export function withRevoked(
  current: Readonly<Record<string, number>> | undefined,
  keys: readonly string[],
  nowSeconds: number,
): Record<string, number> | undefined {
  const fresh = keys.filter((k) => current?.[k] === undefined);
  if (fresh.length === 0) return undefined;
  return { ...current, ...Object.fromEntries(fresh.map((k) => [k, nowSeconds])) };
}

/** Who ends jobs' identities; the reconciler asks, the server's reply says whether it took. */
export interface CredentialRevoker {
  /** Revokes the users of these job incarnations; resolves once the server holds the new account. */
  revoke(uids: readonly string[]): Promise<void>;
}

const REQUEST_MS = 5000;

export class NatsRevoker implements CredentialRevoker, AsyncDisposable {
  private connection: Promise<NatsConnection> | undefined;
  /** Users the server is known to refuse: asking again costs nothing. */
  private readonly revoked = new Set<string>();
  /** One push at a time: each starts from the account the previous one left. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly url: string,
    private readonly keys: TrustKeys,
    /** The key of job incarnation `uid`'s user. */
    private readonly userOf: (uid: string) => string,
    private readonly log: Logger,
    private readonly security: Omit<NatsSecurity, 'credsFile' | 'creds'> = {},
    private readonly nowSeconds: () => number = () => Math.floor(Date.now() / 1000),
  ) {}

  revoke(uids: readonly string[]): Promise<void> {
    const keys = uids.map((uid) => this.userOf(uid)).filter((k) => !this.revoked.has(k));
    if (keys.length === 0) return Promise.resolve();
    const next = this.queue.then(() => this.push(keys, uids));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async push(keys: readonly string[], uids: readonly string[]): Promise<void> {
    const nc = await this.connect();
    const accountKey = this.keys.account.getPublicKey();
    const current = await this.request(nc, `$SYS.REQ.ACCOUNT.${accountKey}.CLAIMS.LOOKUP`, new Uint8Array());
    let claims: Partial<Account>;
    let name: string;
    try {
      const decoded = decode<Account>(current);
      claims = decoded.nats;
      name = decoded.name;
    } catch (error) {
      throw new RevocationError(
        `the NATS server has no account ${accountKey} to revoke users of (does it run the full resolver?): ${(error as Error).message}`,
        { cause: error },
      );
    }
    const revocations = withRevoked(claims.revocations, keys, this.nowSeconds());
    if (revocations !== undefined) {
      const jwt = await encodeAccount(
        name,
        this.keys.account,
        { ...claims, revocations },
        {
          signer: this.keys.operator,
        },
      );
      const reply = await this.request(nc, '$SYS.REQ.CLAIMS.UPDATE', new TextEncoder().encode(jwt));
      const parsed = JSON.parse(reply) as { data?: { code?: number }; error?: { description?: string } };
      if (parsed.data?.code !== 200)
        throw new RevocationError(
          `the NATS server refused the account update: ${parsed.error?.description ?? reply}`,
        );
      this.log.info('revoked NATS credentials of ended jobs', { uids, users: keys });
    }
    for (const key of keys) this.revoked.add(key);
  }

  private async request(nc: NatsConnection, subject: string, data: Uint8Array): Promise<string> {
    try {
      const reply = await nc.request(subject, data, { timeout: REQUEST_MS });
      return new TextDecoder().decode(reply.data);
    } catch (error) {
      throw new RevocationError(`${subject}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** A user of the system account, minted here from its seed: only those may update accounts. */
  private connect(): Promise<NatsConnection> {
    this.connection ??= (async () => {
      const user = createUser();
      const jwt = await encodeUser('tensile-operator-revoker', user, this.keys.system, {});
      return connect({
        servers: this.url,
        name: 'tensile-operator-revoker',
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1000,
        ...natsSecurityOptions(this.security),
        authenticator: credsAuthenticator(fmtCreds(jwt, user)),
      });
    })();
    this.connection.catch(() => {
      this.connection = undefined;
    });
    return this.connection;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const nc = await this.connection?.catch(() => undefined);
    if (nc !== undefined && !nc.isClosed()) await nc.close();
  }
}
