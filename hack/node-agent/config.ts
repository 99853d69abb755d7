/**
 * The node agent's configuration: a JSON file written by the launcher (hack/cluster/launcher.ts) and
 * named on the agent's command line. Validated once at start; a bad file exits naming the field.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

export const LABEL_NODE_AGENT = 'tensile.dev/node-agent';
/** `crashed` simulates a dead kubelet on that node: no heartbeats, its processes killed. */
export const ANNOTATION_FAKE_NODE_STATE = 'tensile.dev/fake-node-state';
/** Optional JSON resource list for a Node created by someone else without status.capacity. */
export const ANNOTATION_FAKE_NODE_CAPACITY = 'tensile.dev/fake-node-capacity';
export const GPU_RESOURCE = 'nvidia.com/gpu';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Docker semantics: `container.command` replaces `entrypoint`, `container.args` replaces `cmd`. */
export const ImageEntrySchema = z.strictObject({
  entrypoint: z.array(z.string()).default([]),
  cmd: z.array(z.string()).default([]),
  /** Environment of the image (Docker ENV); the pod's env wins. */
  env: z.record(z.string(), z.string()).default({}),
  /** Working directory of the image (Docker WORKDIR); default: the pod's own scratch folder. */
  workingDir: z.string().startsWith('/').optional(),
});
export type ImageEntry = z.output<typeof ImageEntrySchema>;
export type ImageEntryInput = z.input<typeof ImageEntrySchema>;

/** Image pattern (exact, or a prefix ending in `*`) → what runs for it. */
export const ImageMapSchema = z.record(z.string().min(1), ImageEntrySchema);
export type ImageMap = z.output<typeof ImageMapSchema>;
export type ImageMapInput = z.input<typeof ImageMapSchema>;

export function defaultImageMap(repoRoot: string = REPO_ROOT): ImageMapInput {
  const tensile = {
    entrypoint: [process.execPath, join(repoRoot, 'operator', 'bin', 'tensile.mjs')],
    cmd: [],
    workingDir: repoRoot,
  };
  return {
    // Both `tensile:<tag>` and `tensile-<flavour>:<tag>` (e.g. a GPU worker image).
    'ghcr.io/tensile-dev/tensile*': tensile,
    'tensile*': tensile,
    'nats*': { entrypoint: ['nats-server'], cmd: [] },
  };
}

const quantity = z.union([z.string().min(1), z.int().min(0)]).transform(String);

export const TaintSchema = z.strictObject({
  key: z.string().min(1),
  value: z.string().optional(),
  effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']),
});
export type NodeTaint = z.output<typeof TaintSchema>;

export const NodeShapeSchema = z.strictObject({
  capacity: z.record(z.string(), quantity),
  labels: z.record(z.string(), z.string()).default({}),
  taints: z.array(TaintSchema).default([]),
});
export type NodeShape = z.output<typeof NodeShapeSchema>;

export const AgentConfigSchema = z.strictObject({
  /** Value of the `tensile.dev/node-agent` label on every node this agent runs. */
  agentName: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/),
  kubeconfig: z.string().min(1),
  /** Where volumes, pod folders, logs and pid files go (the cluster's state directory). */
  stateDir: z.string().startsWith('/'),
  /** Reported to pods as KUBERNETES_SERVICE_HOST / _PORT and written into their kubeconfigs. */
  apiServer: z.strictObject({ host: z.string(), port: z.int() }),
  caFile: z.string().min(1),
  /**
   * The address every pod (and node) of this agent reports as its pod and host IP, and that its
   * processes are told to listen on (status.podIP). 127.0.0.1 by default; beside a real node the
   * host side of its veth (hack/cluster/real-node.ts), which the real node's containers reach too.
   */
  podIp: z.ipv4().default('127.0.0.1'),
  /**
   * The pod processes' umask (they inherit the agent's). Beside a real node, 0: the processes run as
   * root, and what they create on a shared claim (checkpoints, audit files) must stay writable by
   * the real node's containers, which run as the image's user (1000) on the same folder.
   */
  umask: z.int().min(0).max(0o777).optional(),
  /** Nodes to register at start (existing ones with the agent's label are adopted as they are). */
  nodes: z.array(z.strictObject({ name: z.string().min(1) }).extend(NodeShapeSchema.shape)).default([]),
  /** Capacity given to an adopted node that has none. */
  defaultNode: NodeShapeSchema,
  imageMap: ImageMapSchema.default({}),
  /** Extra variables of the agent's own environment passed to every pod process. */
  inheritEnv: z.array(z.string()).default([]),
  leaseRenewSeconds: z.number().positive().default(2),
  statusUpdateSeconds: z.number().positive().default(10),
  /** Create a hostPath PersistentVolume for every unbound claim (there is no other provisioner). */
  provisionVolumes: z.boolean().default(true),
  logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
});
export type AgentConfig = z.output<typeof AgentConfigSchema>;
export type AgentConfigInput = z.input<typeof AgentConfigSchema>;

export class AgentConfigError extends Error {
  override readonly name = 'AgentConfigError';
}

export function loadAgentConfig(path: string): AgentConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new AgentConfigError(`cannot read the node agent configuration ${path}: ${String(error)}`, {
      cause: error,
    });
  }
  const parsed = AgentConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new AgentConfigError(`invalid node agent configuration ${path}:\n  ${problems.join('\n  ')}`);
  }
  return parsed.data;
}
