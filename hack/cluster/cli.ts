/**
 * `hack/cluster.sh up|down|status`: the local cluster for developers. Progress goes to stderr; `up`
 * prints the kubeconfig path as its last line on stdout, so `$(hack/cluster.sh up | tail -1)` works.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type CommandSpec, commandLine, UsageError } from '../../operator/commands/args.ts';
import { type ImageMapInput, ImageMapSchema, type NodeTaint, TaintSchema } from '../node-agent/config.ts';
import { clusterInfo, launchCluster, stopClusterDir } from './launcher.ts';
import { isAlive, readPidFiles } from './processes.ts';

const dir = process.env['TENSILE_CLUSTER_DIR'] ?? join(process.env['TMPDIR'] ?? '/tmp', 'tensile-cluster');
const say = (line: string) => process.stderr.write(`[cluster] ${line}\n`);

const UP = {
  command: 'hack/cluster.sh up',
  synopsis: '[options]',
  description: `Starts the local cluster (detached) in $TENSILE_CLUSTER_DIR; the last line on stdout is the
kubeconfig path: export KUBECONFIG=$(hack/cluster.sh up | tail -1). A running cluster is kept.`,
  options: {
    nodes: { type: 'string', value: 'N', help: 'fake GPU nodes (default 2)' },
    gpus: { type: 'string', value: 'N', help: 'GPUs per node (default 1)' },
    taint: {
      type: 'string',
      value: 'KEY[=VALUE]:EFFECT',
      multiple: true,
      help: 'taint every node (repeatable); EFFECT: NoSchedule, PreferNoSchedule or NoExecute',
    },
    'image-map': {
      type: 'string',
      value: 'FILE',
      help: 'JSON: image (or prefix*) → what the node agent runs for it',
    },
    'real-node': {
      type: 'boolean',
      help: 'also start real-node-0: kubelet, containerd, runc, CNI and kube-proxy (root; see README)',
    },
  },
} as const satisfies CommandSpec;

const DOWN = {
  command: 'hack/cluster.sh down',
  synopsis: '[options]',
  description: 'Stops every process the local cluster started and removes its state directory.',
  options: {},
} as const satisfies CommandSpec;

const STATUS = {
  command: 'hack/cluster.sh status',
  synopsis: '[options]',
  description:
    'Says whether the local cluster runs, and where; prints its kubeconfig path (exit 1 when not running).',
  options: {},
} as const satisfies CommandSpec;

const CLUSTER = {
  command: 'hack/cluster.sh',
  synopsis: 'up|down|status [options]',
  description: `The local Kubernetes cluster for developers (see "Local Kubernetes cluster" in README.md):
  up        start it
  down      stop it and remove its state
  status    say whether it runs
hack/cluster.sh COMMAND --help shows the options of each.`,
  options: {},
  positionals: true,
} as const satisfies CommandSpec;

const io = { out: console.log, err: console.error };

function running(): boolean {
  const apiserver = readPidFiles(dir).find((r) => r.file.endsWith('/kube-apiserver.pid'));
  return apiserver !== undefined && isAlive(apiserver);
}

function parseTaint(text: string): NodeTaint {
  const match = /^([^=:]+)(?:=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$/.exec(text);
  if (match === null)
    throw new UsageError(`--taint ${text}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute`);
  return TaintSchema.parse({
    key: match[1],
    ...(match[2] === undefined ? {} : { value: match[2] }),
    effect: match[3],
  });
}

function nonNegativeInt(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n))
    throw new UsageError(`${flag}: expected a non-negative integer, got ${value}`);
  return n;
}

async function up(args: readonly string[]): Promise<number> {
  const line = commandLine(UP, args, io, (values) => {
    let imageMap: ImageMapInput | undefined;
    const file = values['image-map'];
    if (file !== undefined) {
      let raw: unknown;
      try {
        raw = JSON.parse(readFileSync(file, 'utf8'));
      } catch (error) {
        throw new UsageError(`--image-map ${file}: ${(error as Error).message}`);
      }
      const parsed = ImageMapSchema.safeParse(raw);
      if (!parsed.success) throw new UsageError(`--image-map ${file}: ${parsed.error.message}`);
      imageMap = parsed.data;
    }
    return {
      nodes: nonNegativeInt('--nodes', values.nodes, 2),
      gpus: nonNegativeInt('--gpus', values.gpus, 1),
      taints: (values.taint ?? []).map(parseTaint),
      imageMap,
      realNode: values['real-node'] === true,
    };
  });
  if ('exit' in line) return line.exit;
  const { nodes, gpus, taints, imageMap, realNode } = line.parsed;
  if (running()) {
    const info = clusterInfo(dir);
    say(`already running in ${dir} (${info?.server ?? '?'}); \`hack/cluster.sh down\` stops it`);
    console.log(join(dir, 'kubeconfig'));
    return 0;
  }
  // Leftovers of a cluster that died (a reboot, a kill): clear them before starting again.
  await stopClusterDir(dir, { removeDir: true });
  const cluster = await launchCluster({
    dir,
    nodes,
    gpusPerNode: gpus,
    taints,
    ...(imageMap === undefined ? {} : { imageMap }),
    realNode,
    detached: true,
    progress: say,
  });
  say(`logs in ${join(dir, 'logs')}; stop with: hack/cluster.sh down`);
  console.log(cluster.kubeconfigPath);
  return 0;
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up':
      return up(rest);
    case 'down': {
      const line = commandLine(DOWN, rest, io, () => undefined);
      if ('exit' in line) return line.exit;
      await stopClusterDir(dir, { removeDir: true });
      say(`stopped; removed ${dir}`);
      return 0;
    }
    case 'status': {
      const line = commandLine(STATUS, rest, io, () => undefined);
      if ('exit' in line) return line.exit;
      const info = clusterInfo(dir);
      if (!running() || info === undefined) {
        say(`not running (state directory ${dir})`);
        return 1;
      }
      say(`running: ${info.server}, nodes ${info.nodeNames.join(', ') || 'none'}`);
      console.log(info.kubeconfigPath);
      return 0;
    }
    default: {
      const line = commandLine(CLUSTER, command === undefined ? [] : [command, ...rest], io, (_values) => {
        throw new UsageError(command === undefined ? 'missing COMMAND' : `unknown command "${command}"`);
      });
      return 'exit' in line ? line.exit : 2;
    }
  }
}

let code: number;
try {
  code = await main(process.argv.slice(2));
} catch (error) {
  say(`ERROR: ${error instanceof Error ? error.message : String(error)}`);
  code = 1;
}
// Idle keep-alive connections of the API client would hold the process for seconds.
process.exit(code);
