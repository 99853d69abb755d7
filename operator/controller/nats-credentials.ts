/**
 * Credentials for NATS's decentralized JWT authentication: the operator holds an account's signing
 * key and mints a user per job, limited to that job's subjects (api/nats-permissions.ts). A `.creds`
 * file (the user JWT and its seed) is what a worker connects with.
 */

import type { V1Secret } from '@kubernetes/client-node';
import {
  createAccount,
  createOperator,
  createUser,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
  fromSeed,
  type KeyPair,
} from '@nats-io/jwt';
import { LABEL_JOB_NAME } from '../api/contract.ts';
import { jobPermissions, type SubjectPermissions } from '../api/nats-permissions.ts';
import { CREDENTIALS_KEY, jobCredentialsSecretName, type OwnedJob, ownerReference } from './pod-builder.ts';

export interface MintedUser {
  /** The user's public key: what a revocation names. */
  readonly publicKey: string;
  /** The `.creds` file: JWT and seed. */
  readonly creds: string;
}

/** A user of `account` with exactly `permissions`; `name` shows in the server's logs. */
export async function mintUser(
  account: KeyPair,
  name: string,
  permissions: SubjectPermissions,
): Promise<MintedUser> {
  const user = createUser();
  const jwt = await encodeUser(name, user, account, {
    pub: { allow: [...permissions.publish], deny: [] },
    sub: { allow: [...permissions.subscribe], deny: [] },
  });
  return { publicKey: user.getPublicKey(), creds: new TextDecoder().decode(fmtCreds(jwt, user)) };
}

export interface Trust {
  readonly operator: KeyPair;
  /** The account every job's users belong to (the operator's user too). */
  readonly account: KeyPair;
  /** The server's own account (JetStream needs one). */
  readonly system: KeyPair;
  readonly operatorJwt: string;
  readonly accountJwt: string;
  readonly systemJwt: string;
}

/** The part of a nats-server configuration that trusts `trust` (a memory resolver with both accounts). */
export function serverTrustConfig(trust: Trust, accountJwt = trust.accountJwt): string {
  return [
    `operator: ${trust.operatorJwt}`,
    `system_account: ${trust.system.getPublicKey()}`,
    'resolver: MEMORY',
    'resolver_preload: {',
    `  ${trust.account.getPublicKey()}: ${accountJwt}`,
    `  ${trust.system.getPublicKey()}: ${trust.systemJwt}`,
    '}',
    '',
  ].join('\n');
}

/**
 * A fresh operator and one account with JetStream, signed by it: what a NATS server configured with
 * `operator` and a resolver trusts. `revoked` lists user keys that account no longer accepts.
 */
export async function createTrust(revoked: readonly string[] = []): Promise<Trust> {
  const operator = createOperator();
  const account = createAccount();
  const system = createAccount();
  const operatorJwt = await encodeOperator('tensile', operator, {
    system_account: system.getPublicKey(),
  });
  const accountJwt = await accountClaims(operator, account, revoked);
  const systemJwt = await encodeAccount(
    'SYS',
    system,
    { limits: { conn: -1, subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true } },
    { signer: operator },
  );
  return { operator, account, system, operatorJwt, accountJwt, systemJwt };
}

/** The account JWT, re-signed with `revoked` users: pushing it to the server revokes them. */
export function accountClaims(
  operator: KeyPair,
  account: KeyPair,
  revoked: readonly string[],
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return encodeAccount(
    'tensile-jobs',
    account,
    {
      // -1 is "no limit"; a limit left out counts as 0 (no connection at all).
      limits: {
        conn: -1,
        subs: -1,
        data: -1,
        payload: -1,
        imports: -1,
        exports: -1,
        leaf: -1,
        wildcards: true,
        mem_storage: -1,
        disk_storage: -1,
        streams: -1,
        consumer: -1,
      },
      revocations: Object.fromEntries(revoked.map((key) => [key, now])),
    },
    { signer: operator },
  );
}

/**
 * Mints each job a user of the account whose seed the operator holds, limited to the job's subjects
 * and bucket, as a Secret the job owns (deleted with it).
 */
export class JobCredentialMinter {
  constructor(private readonly account: KeyPair) {}

  async secretFor(job: OwnedJob): Promise<V1Secret> {
    const { name, namespace, uid } = job.metadata;
    const user = await mintUser(this.account, `${namespace}/${name}`, jobPermissions(namespace, name, uid));
    return {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: {
        name: jobCredentialsSecretName(name),
        namespace,
        labels: { [LABEL_JOB_NAME]: name },
        annotations: { 'tensile.dev/nats-user': user.publicKey },
        ownerReferences: [ownerReference(job)],
      },
      stringData: { [CREDENTIALS_KEY]: user.creds },
    };
  }
}

/** The account key pair from its seed (an `SA…` line, as `nsc` prints it). */
export function accountFromSeed(seed: string): KeyPair {
  return fromSeed(new TextEncoder().encode(seed.trim()));
}
