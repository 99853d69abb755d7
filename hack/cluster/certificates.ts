/**
 * The credentials of a local control plane, made with the openssl CLI: a CA, the API server's serving
 * certificate (127.0.0.1, localhost and the in-cluster names), an admin client certificate in
 * system:masters, the API server's client certificate for kubelets, the service-account signing key
 * pair, and for a real node its own kubelet and kube-proxy identities (not the admin's). EC P-256 keys: generating RSA keys would
 * cost seconds of a warm start.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export class CertificateError extends Error {
  override readonly name = 'CertificateError';
}

export interface ClusterPki {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly servingCert: string;
  readonly servingKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly serviceAccountKey: string;
  readonly serviceAccountPublicKey: string;
  /** What the API server shows a kubelet (logs, exec): a kubelet accepts only clients of this CA. */
  readonly kubeletClientCert: string;
  readonly kubeletClientKey: string;
}

export interface ClientCredentials {
  readonly cert: string;
  readonly key: string;
}

const CLIENT_EXTENSIONS = [
  'extendedKeyUsage=clientAuth',
  'keyUsage=critical,digitalSignature,keyEncipherment',
  'basicConstraints=critical,CA:FALSE',
];

function writeKey(path: string): void {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args);
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new CertificateError(
      `openssl ${args[0]} failed: ${stderr.trim() || String(error)}. Is the openssl CLI installed (apt-get install openssl)?`,
      { cause: error },
    );
  }
}

async function signedCertificate(
  pki: Pick<ClusterPki, 'caCert' | 'caKey'>,
  key: string,
  cert: string,
  subject: string,
  extensions: string[],
): Promise<void> {
  // OpenSSL 3 signs a request with a CA directly from `req -x509 -CA`, in one process.
  await openssl([
    'req',
    '-x509',
    '-new',
    '-key',
    key,
    '-CA',
    pki.caCert,
    '-CAkey',
    pki.caKey,
    '-subj',
    subject,
    '-days',
    '365',
    '-out',
    cert,
    ...extensions.flatMap((e) => ['-addext', e]),
  ]);
}

export async function createPki(stateDir: string): Promise<ClusterPki> {
  const dir = join(stateDir, 'pki');
  mkdirSync(dir, { recursive: true });
  const pki: ClusterPki = {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    servingCert: join(dir, 'apiserver.crt'),
    servingKey: join(dir, 'apiserver.key'),
    adminCert: join(dir, 'admin.crt'),
    adminKey: join(dir, 'admin.key'),
    serviceAccountKey: join(dir, 'service-account.key'),
    serviceAccountPublicKey: join(dir, 'service-account.pub'),
    kubeletClientCert: join(dir, 'apiserver-kubelet-client.crt'),
    kubeletClientKey: join(dir, 'apiserver-kubelet-client.key'),
  };
  for (const key of [pki.caKey, pki.servingKey, pki.adminKey, pki.kubeletClientKey]) writeKey(key);
  const sa = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(pki.serviceAccountKey, sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), {
    mode: 0o600,
  });
  writeFileSync(pki.serviceAccountPublicKey, sa.publicKey.export({ type: 'spki', format: 'pem' }));

  await openssl([
    'req',
    '-x509',
    '-new',
    '-key',
    pki.caKey,
    '-subj',
    '/CN=tensile-local-ca',
    '-days',
    '3650',
    '-out',
    pki.caCert,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
  ]);
  await Promise.all([
    signedCertificate(pki, pki.servingKey, pki.servingCert, '/CN=kube-apiserver', [
      'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1',
      'extendedKeyUsage=serverAuth',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'basicConstraints=critical,CA:FALSE',
    ]),
    signedCertificate(
      pki,
      pki.adminKey,
      pki.adminCert,
      '/O=system:masters/CN=tensile-admin',
      CLIENT_EXTENSIONS,
    ),
    signedCertificate(
      pki,
      pki.kubeletClientKey,
      pki.kubeletClientCert,
      '/O=system:masters/CN=kube-apiserver-kubelet-client',
      CLIENT_EXTENSIONS,
    ),
  ]);
  return pki;
}

/**
 * A real node's identities, as a kubeadm node has them: the kubelet as `system:node:<name>` in
 * `system:nodes` (the Node authorizer and NodeRestriction limit it to its own node and pods) and
 * kube-proxy as `system:kube-proxy` (the built-in system:node-proxier binding).
 */
export async function createNodeCredentials(
  pki: ClusterPki,
  node: string,
): Promise<{ kubelet: ClientCredentials; kubeProxy: ClientCredentials }> {
  const credentials = (name: string) => ({
    cert: join(pki.dir, `${name}.crt`),
    key: join(pki.dir, `${name}.key`),
  });
  const kubelet = credentials(`kubelet-${node}`);
  const kubeProxy = credentials(`kube-proxy-${node}`);
  writeKey(kubelet.key);
  writeKey(kubeProxy.key);
  await Promise.all([
    signedCertificate(
      pki,
      kubelet.key,
      kubelet.cert,
      `/O=system:nodes/CN=system:node:${node}`,
      CLIENT_EXTENSIONS,
    ),
    signedCertificate(pki, kubeProxy.key, kubeProxy.cert, '/CN=system:kube-proxy', CLIENT_EXTENSIONS),
  ]);
  return { kubelet, kubeProxy };
}
