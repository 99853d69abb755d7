/**
 * The real node of the local cluster (`hack/cluster.sh up --real-node`): containerd + runc, a kubelet
 * and kube-proxy built with the control plane (hack/install-tools.sh), CNI bridge networking from
 * Debian's plugins. Pods run in containers from locally built images (hack/images.sh).
 *
 * Everything lives in a network namespace the launcher creates (`tensile-<id>`): the node's address,
 * the pods' bridge, kube-proxy's iptables rules and the per-namespace sysctls. A veth pair joins it to
 * this machine; on the host side a small TCP forwarder (tcp-forward.ts) brings the API server (on
 * 127.0.0.1) to the veth address, so the kubelet, kube-proxy and pods reach it and no traffic goes
 * anywhere else. State lives under <cluster>/real-node/; `stopRealNode` undoes everything: containers,
 * shims, mounts under the state directory, the kubelet's cgroups, the namespace (and with it the
 * bridge, the veths and the iptables rules) and the three host sysctls the kubelet changes.
 *
 * Pure: `realNodePlan` and the `*Config` functions. I/O: `startRealNode` and `stopRealNode`.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

export const REAL_NODE_NAME = 'real-node-0';
/** Host sysctls the kubelet sets whatever its configuration; restored by `stopRealNode`. */
export const KUBELET_HOST_SYSCTLS = ['vm/overcommit_memory', 'kernel/panic', 'kernel/panic_on_oops'] as const;
const CGROUP_ROOT = '/sys/fs/cgroup';

export interface RealNodePlan {
  readonly id: string;
  readonly stateDir: string;
  readonly netns: string;
  readonly hostVeth: string;
  readonly nodeVeth: string;
  readonly bridge: string;
  /** Host side of the veth pair: where the API server forwarder listens. */
  readonly hostIp: string;
  /** The node's address (kubelet, kube-proxy), inside the namespace. */
  readonly nodeIp: string;
  readonly podCidr: string;
  readonly podGateway: string;
  readonly cgroupRoot: string;
  readonly containerdSocket: string;
  readonly apiPort: number;
}

/** Names and addresses of the real node of the cluster in `clusterDir`; distinct per directory. */
export function realNodePlan(clusterDir: string, apiPort: number): RealNodePlan {
  const id = createHash('sha256').update(clusterDir).digest('hex').slice(0, 6);
  const n = (Number.parseInt(id.slice(0, 4), 16) % 250) + 1;
  const stateDir = join(clusterDir, 'real-node');
  return {
    id,
    stateDir,
    netns: `tensile-${id}`,
    hostVeth: `tsn${id}h`,
    nodeVeth: `tsn${id}n`,
    bridge: `tsn${id}b`,
    hostIp: `172.29.${n}.1`,
    nodeIp: `172.29.${n}.2`,
    podCidr: `10.214.${n}.0/24`,
    podGateway: `10.214.${n}.1`,
    cgroupRoot: `/tensile-${id}`,
    containerdSocket: join(stateDir, 'containerd.sock'),
    apiPort,
  };
}

export function containerdConfig(plan: RealNodePlan, pauseImage: string): string {
  const d = plan.stateDir;
  return `version = 2
root = "${d}/containerd/root"
state = "${d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${plan.containerdSocket}"

[ttrpc]
  address = "${plan.containerdSocket}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "${d}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  # This sandbox lacks CAP_SYS_RESOURCE: without this every pod sandbox fails ("can't get final
  # child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${d}/cni/net.d"
`;
}

/** The CNI network: a bridge in the namespace, host-local addresses, no masquerading to anywhere. */
export function cniConfig(plan: RealNodePlan): string {
  return `${JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: `tensile-${plan.id}`,
      plugins: [
        {
          type: 'bridge',
          bridge: plan.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: plan.podCidr, gateway: plan.podGateway }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: join(plan.stateDir, 'cni', 'ipam'),
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  )}\n`;
}

/**
 * The kubelet's configuration. `reservedCpu` (millicores) is held back from pods as the system's, so
 * that the node offers fewer CPUs than the machine has.
 */
export function kubeletConfig(
  plan: RealNodePlan,
  ca: string,
  dnsIp: string | undefined,
  reservedCpuMillis = 0,
): string {
  const d = plan.stateDir;
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${plan.nodeIp}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://${plan.containerdSocket}
cgroupDriver: cgroupfs
cgroupRoot: ${plan.cgroupRoot}
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
failCgroupV1: false
# Only clients with a certificate of the cluster's CA (the API server's kubelet client) reach the
# kubelet's API; nothing in the node's namespace gets in anonymously.
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: ${ca} }
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
${dnsIp === undefined ? '' : `clusterDNS: [${dnsIp}]\n`}resolvConf: ${d}/resolv.conf
podLogsDir: ${d}/pod-logs
staticPodPath: ""
serializeImagePulls: false
evictionHard: { memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1% }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 2s
protectKernelDefaults: false
localStorageCapacityIsolation: true
maxPods: 30
${reservedCpuMillis > 0 ? `systemReserved: { cpu: ${reservedCpuMillis}m }\n` : ''}`;
}

export function kubeProxyConfig(plan: RealNodePlan, kubeconfig: string): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: ${kubeconfig}
hostnameOverride: ${REAL_NODE_NAME}
bindAddress: ${plan.nodeIp}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: ${plan.podCidr}
conntrack:
  maxPerCore: 0
iptables:
  localhostNodePorts: false
  masqueradeAll: true
`;
}

/** A kubeconfig that reaches the API server through the forwarder, checking its "localhost" name. */
export function nodeKubeconfig(plan: RealNodePlan, files: { ca: string; cert: string; key: string }): string {
  return `apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster:
      server: https://${plan.hostIp}:${plan.apiPort}
      certificate-authority: ${files.ca}
      tls-server-name: localhost
users:
  - name: node
    user:
      client-certificate: ${files.cert}
      client-key: ${files.key}
contexts:
  - name: local
    context: { cluster: local, user: node }
current-context: local
`;
}

// ------------------------------------------------------------------------------------------- I/O

export class RealNodeError extends Error {
  override readonly name = 'RealNodeError';
}

interface SavedState {
  readonly plan: RealNodePlan;
  readonly sysctls: Record<string, string>;
  readonly createdDevicePlugins: boolean;
  readonly createdVarLibKubelet: boolean;
  readonly createdVarLogContainers: boolean;
}

function podNetnsNames(): string[] {
  try {
    return readdirSync('/run/netns').filter((n) => n.startsWith('cni-'));
  } catch {
    return [];
  }
}

function run(command: string, args: readonly string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new RealNodeError(`${command} ${args.join(' ')}: ${stderr.trim() || (error as Error).message}`);
  }
}

function tryRun(command: string, args: readonly string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const stateFile = (clusterDir: string) => join(clusterDir, 'real-node', 'state.json');

/** Prefix that runs a command in the node's network namespace (and only that namespace). */
export function inNetns(plan: RealNodePlan, command: string, args: readonly string[]): [string, string[]] {
  return ['nsenter', [`--net=/run/netns/${plan.netns}`, '--', command, ...args]];
}

/**
 * Creates the namespace, veths, bridge, cgroups and configuration files. Processes are started by the
 * launcher (their pid files make `hack/cluster.sh down` stop them); this returns what they need.
 */
export function prepareRealNode(
  plan: RealNodePlan,
  input: {
    pauseImage: string;
    dnsIp?: string;
    /** CPUs offered to pods; the rest of the machine's are reserved for the system. */
    cpus?: number;
    ca: string;
    kubelet: { cert: string; key: string };
    kubeProxy: { cert: string; key: string };
  },
): {
  kubeletConfig: string;
  kubeconfig: string;
  containerdConfig: string;
  kubeProxyConfig: string;
} {
  const d = plan.stateDir;
  for (const sub of ['containerd', 'cni/net.d', 'cni/ipam', 'kubelet', 'pod-logs', 'runc'])
    mkdirSync(join(d, sub), { recursive: true });
  const sysctls: Record<string, string> = {};
  for (const key of KUBELET_HOST_SYSCTLS) sysctls[key] = readFileSync(join('/proc/sys', key), 'utf8').trim();
  const state: SavedState = {
    plan,
    sysctls,
    createdDevicePlugins: !existsSync('/var/lib/kubelet/device-plugins'),
    createdVarLibKubelet: !existsSync('/var/lib/kubelet'),
    createdVarLogContainers: !existsSync('/var/log/containers'),
  };
  writeFileSync(stateFile(join(d, '..')), `${JSON.stringify(state, null, 2)}\n`);

  run('ip', ['netns', 'add', plan.netns]);
  run('ip', ['link', 'add', plan.hostVeth, 'type', 'veth', 'peer', 'name', plan.nodeVeth]);
  run('ip', ['link', 'set', plan.nodeVeth, 'netns', plan.netns]);
  run('ip', ['addr', 'add', `${plan.hostIp}/30`, 'dev', plan.hostVeth]);
  run('ip', ['link', 'set', plan.hostVeth, 'up']);
  const ns = (args: string[]) => run('ip', ['-n', plan.netns, ...args]);
  ns(['link', 'set', 'lo', 'up']);
  ns(['addr', 'add', `${plan.nodeIp}/30`, 'dev', plan.nodeVeth]);
  ns(['link', 'set', plan.nodeVeth, 'up']);
  // The pods' bridge is made here (CNI reuses it) so that it exists before the first pod.
  ns(['link', 'add', plan.bridge, 'type', 'bridge']);
  ns(['addr', 'add', `${plan.podGateway}/24`, 'dev', plan.bridge]);
  ns(['link', 'set', plan.bridge, 'up']);
  // Replies to pods from the host side (the forwarder) go back through the veth; nothing else routes.
  run('ip', ['route', 'add', plan.podCidr, 'via', plan.nodeIp, 'dev', plan.hostVeth]);
  // Per-namespace sysctls: forwarding between pods through Service addresses, iptables on the bridge.
  for (const [key, value] of [
    ['net.ipv4.ip_forward', '1'],
    ['net.bridge.bridge-nf-call-iptables', '1'],
  ] as const) {
    const [cmd, args] = inNetns(plan, 'sysctl', ['-q', '-w', `${key}=${value}`]);
    run(cmd, args);
  }
  // The kubelet's cgroup root must exist in every hierarchy (cgroup v1 hybrid here).
  for (const h of cgroupHierarchies()) mkdirSync(join(CGROUP_ROOT, h, plan.cgroupRoot), { recursive: true });

  writeFileSync(join(d, 'resolv.conf'), 'nameserver 127.0.0.1\noptions ndots:5\n');
  writeFileSync(join(d, 'cni', 'net.d', '10-tensile.conflist'), cniConfig(plan));
  const files = {
    kubeconfig: join(d, 'kubeconfig'),
    kubeProxyKubeconfig: join(d, 'kube-proxy.kubeconfig'),
    containerdConfig: join(d, 'containerd.toml'),
    kubeletConfig: join(d, 'kubelet.yaml'),
    kubeProxyConfig: join(d, 'kube-proxy.yaml'),
  };
  writeFileSync(files.kubeconfig, nodeKubeconfig(plan, { ca: input.ca, ...input.kubelet }));
  writeFileSync(files.kubeProxyKubeconfig, nodeKubeconfig(plan, { ca: input.ca, ...input.kubeProxy }));
  writeFileSync(files.containerdConfig, containerdConfig(plan, input.pauseImage));
  const reserved = input.cpus === undefined ? 0 : Math.max(0, (cpus().length - input.cpus) * 1000);
  writeFileSync(files.kubeletConfig, kubeletConfig(plan, input.ca, input.dnsIp, reserved));
  writeFileSync(files.kubeProxyConfig, kubeProxyConfig(plan, files.kubeProxyKubeconfig));
  return files;
}

function cgroupHierarchies(): string[] {
  try {
    return readdirSync(CGROUP_ROOT).filter((h) => {
      try {
        return statSync(join(CGROUP_ROOT, h)).isDirectory();
      } catch {
        return false;
      }
    });
  } catch {
    return [];
  }
}

/** Visits every cgroup at or below `dir`, children before their parent (so a parent can be removed). */
function eachCgroupBottomUp(dir: string, visit: (cgroup: string) => void): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const entry of entries) {
    const path = join(dir, entry);
    try {
      if (statSync(path).isDirectory()) eachCgroupBottomUp(path, visit);
    } catch {
      // Gone meanwhile.
    }
  }
  visit(dir);
}

function killCgroupProcesses(cgroup: string): void {
  try {
    for (const pid of readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  } catch {
    // No procs file.
  }
}

function removeCgroup(cgroup: string): void {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      rmdirSync(cgroup);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      // EBUSY while the killed processes are reaped.
      execFileSync('sleep', ['0.1']);
    }
  }
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)))
    .map((m) => m.replace(/\\040/g, ' '));
  return [...new Set(mounts)].sort((a, b) => b.length - a.length);
}

/** Processes whose command line mentions `needle` (the containerd shims of this node). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) pids.push(Number(entry));
    } catch {
      // Gone.
    }
  }
  return pids.filter((pid) => pid !== process.pid);
}

/**
 * Undoes what the real node of `clusterDir` left after its processes (kubelet, containerd, kube-proxy,
 * forwarder) were stopped: containers and shims, mounts, cgroups, the namespace, host sysctls, the
 * kubelet's leftovers in /var. Safe to call when there is no real node.
 */
export function cleanupRealNode(clusterDir: string): void {
  let state: SavedState;
  try {
    state = JSON.parse(readFileSync(stateFile(clusterDir), 'utf8')) as SavedState;
  } catch {
    return;
  }
  const { plan } = state;
  // Containers: every process in the kubelet's cgroups, then the shims of this containerd.
  for (const h of cgroupHierarchies())
    eachCgroupBottomUp(join(CGROUP_ROOT, h, plan.cgroupRoot), killCgroupProcesses);
  for (const pid of processesMentioning(plan.containerdSocket)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  for (const mount of mountsUnder(plan.stateDir)) tryRun('umount', ['-l', mount]);
  for (const h of cgroupHierarchies())
    eachCgroupBottomUp(join(CGROUP_ROOT, h, plan.cgroupRoot), removeCgroup);
  // containerd keeps each pod's network namespace bound under /run/netns/cni-*: ours are those with
  // an address in the pods' range (before our namespace goes, which takes their veths with it).
  const podPrefix = plan.podCidr.slice(0, plan.podCidr.lastIndexOf('.') + 1);
  for (const name of podNetnsNames()) {
    let addrs = '';
    try {
      addrs = execFileSync('ip', ['-n', name, '-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
    } catch {
      continue;
    }
    if (addrs.includes(` ${podPrefix}`)) tryRun('ip', ['netns', 'del', name]);
  }
  // The namespace takes the bridge, the node's veth (and so its host peer) and kube-proxy's rules.
  tryRun('ip', ['link', 'del', plan.hostVeth]);
  tryRun('ip', ['netns', 'del', plan.netns]);
  for (const [key, value] of Object.entries(state.sysctls)) {
    try {
      writeFileSync(join('/proc/sys', key), value);
    } catch {
      // Read-only here: nothing was changed then.
    }
  }
  // The kubelet links container logs into /var/log/containers whatever its configuration.
  try {
    for (const link of readdirSync('/var/log/containers')) {
      const path = join('/var/log/containers', link);
      try {
        if (readlinkSync(path).startsWith(plan.stateDir)) rmSync(path, { force: true });
      } catch {
        // Not a link.
      }
    }
    if (state.createdVarLogContainers) rmdirSync('/var/log/containers');
  } catch {
    // No such directory, or not empty (another kubelet).
  }
  if (state.createdDevicePlugins) {
    try {
      rmSync('/var/lib/kubelet/device-plugins/kubelet.sock', { force: true });
      rmdirSync('/var/lib/kubelet/device-plugins');
      if (state.createdVarLibKubelet) rmdirSync('/var/lib/kubelet');
    } catch {
      // Not empty (another kubelet): left.
    }
  }
  rmSync(stateFile(clusterDir), { force: true });
}

// `node --import tsx hack/cluster/real-node.ts cleanup CLUSTER_DIR` (hack/cluster/watchdog.sh).
if (import.meta.url === `file://${process.argv[1]}` && process.argv[2] === 'cleanup') {
  const dir = process.argv[3];
  if (dir !== undefined) cleanupRealNode(dir);
}
