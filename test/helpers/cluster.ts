/**
 * A real local Kubernetes control plane for a test file (hack/cluster/launcher.ts): etcd,
 * kube-apiserver, kube-controller-manager, kube-scheduler on free ports, the CRDs applied, and the node
 * agent with fake GPU nodes that run pods as local processes.
 *
 *   await using cluster = await startCluster({ nodes: 2 });
 *
 * Disposal kills every process group it started and removes the state directory; if the test process
 * dies first, a watchdog does the same. A missing binary fails with the command that installs it.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import {
  type ClusterOptions,
  type KubectlResult,
  launchCluster,
  type RealNodeInfo,
  runKubectl,
} from '../../hack/cluster/launcher.ts';
import { writeKubeconfig } from '../../hack/lib/kubeconfig.ts';

export type { ClusterOptions, KubectlResult } from '../../hack/cluster/launcher.ts';

export interface LocalCluster extends AsyncDisposable {
  /** The state directory: logs/, volumes/<ns>/<claim>/, pods/<uid>/, pki/, … */
  readonly dir: string;
  /** An admin (system:masters) kubeconfig. */
  readonly kubeconfigPath: string;
  readonly kubeConfig: KubeConfig;
  readonly server: string;
  readonly nodeNames: readonly string[];
  /** Value of the `tensile.dev/node-agent` label on the agent's nodes. */
  readonly agentName: string;
  /** Seconds from launch to everything Ready. */
  readonly startSeconds: number;
  /** The real node (`realNode: true`): its name, containerd socket, host veth address, log folder. */
  readonly realNode?: RealNodeInfo;
  /** Runs kubectl against this cluster as admin. Never throws on a non-zero exit. */
  kubectl(args: readonly string[], input?: string): Promise<KubectlResult>;
  /** Runs kubectl as admin and returns its output; a non-zero exit throws with kubectl's stderr. */
  kubectlOk(args: readonly string[], input?: string): Promise<string>;
  /** Writes a kubeconfig that authenticates as the ServiceAccount (a TokenRequest token). */
  serviceAccountKubeconfig(namespace: string, name: string): Promise<string>;
  /** The folder a PersistentVolumeClaim maps to. */
  claimFolder(namespace: string, claim: string): string;
  /** The log of a pod's process. */
  podLogFile(namespace: string, pod: string): string;
}

export async function startCluster(options: ClusterOptions = {}): Promise<LocalCluster> {
  const progress = process.env['TENSILE_CLUSTER_VERBOSE']
    ? (line: string) => console.error(`[cluster] ${line}`)
    : undefined;
  const cluster = await launchCluster({ ...options, detached: false, ...(progress ? { progress } : {}) });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(cluster.kubeconfigPath);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  return {
    dir: cluster.dir,
    kubeconfigPath: cluster.kubeconfigPath,
    kubeConfig,
    server: cluster.server,
    nodeNames: cluster.nodeNames,
    agentName: cluster.agentName,
    ...(cluster.realNode === undefined ? {} : { realNode: cluster.realNode }),
    startSeconds: cluster.startSeconds,
    kubectl: (args, input) => runKubectl(cluster, args, input),
    async kubectlOk(args, input) {
      const r = await runKubectl(cluster, args, input);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr}`);
      return r.stdout;
    },
    async serviceAccountKubeconfig(namespace, name) {
      const response = await core.createNamespacedServiceAccountToken({
        namespace,
        name,
        body: { spec: { audiences: [], expirationSeconds: 3600 } },
      });
      const token = response.status?.token;
      if (token === undefined) throw new Error(`the API server returned no token for ${namespace}/${name}`);
      const dir = join(cluster.dir, 'service-accounts');
      mkdirSync(dir, { recursive: true });
      return writeKubeconfig(join(dir, `${namespace}_${name}.kubeconfig`), {
        server: cluster.server,
        caFile: cluster.caFile,
        credentials: { token },
        name: `${namespace}-${name}`,
        namespace,
      });
    },
    claimFolder: (namespace, claim) => join(cluster.dir, 'volumes', namespace, claim),
    podLogFile: (namespace, pod) => join(cluster.dir, 'logs', `${namespace}_${pod}.log`),
    [Symbol.asyncDispose]: () => cluster.stop(),
  };
}

const OPERATOR_CLUSTER_ROLE = fileURLToPath(
  new URL('../../charts/tensile/files/operator-clusterrole.yaml', import.meta.url),
);

/**
 * The operator's identity as the chart gives it: the chart's ClusterRole bound to a ServiceAccount
 * `tensile-operator` in `namespace`; returns a kubeconfig that authenticates as that account.
 */
export async function operatorServiceAccount(cluster: LocalCluster, namespace: string): Promise<string> {
  await cluster.kubectlOk(['apply', '-f', OPERATOR_CLUSTER_ROLE]);
  await cluster.kubectlOk(['-n', namespace, 'create', 'serviceaccount', 'tensile-operator']);
  await cluster.kubectlOk([
    'create',
    'clusterrolebinding',
    'tensile-operator',
    '--clusterrole=tensile-operator',
    `--serviceaccount=${namespace}:tensile-operator`,
  ]);
  return cluster.serviceAccountKubeconfig(namespace, 'tensile-operator');
}
