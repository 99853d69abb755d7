/**
 * `hack/cluster.sh up|down|status`: the local cluster for developers. Progress goes to stderr; `up`
 * prints the kubeconfig path as its last line on stdout, so `$(hack/cluster.sh up | tail -1)` works.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ImageMapInput, ImageMapSchema, type NodeTaint, TaintSchema } from '../node-agent/config.ts';
import { clusterInfo, launchCluster, stopClusterDir } from './launcher.ts';
import { isAlive, readPidFiles } from './processes.ts';

const dir = process.env['TENSILE_CLUSTER_DIR'] ?? join(process.env['TMPDIR'] ?? '/tmp', 'tensile-cluster');
const say = (line: string) => process.stderr.write(`[cluster] ${line}\n`);

class UsageError extends Error {
  override readonly name = 'UsageError';
}

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

function positiveInt(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0)
    throw new UsageError(`${flag}: expected a non-negative integer, got ${value}`);
  return n;
}

async function up(args: string[]): Promise<number> {
  let nodes = 2;
  let gpus = 1;
  const taints: NodeTaint[] = [];
  let imageMap: ImageMapInput | undefined;
  for (let i = 0; i < args.length; i++) {
    const flag = args[i];
    const value = args[i + 1];
    i++;
    if (flag === '--nodes') nodes = positiveInt(flag, value);
    else if (flag === '--gpus') gpus = positiveInt(flag, value);
    else if (flag === '--taint') taints.push(parseTaint(value ?? ''));
    else if (flag === '--image-map') {
      const parsed = ImageMapSchema.safeParse(JSON.parse(readFileSync(value ?? '', 'utf8')));
      if (!parsed.success) throw new UsageError(`--image-map ${value}: ${parsed.error.message}`);
      imageMap = parsed.data;
    } else throw new UsageError(`unknown option ${flag}`);
  }
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
    detached: true,
    progress: say,
  });
  say(`logs in ${join(dir, 'logs')}; stop with: hack/cluster.sh down`);
  console.log(cluster.kubeconfigPath);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up':
      return up(rest);
    case 'down':
      await stopClusterDir(dir, { removeDir: true });
      say(`stopped; removed ${dir}`);
      return 0;
    case 'status': {
      const info = clusterInfo(dir);
      if (!running() || info === undefined) {
        say(`not running (state directory ${dir})`);
        return 1;
      }
      say(`running: ${info.server}, nodes ${info.nodeNames.join(', ') || 'none'}`);
      console.log(info.kubeconfigPath);
      return 0;
    }
    default:
      say(
        'usage: hack/cluster.sh up [--nodes N] [--gpus N] [--taint k=v:Effect]... [--image-map FILE] | down | status',
      );
      return 2;
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
