/**
 * A simulated cluster autoscaler and a simulated spot reclaimer for the local control plane. Nodes
 * they create carry the node agent's label, so the agent adopts them, keeps them Ready and runs their
 * pods; deleting a Node makes the agent kill its processes, as a vanished machine would.
 */
import { setTimeout as delay } from 'node:timers/promises';
import {
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
} from '@kubernetes/client-node';
import { toKubeError } from '../../operator/api/kube-errors.ts';
import { ANNOTATION_FAKE_NODE_CAPACITY, LABEL_NODE_AGENT } from '../node-agent/config.ts';
import {
  type AutoscalerConfig,
  type AutoscalerMemory,
  chooseReclaimVictim,
  decideAutoscale,
  GPU,
  LABEL_SIMULATED,
  type ReclaimKind,
} from './decide.ts';

/** The notice aws-node-termination-handler puts on a spot node two minutes before it goes. */
export const SPOT_NOTICE_TAINT = {
  key: 'aws-node-termination-handler/spot-itn',
  value: 'true',
  effect: 'NoSchedule',
} as const;

export interface SimulatorAction {
  readonly at: number;
  readonly action: 'node-added' | 'node-removed' | 'notice' | 'node-deleted';
  readonly node: string;
  readonly detail?: string;
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
/** Conflicts with the node agent's status writes before the notice gives up. */
const NOTICE_ATTEMPTS = 10;
/** Resolves after `ms`, or at once when `signal` aborts (the poll loops then see it and end). */
const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);

export interface SimulatedAutoscalerOptions {
  readonly agentName: string;
  readonly config: AutoscalerConfig;
  /** Extra labels of the nodes it buys (e.g. an instance type). */
  readonly labels?: Record<string, string>;
  readonly cpuPerNode?: string;
  readonly memoryPerNode?: string;
  readonly pollMs?: number;
  readonly log?: (line: string) => void;
}

/** How long a node it added counts as still booting (taking no pod yet is then nobody's plan). */
const BOOT_GRACE_MS = 20_000;

export class SimulatedAutoscaler implements AsyncDisposable {
  private readonly core: CoreV1Api;
  private readonly stop = new AbortController();
  private readonly memory: AutoscalerMemory = { unschedulableSince: new Map(), emptySince: new Map() };
  /** Nodes it added that have not taken a pod yet, with when they were added. */
  private readonly booting = new Map<string, number>();
  private counter = 0;
  private running: Promise<void> | undefined;
  readonly actions: SimulatorAction[] = [];

  constructor(
    kubeConfig: KubeConfig,
    private readonly options: SimulatedAutoscalerOptions,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  start(): void {
    this.running ??= this.loop();
  }

  private ours = (node: V1Node) => node.metadata?.labels?.[LABEL_SIMULATED] === 'autoscaler';

  private async loop(): Promise<void> {
    const { config, pollMs = 500 } = this.options;
    while (!this.stop.signal.aborted) {
      try {
        const [pods, nodes] = await Promise.all([this.core.listPodForAllNamespaces(), this.core.listNode()]);
        const now = Date.now();
        const present = new Set(nodes.items.map((n) => n.metadata?.name ?? ''));
        const used = new Set(pods.items.map((p) => p.spec?.nodeName).filter((n) => n !== undefined));
        for (const [name, since] of this.booting) {
          if (!present.has(name) || used.has(name) || now - since > BOOT_GRACE_MS) this.booting.delete(name);
        }
        const decision = decideAutoscale(pods.items, nodes.items, this.ours, 0, now, config, this.memory);
        // A Pending pod stays unschedulable until the scheduler has seen its new node Ready: a node
        // bought for it and not yet used must not be bought again on every poll meanwhile.
        const add = Math.max(0, decision.addNodes - this.booting.size);
        for (let i = 0; i < add; i++) await this.addNode();
        for (const name of decision.removeNodes) await this.removeNode(name);
      } catch (error) {
        this.options.log?.(`autoscaler: ${(error as Error).message}`);
      }
      await sleep(pollMs, this.stop.signal);
    }
  }

  private async addNode(): Promise<void> {
    const { agentName, config } = this.options;
    const name = `spot-${agentName}-${Date.now().toString(36)}-${this.counter++}`;
    const capacity = {
      cpu: this.options.cpuPerNode ?? '8',
      memory: this.options.memoryPerNode ?? '32Gi',
      pods: String(config.podsPerNode),
      [GPU]: String(config.gpusPerNode),
    };
    await this.core.createNode({
      body: {
        metadata: {
          name,
          labels: {
            ...this.options.labels,
            [LABEL_NODE_AGENT]: agentName,
            [LABEL_SIMULATED]: 'autoscaler',
            'karpenter.sh/capacity-type': 'spot',
            'kubernetes.io/hostname': name,
          },
          annotations: { [ANNOTATION_FAKE_NODE_CAPACITY]: JSON.stringify(capacity) },
        },
      },
    });
    this.booting.set(name, Date.now());
    this.actions.push({ at: Date.now(), action: 'node-added', node: name });
    this.options.log?.(`autoscaler: added node ${name}`);
  }

  private async removeNode(name: string): Promise<void> {
    await this.core.deleteNode({ name }).catch(() => undefined);
    this.memory.emptySince.delete(name);
    this.actions.push({ at: Date.now(), action: 'node-removed', node: name });
    this.options.log?.(`autoscaler: removed empty node ${name}`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.stop.abort();
    await this.running;
  }
}

export interface SpotReclaimerOptions {
  /** From the notice (taint) to the node's deletion. AWS gives 2 minutes, GKE 30 seconds. */
  readonly noticeMs: number;
  readonly log?: (line: string) => void;
}

export class SpotReclaimer implements AsyncDisposable {
  private readonly core: CoreV1Api;
  private readonly stop = new AbortController();
  private readonly pending = new Set<Promise<void>>();
  private readonly hit = new Set<string>();
  readonly actions: SimulatorAction[] = [];

  constructor(
    kubeConfig: KubeConfig,
    private readonly options: SpotReclaimerOptions,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  /**
   * Reclaims a spot node running a worker (or `node`): with `notice` it is tainted now and deleted
   * after the notice period; `abrupt` deletes it at once, as a machine that just vanished.
   */
  async reclaim(
    kind: ReclaimKind,
    node?: string,
    pick?: (candidates: readonly string[]) => string | undefined,
  ): Promise<string | undefined> {
    let victim = node;
    if (victim === undefined) {
      const [pods, nodes] = await Promise.all([this.core.listPodForAllNamespaces(), this.core.listNode()]);
      victim = chooseReclaimVictim(pods.items, nodes.items, this.hit, pick);
    }
    if (victim === undefined) return undefined;
    this.hit.add(victim);
    const name = victim;
    if (kind === 'abrupt') {
      await this.core.deleteNode({ name, gracePeriodSeconds: 0 });
      this.actions.push({ at: Date.now(), action: 'node-deleted', node: name, detail: 'without notice' });
      this.options.log?.(`reclaimer: deleted ${name} without notice`);
      return name;
    }
    await this.addNoticeTaint(name);
    this.actions.push({
      at: Date.now(),
      action: 'notice',
      node: name,
      detail: `${this.options.noticeMs} ms`,
    });
    this.options.log?.(`reclaimer: notice on ${name}; deleting in ${this.options.noticeMs} ms`);
    const later = (async () => {
      await sleep(this.options.noticeMs, this.stop.signal);
      if (this.stop.signal.aborted) return;
      await this.core.deleteNode({ name, gracePeriodSeconds: 0 }).catch(() => undefined);
      this.actions.push({ at: Date.now(), action: 'node-deleted', node: name, detail: 'after notice' });
      this.options.log?.(`reclaimer: deleted ${name} after its notice`);
    })();
    this.pending.add(later);
    void later.finally(() => this.pending.delete(later));
    return name;
  }

  /**
   * Adds the notice taint at the node's resourceVersion, reading it again when the node agent's
   * status updates won the race (409), as any controller writing a Node does.
   */
  private async addNoticeTaint(name: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.core.readNode({ name });
      const taints = [...(current.spec?.taints ?? []), { ...SPOT_NOTICE_TAINT, timeAdded: new Date() }];
      try {
        await this.core.patchNode(
          {
            name,
            body: { metadata: { resourceVersion: current.metadata?.resourceVersion }, spec: { taints } },
          },
          mergePatch,
        );
        return;
      } catch (error) {
        const conflict = toKubeError(error, `taint node ${name}`).status === 409;
        if (!conflict || attempt >= NOTICE_ATTEMPTS) throw error;
      }
    }
  }

  /** Waits until every noticed node has been deleted. */
  async settled(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  /** Random reclaims every [minMs, maxMs], a share `abruptShare` of them without notice. */
  async runRandomly(
    minMs: number,
    maxMs: number,
    abruptShare: number,
    random: () => number = Math.random,
  ): Promise<void> {
    while (!this.stop.signal.aborted) {
      await sleep(minMs + random() * (maxMs - minMs), this.stop.signal);
      if (this.stop.signal.aborted) return;
      const kind: ReclaimKind = random() < abruptShare ? 'abrupt' : 'notice';
      await this.reclaim(kind, undefined, (c) => c[Math.floor(random() * c.length)]).catch((error: unknown) =>
        this.options.log?.(`reclaimer: ${(error as Error).message}`),
      );
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.stop.abort();
    await Promise.all([...this.pending]);
  }
}
