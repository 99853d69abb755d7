/**
 * Credentials for NATS's decentralized JWT authentication: the operator holds an account's signing
 * key and mints a user per job, limited to that job's subjects (api/nats-permissions.ts). A `.creds`
 * file (the user JWT and its seed) is what a worker connects with.
 */

import { createHmac } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
import { Prefix } from '@nats-io/nkeys';
import { Codec } from '@nats-io/nkeys/lib/codec.js';
import { LABEL_JOB_NAME } from '../api/contract.ts';
import { federationBucket, siteJobName, siteOf } from '../api/federation.ts';
import { jobPermissions, type SubjectPermissions, sitePermissions } from '../api/nats-permissions.ts';
import {
  CREDENTIALS_KEY,
  jobCredentialsSecretName,
  type OwnedJob,
  ownerReference,
  TLS_KEYS,
} from './pod-builder.ts';

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
  user: KeyPair = createUser(),
): Promise<MintedUser> {
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
 * The key of the user of job incarnation `uid`, derived from the account seed: whoever revokes a
 * job's access needs nothing but its uid (a deleted job's Secret is gone by then), and a uid is never
 * reused, so neither is a key.
 */
export function jobUserKey(account: KeyPair, uid: string): KeyPair {
  const raw = createHmac('sha256', account.getSeed()).update(`tensile job user ${uid}`).digest();
  return fromSeed(Codec.encodeSeed(Prefix.User, new Uint8Array(raw)));
}

/** What a site's user key is derived from (and revoked by, as a job's is by its uid). */
export const siteIdentity = (uid: string, site: string): string => `${uid}.${site}`;

/** PEM texts the operator hands each job for TLS to NATS (see TLS_KEYS). */
export interface TlsMaterial {
  readonly ca: string;
  readonly cert?: string;
  readonly key?: string;
}

/**
 * Mints each job a user of the account whose seed the operator holds, limited to the job's subjects
 * and bucket, as a Secret the job owns (deleted with it); with TLS, the Secret also carries the CA
 * and client certificate the workers connect with (a pod can mount Secrets of its own namespace only).
 */
export class JobCredentialMinter {
  constructor(
    private readonly account: KeyPair | undefined,
    private readonly tls?: TlsMaterial,
  ) {}

  /** Whether a job that names its own credentials still needs a Secret of ours (for TLS). */
  get carriesTls(): boolean {
    return this.tls !== undefined;
  }

  get mints(): boolean {
    return this.account !== undefined;
  }

  /** The public key of job incarnation `uid`'s user: what a revocation names. */
  userOf(uid: string): string | undefined {
    return this.account === undefined ? undefined : jobUserKey(this.account, uid).getPublicKey();
  }

  /** `mint: false` for a job that brings its own credentials: the Secret holds TLS material only. */
  async secretFor(job: OwnedJob, mint = true): Promise<V1Secret> {
    const { name, namespace, uid } = job.metadata;
    const user =
      mint && this.account !== undefined
        ? await mintUser(
            this.account,
            `${namespace}/${name}`,
            jobPermissions(namespace, name, uid),
            jobUserKey(this.account, uid),
          )
        : undefined;
    return this.secret(job, jobCredentialsSecretName(name), user);
  }

  /**
   * A federated job's site: a user of its own (key from `siteIdentity`, revoked with it), limited to
   * the site job's subjects and its own keys of the federation bucket, in the site's own Secret.
   */
  async siteSecretFor(job: OwnedJob, site: string, mint = true): Promise<V1Secret> {
    const { name, namespace, uid } = job.metadata;
    const { index } = siteOf(job.spec, site);
    const group = siteJobName(name, site);
    const user =
      mint && this.account !== undefined
        ? await mintUser(
            this.account,
            `${namespace}/${group}`,
            sitePermissions(namespace, group, uid, federationBucket(namespace, name), index),
            jobUserKey(this.account, siteIdentity(uid, site)),
          )
        : undefined;
    return this.secret(job, jobCredentialsSecretName(group), user);
  }

  private secret(job: OwnedJob, secretName: string, user: MintedUser | undefined): V1Secret {
    const { name, namespace } = job.metadata;
    const tls = this.tls;
    return {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: {
        name: secretName,
        namespace,
        labels: { [LABEL_JOB_NAME]: name },
        ...(user === undefined ? {} : { annotations: { 'tensile.dev/nats-user': user.publicKey } }),
        ownerReferences: [ownerReference(job)],
      },
      stringData: {
        ...(user === undefined ? {} : { [CREDENTIALS_KEY]: user.creds }),
        ...(tls === undefined ? {} : { [TLS_KEYS.ca]: tls.ca }),
        ...(tls?.cert === undefined || tls.key === undefined
          ? {}
          : { [TLS_KEYS.cert]: tls.cert, [TLS_KEYS.key]: tls.key }),
      },
    };
  }
}

/** A key pair from its seed (an `SA…` or `SO…` line, as `nsc` prints it). */
export function accountFromSeed(seed: string): KeyPair {
  return fromSeed(new TextEncoder().encode(seed.trim()));
}

/**
 * A trust directory, as `tensile nats-trust` writes it and `tensile operator --nats-trust` reads it:
 * the seeds of the NATS operator (it signs the account, so revocations can be pushed), of the jobs'
 * account (it signs every job's user) and of the system account (its users push account updates),
 * and `trust.conf`, the part of a nats-server configuration that trusts them.
 */
export const TRUST_FILES = {
  operatorSeed: 'operator.nk',
  accountSeed: 'account.nk',
  systemSeed: 'system.nk',
  serverConfig: 'trust.conf',
} as const;

/** The nats-server configuration fragment: the operator, the system account, both accounts preloaded. */
export function trustPreloadConfig(trust: Trust): string {
  return [
    `operator: ${trust.operatorJwt}`,
    `system_account: ${trust.system.getPublicKey()}`,
    'resolver_preload: {',
    `  ${trust.account.getPublicKey()}: ${trust.accountJwt}`,
    `  ${trust.system.getPublicKey()}: ${trust.systemJwt}`,
    '}',
    '',
  ].join('\n');
}

/** The files of a trust directory, by name. */
export function trustFiles(trust: Trust): Record<string, string> {
  const seed = (kp: KeyPair) => `${new TextDecoder().decode(kp.getSeed())}\n`;
  return {
    [TRUST_FILES.operatorSeed]: seed(trust.operator),
    [TRUST_FILES.accountSeed]: seed(trust.account),
    [TRUST_FILES.systemSeed]: seed(trust.system),
    [TRUST_FILES.serverConfig]: trustPreloadConfig(trust),
  };
}

export function writeTrustDir(dir: string, trust: Trust): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [name, text] of Object.entries(trustFiles(trust)))
    writeFileSync(join(dir, name), text, { mode: 0o600 });
}

/** The keys the operator needs from a trust directory. */
export interface TrustKeys {
  readonly operator: KeyPair;
  readonly account: KeyPair;
  readonly system: KeyPair;
}

export function readTrustDir(dir: string): TrustKeys {
  const read = (name: string) => {
    try {
      return accountFromSeed(readFileSync(join(dir, name), 'utf8'));
    } catch (error) {
      throw new Error(
        `${join(dir, name)}: ${(error as Error).message} (write the directory with tensile nats-trust)`,
      );
    }
  };
  return {
    operator: read(TRUST_FILES.operatorSeed),
    account: read(TRUST_FILES.accountSeed),
    system: read(TRUST_FILES.systemSeed),
  };
}
