/**
 * The node agent: a kubelet stand-in for a machine without a container runtime. It keeps its fake
 * nodes Ready, runs the pods bound to them as local processes, and provisions hostPath volumes for
 * claims. See hack/node-agent/*.ts for each part and README.md ("Local Kubernetes cluster").
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import type winston from 'winston';
import { createJsonLogger } from '../../operator/api/logging.ts';
import type { AgentConfig } from './config.ts';
import { NodeKeeper } from './nodes.ts';
import { PodRunner } from './pods.ts';
import { VolumeProvisioner } from './volumes.ts';

export function agentLogger(config: Pick<AgentConfig, 'agentName' | 'logLevel'>): winston.Logger {
  return createJsonLogger({
    level: config.logLevel,
    defaultMeta: { component: 'node-agent', agent: config.agentName },
  });
}

/** The launcher starts the agent together with the API server: wait until it answers. */
async function waitForApi(kc: KubeConfig, log: winston.Logger, signal?: AbortSignal): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  for (let attempt = 0; ; attempt++) {
    signal?.throwIfAborted();
    try {
      await core.readNamespace({ name: 'kube-node-lease' });
      return;
    } catch (error) {
      if (attempt % 50 === 49) log.info('waiting for the API server', { error: String(error) });
      await sleep(200);
    }
  }
}

export interface RunningAgent extends AsyncDisposable {
  readonly pods: PodRunner;
  readonly nodes: NodeKeeper;
}

export async function startAgent(
  config: AgentConfig,
  log: winston.Logger,
  signal?: AbortSignal,
): Promise<RunningAgent> {
  const kc = new KubeConfig();
  kc.loadFromFile(config.kubeconfig);
  await waitForApi(kc, log, signal);
  let nodes: NodeKeeper | undefined;
  const pods = new PodRunner(kc, config, log, {
    isRunnable: (name) => nodes?.isRunnable(name) ?? false,
    allocatable: (name) => nodes?.allocatable(name) ?? {},
  });
  nodes = new NodeKeeper(kc, config, log, {
    alive: (name) => pods.nodeAlive(name),
    crashed: (name) => pods.nodeCrashed(name),
    deleted: (name) => pods.nodeDeleted(name),
  });
  const provisioner = config.provisionVolumes ? new VolumeProvisioner(kc, config, log) : undefined;
  // Pods first: nodes announce themselves alive as they are adopted, and the pods of each then start.
  await pods.start();
  await provisioner?.start();
  await nodes.start();
  log.info('node agent running', { nodes: nodes.nodeNames() });
  const keeper = nodes;
  return {
    pods,
    nodes: keeper,
    async [Symbol.asyncDispose]() {
      await keeper[Symbol.asyncDispose]();
      await provisioner?.[Symbol.asyncDispose]();
      await pods[Symbol.asyncDispose]();
    },
  };
}
