/**
 * The operator's NATS side from its flags: its own connection (credentials, TLS), the credentials it
 * mints for each job, and the revoker that takes them away when a job ends.
 *
 * `--nats-trust DIR` (written by `tensile nats-trust`) holds the operator, account and system seeds:
 * with it the operator mints its own user (unless TENSILE_NATS_CREDS names one), every job's user, and
 * pushes revocations. `--nats-account-seed FILE` alone mints job users but cannot revoke them.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'winston';
import type { NatsSecurity } from '../api/nats-connection.ts';
import { operatorPermissions } from '../api/nats-permissions.ts';
import {
  accountFromSeed,
  JobCredentialMinter,
  jobUserKey,
  mintUser,
  readTrustDir,
  type TlsMaterial,
  type TrustKeys,
} from '../controller/nats-credentials.ts';
import { NatsLink } from '../controller/nats-link.ts';
import { NatsRevoker } from '../controller/nats-revocation.ts';

export interface NatsFlags {
  readonly 'nats-account-seed'?: string;
  readonly 'nats-trust'?: string;
  readonly 'nats-tls-ca'?: string;
  readonly 'nats-tls-cert'?: string;
  readonly 'nats-tls-key'?: string;
}

export interface OperatorNats {
  readonly link: NatsLink;
  readonly minter?: JobCredentialMinter;
  readonly revoker?: NatsRevoker;
  readonly natsTls?: { readonly clientCert: boolean };
}

function tlsFlags(flags: NatsFlags): { security: NatsSecurity; material?: TlsMaterial } {
  const ca = flags['nats-tls-ca'];
  const cert = flags['nats-tls-cert'];
  const key = flags['nats-tls-key'];
  if ((cert === undefined) !== (key === undefined))
    throw new Error('--nats-tls-cert and --nats-tls-key go together (a client certificate and its key)');
  if (ca === undefined) {
    if (cert !== undefined) throw new Error('--nats-tls-cert needs --nats-tls-ca (the CA of the server)');
    return { security: {} };
  }
  const security: NatsSecurity = {
    tlsCaFile: ca,
    ...(cert === undefined || key === undefined ? {} : { tlsCertFile: cert, tlsKeyFile: key }),
  };
  const material: TlsMaterial = {
    ca: readFileSync(ca, 'utf8'),
    ...(cert === undefined || key === undefined
      ? {}
      : { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') }),
  };
  return { security, material };
}

/** Throws with the flag at fault. */
export async function operatorNats(
  flags: NatsFlags,
  natsUrl: string | undefined,
  log: Logger,
): Promise<OperatorNats> {
  const { security: tls, material } = tlsFlags(flags);
  let trust: TrustKeys | undefined;
  if (flags['nats-trust'] !== undefined) trust = readTrustDir(flags['nats-trust']);
  const accountSeed = flags['nats-account-seed'];
  const account =
    trust?.account ??
    (accountSeed === undefined ? undefined : accountFromSeed(readFileSync(accountSeed, 'utf8')));
  const credsFile = process.env['TENSILE_NATS_CREDS'] || undefined;
  let own: NatsSecurity = { ...tls, ...(credsFile === undefined ? {} : { credsFile }) };
  if (credsFile === undefined && trust !== undefined) {
    const user = await mintUser(trust.account, 'tensile-operator', operatorPermissions());
    own = { ...tls, creds: new TextEncoder().encode(user.creds) };
  }
  const minter =
    account === undefined && material === undefined ? undefined : new JobCredentialMinter(account, material);
  const revoker =
    trust === undefined || natsUrl === undefined
      ? undefined
      : new NatsRevoker(natsUrl, trust, (uid) => jobUserKey(trust.account, uid).getPublicKey(), log, tls);
  return {
    link: new NatsLink(natsUrl, log, own),
    ...(minter === undefined ? {} : { minter }),
    ...(revoker === undefined ? {} : { revoker }),
    ...(material === undefined ? {} : { natsTls: { clientCert: material.cert !== undefined } }),
  };
}
