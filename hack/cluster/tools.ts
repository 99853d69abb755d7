/** Locates the control-plane binaries built by hack/install-tools.sh; a missing one says how to get it. */
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { REPO_ROOT } from '../node-agent/config.ts';

export class MissingToolError extends Error {
  override readonly name = 'MissingToolError';
}

export interface ClusterTools {
  readonly etcd: string;
  readonly kubeApiserver: string;
  readonly kubeControllerManager: string;
  readonly kubeScheduler: string;
  readonly kubectl: string;
  readonly openssl: string;
}

const INSTALL = 'bash hack/install-tools.sh';

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string, extraDirs: readonly string[] = []): string | undefined {
  const dirs = [...extraDirs, ...(process.env['PATH'] ?? '').split(delimiter)];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    if (executable(candidate)) return candidate;
  }
  return undefined;
}

/** The bin directories printed by `hack/install-tools.sh --print` (it only reads hack/versions.sh). */
export function toolDirs(): string[] {
  const out = execFileSync('bash', [join(REPO_ROOT, 'hack', 'install-tools.sh'), '--print'], {
    encoding: 'utf8',
  });
  return out.trim().split(':').filter(Boolean);
}

export function findClusterTools(): ClusterTools {
  const dirs = toolDirs();
  const kube = dirs[0] ?? '';
  const inKube = (name: string) => {
    const path = join(kube, name);
    if (!executable(path))
      throw new MissingToolError(
        `${name} is missing (expected ${path}); build the Kubernetes binaries with: ${INSTALL}`,
      );
    return path;
  };
  const etcd = onPath('etcd', ['/usr/bin', '/usr/sbin']);
  if (etcd === undefined)
    throw new MissingToolError(`etcd is missing; install it (Debian package etcd-server) with: ${INSTALL}`);
  const openssl = onPath('openssl', ['/usr/bin']);
  if (openssl === undefined)
    throw new MissingToolError('the openssl CLI is missing; install it with: apt-get install -y openssl');
  return {
    etcd,
    openssl,
    kubeApiserver: inKube('kube-apiserver'),
    kubeControllerManager: inKube('kube-controller-manager'),
    kubeScheduler: inKube('kube-scheduler'),
    kubectl: inKube('kubectl'),
  };
}

export interface NodeTools {
  readonly kubelet: string;
  readonly kubeProxy: string;
  readonly containerd: string;
  readonly ctr: string;
  readonly runc: string;
}

/** The real node's binaries (hack/cluster.sh up --real-node). */
export function findNodeTools(): NodeTools {
  const kube = toolDirs()[0] ?? '';
  const inKube = (name: string) => {
    const path = join(kube, name);
    if (!executable(path))
      throw new MissingToolError(`${name} is missing (expected ${path}); build it with: ${INSTALL}`);
    return path;
  };
  const debian = (name: string, pkg: string) => {
    const path = onPath(name, ['/usr/bin', '/usr/sbin']);
    if (path === undefined)
      throw new MissingToolError(`${name} is missing (Debian package ${pkg}); install it with: ${INSTALL}`);
    return path;
  };
  if (!executable('/usr/lib/cni/bridge'))
    throw new MissingToolError(
      `the CNI plugins are missing (Debian package containernetworking-plugins); install them with: ${INSTALL}`,
    );
  return {
    kubelet: inKube('kubelet'),
    kubeProxy: inKube('kube-proxy'),
    containerd: debian('containerd', 'containerd'),
    ctr: debian('ctr', 'containerd'),
    runc: debian('runc', 'runc'),
  };
}
