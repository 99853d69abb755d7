/** Self-contained kubeconfig files (certificates embedded), readable by kubectl and @kubernetes/client-node. */
import { readFileSync, writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

export type KubeconfigCredentials =
  | { readonly clientCertFile: string; readonly clientKeyFile: string }
  | { readonly token: string };

export interface KubeconfigOptions {
  readonly server: string;
  readonly caFile: string;
  readonly credentials: KubeconfigCredentials;
  /** Names the cluster, user and context. */
  readonly name: string;
  readonly namespace?: string;
}

const base64File = (path: string) => readFileSync(path).toString('base64');

export function kubeconfigYaml(options: KubeconfigOptions): string {
  const user =
    'token' in options.credentials
      ? { token: options.credentials.token }
      : {
          'client-certificate-data': base64File(options.credentials.clientCertFile),
          'client-key-data': base64File(options.credentials.clientKeyFile),
        };
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'tensile-local',
        cluster: { server: options.server, 'certificate-authority-data': base64File(options.caFile) },
      },
    ],
    users: [{ name: options.name, user }],
    contexts: [
      {
        name: options.name,
        context: {
          cluster: 'tensile-local',
          user: options.name,
          ...(options.namespace === undefined ? {} : { namespace: options.namespace }),
        },
      },
    ],
    'current-context': options.name,
    preferences: {},
  });
}

export function writeKubeconfig(path: string, options: KubeconfigOptions): string {
  writeFileSync(path, kubeconfigYaml(options), { mode: 0o600 });
  return path;
}
