/**
 * The fake nodes: registration, adoption of Nodes created later with the agent's label, heartbeats
 * (Ready condition and kube-node-lease Leases, so node-lifecycle keeps them Ready) and the simulated
 * crash (`tensile.dev/fake-node-state=crashed`: heartbeats stop, the node's processes are killed).
 */
import {
  CoordinationV1Api,
  CoreV1Api,
  type KubeConfig,
  V1MicroTime,
  type V1Node,
  type V1NodeCondition,
} from '@kubernetes/client-node';
import type winston from 'winston';
import {
  type AgentConfig,
  ANNOTATION_FAKE_NODE_CAPACITY,
  ANNOTATION_FAKE_NODE_STATE,
  LABEL_NODE_AGENT,
  type NodeShape,
} from './config.ts';
import { call, isoTime, mergePatch, microTime, type ResourceWatch, watchResource } from './kube.ts';
import { POD_IP } from './pod-status.ts';

export interface NodeEvents {
  /** The node is managed and alive (adopted, or recovered from a crash): run its pods. */
  alive(name: string): void;
  /** The node crashed (simulated): its processes must die, no status may be reported. */
  crashed(name: string): void;
  /** The Node object is gone. */
  deleted(name: string): void;
}

interface ManagedNode {
  uid: string;
  crashed: boolean;
  lastStatus: number;
  leaseMissing: boolean;
  node: V1Node;
}

const LEASE_NAMESPACE = 'kube-node-lease';
const LEASE_DURATION_SECONDS = 40;
const KUBELET_VERSION = 'v1.36.3';

export function nodeObject(name: string, shape: NodeShape, agentName: string): V1Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { ...shape.labels, 'kubernetes.io/hostname': name, [LABEL_NODE_AGENT]: agentName },
    },
    spec: shape.taints.length > 0 ? { taints: shape.taints.map((t) => ({ ...t })) } : {},
    status: { capacity: { ...shape.capacity }, allocatable: { ...shape.capacity } },
  };
}

function capacityFor(node: V1Node, fallback: NodeShape): Record<string, string> {
  const annotation = node.metadata?.annotations?.[ANNOTATION_FAKE_NODE_CAPACITY];
  if (annotation !== undefined) {
    try {
      const parsed = JSON.parse(annotation) as Record<string, string | number>;
      return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
    } catch {
      // A malformed annotation falls back to the default shape; the node still works.
    }
  }
  return { ...fallback.capacity };
}

/** The status a healthy kubelet posts, keeping transition times of conditions that did not flip. */
export function readyNodeStatus(node: V1Node, fallback: NodeShape, now: Date, podIp: string = POD_IP) {
  const nowIso = isoTime(now) as string;
  const previous: readonly V1NodeCondition[] = node.status?.conditions ?? [];
  const cond = (type: string, status: 'True' | 'False', reason: string, message: string) => {
    const before = previous.find((c) => c.type === type);
    return {
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: nowIso,
      lastTransitionTime: before?.status === status ? (isoTime(before.lastTransitionTime) ?? nowIso) : nowIso,
    };
  };
  const capacity =
    node.status?.capacity !== undefined && Object.keys(node.status.capacity).length > 0
      ? undefined
      : capacityFor(node, fallback);
  const name = node.metadata?.name ?? '';
  return {
    ...(capacity === undefined ? {} : { capacity, allocatable: capacity }),
    conditions: [
      cond(
        'MemoryPressure',
        'False',
        'KubeletHasSufficientMemory',
        'kubelet has sufficient memory available',
      ),
      cond('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
      cond('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
      cond('Ready', 'True', 'KubeletReady', 'tensile node agent is posting ready status'),
    ],
    addresses: [
      { type: 'InternalIP', address: podIp },
      { type: 'Hostname', address: name },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
    nodeInfo: {
      machineID: name,
      systemUUID: node.metadata?.uid ?? name,
      bootID: node.metadata?.uid ?? name,
      kernelVersion: 'fake',
      osImage: 'tensile node agent',
      containerRuntimeVersion: 'tensile-node-agent://local-processes',
      kubeletVersion: KUBELET_VERSION,
      kubeProxyVersion: '',
      operatingSystem: 'linux',
      architecture: 'amd64',
    },
  };
}

export class NodeKeeper implements AsyncDisposable {
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;
  private readonly managed = new Map<string, ManagedNode>();
  private watch?: ResourceWatch<V1Node>;
  private timer?: NodeJS.Timeout;
  private ticking = false;

  constructor(
    private readonly kc: KubeConfig,
    private readonly config: AgentConfig,
    private readonly log: winston.Logger,
    private readonly events: NodeEvents,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.coordination = kc.makeApiClient(CoordinationV1Api);
  }

  isRunnable(name: string | undefined): boolean {
    const node = name === undefined ? undefined : this.managed.get(name);
    return node !== undefined && !node.crashed;
  }

  allocatable(name: string): Record<string, string> {
    return this.managed.get(name)?.node.status?.allocatable ?? {};
  }

  async start(): Promise<void> {
    for (const spec of this.config.nodes) {
      const body = nodeObject(spec.name, spec, this.config.agentName);
      const created = await call(`register node ${spec.name}`, () => this.core.createNode({ body }), {
        alreadyExists: true,
      });
      this.log.info(created === undefined ? 'node exists; adopting it' : 'node registered', {
        node: spec.name,
      });
    }
    const selector = `${LABEL_NODE_AGENT}=${this.config.agentName}`;
    this.watch = await watchResource<V1Node>(
      this.kc,
      '/api/v1/nodes',
      () => this.core.listNode({ labelSelector: selector }),
      {
        add: (n) => this.observe(n),
        update: (n) => this.observe(n),
        remove: (n) => this.forget(n),
      },
      { labelSelector: selector, log: this.log },
    );
    const period = this.config.leaseRenewSeconds * 1000;
    this.timer = setInterval(() => void this.tick(), period);
    await this.tick();
  }

  private observe(node: V1Node): void {
    const name = node.metadata?.name ?? '';
    const uid = node.metadata?.uid ?? '';
    const crashed = node.metadata?.annotations?.[ANNOTATION_FAKE_NODE_STATE] === 'crashed';
    const known = this.managed.get(name);
    if (known !== undefined && known.uid !== uid) {
      // Deleted and created again under the same name: a different machine.
      this.forget(known.node);
    }
    const current = this.managed.get(name);
    if (current === undefined) {
      this.managed.set(name, { uid, crashed, lastStatus: 0, leaseMissing: true, node });
      this.log.info('managing node', { node: name, crashed });
      if (crashed) this.events.crashed(name);
      else this.events.alive(name);
      return;
    }
    current.node = node;
    if (crashed !== current.crashed) {
      current.crashed = crashed;
      this.log.info(crashed ? 'node crashed (simulated): heartbeats stop' : 'node recovered', { node: name });
      if (crashed) this.events.crashed(name);
      else {
        current.lastStatus = 0;
        this.events.alive(name);
      }
    }
  }

  private forget(node: V1Node): void {
    const name = node.metadata?.name ?? '';
    const known = this.managed.get(name);
    if (known === undefined || known.uid !== node.metadata?.uid) return;
    this.managed.delete(name);
    this.log.info('node deleted', { node: name });
    this.events.deleted(name);
  }

  /** Lease renewals every tick; the Ready status every statusUpdateSeconds, or at once when it is not Ready. */
  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const now = new Date();
      await Promise.all(
        [...this.managed.entries()]
          .filter(([, n]) => !n.crashed)
          .map(async ([name, n]) => {
            try {
              await this.renewLease(name, n, now);
              const ready = n.node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
              if (!ready || now.getTime() - n.lastStatus >= this.config.statusUpdateSeconds * 1000) {
                await this.postStatus(name, n, now);
                n.lastStatus = now.getTime();
              }
            } catch (error) {
              this.log.warn('heartbeat failed', { node: name, error: String(error) });
            }
          }),
      );
    } finally {
      this.ticking = false;
    }
  }

  private async renewLease(name: string, n: ManagedNode, now: Date): Promise<void> {
    const spec = {
      holderIdentity: name,
      leaseDurationSeconds: LEASE_DURATION_SECONDS,
      renewTime: microTime(now),
    };
    if (!n.leaseMissing) {
      const patched = await call(
        `renew lease ${name}`,
        () =>
          this.coordination.patchNamespacedLease(
            { name, namespace: LEASE_NAMESPACE, body: { spec } },
            mergePatch,
          ),
        { notFound: true },
      );
      if (patched !== undefined) return;
    }
    await call(
      `create lease ${name}`,
      () =>
        this.coordination.createNamespacedLease({
          namespace: LEASE_NAMESPACE,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: {
              name,
              namespace: LEASE_NAMESPACE,
              // The garbage collector removes the lease with its node, as for a kubelet's.
              ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: n.uid }],
            },
            spec: { ...spec, renewTime: new V1MicroTime(now.getTime()) },
          },
        }),
      { alreadyExists: true },
    );
    n.leaseMissing = false;
  }

  private async postStatus(name: string, n: ManagedNode, now: Date): Promise<void> {
    // The hostname label first, so that a node is never Ready without it (nodeSelectors use it).
    if (n.node.metadata?.labels?.['kubernetes.io/hostname'] === undefined) {
      await call(
        `label node ${name}`,
        () =>
          this.core.patchNode(
            { name, body: { metadata: { labels: { 'kubernetes.io/hostname': name } } } },
            mergePatch,
          ),
        { notFound: true },
      );
    }
    const status = readyNodeStatus(n.node, this.config.defaultNode, now, this.config.podIp);
    const updated = await call(
      `post status of node ${name}`,
      () => this.core.patchNodeStatus({ name, body: { status } }, mergePatch),
      { notFound: true },
    );
    if (updated !== undefined && this.managed.get(name) === n) n.node = updated;
  }

  nodeNames(): string[] {
    return [...this.managed.keys()];
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.watch?.stop();
  }
}
